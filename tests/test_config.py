"""The params schema (pipeline/core/config.py): typed sections, dotted-key errors, unknown keys refused."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.methods import METHODS

from pipeline.core.budget import PhaseBudget
from pipeline.core.config import (
    METHOD_SECTIONS,
    overridable,
    TASK_NAMES,
    AdapterSpec,
    ConfigError,
    DataSettings,
    DenseSpec,
    LanguageSpec,
    ModelSettings,
    Params,
    PublishedSettings,
    TrainSpec,
    load_params,
    parse_params,
    schema_sections,
)
from pipeline.core.errors import LtsftError, UserError

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "presets").glob("*.yaml"))


def tree(name: str = "smoke") -> dict:
    return yaml.safe_load((REPO / "presets" / f"{name}.yaml").read_text())


def with_value(dotted: str, value, base: dict | None = None) -> dict:
    params = copy.deepcopy(base or tree())
    node = params
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    return params


def without(dotted: str) -> dict:
    params = tree()
    node = params
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    del node[leaf]
    return params


def error(params: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_params(params)
    return str(info.value)


# ----------------------------------------------------------------------------- presets
@pytest.mark.parametrize("path", [*PRESETS, REPO / "params.yaml"], ids=lambda p: p.name)
def test_every_preset_and_params_yaml_parse(path):
    params = load_params(path)
    assert params.preset == (path.stem if path.parent.name == "presets" else params.preset)
    assert isinstance(params.bitfit, DenseSpec) and params.bitfit.max_length >= 8
    for name in params.tasks:  # per-task overrides parse too
        assert isinstance(params.for_task(name), Params)


def test_params_yaml_is_the_demo_preset():
    assert (REPO / "params.yaml").read_text() == (REPO / "presets" / "demo.yaml").read_text()


@pytest.mark.parametrize("name", ["smoke", "demo", "paper", "paper-nli"])
def test_bitfit_defaults_to_the_task_phase1_budget(name):
    params = parse_params(tree(name))
    task_sft, bitfit = params.task_sft, params.bitfit
    assert bitfit.phase == task_sft.phase1
    assert (bitfit.batch_size, bitfit.max_length, bitfit.max_grad_norm) == (
        task_sft.batch_size, task_sft.max_length, task_sft.max_grad_norm)
    # Biases alone move little at a body's rate: BitFit's own search spanned 1e-4..1e-3.
    assert bitfit.learning_rate == 1e-3 and bitfit.head_learning_rate == task_sft.head_learning_rate


def test_demo_ner_overrides_bitfit_like_full_ft():
    params = parse_params(tree("demo-seeds")).for_task("ner")  # the demo itself runs no NER (its preset says why)
    assert params.bitfit.phase == params.full_ft.phase == PhaseBudget(steps=200)
    assert "bitfit" in overridable()


# ----------------------------------------------------------------------------- typed access
def test_sections_are_typed_objects():
    params = parse_params(tree("demo"))
    assert isinstance(params.model, ModelSettings) and params.model.name.startswith("multilingual-e5-small")
    assert params.model.source == "e5" and params.model.num_layers == 6 and params.model.tiny is None
    assert params.model_warmup is params.model.warmup and params.model.warmup.phase == PhaseBudget(steps=800, eval_every=400)
    assert params.model.warmup.decoder == "tied" and params.model.warmup.learning_rate == 3e-3
    assert params.model.warmup.max_grad_norm == 1.0  # absent in the file: its file default
    assert isinstance(params.data, DataSettings) and params.data.cache == "~/.cache/ltsft/registry"
    assert params.data.max_test_sentences == 250 and params.data.local_root is None
    assert params.languages["he"] == LanguageSpec(name="Hebrew", text=("udhr", "treebank"))
    assert params.language("he").name == "Hebrew"
    assert params.ablation.task == "pos" and params.ablation.k == (100000, 4000000)
    assert isinstance(params.published, PublishedSettings) and params.published.languages == ()
    assert isinstance(params.madx_task, AdapterSpec) and params.madx_task.reduction_factor == 16
    assert (params.eval_batch_size, params.eval_max_length) == (32, 128)
    assert params.tasks["pos"].name == "pos" and params.tasks["pos"].targets == ("he", "tr")
    wide = parse_params(tree("demo-seeds")).tasks
    assert wide["ner"].targets == ("he", "ja") and wide["dp"].targets == ("tr",)

    smoke = parse_params(tree("smoke"))
    assert smoke.model.tiny["hidden_size"] == 64 and smoke.model.warmup is None
    assert smoke.languages["en"].text is None  # null: the data source's default

    paper = parse_params(tree("paper"))
    assert paper.data.wikipedia_dump == "20231101" and paper.data.max_text_lines == 2_000_000
    assert paper.published.task_repos["pos"] == "cambridgeltl/mbert-task-sft-pos"
    assert paper.published.lang_repo.format(code="bm") == "cambridgeltl/mbert-lang-sft-bm-small"
    assert paper.tasks["pos"].dataset("wol") == "wo_wtb"
    assert paper.lang_sft.phase1 == PhaseBudget(epochs=100, min_steps=10_000, max_steps=100_000, eval_every=1000,
                                                select_best=True)  # the reference: best of every 1,000 steps
    assert paper.task_sft.phase2 == PhaseBudget(epochs=10, eval_every=250, select_best=True)


def test_k_and_the_key_that_set_it():
    params = parse_params(tree("paper"))
    assert (params.lang_k, params.task_k) == (7667712, 14155776)
    assert params.k_key("lang") == "sparsity.lang_k" and params.k_key("task") == "sparsity.k"
    smoke = parse_params(with_value("sparsity.task_k", 7))
    assert smoke.task_k == 7 and smoke.k_key("task") == "sparsity.task_k" and smoke.k_key("lang") == "sparsity.k"
    with pytest.raises(ValueError):
        smoke.k_key("both")


def test_train_spec_passes_its_fields_to_the_lottery_config():
    pytest.importorskip("torch")
    from pipeline.methods.lt_sft.lottery import LotteryConfig

    spec = parse_params(tree("demo")).task_sft
    config = spec.lottery(123, seed=7, selection="random")
    assert isinstance(config, LotteryConfig)
    assert (config.k, config.seed, config.selection) == (123, 7, "random")
    shared = {f.name for f in dataclasses.fields(LotteryConfig)} & {f.name for f in dataclasses.fields(TrainSpec)}
    assert shared >= {"phase1", "phase2", "batch_size", "learning_rate", "head_learning_rate", "weight_decay",
                      "l1_lambda", "max_grad_norm", "n_iterations"}
    assert all(getattr(config, name) == getattr(spec, name) for name in shared)


def test_task_names_match_the_task_registry():
    pytest.importorskip("torch")
    from pipeline.tasks import DOWNSTREAM_TASKS

    assert TASK_NAMES == DOWNSTREAM_TASKS


def test_schema_imports_no_torch():
    code = ("import sys, pipeline.core.config; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'stages')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- help text
def test_every_schema_field_has_help_text():
    sections = schema_sections()
    assert {Params, ModelSettings, DataSettings, LanguageSpec, TrainSpec, DenseSpec, AdapterSpec} <= set(sections)
    for section in sections:
        assert section.__doc__, section
        for f in dataclasses.fields(section):
            help_text = f.metadata.get("help")
            assert isinstance(help_text, str) and help_text.strip(), f"{section.__name__}.{f.name}: no help text"


def test_every_preset_key_is_in_the_schema():
    """Every top-level section of every preset is a field of Params or a section a registered
    method owns (and vice versa)."""
    fields = {f.name for f in dataclasses.fields(Params)} - {"raw", "methods"} | set(METHOD_SECTIONS)
    for path in PRESETS:
        assert set(yaml.safe_load(path.read_text())) == fields, path.name


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("presett", "smoke", "presett: unknown key (known: ablation, bitfit, data, eval, full_ft, head_only, "),
        ("sparsity.kk", 5, "sparsity.kk: unknown key (known: k, lang_k, task_k)"),
        ("madx.task.reduction_factr", 4, "madx.task.reduction_factr: unknown key (known: batch_size, "),
        ("model.warmupp", None, "model.warmupp: unknown key (known: name, num_layers, source, tiny, warmup)"),
        ("tasks.pos.target", ["xx"], "tasks.pos.target: unknown key (known: benchmark, datasets, decoding, head, overrides, source, targets)"),
        ("languages.xx.nmae", "X", "languages.xx.nmae: unknown key (known: name, text)"),
        ("lang_sft.phase1.stepz", 3, "lang_sft.phase1.stepz: unknown key (known: epochs, eval_every, max_steps, min_steps, select_best, steps)"),
        ("published.lang_repos", "x", "published.lang_repos: unknown key (known: adapter_languages, "),
    ],
)
def test_unknown_keys_are_refused_naming_the_dotted_key(dotted, value, expected):
    message = error(with_value(dotted, value))
    assert message.startswith(expected), message


def test_a_key_a_dotted_path_cannot_spell_is_quoted_under_its_parent():
    assert error(with_value("languages.yy", {"name": "Y (a", "b)": None})).startswith(
        "languages.yy: unknown setting 'b)' (known: name, text)")


def test_unknown_keys_inside_a_task_override_are_refused():
    message = error(with_value("tasks.pos.overrides", {"madx": {"task": {"reduction_factr": 4}}}))
    assert message.startswith("tasks.pos.overrides: madx.task.reduction_factr: unknown key"), message


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("sparsity.k", 0, "sparsity.k: must be an integer >= 1 (got 0)"),
        ("sparsity.k", True, "sparsity.k: must be an integer >= 1 (got True)"),
        ("sparsity.k", 2.5, "sparsity.k: must be an integer >= 1 (got 2.5)"),
        ("sparsity.k", None, "sparsity.k: must be an integer >= 1 (got None)"),
        ("sparsity.lang_k", "many", "sparsity.lang_k: must be an integer >= 1 or null (got 'many')"),
        ("seed", -1, "seed: must be an integer >= 0 (got -1)"),
        ("lang_sft.learning_rate", 0, "lang_sft.learning_rate: must be > 0.0 (got 0)"),
        ("lang_sft.learning_rate", "1e-3", "lang_sft.learning_rate: must be a number (got '1e-3')"),
        ("lang_sft.weight_decay", -0.1, "lang_sft.weight_decay: must be >= 0.0 (got -0.1)"),
        ("task_sft.head_learning_rate", 0.0, "task_sft.head_learning_rate: must be > 0.0 or null (got 0.0)"),
        ("lang_sft.max_length", 4, "lang_sft.max_length: must be an integer >= 8 (got 4)"),
        ("lang_sft.phase1", {"steps": 3, "epochs": 1}, "lang_sft.phase1: must be {steps: N} or {epochs: N}"),
        ("lang_sft.phase1", 3, "lang_sft.phase1: must be {steps: N} or {epochs: N}"),
        ("lang_sft.phase1", {"steps": 0}, "lang_sft.phase1.steps: must be an integer >= 1 (got 0)"),
        ("lang_sft.phase1", {"epochs": 2, "min_steps": 9, "max_steps": 3}, "lang_sft.phase1: min_steps 9 exceeds"),
        ("madx.task.reduction_factor", 0, "madx.task.reduction_factor: must be an integer >= 1 (got 0)"),
        ("model.source", "cloud", "model.source: must be one of tiny, hub, local, e5 (got 'cloud')"),
        ("model.name", 7, "model.name: must be a string (got 7)"),
        ("model.tiny", [1, 2], "model.tiny: must be a mapping or null (got [1, 2])"),
        ("data.source", "ftp", "data.source: must be one of local, registry, hub (got 'ftp')"),
        ("data.max_dev_sentences", 0, "data.max_dev_sentences: must be an integer >= 1 or null (got 0)"),
        ("ablation.k", [5000, 0], "ablation.k[1]: must be an integer >= 1 (got 0)"),
        ("ablation.k", [], "ablation.k: must be a non-empty list (got [])"),
        ("ablation.k", 5000, "ablation.k: must be a non-empty list (got 5000)"),
        ("ablation.task", "dp", "ablation.task: unknown task 'dp' (not under tasks:)"),
        ("tasks.pos.targets", [], "tasks.pos.targets: must be a non-empty list (got [])"),
        ("tasks.pos.source", "zz", "tasks.pos.source: unknown language 'zz' (not under languages:)"),
        ("tasks.pos.datasets", ["en_ewt"], "tasks.pos.datasets: must map language codes to dataset names"),
        ("languages", {}, "languages: must be a non-empty mapping (got {})"),
        ("languages.xx", "Made-up", "languages.xx: must be a mapping (got 'Made-up')"),
        ("languages.xx.text", "udhr", "languages.xx.text: must be a list or null (got 'udhr')"),
        ("published.languages", ["en", "zz"], "published.languages: unknown language 'zz'"),
        ("published.tasks", ["ner"], "published.tasks: unknown task 'ner' (not under tasks:)"),
        ("eval", None, "eval.batch_size: missing from params.yaml"),
        ("run_methods", [], "run_methods: must be a non-empty list"),
        ("run_methods", ["lt-sft", "rand-sft", "nope"], "run_methods: unknown method 'nope' (registered: "),
        ("run_methods", ["lt-sft", "rand-sft", "lt-sft"], "run_methods: a method appears twice"),
        ("run_methods", ["madx", "rand-sft"], "run_methods: add lt-sft (the overlap and the sparsity sweep"),
        ("run_methods", ["lt-sft", "madx"], "run_methods: add rand-sft (the sparsity sweep"),
        ("tasks.pos.overrides", {"sparsity": {"k": 5}}, "tasks.pos.overrides: cannot override 'sparsity'"),
        ("tasks.pos.overrides", {"bitfit": {"phase": {"steps": 0}}},
         "tasks.pos.overrides: bitfit.phase.steps: must be an integer >= 1 (got 0)"),
    ],
)
def test_bad_values_name_the_dotted_key_first(dotted, value, expected):
    message = error(with_value(dotted, value))
    assert message.startswith(expected), message


@pytest.mark.parametrize(
    ("dotted", "expected"),
    [("bitfit", "bitfit: missing from params.yaml"),  # seed/seeds: tests/test_seeds.py
     ("sparsity.k", "sparsity.k: missing from params.yaml"),
     ("madx.language.reduction_factor", "madx.language.reduction_factor: missing from params.yaml"),
     ("task_sft.l1_lambda", "task_sft.l1_lambda: missing from params.yaml")],
)
def test_required_keys_are_named_when_missing(dotted, expected):
    assert error(without(dotted)) == expected


def test_optional_keys_take_their_defaults():
    params = parse_params(without("sparsity.lang_k"))
    assert params.sparsity.lang_k is None and params.lang_k == params.sparsity.k
    assert parse_params(without("full_ft.max_grad_norm")).full_ft.max_grad_norm == 1.0
    assert parse_params(without("preset")).preset == "custom"
    assert parse_params(with_value("published", {})).published == PublishedSettings()
    # Sections dvc.yaml reads (foreach over published.* and ablation.k) are required, if empty.
    assert error(without("published")) == "published: missing from params.yaml"


def test_run_methods_selects_in_registry_order():
    params = parse_params(with_value("run_methods", ["madx", "rand-sft", "lt-sft", "dense-composed"]))
    assert params.selected_methods() == ["lt-sft", "rand-sft", "madx", "dense-composed"]
    assert parse_params(tree()).selected_methods() == list(METHODS)  # absent: every registered method


def test_top_level_must_be_a_mapping():
    assert error([1, 2]) == "params.yaml: top level must be a mapping"


def test_load_params_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML"):
        load_params(broken)


def test_error_hierarchy():
    """One base class for bad input: the CLI turns any of these into one line and exit 2."""
    from pipeline.formats.adapter import AdapterError
    from pipeline.formats.sparse_diff import DiffError

    assert UserError is LtsftError and issubclass(ConfigError, LtsftError)
    assert issubclass(DiffError, LtsftError) and issubclass(AdapterError, LtsftError)


def test_the_cli_refuses_a_typo_with_exit_code_2(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from stages.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_value("sparsity.kk", 5)))
    result = CliRunner().invoke(app, ["download"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "sparsity.kk: unknown key (known: k, lang_k, task_k)" in lines[0], result.output
    assert not (tmp_path / "data").exists()


def test_preset_command_refuses_a_broken_preset(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from stages.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "typo.yaml").write_text(yaml.safe_dump(with_value("madx.task.reduction_factr", 4)))
    (tmp_path / "params.yaml").write_text("preset: before\n")
    result = CliRunner().invoke(app, ["preset", "typo"])
    assert result.exit_code == 2 and "madx.task.reduction_factr: unknown key" in result.output, result.output
    assert (tmp_path / "params.yaml").read_text() == "preset: before\n"


def test_the_ner_benchmark_is_chosen_and_refused_elsewhere():
    paper = tree("paper")
    assert parse_params(paper).tasks["ner"].benchmark == "masakhaner1"
    assert parse_params(tree("demo-seeds")).tasks["ner"].benchmark is None  # null: masakhaner2 (hub only)
    assert error(with_value("tasks.ner.benchmark", "masakhaner3", paper)) == (
        "tasks.ner.benchmark: must be one of masakhaner1, masakhaner2 (got 'masakhaner3')")
    assert error(with_value("tasks.pos.benchmark", "masakhaner1")) == (
        "tasks.pos.benchmark: only tasks.ner takes a benchmark (got 'masakhaner1')")
