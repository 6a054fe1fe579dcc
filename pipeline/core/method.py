"""What a method is, in one place: the interface every registered method implements.

A method (``lt-sft``, ``madx``, ``full-ft``, …) says:
- which params sections configure it (``sections``) and how many parameters it trains;
- whether it has a language component, and which method's language stage writes it
  (``language_from``: dense-composed's language diff is LT-SFT's dense phase 1);
- how it trains a language component (masked LM on a language's text) and a task component
  (on the source language, over the source language's component);
- how its components are composed onto θ0 for evaluation (a :class:`Composer`), and which
  variants it reports (e.g. ``lt-sft`` and ``lt-sft-task-only``).

Methods know no file layout: the stage hands them a :class:`ComponentPaths` that maps
(method, kind, name) to a directory. This module imports no torch, so that listing the
registry (``ltsft --help``) stays fast; training code is imported inside the methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from pipeline.core.runs import RunResult


@dataclass(frozen=True)
class Variant:
    """One row group of the results: ``name`` as reported, and whether it composes the
    target language's component (False: the task component alone, zero-shot)."""

    name: str
    with_language: bool


class ComponentPaths(Protocol):
    """Where components live: the stage's file layout, handed to methods."""

    def component(self, method: str, kind: str, name: str) -> Path:
        """The directory of ``method``'s ``kind`` component (lang, task, task-phase1) for ``name``."""
        ...


@dataclass
class TrainContext:
    """Everything one component's training run needs, assembled by the stage.

    ``params`` already has the task's overrides merged in; ``model`` is θ0 with the task's
    head (or the MLM head for a language), freshly built from ``seed``."""

    params: Any  # pipeline.core.config.Params
    task: Any  # pipeline.tasks.base.Task
    kind: str  # "lang" or "task"
    name: str  # the language code or the task name
    model: Any
    tokenizer: Any
    train: Sequence[Any]
    dev: Sequence[Any]
    paths: ComponentPaths
    source: str | None = None  # a task's source language
    facts: dict[str, Any] = field(default_factory=dict)  # recorded in the component's provenance

    def component(self, method: str, kind: str | None = None, name: str | None = None) -> Path:
        return self.paths.component(method, kind or self.kind, name or self.name)

    def dev_check(self, max_length: int) -> Any:
        """How phases with ``eval_every`` score this run: the task's headline metric on the dev
        set (a language: masked-LM loss on its held-out text); None without dev examples."""
        from pipeline.core.best_checkpoint import DevCheck
        from pipeline.core.runs import DevScorer

        if not self.dev:
            return None
        scorer = DevScorer(self.params, self.task, self.tokenizer, self.dev, max_length)
        return DevCheck(scorer, self.task.metric, self.task.higher_is_better)


class Composer(Protocol):
    """Puts a method's trained components into a model for evaluation."""

    task_params: int  # trainable parameters of the task component
    k: int | None  # the task component's K (sparse methods), else None
    used: list[Path]  # every component directory read so far (for the run log)
    shared_params: int  # parameters trained once for every language (mad-g: its generator), else 0

    def inputs(self, with_language: bool) -> list[Path]:
        """Component directories evaluation needs (checked before any work)."""
        ...

    def load(self, model: Any) -> None:
        """Apply the task component (and head) to θ0."""
        ...

    def prepare(self, model: Any, lang: str, with_language: bool) -> int:
        """Set the model up for ``lang`` (restoring the task-only state first); returns the
        language component's trainable parameters (0 without one)."""
        ...


class ComponentComposer:
    """What every composer shares (the Composer protocol above): the task component's
    directory, each target language's component, and which of them were read."""

    def __init__(self, task_path: Path, lang_paths: dict[str, Path]):
        self.task_path, self.lang_paths = task_path, lang_paths
        self.task_params, self.k, self.shared_params = 0, None, 0
        self.used: list[Path] = []

    def inputs(self, with_language: bool) -> list[Path]:
        return [self.task_path, *(self.lang_paths.values() if with_language else [])]

    def _read(self, path: Path) -> Path:
        """Note that ``path`` was read (the evaluation's run log lists the components behind it)."""
        if path not in self.used:
            self.used.append(path)
        return path


