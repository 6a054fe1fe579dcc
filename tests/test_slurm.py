"""`ltsft slurm submit` against a fake `sbatch`: the plan (jobs, order, dependencies) on the smoke
preset's DVC graph, what changed and what is downstream of it, and bad input.

No SLURM here: the fake records its arguments and answers "Submitted batch job N", as sbatch
does. scripts/slurm_smoke.sh runs the same command on a real single-node SLURM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.core.errors import LtsftError
from stages.cli import app
from stages.slurm_plan import (
    CHECK_JOB,
    Environment,
    StageInfo,
    job_name,
    plan,
    stage_script,
    to_run,
)

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

FAKE_SBATCH = """#!{python}
# Records its arguments; answers like sbatch; refuses call number $FAKE_SBATCH_REFUSE (if set).
import json, os, sys
log = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sbatch.jsonl")
calls = sum(1 for _ in open(log)) if os.path.exists(log) else 0
if str(calls + 1) == os.environ.get("FAKE_SBATCH_REFUSE"):
    print("sbatch: error: invalid partition specified: nope", file=sys.stderr)
    sys.exit(1)
with open(log, "a") as handle:
    handle.write(json.dumps(sys.argv[1:]) + "\\n")
print(f"Submitted batch job {{101 + calls}}")
"""
FAKE_SCANCEL = """#!{python}
import json, os, sys
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "scancel.jsonl"), "a") as handle:
    handle.write(json.dumps(sys.argv[1:]) + "\\n")
