"""Training curves (pipeline/core/curves.py): every training run's log history per phase,
kept under curves/<output> as TSVs with the grad norm SparseAdamW computed, declared as DVC
plots and drawn in the report."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from pipeline import plots
from pipeline.core import curves
from pipeline.core.best_checkpoint import DevCheck
from pipeline.core.errors import LtsftError
from pipeline.core.sparse_adamw import SparseAdamW
from pipeline.methods import METHODS, language_methods, task_methods
from pipeline.methods.lt_sft.lottery import LotteryConfig, PhaseBudget, train_lt_sft
from pipeline.report import render_report
from pipeline.tasks.pos import PosTagging
from stages import layout
from stages.cli import app

REPO = Path(__file__).resolve().parents[1]
TRAIN_FILES = {f"{metric}.tsv" for metric in curves.TRAIN_METRICS}


@pytest.fixture(scope="module")
def features(tiny_config) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    out = []
    for _ in range(16):
        length = int(torch.randint(4, 12, (1,), generator=generator))
        ids = torch.randint(5, tiny_config.vocab_size, (length,), generator=generator).tolist()
        labels = torch.randint(0, tiny_config.num_labels, (length,), generator=generator).tolist()
        out.append({"input_ids": ids, "attention_mask": [1] * length, "labels": labels})
    return out


@pytest.fixture(scope="module")
def tagger0(tiny_config):
    from transformers import BertForTokenClassification

    torch.manual_seed(0)
    return BertForTokenClassification(tiny_config)


def lottery_config(steps: int = 4, **overrides) -> LotteryConfig:
    settings = {"k": 300, "phase1": PhaseBudget(steps=steps), "phase2": PhaseBudget(steps=steps),
                "learning_rate": 1e-2, "batch_size": 4, "l1_lambda": 0.1, "max_grad_norm": 0.5, "seed": 5,
                "progress": False}
    return LotteryConfig(**(settings | overrides))


def test_grad_norms_in_the_log_are_those_sparse_adamw_computed(monkeypatch, tagger0, features, tiny_tokenizer):
    """Every logged step carries the pre-clip norm SparseAdamW computed at that step (over
    exactly the trainable entries, L1 term included); loss and learning rate are there too."""
    norms: list[float] = []
    real_step = SparseAdamW.step

    def spy(self, closure=None):
        out = real_step(self, closure)
        norms.append(float(self.grad_norm))
        return out

    monkeypatch.setattr(SparseAdamW, "step", spy)
    result = train_lt_sft(copy.deepcopy(tagger0), features, PosTagging().collator(tiny_tokenizer), lottery_config())
    found = curves.from_history(result.log)
    assert list(found) == ["iter1-phase1", "iter1-phase2"]
    for i, phase in enumerate(found):
        assert set(found[phase]) == set(curves.TRAIN_METRICS)
        # 4 steps per phase: the Trainer logs every step (fewer steps than CURVE_POINTS).
        assert [step for step, _ in found[phase]["grad_norm"]] == [1, 2, 3, 4]
        assert [value for _, value in found[phase]["grad_norm"]] == norms[4 * i:4 * i + 4]
        assert all(value > 0 for value in norms)
        assert all(value > 0 for _, value in found[phase]["learning_rate"])
    # The norms are before clipping: with max_grad_norm 0.5, the unclipped ones exceed it.
    assert max(norms) > 0.5


def test_the_norm_changes_no_trained_number(tagger0, features, tiny_tokenizer):
    """Recording the norm is a read: the same diff as clipping without keeping it (the
    clipping coefficient is computed from the same tensor), and the same with clipping off."""
    collator = PosTagging().collator(tiny_tokenizer)
    first = train_lt_sft(copy.deepcopy(tagger0), features, collator, lottery_config(max_grad_norm=0.0))
    second = train_lt_sft(copy.deepcopy(tagger0), features, collator, lottery_config(max_grad_norm=0.0))
    for name in first.diff.values:
        assert torch.equal(first.diff.values[name], second.diff.values[name])
    assert curves.from_history(first.log) == curves.from_history(second.log)
    assert all(value > 0 for _, value in curves.from_history(first.log)["iter1-phase2"]["grad_norm"])


def test_dev_scores_join_the_curves_and_summaries_and_wall_clock_fields_do_not(tagger0, features, tiny_tokenizer):
    budget = PhaseBudget(steps=4, eval_every=2)
    dev = DevCheck(lambda model: {"accuracy": 0.25}, "accuracy")
    result = train_lt_sft(copy.deepcopy(tagger0), features, PosTagging().collator(tiny_tokenizer),
                          lottery_config(phase1=budget, phase2=budget), dev=dev)
    assert any("train_runtime" in entry for entry in result.log)  # in the history …
    found = curves.from_history(result.log)
    for phase in found.values():
        assert phase["eval_accuracy"] == [(2, 0.25), (4, 0.25)]
        assert set(phase) == {*curves.TRAIN_METRICS, "eval_accuracy"}  # … never in the curves


def test_write_and_read_round_trip_and_bad_files_fail_in_one_line(tmp_path):
    found = {"p1": {"loss": [(1, 2.5), (2, 0.1 + 0.2)], "eval_loss": [(2, float("nan"))]}, "p2": {}}
    curves.write(found, tmp_path / "c")
    assert (tmp_path / "c" / "p1" / "loss.tsv").read_text() == "step\tloss\n1\t2.5\n2\t0.30000000000000004\n"
    back = curves.read(tmp_path / "c")
    assert back["p1"]["loss"] == found["p1"]["loss"] and str(back["p1"]["eval_loss"][0][1]) == "nan"
    curves.write({}, tmp_path / "c")  # replaces: an empty folder, still there for DVC
    assert (tmp_path / "c").is_dir() and not list((tmp_path / "c").iterdir())
    bad = tmp_path / "bad" / "p1"
    bad.mkdir(parents=True)
    (bad / "loss.tsv").write_text("epoch\tloss\n1\t2\n")
    with pytest.raises(LtsftError, match=r"bad/p1/loss.tsv: not a curve file"):
        curves.read(tmp_path / "bad")
    with pytest.raises(LtsftError, match="phase name"):
        curves.write({"a/b": {}}, tmp_path / "d")


def test_the_mlm_head_warm_up_returns_its_curve(make_mlm, tiny_tokenizer):
    """prepare_model's warm-up (e5) hands its log history back beside its dev losses."""
    from pipeline.core.config import DenseSpec
    from pipeline.tasks.mlm import warm_up_head

    text = [line for path in sorted((REPO / "tests" / "fixtures" / "smoke" / "text").glob("*.txt"))
            for line in path.read_text(encoding="utf-8").splitlines()][:40]
    spec = DenseSpec(phase=PhaseBudget(steps=3), batch_size=8, learning_rate=1e-3, max_grad_norm=1.0, max_length=32)
    report, log = warm_up_head(make_mlm(seed=0), tiny_tokenizer, text[:32], text[32:], spec, seed=1, eval_batch_size=8)
    assert report["steps"] == 3 and report["dev_loss_after"] > 0
    found = curves.from_history(log)
    assert list(found) == ["mlm-head-warmup"]
    assert [step for step, _ in found["mlm-head-warmup"]["grad_norm"]] == [1, 2, 3]
    assert all(value > 0 for _, value in found["mlm-head-warmup"]["grad_norm"])