class Method:
    """Base class of every method; subclasses set the class attributes and override what applies."""

    name: ClassVar[str]
    family: ClassVar[str]  # its package under pipeline/methods
    summary: ClassVar[str]  # one line, shown in `ltsft --help`
    sections: ClassVar[tuple[str, ...]]  # params sections its task component reads
    # The params sections it owns: name -> (schema dataclass, help). Registering the method
    # declares them to the params schema (pipeline/core/config.py), e.g. {"bitfit": (DenseSpec, "…")}.
    config_sections: ClassVar[dict[str, tuple[type, str]]] = {}
    language_sections: ClassVar[tuple[str, ...]] = ()
    language_from: ClassVar[str | None] = None  # whose language stage writes its language component
    imported: ClassVar[bool] = False  # components come from released files, not training
    imports_language: ClassVar[bool] = False  # only its language components do (an import stage writes them)
    # The params list of task names its task and evaluation stages run over: every task, or a
    # `published.*` list for methods built on released files (empty outside the paper presets).
    stage_tasks: ClassVar[str] = "tasks"
    stores_adapters: ClassVar[bool] = False  # components are adapter files (else SparseDiffs)
    variants: ClassVar[tuple[Variant, ...]]
    task_extras: ClassVar[tuple[str, ...]] = ()  # further kinds its task stage writes (task-phase1)
    evaluation_sections: ClassVar[tuple[str, ...]] = ()  # params its composition reads (madx: sizes)
    swept: ClassVar[bool] = False  # in the sparsity sweep (the task diff's K varies)
    # Whose language components its own start from (mad-g-ls: mad-g's generated adapters): its
    # language stage reads them (a dvc.yaml dependency, checked before any work).
    starts_from: ClassVar[str | None] = None
    # A once-per-run stage its components need (mad-g: "generator", the typology-to-adapter
    # generator and the generated adapters), written into dvc.yaml when the method is selected.
    prerequisite: ClassVar[str | None] = None
    interference: ClassVar[str | None] = None  # its label in the interference plot (composed − task-only)

    @property
    def code(self) -> tuple[str, ...]:
        """The code its stages run, under pipeline/methods/ (its family; a dvc.yaml dependency)."""
        return (self.family,)

    @property
    def has_language(self) -> bool:
        return self.language_from is not None

    @property
    def trains_language(self) -> bool:
        return self.language_from == self.name and not self.imported and not self.imports_language

    def stage_task_names(self, params: Any) -> list[str]:
        """The tasks its stages run for under ``params`` (the list named by ``stage_tasks``)."""
        value = params
        for part in self.stage_tasks.split("."):
            value = getattr(value, part)
        return list(value)

    def may_change(self, model: Any) -> list[str]:
        """The pretrained (θ0) parameters, besides the task head, that its task component may
        change: every other pretrained weight stays bit-identical (the contract tests check it)."""
        from pipeline.core.parameters import maskable_parameter_names

        return maskable_parameter_names(model)

    def train_language(self, ctx: TrainContext) -> RunResult:
        raise NotImplementedError(f"{self.name} has no language component of its own")

    def train_task(self, ctx: TrainContext) -> RunResult:
        raise NotImplementedError(f"{self.name} trains no task component")

    def language_inputs(self, paths: ComponentPaths, lang: str) -> list[Path]:
        """Components a language run starts from (checked before any work)."""
        return [paths.component(self.starts_from, "lang", lang)] if self.starts_from else []

    def task_inputs(self, ctx_paths: ComponentPaths, task: str, source: str) -> list[Path]:
        """Components a task run starts from (checked before any work)."""
        if not self.has_language:
            return []
        return [ctx_paths.component(self.name, "lang", source)]

    def skipped_targets(self, params: Any, targets: Sequence[str]) -> dict[str, str]:
        """Targets this method cannot be evaluated on, each with the reason the report shows
        (imported methods: no released module for the language); {} for trained methods."""
        return {}

    def composer(self, params: Any, paths: ComponentPaths, task: str, targets: Sequence[str]) -> Composer:
        from pipeline.core.composition import DiffComposer

        return DiffComposer(paths.component(self.name, "task", task),
                            {lang: paths.component(self.name, "lang", lang) for lang in targets})
