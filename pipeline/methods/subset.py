"""Methods that train a named subset of parameters densely and store the change as a diff:
full-ft, dense-composed, head-only (pipeline/methods/dense) and BitFit. The subset is the
only thing that differs between them; training, storage and evaluation are shared.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pipeline.core.method import Method, TrainContext
from pipeline.core.runs import RunResult, Trained, run_component


class SubsetDiffMethod(Method):
    """A task component trained densely over ``body`` (None: the whole encoder) and the head."""

    trains_body: ClassVar[bool] = True

    @property
    def code(self) -> tuple[str, ...]:
        return (self.family, "subset.py")

    def spec(self, params: Any) -> Any:
        """The DenseSpec (budget, batch size, rates) of this method's task runs."""
        return getattr(params, self.sections[0])

    def body(self, model: Any) -> list[str] | None:
        return None if self.trains_body else []

    def may_change(self, model: Any) -> list[str]:
        body = self.body(model)
        return super().may_change(model) if body is None else body

    def train_task(self, ctx: TrainContext) -> RunResult:
        from pipeline.formats.sparse_diff import SparseDiff
        from pipeline.core.parameters import count_parameters_named, maskable_parameter_names
        from pipeline.core.training import train_as_diff

        if self.has_language:
            SparseDiff.load(ctx.component(self.name, "lang", ctx.source)).apply(ctx.model)
        spec = self.spec(ctx.params)
        head = ctx.task.head_parameter_names(ctx.model)
        body = self.body(ctx.model)
        trained = maskable_parameter_names(ctx.model) if body is None else body

        k = self.sparse_k(ctx.model, trained)

        def train(record: dict[str, Any]) -> Trained:
            if k is not None:
                record["k"] = k
            features = ctx.task.featurize(ctx.train, ctx.tokenizer, spec.max_length)
            diff, log = train_as_diff(ctx.model, features, ctx.task.collator(ctx.tokenizer), head, spec.phase,
                                 spec.run(ctx.params.seed), body=body, max_grad_norm=spec.max_grad_norm,
                                 description=self.name,
                                 head_learning_rate=spec.head_learning_rate if self.trains_body else None,
                                 diff_meta={"base_model": ctx.params.model.name, "k": k},
                                 dev=ctx.dev_check(spec.max_length))
            return Trained(diff, count_parameters_named(ctx.model, [*trained, *head]), log=log)

        return run_component(ctx, self.name, self.sections, spec.max_length, ctx.component(self.name), train)

    def sparse_k(self, model: Any, body: list[str]) -> int | None:
        """K of a method that is sparse by construction (the entries it may change), else None."""
        return None
