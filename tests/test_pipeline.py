"""The smoke pipeline end to end through the `ltsft` CLI, in a scratch directory.

Budgets are cut to a few steps so the whole file runs in well under a minute; the stages
run in-process (as `dvc repro` would run them as commands) to avoid import overhead.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.methods import METHODS, language_methods, task_methods
from stages.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def smoke_params(**overrides) -> dict:
    params = yaml.safe_load((REPO / "presets" / "smoke.yaml").read_text())
    for phase in ("lang_sft", "task_sft"):
        params[phase]["phase1"] = {"steps": 3}
        params[phase]["phase2"] = {"steps": 3}
    for section in (params["head_only"], params["full_ft"], params["bitfit"], params["madx"]["language"],
                    params["madx"]["task"], params["mad_g"]["generator"]):
        section["phase"] = {"steps": 3}
    params["data"]["root"] = str(REPO / "tests" / "fixtures" / "smoke")
    for dotted, value in overrides.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return params


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    shutil.copytree(REPO / "presets", tmp_path / "presets")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_params(params: dict) -> None:
    Path("params.yaml").write_text(yaml.safe_dump(params))


def ltsft(*args: str):
    return runner.invoke(app, list(args))


# Every registered method runs: the lists come from the registry, not from this file (but
# methods over released files, whose stages iterate `published.*` lists, only in the paper presets).
LANG_METHODS = tuple(language_methods())
TASK_METHODS = tuple(m for m in task_methods() if METHODS[m].stage_tasks == "tasks")
REPORTED = {variant.name for name in TASK_METHODS for variant in METHODS[name].variants}


def rows_of(path: str) -> list[dict]:
    return json.loads(Path(path).read_text())["rows"]


def run_pipeline(params: dict) -> list[dict]:
    """Every stage of dvc.yaml, in order; returns the lt-sft results rows."""
    write_params(params)
    steps = [("download",), ("prepare-model",), ("mad-g-text",), ("train-generator",)]
    steps += [("train-lang", lang, "--method", m) for m in LANG_METHODS for lang in params["languages"]]
    steps += [("train-task", "pos", "--method", m) for m in TASK_METHODS]
    steps += [("evaluate", "pos", "--method", m) for m in TASK_METHODS]
    steps += [("ablate", "pos", "--k", "5000"), ("ablate-l1", "pos", "--l1", "0.0"), ("overlap", "pos"), ("report",)]
    for step in steps:
        result = ltsft(*step)
        assert result.exit_code == 0, (step, result.output, result.exception)
    return rows_of("results/pos/lt-sft.json")


def test_smoke_pipeline_end_to_end_and_deterministic(workdir):
    rows = run_pipeline(smoke_params())
    assert {(r["method"], r["lang"]) for r in rows} == {
        (m, lang) for m in ("lt-sft", "lt-sft-task-only") for lang in ("xx", "yy")
    }
    assert all(r["task"] == "pos" and r["metric"] == "accuracy" and 0 <= r["value"] <= 1 for r in rows)
    every = [r for m in TASK_METHODS for r in rows_of(f"results/pos/{m}.json")]
    assert {(r["method"], r["lang"]) for r in every} == {(m, lang) for m in REPORTED for lang in ("xx", "yy")}
    by_method = {r["method"]: r for r in every if r["lang"] == "xx"}
    k, head = 20000, 64 * 17 + 17  # the smoke model is 64 wide; 17 UPOS tags
    assert by_method["lt-sft"]["params_lang"] == k and by_method["lt-sft"]["params_task"] == k + head
    assert by_method["lt-sft-task-only"]["params_lang"] == 0
    assert by_method["rand-sft"]["params_task"] == k + head
    assert by_method["head-only"]["params_task"] == head and by_method["head-only"]["params_lang"] == 0
    assert by_method["full-ft"]["params_task"] == by_method["dense-composed"]["params_task"] > k + head
    madx_lang = 2 * (2 * 64 * 32 + 32 + 64) + 2 * (2 * 32 * 16 + 16 + 32)  # 2 layers rf 2 + invertible
    madx_task = 2 * (2 * 64 * 4 + 4 + 64) + head  # 2 layers rf 16
    assert by_method["madx"]["params_lang"] == madx_lang and by_method["madx"]["params_task"] == madx_task
    assert by_method["madx-task-only"]["params_lang"] == 0
    # MAD-G: generated adapters (2 layers rf 16, no invertible) train nothing per language; the
    # generator, D·A + T·D + D with D = 32 and T = 289, is counted once; mad-g-ls trains the adapter.
    generated = 2 * (2 * 64 * 4 + 4 + 64)
    assert by_method["mad-g"]["params_lang"] == 0 and by_method["mad-g"]["params_task"] == madx_task
    assert by_method["mad-g"]["params_shared"] == by_method["mad-g-ls"]["params_shared"] == 32 * generated + 289 * 32 + 32
    assert by_method["mad-g-ls"]["params_lang"] == generated and "params_shared" not in by_method["madx"]
    assert by_method["lt-sft"]["k"] == k and "k" not in by_method["full-ft"]
    biases = 2 * (4 * 64 + 128 + 64)  # per layer: query, key, value, attention output; FFN in (128) and out
    assert by_method["bitfit"]["k"] == biases and by_method["bitfit"]["params_task"] == biases + head
    sweep = rows_of("results/pos/sparsity/k5000.json")
    assert {(r["method"], r["k"], r["ablation"]) for r in sweep} == {
        (m, 5000, "sparsity") for m in ("lt-sft", "lt-sft-task-only", "rand-sft")}
    l1 = rows_of("results/pos/l1/l1_0.0.json")
    assert {(r["method"], r["lang"], r["l1_lambda"], r["ablation"]) for r in l1} == {
        ("lt-sft", lang, 0.0, "l1") for lang in ("xx", "yy")}
    # At the main run's λ the ablation retrains the same diffs by the same code: the same scores.
    assert ltsft("ablate-l1", "pos", "--l1", "0.1").exit_code == 0
    main = {r["lang"]: r["value"] for r in rows if r["method"] == "lt-sft"}
    assert {r["lang"]: r["value"] for r in rows_of("results/pos/l1/l1_0.1.json")} == main
    overlap = json.loads(Path("results/pos/overlap.json").read_text())
    assert overlap["layers"][0] == "embeddings" and set(overlap["langs"]) == {"xx", "yy"}
    assert all(0 <= s <= min(a, b) for lang in overlap["langs"].values()
               for s, a, b in zip(lang["shared"], lang["lang_entries"], lang["task_entries"]))
    html = Path("reports/index.html").read_text()
    assert all(method in html for method in REPORTED) and "POS" in html
    assert "λ = 0.0" in html  # the L1 ablation's table
    # Wall times come from the run logs beside the outputs, never from the outputs themselves.
    assert Path("runs/results/pos/lt-sft.json").is_file() and Path("runs/diffs/lt-sft/lang/xx.json").is_file()
    assert "components behind this table" in html and "no run logs" not in html
    assert "wall_seconds" not in Path("results/pos/lt-sft.json").read_text()
    assert list(Path("reports/plots").glob("*.png")) and list(Path("reports/plot-data").glob("*.csv"))
    metrics = json.loads(Path("reports/metrics.json").read_text())
    assert set(metrics["pos"]["lt-sft"]) == {"xx", "yy", "avg"}

    info = ltsft("diff", "info", "diffs/lt-sft/task/pos", "--json")
    assert info.exit_code == 0, info.output
    facts = json.loads(info.output)
    assert {"nnz", "k", "density", "file_bytes", "sparse_bytes_per_entry", "base_fingerprint"} <= set(facts)
    assert 0 < facts["nnz"] <= facts["k"] == 20000

    head_only = json.loads(ltsft("diff", "info", "diffs/head-only/task/pos", "--json").output)
    assert head_only["nnz"] == 0 and head_only["dense_tensors"] == ["classifier.bias", "classifier.weight"]
    rand = json.loads(ltsft("diff", "info", "diffs/rand-sft/lang/xx", "--json").output)
    assert 0 < rand["nnz"] <= rand["k"] == 20000

    # Same seed, same everything: bit-identical results.
    first = {m: rows_of(f"results/pos/{m}.json") for m in TASK_METHODS}
    shutil.rmtree("diffs"), shutil.rmtree("adapters"), shutil.rmtree("results")
    run_pipeline(smoke_params())
    assert {m: rows_of(f"results/pos/{m}.json") for m in TASK_METHODS} == first


@pytest.mark.parametrize(
    ("override", "command", "expected"),
    [
        ({"sparsity.k": 0}, ("download",), "sparsity.k: must be an integer >= 1 (got 0)"),
        ({"sparsity.k": -5}, ("train-lang", "en"), "sparsity.k"),
        ({"sparsity.task_k": "many"}, ("train-task", "pos"), "sparsity.task_k"),
        ({"tasks.pos.targets": ["xx", "zz"]}, ("download",), "tasks.pos.targets: unknown language 'zz'"),
        ({"tasks": {"parsing": {"source": "en", "targets": ["xx"]}}}, ("download",), "tasks.parsing: unknown task"),
        ({"lang_sft.phase1": {"steps": 0}}, ("train-lang", "en"), "lang_sft.phase1.steps"),
        ({"data.root": "/nonexistent/fixtures"}, ("download",), "data.root"),
        ({"languages.yy": {"name": "Y (a", "b)": None}}, ("download",), "languages.yy: unknown setting 'b)'"),
        ({"tasks.pos.overrides": {"sparsity": {"k": 5}}}, ("download",), "tasks.pos.overrides: cannot override 'sparsity'"),
        ({"tasks.pos.overrides": {"task_sft": {"phase1": {"steps": 0}}}}, ("download",),
         "tasks.pos.overrides: task_sft.phase1.steps: must be an integer >= 1"),
        ({"data.max_test_sentences": 0}, ("download",), "data.max_test_sentences"),
    ],
)
def test_bad_params_fail_with_one_line(workdir, override, command, expected):
    write_params(smoke_params(**override))
    result = ltsft(*command)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.output
    assert "Traceback" not in result.output
    assert not Path("data").exists() and not Path("diffs").exists()


def test_unknown_language_argument_and_missing_inputs(workdir):
    write_params(smoke_params())
    result = ltsft("train-lang", "fr")
    assert result.exit_code == 2 and "languages.fr" in result.output
    result = ltsft("train-lang", "en")  # nothing downloaded yet
    assert result.exit_code == 2 and "data/text/en/train.txt: not found" in result.output or "models/base" in result.output


def test_missing_fixture_file_is_named(workdir, tmp_path):
    root = tmp_path / "fixtures"
    shutil.copytree(REPO / "tests" / "fixtures" / "smoke", root)
    (root / "pos" / "yy" / "test.conllu").unlink()
    write_params(smoke_params(**{"data.root": str(root)}))
    result = ltsft("download")
    assert result.exit_code == 2
    assert "pos/yy/test.conllu: not found" in result.output
    assert not Path("data").exists()


def test_k_larger_than_model_fails_before_training(workdir):
    run_params = smoke_params(**{"sparsity.lang_k": 10**9})
    write_params(run_params)
    assert ltsft("download").exit_code == 0
    assert ltsft("prepare-model").exit_code == 0
    result = ltsft("train-lang", "en")
    assert result.exit_code == 2
    assert "sparsity.lang_k: K=1000000000 exceeds the model's" in result.output
    assert not Path("diffs").exists()


def test_preset_command(workdir):
    assert ltsft("preset", "smoke").exit_code == 0
    assert yaml.safe_load(Path("params.yaml").read_text())["preset"] == "smoke"
    result = ltsft("preset", "nope")
    assert result.exit_code == 2 and "preset 'nope'" in result.output and "smoke" in result.output


def test_presets_are_valid():
    from pipeline.core.config import parse_params

    for preset in (REPO / "presets").glob("*.yaml"):
        parse_params(yaml.safe_load(preset.read_text()))
    assert yaml.safe_load((REPO / "params.yaml").read_text())["preset"] in {p.stem for p in (REPO / "presets").glob("*.yaml")}


def test_help_everywhere():
    for command in ([], ["download"], ["mad-g-text"], ["train-generator"], ["train-lang"], ["train-task"], ["evaluate"],
                    ["diff", "info"], ["bench"], ["preset"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_task_overrides_merge_only_into_that_task():
    from pipeline.core.config import parse_params

    tree = smoke_params(**{"tasks.pos.overrides": {"task_sft": {"phase2": {"steps": 9}, "head_learning_rate": 0.01}}})
    params = parse_params(tree)
    assert params.task_sft.phase2.steps == 3 and params.task_sft.head_learning_rate is None
    merged = params.for_task("pos")
    assert merged.task_sft.phase2.steps == 9 and merged.task_sft.head_learning_rate == 0.01
    assert merged.task_sft.phase1.steps == 3 and merged.full_ft == params.full_ft


def test_evaluation_splits_are_capped_and_the_manifest_says_so(workdir):
    write_params(smoke_params(**{"data.max_test_sentences": 5, "data.max_dev_sentences": 4}))
    assert ltsft("download").exit_code == 0
    from pipeline.formats.conllu import read_conllu

    assert len(read_conllu("data/pos/xx/test.conllu")) == 5 and len(read_conllu("data/pos/en/dev.conllu")) == 4
    assert len(read_conllu("data/pos/en/train.conllu")) > 5
    manifest = json.loads(Path("data/manifest.json").read_text())
    assert manifest["provenance"]["capped"]["pos/xx/test"].startswith("first 5 of ")
