"""The registered sparse methods: `lt-sft`, `rand-sft` and `lt-sft-published`.

- `lt-sft`: the LT-SFT diff (K entries chosen by how far phase 1 moved them). Its dense
  phase 1 is kept too: for a language, as the `dense-composed` ablation's language diff;
  for a task, for the sparsity sweep (which selects every K from it).
- `rand-sft`: the same with a random mask of the same K (phase 1 skipped: not needed).
- `lt-sft-published`: the authors' released diffs, imported (never trained here) and
  composed exactly like ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pipeline.core.errors import ConfigError
from pipeline.methods import register
from pipeline.core.method import Method, TrainContext, Variant
from pipeline.core.runs import RunResult, Trained, provenance, run_component


class SparseFineTuning(Method):
    family = "lt_sft"
    sections = ("sparsity", "task_sft")
    language_sections = ("sparsity", "lang_sft")
    selection: ClassVar[str] = "magnitude"
    swept = True

    def _run(self, ctx: TrainContext) -> RunResult:
        from pipeline.methods.lt_sft.lottery import train_lt_sft
        from pipeline.core.parameters import count_parameters_named, maskable_parameter_names

        params = ctx.params
        lang = ctx.kind == "lang"
        k, spec = (params.lang_k, params.lang_sft) if lang else (params.task_k, params.task_sft)
        maskable = maskable_parameter_names(ctx.model)
        total = count_parameters_named(ctx.model, maskable)
        if k > total:
            raise ConfigError(f"{params.k_key(ctx.kind)}: K={k} exceeds the model's {total} maskable entries")

        def train(record: dict[str, Any]) -> Trained:
            record["k"] = k
            features = ctx.task.featurize(ctx.train, ctx.tokenizer, spec.max_length)
            result = train_lt_sft(ctx.model, features, ctx.task.collator(ctx.tokenizer),
                                  spec.lottery(k, params.seed, self.selection), dev=ctx.dev_check(spec.max_length),
                                  diff_meta={"base_model": params.model.name, "provenance": dict(record)})
            head = [] if lang else list(result.diff.dense)  # a language diff's MLM head is never composed
            extras = []
            if result.phase1_diff is not None:
                extras.append(self._phase1(ctx, result.phase1_diff, total))
            return Trained(result.diff, k + count_parameters_named(ctx.model, head),
                           note=f"nnz {result.diff.nnz:,} of K {k:,}", extras=extras, log=result.log)

        sections = self.language_sections if lang else self.sections
        return run_component(ctx, self.name, sections, spec.max_length, ctx.component(self.name), train)

    def _phase1(self, ctx: TrainContext, dense: Any, maskable_total: int) -> tuple[Any, Any, float]:
        """Where LT-SFT's dense phase 1 goes, and its share of the run's time (one phase of two)."""
        if ctx.kind == "lang":
            dense.provenance = provenance(ctx.params, "dense-composed", ["lang_sft"], kind="lang", **ctx.facts,
                                          note="LT-SFT's dense phase 1 for this language (same budget and L1)")
            dense.provenance["trainable_parameters"] = maskable_total
            return ctx.component("dense-composed"), dense, 0.5
        return ctx.component(self.name, "task-phase1"), dense, 0.5

    def train_language(self, ctx: TrainContext) -> RunResult:
        return self._run(ctx)

    def train_task(self, ctx: TrainContext) -> RunResult:
        from pipeline.formats.sparse_diff import SparseDiff

        SparseDiff.load(ctx.component(self.name, "lang", ctx.source)).apply(ctx.model)  # sparse part only
        return self._run(ctx)


@register
class Published(Method):
    name = "lt-sft-published"
    family = "lt_sft"
    summary = "the paper authors' released LT-SFT diffs (paper presets; `ltsft import-published`)"
    sections = ("published",)
    language_from = "lt-sft-published"
    imported = True
    stage_tasks = "published.tasks"
    variants = (Variant("lt-sft-published", True),)

    def skipped_targets(self, params: Any, targets: Sequence[str]) -> dict[str, str]:
        return {lang: "no released language diff (published.unreleased)"
                for lang in targets if lang in params.published.unreleased}


@register
class LotteryTicketSFT(SparseFineTuning):
    name = "lt-sft"
    summary = "LT-SFT: fine-tune, keep the K entries that moved most, reset, train only those"
    language_from = "lt-sft"
    interference = "sparse"
    task_extras = ("task-phase1",)  # its dense phase 1, from which the sparsity sweep selects every K
    variants = (Variant("lt-sft-task-only", False), Variant("lt-sft", True))


@register
class RandomSFT(SparseFineTuning):
    name = "rand-sft"
    summary = "Rand-SFT: the same K, chosen at random (the ablation of LT-SFT's selection)"
    language_from = "rand-sft"
    selection = "random"
    variants = (Variant("rand-sft", True),)
