"""The registered MAD-X methods.

- `madx`: a language adapter per language (bottlenecks + invertible adapter, trained by
  masked LM), a task adapter stacked on the source language's adapter, the target's language
  adapter swapped in at test time (`madx`; `madx-task-only` without).
- `madx-published`: the same composition, with released language adapters (AdapterHub,
  imported by a stage: pipeline/sources/adapterhub.py) instead of ours, and our task adapter
  trained over the released source-language one: MAD-X as its authors' own modules give it.

A task component is a directory with ``adapter/`` (the task adapter) and ``head/`` (the task
head, as a diff with dense tensors only).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.core.config import MadxSettings
from pipeline.methods import register
from pipeline.core.method import ComponentComposer, ComponentPaths, Method, TrainContext, Variant
from pipeline.core.runs import RunResult, Trained, run_component

PREFIX = "madx."  # every adapter parameter lives under model.madx


def load_language(madx: Any, path: Path) -> dict:
    """Load the language adapter at ``path`` into ``madx.language``; return its meta.

    Its non-linearity is taken from the file first (released adapters use GELU; it is a
    parameter-free function, so no weight changes), then every other field is checked.
    """
    from pipeline.formats.adapter import load_adapter, read_adapter_meta

    madx.language.use_non_linearity(read_adapter_meta(path)["non_linearity"])
    return load_adapter(path, madx.language)


class TrainedAdapter:
    """An adapter (and for a task, its head as a diff), saved as one component directory."""

    def __init__(self, adapter: Any, head: Any = None) -> None:
        self.adapter, self.head, self.provenance = adapter, head, {}

    def save(self, path: Path) -> None:
        from pipeline.formats.adapter import save_adapter

        if self.head is None:
            save_adapter(self.adapter, path, self.provenance)
            return
        save_adapter(self.adapter, path / "adapter", self.provenance)
        self.head.provenance = self.provenance
        self.head.save(path / "head")


@register
class MadX(Method):
    name = "madx"
    family = "madx"
    summary = "MAD-X: language adapters (+ invertible) and a stacked task adapter, all else frozen"
    sections = ("madx",)
    config_sections = {"madx": (MadxSettings, "MAD-X adapters (language and task).")}
    language_sections = ("madx.language",)  # a language adapter reads only its own settings
    language_from = "madx"
    stores_adapters = True
    evaluation_sections = ("madx",)  # the adapters' sizes
    variants = (Variant("madx-task-only", False), Variant("madx", True))

    def may_change(self, model: Any) -> list[str]:
        return []  # adapters are new parameters; every pretrained weight stays frozen

    def train_language(self, ctx: TrainContext) -> RunResult:
        from pipeline.methods.madx.adapters import add_madx
        from pipeline.core.parameters import count_parameters
        from pipeline.core.training import train_parameters

        spec = ctx.params.madx_language
        rf, invertible = self.language_shape(ctx.params)
        madx = add_madx(ctx.model, language_rf=rf, task_rf=None, seed=ctx.params.seed, language_invertible=invertible)
        start = self.language_start(ctx)
        if start is not None:
            load_language(madx, start)
        names = [name for name, _ in ctx.model.named_parameters() if name.startswith(PREFIX + "language.")]

        def train(record: dict[str, Any]) -> Trained:
            features = ctx.task.featurize(ctx.train, ctx.tokenizer, spec.max_length)
            log = train_parameters(ctx.model, names, features, ctx.task.collator(ctx.tokenizer), spec.phase,
                                   spec.run(ctx.params.seed), "madx-language", max_grad_norm=spec.max_grad_norm,
                                   dev=ctx.dev_check(spec.max_length))
            return Trained(TrainedAdapter(madx.language), count_parameters(madx.language), note="language adapter",
                           log=log)

        return run_component(ctx, self.name, self.language_sections, spec.max_length, ctx.component(self.name), train)

    def train_task(self, ctx: TrainContext) -> RunResult:
        from pipeline.formats.sparse_diff import SparseDiff
        from pipeline.methods.madx.adapters import add_madx
        from pipeline.core.parameters import count_parameters, count_parameters_named, snapshot
        from pipeline.core.training import train_parameters

        params, spec = ctx.params, ctx.params.madx_task
        rf, invertible = self.language_shape(params)
        madx = add_madx(ctx.model, language_rf=rf, task_rf=spec.reduction_factor, seed=params.seed,
                        language_invertible=invertible)
        load_language(madx, ctx.component(self.name, "lang", ctx.source))
        head = [name for name in ctx.task.head_parameter_names(ctx.model) if not name.startswith(PREFIX)]
        names = [name for name, _ in ctx.model.named_parameters() if name.startswith(PREFIX + "task.")] + head

        def train(record: dict[str, Any]) -> Trained:
            start = snapshot(ctx.model, head)
            features = ctx.task.featurize(ctx.train, ctx.tokenizer, spec.max_length)
            log = train_parameters(ctx.model, names, features, ctx.task.collator(ctx.tokenizer), spec.phase,
                                   spec.run(params.seed), "madx-task", max_grad_norm=spec.max_grad_norm, head=head,
                                   head_learning_rate=spec.head_learning_rate, dev=ctx.dev_check(spec.max_length))
            head_diff = SparseDiff.from_states(start, snapshot(ctx.model, head), [], head)
            return Trained(TrainedAdapter(madx.task, head_diff),
                           count_parameters(madx.task) + count_parameters_named(ctx.model, head),
                           note="task adapter + head", log=log)

        return run_component(ctx, self.name, self.sections, spec.max_length, ctx.component(self.name), train)

    def composer(self, params: Any, paths: ComponentPaths, task: str, targets: Sequence[str]) -> AdapterComposer:
        return AdapterComposer(params, paths.component(self.name, "task", task),
                               {lang: paths.component(self.name, "lang", lang) for lang in targets},
                               self.language_shape(params))

    def language_shape(self, params: Any) -> tuple[int, bool]:
        """The language adapter's reduction factor and whether it has the invertible part."""
        return params.madx_language.reduction_factor, True

    def language_start(self, ctx: TrainContext) -> Path | None:
        """The adapter a language adapter starts from: ``starts_from``'s for the language (mad-g-ls:
        the generated one), else None (a fresh initialisation)."""
        return ctx.component(self.starts_from, "lang", ctx.name) if self.starts_from else None


