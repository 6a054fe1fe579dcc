"""`ltsft slurm submit`: the stages `dvc repro` would run, submitted as dependent sbatch jobs.

Reads DVC's own graph and status (so the plan is the one `dvc repro` follows), plans with
stages/slurm_plan.py, writes one job script per stage under .ltsft/slurm/ and submits them in
dependency order, each with ``--dependency=afterok:`` on the jobs of its upstream stages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.atomic import atomic_file
from pipeline.core.errors import LtsftError
from stages import layout
from stages.slurm_plan import (
    CHECK_JOB,
    Environment,
    Job,
    Resources,
    StageInfo,
    plan,
    sbatch_arguments,
)

SUBMITTED = re.compile(r"^(?:Submitted batch job )?(\d+)\b")  # plain or --parsable output


def read_pipeline(targets: Sequence[str] = ()) -> tuple[Path, list[StageInfo], set[str]]:
    """The repository root, its stages in dependency-first order (only TARGETS and what they
    need, when given), and the names of those that changed."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    # The functions `dvc repro` itself plans with: frozen stages cut from their inputs, the
    # same post-order walk, the same target collection.
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    try:
        with Repo() as repo, repo.lock:
            root = Path(repo.root_dir)
            if Path.cwd().resolve() != root.resolve():
                # Stage addresses are relative to the working directory; the jobs run at the root.
                raise LtsftError(f"run `ltsft slurm submit` from the repository root ({root})")
            graph = get_active_graph(repo.index.graph)
            order = plan_repro(graph, collect_stages(repo, targets) if targets else None)
            stages = [_stage_info(stage, graph, root) for stage in order]
            changed = {info.name for stage, info in zip(order, stages) if stage.changed()}
    except DvcException as err:
        raise LtsftError(f"dvc: {str(err).splitlines()[0]}") from None
    return root, stages, changed


def _stage_info(stage, graph, root: Path) -> StageInfo:
    commands = stage.cmd if isinstance(stage.cmd, list) else [stage.cmd] if stage.cmd else []
    outs = [os.path.relpath(out.fs_path, root) for out in stage.outs if out.is_in_repo and not out.persist]
    return StageInfo(
        name=stage.addressing,
        commands=tuple(commands),
        wdir=os.path.relpath(stage.wdir, root),
        outs=tuple(outs),
        upstream=tuple(upstream.addressing for upstream in graph.successors(stage)),
    )


def check(names: Sequence[str]) -> None:
    """The last job's check: every stage of the submission is recorded and unchanged, so
    `dvc repro` has nothing to do for them. One pass over DVC's index (`dvc status` with
    targets rebuilds it for each one: minutes for a paper-size plan)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo() as repo, repo.lock:
            stages = {stage.addressing: stage for stage in repo.index.stages}
            gone = [name for name in names if name not in stages]
            stale = [name for name in names if name in stages and stages[name].changed()]
    except DvcException as err:
        raise LtsftError(f"dvc: {str(err).splitlines()[0]}") from None
    if gone:
        raise LtsftError(f"no longer in dvc.yaml: {', '.join(gone)}; run `ltsft slurm submit` again")
    if stale:
        # Each job recorded its stage as it ended: a stage changed now had an input edited since.
        raise LtsftError(f"changed since their jobs recorded them: {', '.join(stale)}; run `ltsft slurm submit` again")
    print(f"All {len(names)} stages of this submission are up to date: `dvc repro` has nothing to do for them.")


def run(targets: Sequence[str], resources: Resources, dry_run: bool) -> list[tuple[str, str]]:
    """Plan, print, and (unless ``dry_run``) submit; returns (job, id) pairs as submitted."""
    root, stages, changed = read_pipeline(targets)
    jobs = plan(stages, changed, Environment(root, Path(sys.executable).parent))
    if not jobs:
        print("Nothing to do: every stage is up to date (`dvc status` agrees); no job submitted.")
        return []
    folder = root / layout.SLURM
    sbatch = shutil.which("sbatch")
    if not dry_run and sbatch is None:
        raise LtsftError("sbatch: not found on PATH (not a SLURM login node?); `--dry-run` shows the plan without it")
    _print_plan(jobs)
    if dry_run:
        print("\nThe sbatch commands, in order (<job> stands for that job's id; dry run: nothing written or submitted):")
        for job in jobs:
            placeholders = [f"<{name}>" for name in job.after]
            print("sbatch " + " ".join(sbatch_arguments(job, folder, resources, placeholders, root)))
        return []
    _write_scripts(folder, jobs)
    submitted = _submit(sbatch, jobs, folder, resources, root)
    with atomic_file(folder / "jobs.tsv") as handle:
        handle.write("".join(f"{job}\t{job_id}\n" for job, job_id in submitted))
    last = submitted[-1][1]
    print(f"\n{len(submitted)} jobs submitted; logs and scripts in {layout.SLURM}/, ids in {layout.SLURM}/jobs.tsv.")
    print(f"Each job records its stage in dvc.lock as it ends; the last, {last} ({CHECK_JOB}), checks that "
          "`dvc repro` then has nothing to do.")
    return submitted


def _print_plan(jobs: list[Job]) -> None:
    width = max(len(job.name) for job in jobs)
    print(f"Plan: {len(jobs) - 1} stage jobs, then {CHECK_JOB} (checks that dvc.lock records them all), "
          "in submission order:")
    for job in jobs:
        if job.name == CHECK_JOB:
            after = f"after all {len(job.after)}"
        else:
            after = "after " + ", ".join(job.after) if job.after else ""
        print(f"  {job.name:<{width}}  {after}".rstrip())


def _write_scripts(folder: Path, jobs: list[Job]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.sh"):  # sbatch copied them at submission: old ones only mislead
        stale.unlink()
    for job in jobs:
        with atomic_file(folder / f"{job.name}.sh") as handle:
            handle.write(job.script)
        os.chmod(folder / f"{job.name}.sh", 0o755)


def _submit(sbatch: str, jobs: list[Job], folder: Path, resources: Resources, root: Path) -> list[tuple[str, str]]:
    ids: dict[str, str] = {}
    for job in jobs:
        arguments = sbatch_arguments(job, folder, resources, [ids[name] for name in job.after], root)
        result = subprocess.run([sbatch, *arguments], capture_output=True, text=True, check=False)
        found = SUBMITTED.search(result.stdout.strip())
        if result.returncode != 0 or not found:
            _cancel(list(ids.values()))
            said = (result.stderr.strip() or result.stdout.strip() or f"exit code {result.returncode}").splitlines()[-1]
            cancelled = f"; cancelled the {len(ids)} jobs submitted before it" if ids else ""
            raise LtsftError(f"sbatch refused the job of {job.name}: {said}{cancelled}")
        ids[job.name] = found.group(1)
        print(f"submitted {ids[job.name]:>8}  {job.name}")
    return list(ids.items())


def _cancel(job_ids: list[str]) -> None:
    """Take back a half-submitted plan: its first jobs would otherwise run (and record themselves) alone."""
    scancel = shutil.which("scancel")
    if job_ids and scancel:
        subprocess.run([scancel, *job_ids], capture_output=True, check=False)
