"""params.yaml → validated, typed settings. Every error names the offending key.

Validation happens before any work: a stage calls ``load_params()`` first, so a bad value
fails in a second with one line instead of after an hour of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.lottery import LotteryConfig, PhaseBudget
from pipeline.tasks import DOWNSTREAM_TASKS
from stages.layout import PARAMS


LANGUAGE_SETTINGS = {"name", "text"}  # display name; raw-text sources (later presets)
# Sections a task may override for itself (tasks.<task>.overrides), e.g. a longer budget.
OVERRIDABLE = ("task_sft", "full_ft", "head_only", "madx", "eval")


def _deep_merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        return {key: _deep_merge(base.get(key), value) for key, value in override.items()} | {
            key: value for key, value in base.items() if key not in override}
    return override


def merge_overrides(raw: dict[str, Any], task: str) -> dict[str, Any]:
    """The params tree with the task's overrides merged in (and no overrides left)."""
    overrides = raw["tasks"][task].get("overrides") or {}
    merged = _deep_merge(raw, overrides)
    merged["tasks"] = {name: {k: v for k, v in spec.items() if k != "overrides"}
                       for name, spec in raw["tasks"].items()}
    return merged


class UserError(Exception):
    """Bad input from the user (params, paths, files): reported as one line, no traceback."""


class ConfigError(UserError):
    pass


@dataclass(frozen=True)
class TaskSpec:
    name: str
    source: str
    targets: tuple[str, ...]
    # Per-language dataset names where a benchmark needs them (the paper preset's UD
    # treebanks, e.g. {en: en_ewt, bm: bm_crb}); other sources ignore it.
    datasets: tuple[tuple[str, str], ...] = ()

    def dataset(self, lang: str) -> str | None:
        return dict(self.datasets).get(lang)