class AdapterComposer(ComponentComposer):
    """θ0 with MAD-X adapters: the task adapter (and head) over a target's language adapter."""

    def __init__(self, params: Any, task_path: Path, lang_paths: dict[str, Path], language_shape: tuple[int, bool]):
        super().__init__(task_path, lang_paths)
        self.params, self.language_shape = params, language_shape  # (reduction factor, invertible)

    def load(self, model: Any) -> None:
        from pipeline.formats.adapter import load_adapter
        from pipeline.formats.sparse_diff import SparseDiff
        from pipeline.methods.madx.adapters import add_madx

        rf, invertible = self.language_shape
        self.madx = add_madx(model, language_rf=rf, task_rf=self.params.madx_task.reduction_factor,
                             language_invertible=invertible)
        task_dir = self._read(self.task_path)
        meta = load_adapter(task_dir / "adapter", self.madx.task)
        SparseDiff.load(task_dir / "head").apply(model, with_dense=True)
        self.task_params = int(meta["trainable_parameters"])

    def prepare(self, model: Any, lang: str, with_language: bool) -> int:
        from pipeline.methods.madx.adapters import set_active

        set_active(self.madx, language=with_language, task=True)
        if not with_language:
            return 0
        meta = load_language(self.madx, self._read(self.lang_paths[lang]))
        return int(meta["trainable_parameters"])


@register
class PublishedMadX(MadX):
    """MAD-X with released language adapters: trained here is only the task adapter (and
    head), over the source language's released adapter, composed exactly as `madx`."""

    name = "madx-published"
    summary = ("MAD-X with released AdapterHub language adapters (paper preset; `ltsft import-published "
               "adapter`) and our task adapter trained over the released source-language one")
    language_from = "madx-published"
    imports_language = True
    stage_tasks = "published.adapter_tasks"
    evaluation_sections = ("madx", "published.adapter_languages")  # which targets have an adapter
    variants = (Variant("madx-published", True),)

    def train_language(self, ctx: TrainContext) -> RunResult:
        raise NotImplementedError("madx-published imports its language adapters (`ltsft import-published adapter`)")

    def skipped_targets(self, params: Any, targets: Sequence[str]) -> dict[str, str]:
        """Targets without a released adapter: they get no madx-published score."""
        return {lang: "no released MAD-X language adapter (published.adapter_languages)"
                for lang in targets if lang not in params.published.adapter_languages}