"""


@pytest.fixture
def smoke_repo(tmp_path, monkeypatch) -> Path:
    """A DVC repository with the smoke preset as params.yaml and the dvc.yaml `ltsft preset smoke`
    writes for it (every method: the committed dvc.yaml is the demo's, which runs fewer)."""
    from dvc.repo import Repo

    from pipeline.core.config import load_params
    from stages import dvc_yaml

    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO / "presets" / "smoke.yaml", root / "params.yaml")
    (root / "dvc.yaml").write_text(dvc_yaml.render(load_params(root / "params.yaml").run_methods))
    Repo.init(str(root), no_scm=True).close()
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def fake_bin(tmp_path, monkeypatch) -> Path:
    """A PATH holding only a fake sbatch and scancel (so a real SLURM on this machine is never used)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("scancel", FAKE_SCANCEL)):
        (bin_dir / name).write_text(text.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def submit(*args: str):
    return runner.invoke(app, ["slurm", "submit", *args])


def sbatch_calls(bin_dir: Path) -> list[dict]:
    """Each sbatch call as {job, id, after (ids), options, script}, in call order."""
    log = bin_dir / "sbatch.jsonl"
    calls = []
    for number, line in enumerate(log.read_text().splitlines() if log.exists() else []):
        arguments = json.loads(line)
        options = dict(arg[2:].split("=", 1) for arg in arguments[:-1] if "=" in arg)
        calls.append({
            "job": options["job-name"].removeprefix("ltsft-"),
            "id": str(101 + number),
            "after": set(options["dependency"].removeprefix("afterok:").split(":")) if "dependency" in options else set(),
            "options": options,
            "script": arguments[-1],
        })
    return calls


def stage_names() -> list[str]:
    from dvc.repo import Repo

    with Repo() as repo:
        return [stage.addressing for stage in repo.index.stages]


def test_plan_of_the_smoke_graph(smoke_repo, fake_bin):
    result = submit("--partition", "gpu", "--gpus-per-job", "1", "--time", "1:00:00", "--sbatch-arg=--qos=long")
    assert result.exit_code == 0, result.output
    calls = sbatch_calls(fake_bin)
    stages = stage_names()
    assert len(stages) >= 20  # the smoke graph really was read
    # A fresh clone: every stage runs, then the check job, last.
    assert sorted(call["job"] for call in calls[:-1]) == sorted(stages)
    assert calls[-1]["job"] == CHECK_JOB
    by_job = {call["job"]: call for call in calls}
    name_of = {call["id"]: call["job"] for call in calls}

    # Order: each job is submitted after every job it waits for.
    submitted: set[str] = set()
    for call in calls:
        assert call["after"] <= submitted, call["job"]
        submitted.add(call["id"])

    def after(job: str) -> set[str]:
        return {name_of[job_id] for job_id in by_job[job]["after"]}

    # Dependencies are dvc.yaml's: what each stage reads, no more.
    assert after("download") == set()
    assert after("prepare_model") == {"download"}
    assert after("train_task_lt_sft@pos") == {"download", "prepare_model", "train_lang_lt_sft@en"}
    assert after("overlap@pos") == {"train_task_lt_sft@pos"} | {f"train_lang_lt_sft@{lang}" for lang in ("en", "xx", "yy")}
    # The report reads every result and every training curve (curves/ is written by the
    # training stages and prepare_model).
    assert after("report") == {s for s in stages
                               if s.startswith(("evaluate", "ablate", "overlap", "train_", "prepare_model"))}
    # Independent stages run at once: no language component waits for another (mad-g-ls starts from
    # the generated adapter, so it waits for MAD-G's generator, which waits for its own text).
    for stage in (s for s in stages if s.startswith("train_lang_")):
        generated = {"train_generator"} if stage.startswith("train_lang_mad_g_ls@") else set()
        assert after(stage) == {"download", "prepare_model"} | generated, stage
    assert after("mad_g_text") == set()
    assert after("train_generator") == {"download", "prepare_model", "mad_g_text"}
    assert after(CHECK_JOB) == set(stages)

    # Resources: every stage's job gets them; the check job only partition, time and extras.
    for call in calls:
        options = call["options"]
        assert (options["partition"], options["time"], options["qos"]) == ("gpu", "1:00:00", "long")
        assert options.get("gpus") == (None if call["job"] == CHECK_JOB else "1")
        assert options["chdir"] == str(smoke_repo)
        assert options["output"] == str(smoke_repo / ".ltsft" / "slurm" / f"{call['job']}.out")
        assert options.get("kill-on-invalid-dep") == ("yes" if call["after"] else None)

    # Each job runs its stage's command between removing its outputs and recording it.
    script = Path(by_job["train_lang_lt_sft@en"]["script"]).read_text()
    lines = script.splitlines()
    remove = lines.index("rm -rf -- diffs/lt-sft/lang/en diffs/dense-composed/lang/en curves/diffs/lt-sft/lang/en")
    command = lines.index("ltsft train-lang en --method lt-sft")
    commit = lines.index("dvc --wait-for-lock commit --force --quiet train_lang_lt_sft@en")
    assert lines[0] == "#!/bin/bash" and remove < command < commit
    assert f"cd {smoke_repo}" in lines and os.access(by_job["train_lang_lt_sft@en"]["script"], os.X_OK)
    final = Path(by_job[CHECK_JOB]["script"]).read_text().rstrip().splitlines()[-1]
    assert final.startswith("ltsft slurm check ") and sorted(final.split()[3:]) == sorted(stages)
    # The ids, for squeue/scancel (and scripts/slurm_smoke.sh).
    tsv = (smoke_repo / ".ltsft" / "slurm" / "jobs.tsv").read_text().splitlines()
    assert tsv == [f"{call['job']}\t{call['id']}" for call in calls]


def test_dry_run_prints_the_plan_and_touches_nothing(smoke_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch: a plan is made anywhere
    result = submit("--dry-run", "--cpus-per-task", "4")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    plan_lines = [line.split() for line in lines if line.startswith("  ")]
    assert [words[0] for words in plan_lines][-1] == CHECK_JOB
    assert sorted(words[0] for words in plan_lines[:-1]) == sorted(stage_names())
    sbatch_lines = [line for line in lines if line.startswith("sbatch ")]
    assert len(sbatch_lines) == len(plan_lines)
    assert "--dependency=afterok:<prepare_model>:<download>" in next(line for line in sbatch_lines if "train_lang_madx@xx" in line)
    assert all(("--cpus-per-task=4" in line) != (CHECK_JOB in line) for line in sbatch_lines)
    assert not (smoke_repo / ".ltsft").exists()


def _fill_and_commit(root: Path) -> None:
    """Every stage's outputs and inputs exist (dummy files) and are recorded in dvc.lock,
    as after a finished `dvc repro` (training nothing)."""
    from dvc.repo import Repo

    for folder in ("stages", "pipeline"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "tests" / "fixtures" / "smoke", root / "tests" / "fixtures" / "smoke")
    with Repo() as repo:
        stages = list(repo.index.stages)
        for path in [Path(out.fs_path) for s in stages for out in s.outs] + [Path(d.fs_path) for s in stages for d in s.deps]:
            if path.exists() or path.name == "params.yaml":
                continue
            if path.suffix in (".json", ".html"):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("{}")
            else:
                path.mkdir(parents=True, exist_ok=True)
                (path / "dummy").write_text(path.name)
        repo.commit(None, force=True)
        assert repo.status() == {}  # the setup itself: dvc finds everything up to date


def test_nothing_to_do_then_only_what_changed_and_downstream(smoke_repo, fake_bin):
    _fill_and_commit(smoke_repo)
    result = submit()
    assert result.exit_code == 0, result.output
    assert "Nothing to do" in result.output and sbatch_calls(fake_bin) == []
    # The last job's check passes on an up-to-date repository...
    check = runner.invoke(app, ["slurm", "check", *stage_names()])
    assert check.exit_code == 0 and f"All {len(stage_names())} stages" in check.stdout

    # Language components' code changes: they and what reads them run, nothing upstream of them.
    with open(smoke_repo / "stages" / "train_lang.py", "a") as handle:
        handle.write("# changed\n")
    # ... and names what changed since it was recorded (and only that), or what is gone.
    check = runner.invoke(app, ["slurm", "check", "prepare_model", "train_lang_madx@xx", "train_task_bitfit@pos"])
    assert check.exit_code == 2 and check.stderr.count("\n") == 1
    assert "changed since their jobs recorded them: train_lang_madx@xx;" in check.stderr
    assert runner.invoke(app, ["slurm", "check", "train_lang_madx@zz"]).stderr.startswith("error: no longer in dvc.yaml: train_lang_madx@zz")
    result = submit()
    assert result.exit_code == 0, result.output
    calls = sbatch_calls(fake_bin)
    jobs = [call["job"] for call in calls]
    assert jobs[-1] == CHECK_JOB
    lang = {s for s in stage_names() if s.startswith("train_lang_")}
    assert lang <= set(jobs) and len(lang) == 12  # lt-sft, rand-sft, madx, mad-g-ls × en, xx, yy
    for untouched in ("download", "prepare_model", "train_generator", "train_task_full_ft@pos", "train_task_bitfit@pos",
                      "evaluate_bitfit@pos", "evaluate_dense@pos-head-only"):
        assert untouched not in jobs
    for downstream in ("train_task_lt_sft@pos", "train_task_madx@pos", "evaluate_lt_sft@pos-lt-sft", "overlap@pos", "report"):
        assert downstream in jobs
    for call in calls:
        if call["job"] in lang:
            assert call["after"] == set(), call  # their inputs are up to date: they start at once
    name_of = {call["id"]: call["job"] for call in calls}
    task = next(call for call in calls if call["job"] == "train_task_lt_sft@pos")
    assert {name_of[i] for i in task["after"]} == {"train_lang_lt_sft@en"}

    # A target: only what it needs (as `dvc repro TARGET`).
    (fake_bin / "sbatch.jsonl").unlink()
    assert submit("train_task_lt_sft@pos").exit_code == 0
    assert [call["job"] for call in sbatch_calls(fake_bin)] == ["train_lang_lt_sft@en", "train_task_lt_sft@pos", CHECK_JOB]


def test_sbatch_missing_is_one_line(smoke_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    result = submit()
    assert result.exit_code == 2
    assert result.stdout == "" and result.stderr.count("\n") == 1 and "sbatch: not found on PATH" in result.stderr
    assert not (smoke_repo / ".ltsft").exists()


def test_refused_submission_cancels_the_jobs_before_it(smoke_repo, fake_bin, monkeypatch):
    monkeypatch.setenv("FAKE_SBATCH_REFUSE", "3")
    result = submit("--partition", "nope")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    last = result.stderr
    refused = re.fullmatch(r"error: sbatch refused the job of (\S+): sbatch: error: invalid partition specified: nope; "
                           r"cancelled the 2 jobs submitted before it\n", last)
    assert refused and refused.group(1) in stage_names()  # the third stage of the plan, named
    assert json.loads((fake_bin / "scancel.jsonl").read_text()) == ["101", "102"]


def test_unknown_target_is_one_line(smoke_repo, fake_bin):
    result = submit("no_such_stage")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "no_such_stage" in result.stderr
    assert sbatch_calls(fake_bin) == []


# The pure planning on small graphs of its own.

ENV = Environment(Path("/repo"), Path("/venv/bin"))


def chain(*names: str, commands: bool = True) -> list[StageInfo]:
    return [StageInfo(name, (f"run {name}",) if commands else (), upstream=(prev,) if prev else ())
            for prev, name in zip((None, *names), names)]


def test_to_run_is_the_changed_stages_and_their_descendants_in_order():
    # a ─► b ─► c, and d alone; a data source s ─► e.
    stages = [*chain("a", "b", "c"), StageInfo("d", ("run d",)), StageInfo("s", ()),
              StageInfo("e", ("run e",), upstream=("s",))]
    assert [s.name for s in to_run(stages, {"b"})] == ["b", "c"]
    assert [s.name for s in to_run(stages, {"a", "d"})] == ["a", "b", "c", "d"]
    assert to_run(stages, set()) == []
    # A changed data source is no job, but what reads it runs.
    jobs = plan(stages, {"s"}, ENV)
    assert [job.name for job in jobs] == ["e", CHECK_JOB] and jobs[0].after == ()


def test_scripts_and_names():
    stage = StageInfo("sub/dvc.yaml:train@it's", ("python a.py", "python b.py"), wdir="sub", outs=("sub/out dir",))
    assert job_name(stage.name) == "sub_dvc.yaml_train@it_s"
    script = stage_script(stage, ENV)
    assert "rm -rf -- 'sub/out dir'" in script
    assert "cd sub\npython a.py\npython b.py\ncd /repo\n" in script  # commands in the stage's wdir
    assert """DVC_STAGE='sub/dvc.yaml:train@it'"'"'s'""" in script
    clash = [StageInfo("x/dvc.yaml:a", ("c",)), StageInfo("x_dvc.yaml_a", ("c",))]
    with pytest.raises(LtsftError, match="x/dvc.yaml:a, x_dvc.yaml_a"):
        plan(clash, {"x/dvc.yaml:a", "x_dvc.yaml_a"}, ENV)
