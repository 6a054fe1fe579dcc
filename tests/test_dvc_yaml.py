"""dvc.yaml spells the paths that stages/layout.py computes: check that the two agree, and
that every method the stages know is a DVC stage."""

from __future__ import annotations

from pathlib import Path

import yaml

from stages import layout
from stages.evaluate import VARIANTS
from stages.train_lang import METHODS as LANG_METHODS
from stages.train_task import TRAINERS, source_component
from stages.config import TaskSpec

REPO = Path(__file__).resolve().parents[1]
KEY, SOURCE = "${key}", "${item.source}"


def stages() -> dict:
    return {name: stage.get("do", stage) for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items()}


def by_command(prefix: str) -> dict[str, dict]:
    """{--method value: stage body} for the stages whose command starts with ``prefix``."""
    found = {}
    for body in stages().values():
        if body["cmd"].startswith(prefix):
            method = body["cmd"].split("--method ")[1] if "--method" in body["cmd"] else "lt-sft"
            found[method] = body
    return found


def lang_outputs(method: str) -> set[str]:
    if method == "madx":
        return {str(layout.lang_adapter(KEY))}
    outs = {str(layout.lang_diff(KEY, method))}
    return outs | ({str(layout.lang_diff(KEY, "dense-composed"))} if method == "lt-sft" else set())


def test_every_language_method_is_a_stage_writing_the_layout_paths():
    found = by_command("ltsft train-lang")
    assert set(found) == set(LANG_METHODS)
    for method, body in found.items():
        assert set(body["outs"]) == lang_outputs(method), method


def test_every_task_method_is_a_stage_with_its_source_component_as_dependency():
    found = by_command("ltsft train-task")
    assert set(found) == set(TRAINERS)
    spec = TaskSpec("${key}", SOURCE, ())
    for method, body in found.items():
        out = layout.task_adapter(KEY) if method == "madx" else layout.task_diff(KEY, method)
        extra = [str(layout.task_phase1(KEY))] if method == "lt-sft" else []  # kept for the sparsity sweep
        assert body["outs"] == [str(out), *extra], method
        assert {str(p) for p in source_component(method, spec)} <= set(body["deps"]), method


def test_every_method_is_evaluated_into_its_results_file():
    found = by_command("ltsft evaluate")
    assert set(found) == set(VARIANTS)
    for method, body in found.items():
        key = "${item}" if method == "lt-sft-published" else KEY  # a list of task names, not the tasks dict
        assert body["outs"] == [str(layout.results_file(key, method))], method


def test_published_stages_write_the_layout_paths():
    bodies = {name: body for name, body in stages().items() if name.startswith("import_published")}
    assert bodies["import_published_lang"]["outs"] == [str(layout.lang_diff("${item}", "lt-sft-published"))]
    assert bodies["import_published_task"]["outs"] == [str(layout.task_diff("${item}", "lt-sft-published"))]


def test_ablation_overlap_and_report_stages():
    found = stages()
    assert found["ablate_sparsity"]["outs"] == [str(layout.sparsity_file("${ablation.task}", "${item}"))]
    assert str(layout.task_phase1("${ablation.task}")) in found["ablate_sparsity"]["deps"]
    assert str(layout.task_phase1(KEY)) in found["train_task"]["outs"]
    assert found["overlap"]["outs"] == [str(layout.overlap_file(KEY))]
    assert set(found["report"]["outs"]) == {"reports/index.html", "reports/plots", "reports/plot-data"}
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    assert plots == ["reports/plots"]