# --- through the stages, in a scratch directory ---------------------------------------------

runner = CliRunner()


def ltsft(*args: str) -> None:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)


def steps_of(path: Path) -> list[int]:
    header, *rows = path.read_text().splitlines()
    assert header == f"step\t{path.stem}", path
    return [int(row.split("\t")[0]) for row in rows]


@pytest.fixture
def smoke(tmp_path, monkeypatch):
    """The smoke preset with a few steps per phase, and the model built."""
    params = yaml.safe_load((REPO / "presets" / "smoke.yaml").read_text())
    for phase in ("lang_sft", "task_sft"):
        params[phase]["phase1"] = {"steps": 3}
        params[phase]["phase2"] = {"steps": 3, "eval_every": 2}  # a dev metric in the curves
    for section in (params["full_ft"], params["madx"]["language"]):
        section["phase"] = {"steps": 3}
    params["data"]["root"] = str(REPO / "tests" / "fixtures" / "smoke")
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump(params))
    ltsft("download")
    ltsft("prepare-model")
    return tmp_path


@pytest.mark.slow
def test_stages_write_curves_beside_their_components_deterministically_and_the_report_draws_them(smoke):
    ltsft("train-lang", "en", "--method", "lt-sft")
    ltsft("train-lang", "en", "--method", "madx")
    ltsft("train-task", "pos", "--method", "full-ft")
    ltsft("train-task", "pos", "--method", "lt-sft")
    ltsft("ablate-l1", "pos", "--l1", "0.0")  # retrains the targets' language diffs, keeps their curves

    # The warm-up's folder exists even when nothing was warmed up (tiny model): a DVC output.
    assert layout.curves_dir(layout.BASE_MODEL).is_dir()
    lt_sft = layout.curves_dir(layout.COMPONENTS.component("lt-sft", "lang", "en"))
    assert sorted(p.name for p in lt_sft.iterdir()) == ["iter1-phase1", "iter1-phase2"]
    assert {p.name for p in (lt_sft / "iter1-phase1").iterdir()} == TRAIN_FILES
    assert {p.name for p in (lt_sft / "iter1-phase2").iterdir()} == TRAIN_FILES | {"eval_loss.tsv"}
    assert steps_of(lt_sft / "iter1-phase2" / "eval_loss.tsv") == [2, 3]
    madx = layout.curves_dir(layout.COMPONENTS.component("madx", "lang", "en"))
    full_ft = layout.curves_dir(layout.COMPONENTS.component("full-ft", "task", "pos"))
    assert [p.name for p in madx.iterdir()] == ["madx-language"]
    assert [p.name for p in full_ft.iterdir()] == ["full-ft"]
    l1 = layout.curves_dir(layout.l1_file("pos", 0.0))
    assert sorted(p.name for p in l1.iterdir()) == [f"{lang}-iter1-phase{i}" for lang in ("xx", "yy") for i in (1, 2)]
    files = sorted(layout.CURVES.glob("**/*.tsv"))
    for path in files:
        steps = steps_of(path)
        assert steps and steps == sorted(set(steps)), path  # strictly increasing
        if path.stem == "grad_norm":
            assert all(float(row.split("\t")[1]) > 0 for row in path.read_text().splitlines()[1:]), path

    # Same inputs, same bytes.
    before = {path: path.read_bytes() for path in files}
    shutil.rmtree(lt_sft), shutil.rmtree(full_ft)
    ltsft("train-lang", "en", "--method", "lt-sft")
    ltsft("train-task", "pos", "--method", "full-ft")
    assert {path: path.read_bytes() for path in files} == before

    # The report: one figure of loss against step per family of components.
    ltsft("evaluate", "pos", "--method", "full-ft")
    ltsft("report")
    html = Path("reports/index.html").read_text()
    section = re.search(r"<section id='curves'>.*?</section>", html, flags=re.DOTALL)
    families = ("Language diffs", "Task diffs", "Language adapters", "L1 ablation (language diffs)")
    assert section and section.group(0).count("<img") == len(families)
    assert all(f"{family}: training loss (mean over each logging window) against optimizer step" in html
               for family in families)
    data = Path("reports/plot-data/curves_language-diffs.csv").read_text().splitlines()
    assert data[0] == "component,phase,step,loss" and data[1].startswith("lt-sft en,iter1-phase1,1,")