@dataclass(frozen=True)
class TrainSpec:
    """One kind of LT-SFT run (language or task) as params.yaml describes it."""

    phase1: PhaseBudget
    phase2: PhaseBudget
    batch_size: int
    learning_rate: float
    weight_decay: float
    l1_lambda: float
    max_grad_norm: float
    n_iterations: int
    max_length: int
    head_learning_rate: float | None = None  # a task head's own rate (None: learning_rate)

    def lottery(self, k: int, seed: int, selection: str = "magnitude") -> LotteryConfig:
        return LotteryConfig(
            k=k, phase1=self.phase1, phase2=self.phase2, learning_rate=self.learning_rate,
            head_learning_rate=self.head_learning_rate,
            batch_size=self.batch_size, weight_decay=self.weight_decay, l1_lambda=self.l1_lambda,
            max_grad_norm=self.max_grad_norm, n_iterations=self.n_iterations,
            selection=selection, seed=seed,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class RunSpec:
    """A run's settings for pipeline.training.run_trainer (duck-typed RunSettings)."""

    batch_size: int
    learning_rate: float
    seed: int
    progress: bool = True


@dataclass(frozen=True)
class DenseSpec:
    """One dense training phase: full fine-tuning, a head-only floor, an MLM-head warm-up."""

    phase: PhaseBudget
    batch_size: int
    learning_rate: float
    max_grad_norm: float
    max_length: int
    head_learning_rate: float | None = None  # a task head's own rate (None: learning_rate)

    def run(self, seed: int) -> RunSpec:
        return RunSpec(self.batch_size, self.learning_rate, seed)


@dataclass(frozen=True)
class AdapterSpec(DenseSpec):
    """MAD-X adapter training: a dense phase over the adapter, with its reduction factor."""

    reduction_factor: int = 2


@dataclass(frozen=True)
class Params:
    raw: dict[str, Any]
    preset: str
    seed: int
    languages: dict[str, dict[str, Any]]
    tasks: dict[str, TaskSpec]
    lang_k: int
    task_k: int
    lang_sft: TrainSpec
    task_sft: TrainSpec
    head_only: DenseSpec
    full_ft: DenseSpec
    madx_language: AdapterSpec
    madx_task: AdapterSpec
    model_warmup: DenseSpec | None  # MLM-head warm-up for encoders without one (e5)
    eval_batch_size: int
    eval_max_length: int

    @property
    def model(self) -> dict[str, Any]:
        return self.raw["model"]

    @property
    def data(self) -> dict[str, Any]:
        return self.raw["data"]

    def for_task(self, name: str) -> Params:
        """These params with ``tasks.<name>.overrides`` merged in (a task's own budgets)."""
        overrides = (self.raw["tasks"].get(name) or {}).get("overrides")
        return parse_params(merge_overrides(self.raw, name)) if overrides else self

    def task(self, name: str) -> TaskSpec:
        if name not in self.tasks:
            raise ConfigError(f"tasks.{name}: no such task in params.yaml (have: {', '.join(self.tasks)})")
        return self.tasks[name]

    def language(self, code: str) -> dict[str, Any]:
        if code not in self.languages:
            raise ConfigError(f"languages.{code}: no such language in params.yaml (have: {', '.join(self.languages)})")
        return self.languages[code]


def _get(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{key}: missing from params.yaml")
        node = node[part]
    return node


def _int(tree: dict[str, Any], key: str, minimum: int = 1, optional: bool = False) -> int | None:
    value = _get(tree, key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}: must be an integer >= {minimum} (got {value!r})")
    return value


def _float(tree: dict[str, Any], key: str, minimum: float = 0.0, exclusive: bool = False) -> float:
    value = _get(tree, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: must be a number (got {value!r})")
    if value < minimum or (exclusive and value == minimum):
        raise ConfigError(f"{key}: must be {'>' if exclusive else '>='} {minimum} (got {value!r})")
    return float(value)


def _budget(tree: dict[str, Any], key: str) -> PhaseBudget:
    node = _get(tree, key)
    allowed = {"steps", "epochs", "min_steps", "max_steps"}
    if (not isinstance(node, dict) or set(node) - allowed or ("steps" in node) == ("epochs" in node)
            or ("steps" in node and len(node) != 1)):
        raise ConfigError(f"{key}: must be {{steps: N}} or {{epochs: N}} (optionally with min_steps / max_steps) "
                          f"(got {node!r})")
    if "steps" in node:
        return PhaseBudget(steps=_int(tree, f"{key}.steps"))
    min_steps = _int(tree, f"{key}.min_steps") if "min_steps" in node else None
    max_steps = _int(tree, f"{key}.max_steps") if "max_steps" in node else None
    if min_steps is not None and max_steps is not None and min_steps > max_steps:
        raise ConfigError(f"{key}: min_steps {min_steps} exceeds max_steps {max_steps}")
    return PhaseBudget(epochs=_float(tree, f"{key}.epochs", exclusive=True), min_steps=min_steps, max_steps=max_steps)


def _train_spec(tree: dict[str, Any], key: str) -> TrainSpec:
    return TrainSpec(
        phase1=_budget(tree, f"{key}.phase1"),
        phase2=_budget(tree, f"{key}.phase2"),
        batch_size=_int(tree, f"{key}.batch_size"),
        learning_rate=_float(tree, f"{key}.learning_rate", exclusive=True),
        weight_decay=_float(tree, f"{key}.weight_decay"),
        l1_lambda=_float(tree, f"{key}.l1_lambda"),
        max_grad_norm=_float(tree, f"{key}.max_grad_norm"),
        n_iterations=_int(tree, f"{key}.n_iterations"),
        max_length=_int(tree, f"{key}.max_length", minimum=8),
        head_learning_rate=_optional_rate(tree, f"{key}.head_learning_rate"),
    )


def _optional_rate(tree: dict[str, Any], key: str) -> float | None:
    parent, _, leaf = key.rpartition(".")
    node = _get(tree, parent)
    if not isinstance(node, dict) or node.get(leaf) is None:
        return None
    return _float(tree, key, exclusive=True)


def _dense_spec(tree: dict[str, Any], key: str) -> DenseSpec:
    node = _get(tree, key)
    return DenseSpec(
        phase=_budget(tree, f"{key}.phase"),
        batch_size=_int(tree, f"{key}.batch_size"),
        learning_rate=_float(tree, f"{key}.learning_rate", exclusive=True),
        max_grad_norm=_float(tree, f"{key}.max_grad_norm") if "max_grad_norm" in node else 1.0,
        max_length=_int(tree, f"{key}.max_length", minimum=8),
        head_learning_rate=_optional_rate(tree, f"{key}.head_learning_rate"),
    )


def _adapter_spec(tree: dict[str, Any], key: str) -> AdapterSpec:
    dense = _dense_spec(tree, key)
    return AdapterSpec(dense.phase, dense.batch_size, dense.learning_rate, dense.max_grad_norm, dense.max_length,
                       dense.head_learning_rate, reduction_factor=_int(tree, f"{key}.reduction_factor"))


def parse_params(tree: dict[str, Any]) -> Params:
    """Validate a params tree; raises ConfigError naming the first bad key."""
    if not isinstance(tree, dict):
        raise ConfigError("params.yaml: top level must be a mapping")
    languages = _get(tree, "languages")
    if not isinstance(languages, dict) or not languages:
        raise ConfigError("languages: must map language codes to settings")
    languages = {str(code): (settings or {}) for code, settings in languages.items()}
    for code, settings in languages.items():
        if not isinstance(settings, dict):
            raise ConfigError(f"languages.{code}: must be a mapping such as {{name: ...}}")
        unknown = sorted(set(settings) - LANGUAGE_SETTINGS)
        if unknown:
            raise ConfigError(f"languages.{code}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(LANGUAGE_SETTINGS))})")

    task_tree = _get(tree, "tasks")
    if not isinstance(task_tree, dict) or not task_tree:
        raise ConfigError("tasks: must map task names to {source, targets}")
    tasks = {}
    for name, spec in task_tree.items():
        if name not in DOWNSTREAM_TASKS:
            raise ConfigError(f"tasks.{name}: unknown task (known: {', '.join(DOWNSTREAM_TASKS)})")
        source = _get(tree, f"tasks.{name}.source")
        targets = _get(tree, f"tasks.{name}.targets")
        if not isinstance(targets, list) or not targets:
            raise ConfigError(f"tasks.{name}.targets: must be a non-empty list of language codes")
        for i, lang in enumerate([source, *targets]):
            if lang not in languages:
                key = f"tasks.{name}.source" if i == 0 else f"tasks.{name}.targets"
                raise ConfigError(f"{key}: unknown language {lang!r} (not under languages:)")
        datasets = task_tree[name].get("datasets") or {}
        if not isinstance(datasets, dict):
            raise ConfigError(f"tasks.{name}.datasets: must map language codes to dataset names")
        unknown_task_keys = sorted(set(task_tree[name]) - {"source", "targets", "datasets", "overrides"})
        if unknown_task_keys:
            raise ConfigError(f"tasks.{name}: unknown setting {unknown_task_keys[0]!r} "
                              "(known: datasets, overrides, source, targets)")
        overrides = task_tree[name].get("overrides")
        if overrides is not None:
            if not isinstance(overrides, dict) or set(overrides) - set(OVERRIDABLE):
                bad = sorted(set(overrides) - set(OVERRIDABLE)) if isinstance(overrides, dict) else [overrides]
                raise ConfigError(f"tasks.{name}.overrides: cannot override {bad[0]!r} (only: {', '.join(OVERRIDABLE)})")
            try:
                parse_params(merge_overrides(tree, name))
            except ConfigError as err:
                raise ConfigError(f"tasks.{name}.overrides: {err}") from None
        tasks[name] = TaskSpec(name, source, tuple(targets), tuple(sorted((str(k), str(v)) for k, v in datasets.items())))

    k = _int(tree, "sparsity.k")
    lang_k = _int(tree, "sparsity.lang_k", optional=True) or k
    task_k = _int(tree, "sparsity.task_k", optional=True) or k
    _get(tree, "model.source")
    _get(tree, "data.source")
    return Params(
        raw=tree,
        preset=str(tree.get("preset", "custom")),
        seed=_int(tree, "seed", minimum=0),
        languages=languages,
        tasks=tasks,
        lang_k=lang_k,
        task_k=task_k,
        lang_sft=_train_spec(tree, "lang_sft"),
        task_sft=_train_spec(tree, "task_sft"),
        head_only=_dense_spec(tree, "head_only"),
        full_ft=_dense_spec(tree, "full_ft"),
        madx_language=_adapter_spec(tree, "madx.language"),
        madx_task=_adapter_spec(tree, "madx.task"),
        model_warmup=_dense_spec(tree, "model.warmup") if tree.get("model", {}).get("warmup") else None,
        eval_batch_size=_int(tree, "eval.batch_size"),
        eval_max_length=_int(tree, "eval.max_length", minimum=8),
    )


def load_params(path: str | Path = PARAMS) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found (run `ltsft preset smoke` to write one)")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return parse_params(tree)


def check_k(k: int, maskable: int, key: str) -> None:
    """K must fit the model: checked once the model is loaded, before training starts."""
    if k > maskable:
        raise ConfigError(f"{key}: K={k} exceeds the model's {maskable} maskable entries")
