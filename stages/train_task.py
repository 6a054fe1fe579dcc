"""Stage `train_task*@<task>`: a task's component, trained on the source language.

Methods (``--method``), each starting from the source language's component where the
method has one (swapped for the target's at test time):
- `lt-sft` / `rand-sft`: a sparse task diff on θ0 + the source language's diff.
- `dense-composed`: dense fine-tuning (LT-SFT's task phase-1 budget) on θ0 + the source
  language's dense diff: the interference ablation.
- `full-ft`: dense fine-tuning of θ0, no language component.
- `head-only`: a head on the frozen θ0 (the floor).
- `madx`: a task adapter (and head) on top of the frozen source language adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.madx import add_madx, count_parameters, load_adapter, save_adapter
from pipeline.models import load_tokenizer
from pipeline.sft import SparseDiff, snapshot
from pipeline.tasks import get_task
from pipeline.training import train_parameters
from stages import layout
from stages.common import DevScorer, finish, numel, provenance, require_files, train_dense_diff, train_diff
from stages.config import ConfigError, DenseSpec, Params, TaskSpec

Trainer = Callable[[Params, TaskSpec, Any, Any, Any, list, list], None]


def _sparse(method: str) -> Trainer:
    def train(params, spec, task, model, tokenizer, train, dev):
        SparseDiff.load(layout.lang_diff(spec.source, method)).apply(model)  # sparse part only
        result = train_diff(params, "task", task, model, tokenizer, train, dev, params.task_sft,
                            layout.task_diff(spec.name, method), {"task": spec.name, "source_lang": spec.source},
                            method=method)
        if result.phase1_diff is not None:  # lt-sft: kept for the sparsity sweep
            result.phase1_diff.save(layout.task_phase1(spec.name))
    return train


def _dense_composed(params, spec, task, model, tokenizer, train, dev):
    SparseDiff.load(layout.lang_diff(spec.source, "dense-composed")).apply(model)
    sft = params.task_sft  # the same budget and settings as LT-SFT's dense phase 1
    dense = DenseSpec(sft.phase1, sft.batch_size, sft.learning_rate, sft.max_grad_norm, sft.max_length,
                      sft.head_learning_rate)
    train_dense_diff(params, "dense-composed", task, model, tokenizer, train, dev, dense, ["task_sft"],
                     layout.task_diff(spec.name, "dense-composed"), {"task": spec.name, "source_lang": spec.source})


def _full_ft(params, spec, task, model, tokenizer, train, dev):
    train_dense_diff(params, "full-ft", task, model, tokenizer, train, dev, params.full_ft, ["full_ft"],
                     layout.task_diff(spec.name, "full-ft"), {"task": spec.name, "source_lang": spec.source})


def _head_only(params, spec, task, model, tokenizer, train, dev):
    train_dense_diff(params, "head-only", task, model, tokenizer, train, dev, params.head_only, ["head_only"],
                     layout.task_diff(spec.name, "head-only"), {"task": spec.name, "source_lang": spec.source},
                     train_body=False)


def _madx(params, spec, task, model, tokenizer, train, dev):
    settings = params.madx_task
    meta = provenance(params, "madx", ["madx"], kind="task", task=spec.name, source_lang=spec.source,
                      train_examples=len(train))
    madx = add_madx(model, language_rf=params.madx_language.reduction_factor, task_rf=settings.reduction_factor,
                    seed=params.seed)
    load_adapter(layout.lang_adapter(spec.source), madx.language)
    head = task.head_parameter_names(model)
    head = [name for name in head if not name.startswith("madx.")]
    start = snapshot(model, head)
    names = [name for name, _ in model.named_parameters() if name.startswith("madx.task.")] + head
    scorer = DevScorer(params, task, tokenizer, dev, settings.max_length)
    before: dict[str, float] = {}  # a random head's starting score says nothing
    features = task.featurize(train, tokenizer, settings.max_length)
    train_parameters(model, names, features, task.collator(tokenizer), settings.phase, settings.run(params.seed),
                     "madx-task", max_grad_norm=settings.max_grad_norm, head=head,
                     head_learning_rate=settings.head_learning_rate)
    after = scorer(model)
    meta |= {"trainable_parameters": count_parameters(madx.task) + numel(model, head),
             "dev_metrics": {"before": before, "after": after}}
    finish(meta)
    out = layout.task_adapter(spec.name)
    save_adapter(madx.task, out / "adapter", meta)
    SparseDiff.from_states(start, snapshot(model, head), [], head, provenance=meta).save(out / "head")
    print(f"{out}: madx task adapter + head, {meta['trainable_parameters']:,} parameters; "
          f"{scorer.line(before, after)}")


TRAINERS: dict[str, Trainer] = {
    "lt-sft": _sparse("lt-sft"), "rand-sft": _sparse("rand-sft"), "dense-composed": _dense_composed,
    "full-ft": _full_ft, "head-only": _head_only, "madx": _madx,
}


def source_component(method: str, spec: TaskSpec) -> list:
    """The source-language component a method trains on top of (none for full-ft, head-only)."""
    if method in ("lt-sft", "rand-sft", "dense-composed"):
        return [layout.lang_diff(spec.source, method)]
    if method == "madx":
        return [layout.lang_adapter(spec.source)]
    return []


def run(params: Params, task_name: str, method: str = "lt-sft") -> None:
    if method not in TRAINERS:
        raise ConfigError(f"--method: unknown method {method!r} for a task (known: {', '.join(TRAINERS)})")
    spec = params.task(task_name)
    params = params.for_task(task_name)
    task = get_task(task_name)
    train_path = layout.task_split(task_name, spec.source, "train", task.data_format)
    dev_path = layout.task_split(task_name, spec.source, "dev", task.data_format)
    require_files(layout.BASE_MODEL, train_path, dev_path, *source_component(method, spec))
    tokenizer = load_tokenizer(layout.BASE_MODEL)
    model = task.build_model(layout.BASE_MODEL, params.seed)
    TRAINERS[method](params, spec, task, model, tokenizer, task.read(train_path), task.read(dev_path))
