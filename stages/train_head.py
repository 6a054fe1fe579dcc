"""Stage `train_head@<task>`: the `head-only` floor — a head trained on the frozen θ0."""

from __future__ import annotations

from pipeline.head_only import train_head_only
from pipeline.models import load_tokenizer
from pipeline.tasks import get_task
from stages import layout
from stages.common import git_revision, params_hash, require_files
from stages.config import Params


def run(params: Params, task_name: str) -> None:
    spec = params.task(task_name)
    task = get_task(task_name)
    settings = params.head_only
    train_path = layout.task_split(task_name, spec.source, "train", task.data_format)
    dev_path = layout.task_split(task_name, spec.source, "dev", task.data_format)
    require_files(layout.BASE_MODEL, train_path, dev_path)
    tokenizer = load_tokenizer(layout.BASE_MODEL)
    model = task.build_model(layout.BASE_MODEL, params.seed)
    head = task.head_parameter_names(model)
    features = task.featurize(task.read(train_path), tokenizer, settings.max_length)
    provenance = {"kind": "head-only", "task": task_name, "source_lang": spec.source, "preset": params.preset,
                  "seed": params.seed, "git_revision": git_revision(), "params_hash": params_hash(params.raw),
                  "params": {"head_only": params.raw["head_only"]}}
    diff = train_head_only(model, features, task.collator(tokenizer), head, settings.phase, settings.run(params.seed),
                           max_grad_norm=settings.max_grad_norm,
                           diff_meta={"base_model": str(params.model.get("name", "")), "provenance": provenance})
    dev = task.evaluate(model, task.read(dev_path), tokenizer, settings.max_length, params.eval_batch_size)
    diff.provenance["dev_metrics"] = {"after": dev}
    diff.save(layout.head_diff(task_name))
    print(f"{layout.head_diff(task_name)}: head-only, dev {task.metric} {dev[task.metric]:.4f}")
