"""dvc.yaml is generated from the method registry and stages/layout.py: check that it is
current, and — through DVC's own resolution of it against params.yaml — that every method
has its stages, writing the layout's paths, depending on exactly the code they run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.core.config import load_params
from pipeline.methods import METHODS, language_methods, task_methods
from stages import dvc_yaml, layout

REPO = Path(__file__).resolve().parents[1]
REPORTING = {"pipeline/report.py", "pipeline/plots.py", "pipeline", "pipeline/"}


def test_dvc_yaml_is_generated_from_the_registry():
    run_methods = load_params(REPO / "params.yaml").run_methods
    assert (REPO / "dvc.yaml").read_text() == dvc_yaml.render(run_methods), "run `ltsft dvc-yaml` and commit dvc.yaml"


def test_run_methods_writes_stages_for_those_methods_only():
    chosen = ["lt-sft", "rand-sft", "madx", "dense-composed"]
    text = dvc_yaml.render(chosen)
    for name, method in METHODS.items():
        ident = name.replace("-", "_")
        has_task_stage = f"  train_task_{ident}:" in text
        assert has_task_stage == (name in chosen and not method.imported), name
        assert (f"--method {name}" in text or "--method ${item.method}" in text) or name not in chosen
    assert "evaluate_dense:" not in text and "head-only" not in text and "bitfit" not in text
    assert "matrix: {task: \"${tasks}\", method: [lt-sft, rand-sft]}" in text  # the group keeps its matrix
    assert dvc_yaml.render(None) == dvc_yaml.render(list(METHODS))  # absent: every registered method


def test_preset_writes_dvc_yaml_for_its_methods(tmp_path, monkeypatch):
    from stages import preset

    (tmp_path / "presets").mkdir()
    demo = (REPO / "presets" / "demo.yaml").read_text()
    (tmp_path / "presets" / "all.yaml").write_text(_without_run_methods(demo))
    (tmp_path / "presets" / "four.yaml").write_text(_without_run_methods(demo) +
                                                    "run_methods: [lt-sft, rand-sft, madx, dense-composed]\n")
    monkeypatch.chdir(tmp_path)
    preset.run("four")
    assert (tmp_path / "dvc.yaml").read_text() == dvc_yaml.render(["lt-sft", "rand-sft", "madx", "dense-composed"])
    preset.run("all")
    assert (tmp_path / "dvc.yaml").read_text() == dvc_yaml.render(None)


def _without_run_methods(text: str) -> str:
    """A preset's text with its ``run_methods:`` entry (one flow-style line) removed."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("run_methods:")) + "\n"


def test_dvc_yaml_is_short():
    # A guard against per-method copies (one foreach block per method, matrices where stages
    # differ only in the method's name): about 10 lines per stage block at most.
    text = (REPO / "dvc.yaml").read_text()
    blocks = sum(1 for line in text.splitlines() if line.startswith("  ") and not line.startswith("   ")
                 and line.rstrip().endswith(":") and not line.lstrip().startswith("#"))
    assert len(text.splitlines()) <= 10 * blocks + 20


@pytest.fixture(scope="module")
def resolved() -> dict[tuple[str, ...], dict]:
    """DVC's own view of dvc.yaml with the repository's params.yaml: {command words: stage}."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        found = {}
        for stage in repo.index.stages:
            words = tuple(stage.cmd.split())
            found[words] = {"name": stage.addressing, "deps": [str(d.def_path) for d in stage.deps],
                            "outs": [str(o.def_path) for o in stage.outs],
                            "params": sorted(key for d in stage.deps if hasattr(d, "params") for key in d.params)}
        return found


@pytest.fixture(scope="module")
def params():
    return load_params(REPO / "params.yaml")


def path(method: str, kind: str, name: str) -> str:
    return str(layout.COMPONENTS.component(method, kind, name))


def code_deps(method) -> set[str]:
    return {f"pipeline/methods/{part}" for part in method.code}


def test_every_language_method_trains_every_language(resolved, params):
    for name in set(language_methods()) & set(params.selected_methods()):
        method = METHODS[name]
        also = [m for m, other in METHODS.items() if other.language_from == name and m != name]
        for lang in params.languages:
            stage = resolved[("ltsft", "train-lang", lang, "--method", name)]
            outs = [path(m, "lang", lang) for m in [name, *also]]
            assert stage["outs"] == [*outs, str(layout.curves_dir(outs[0]))], stage["name"]
            assert code_deps(method) <= set(stage["deps"]) and not REPORTING & set(stage["deps"]), stage["name"]
            assert set(method.language_sections) <= set(stage["params"]), stage["name"]


def test_every_task_method_trains_over_its_source_component(resolved, params):
    for name in set(task_methods()) & set(params.selected_methods()):
        method = METHODS[name]
        for task in method.stage_task_names(params):
            stage = resolved[("ltsft", "train-task", task, "--method", name)]
            outs = [path(name, kind, task) for kind in ("task", *method.task_extras)]
            assert stage["outs"] == [*outs, str(layout.curves_dir(outs[0]))], stage["name"]
            # The source component, or (stages over a list of task names) its method's whole store.
            sources = method.task_inputs(layout.COMPONENTS, task, params.tasks[task].source)
            assert all({str(p), str(p.parent)} & set(stage["deps"]) for p in sources), stage["name"]
            assert code_deps(method) <= set(stage["deps"]) and not REPORTING & set(stage["deps"]), stage["name"]
            # Its own params sections, and no other method's.
            others = {s for m in METHODS.values() for s in m.sections} - set(method.sections)
            assert set(method.sections) <= set(stage["params"]) and not others & set(stage["params"]), stage["name"]


def test_every_method_is_evaluated_into_its_results_file(resolved, params):
    for name in params.selected_methods():
        method = METHODS[name]
        for task in method.stage_task_names(params):
            stage = resolved[("ltsft", "evaluate", task, "--method", name)]
            assert stage["outs"] == [str(layout.results_file(task, name))], stage["name"]
            assert path(name, "task", task) in stage["deps"] and not REPORTING & set(stage["deps"]), stage["name"]


def test_ablation_overlap_and_report_stages(resolved, params):
    task = params.ablation.task
    for k in params.ablation.k:
        stage = resolved[("ltsft", "ablate", task, "--k", str(k))]
        out = layout.sparsity_file(task, k)
        assert stage["outs"] == [str(out), str(layout.curves_dir(out))]
        assert path("lt-sft", "task-phase1", task) in stage["deps"]
    for task in params.tasks:
        assert resolved[("ltsft", "overlap", task)]["outs"] == [str(layout.overlap_file(task))]
    report = resolved[("ltsft", "report")]
    assert set(report["outs"]) >= {"reports/index.html", "reports/plots", "reports/plot-data"}
    assert str(layout.CURVES) in report["deps"]  # the report draws the training curves
    assert yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"] == ["reports/plots"]


def test_only_the_report_depends_on_reporting_code(resolved):
    users = {stage["name"] for stage in resolved.values() if REPORTING & set(stage["deps"])}
    assert users == {"report"}