def test_render_report_draws_one_loss_figure_per_family(tmp_path):
    found = {"task diffs": {"lt-sft pos": {"iter1-phase1": {"loss": [(1, 2.0), (2, 1.5)]},
                                           "iter1-phase2": {"loss": [(1, 1.8), (2, 1.2)]}},
                            "full-ft pos": {"full-ft": {"loss": [(1, 2.1), (2, 1.0)], "grad_norm": [(1, 3.0)]}}},
             "task adapters": {"madx pos": {"madx-task": {"grad_norm": [(1, 3.0)]}}}}  # no loss: no figure
    page = render_report("t", [], tmp_path, curves=found)
    assert page.count("<img") == 1 and "Task diffs: training loss" in page
    assert (tmp_path / "curves_task-diffs.png").is_file() and not (tmp_path / "curves_task-adapters.png").exists()
    table = plots.curves_data(found["task diffs"])
    assert list(table.columns) == ["component", "phase", "step", "loss"] and len(table) == 6
    assert "<section id='curves'>" not in render_report("t", [], tmp_path)


def test_dvc_yaml_declares_every_training_stages_curves_as_plots_against_step():
    """Every stage that trains (prepare_model for the warm-up, the ablations too) declares the
    folder its curves are written to (layout.curves_dir of its first output) as DVC plots,
    x: step; the report's PNG folder stays a top-level plot."""
    from dvc.repo import Repo

    from pipeline.core.config import load_params

    params = load_params(REPO / "params.yaml")
    with Repo(str(REPO)) as repo:
        declared = {stage.addressing: [(str(out.def_path), out.plot) for out in stage.outs if out.plot]
                    for stage in repo.index.stages}
    expected = {"prepare_model": layout.BASE_MODEL}
    chosen = params.selected_methods()  # dvc.yaml has stages for params' run_methods only
    for name in (m for m in language_methods() if m in chosen):
        for lang in params.languages:
            expected[f"train_lang_{name.replace('-', '_')}@{lang}"] = layout.COMPONENTS.component(name, "lang", lang)
    for name in (m for m in task_methods() if m in chosen):
        for task in METHODS[name].stage_task_names(params):
            expected[f"train_task_{name.replace('-', '_')}@{task}"] = layout.COMPONENTS.component(name, "task", task)
    if any(METHODS[m].prerequisite == "generator" for m in chosen):  # MAD-G's generator, once per run
        from pipeline.methods.mad_g.method import GENERATOR

        expected["train_generator"] = layout.COMPONENTS.component(*GENERATOR)
    for k in params.ablation.k:  # ablations keep the curves of the components they train and drop
        expected[f"ablate_sparsity@{k}"] = layout.sparsity_file(params.ablation.task, k)
    for l1 in params.ablation.l1:
        expected[f"ablate_l1@{l1}"] = layout.l1_file(params.ablation.task, l1)
    assert {stage: found for stage, found in declared.items() if found} == {
        stage: [(str(layout.curves_dir(output)), {"x": "step"})] for stage, output in expected.items()}
    assert yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"] == ["reports/plots"]
