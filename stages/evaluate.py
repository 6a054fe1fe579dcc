"""Stage `evaluate@<task>`: compose diffs onto θ0 and score zero-shot on every target.

- `lt-sft`:           θ0 + φ_task + φ_lang(target)   (the paper's method)
- `lt-sft-task-only`: θ0 + φ_task                      (no target-language adaptation)
Each target starts from the same composed task model, restored bit-exactly between
targets from a snapshot (not by reverting, which would accumulate rounding).
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline.atomic import write_json
from pipeline.models import load_tokenizer
from pipeline.sft import SparseDiff, snapshot
from pipeline.tasks import get_task
from stages import layout
from stages.common import quiet_transformers, require_files
from stages.config import Params


def run(params: Params, task_name: str) -> list[dict[str, Any]]:
    quiet_transformers()
    spec = params.task(task_name)
    task = get_task(task_name)
    tests = {lang: layout.task_split(task_name, lang, "test", task.data_format) for lang in spec.targets}
    lang_diffs = {lang: layout.lang_diff(lang) for lang in spec.targets}
    require_files(layout.BASE_MODEL, layout.task_diff(task_name), *tests.values(), *lang_diffs.values())

    tokenizer = load_tokenizer(layout.BASE_MODEL)
    model = task.build_model(layout.BASE_MODEL, params.seed)
    task_diff = SparseDiff.load(layout.task_diff(task_name))
    task_diff.apply(model, with_dense=True)  # dense = the trained head
    task_only = snapshot(model)

    rows = []
    for lang in spec.targets:
        examples = task.read(tests[lang])
        for method, diff in (("lt-sft-task-only", None), ("lt-sft", SparseDiff.load(lang_diffs[lang]))):
            with torch.no_grad():
                for name, value in model.named_parameters():
                    value.copy_(task_only[name])
            if diff is not None:
                diff.apply(model)  # sparse part only: the MLM head stays out of the task model
            metrics = task.evaluate(model, examples, tokenizer, params.eval_max_length, params.eval_batch_size)
            rows.append({"task": task_name, "method": method, "lang": lang,
                         "metric": task.metric, "value": metrics[task.metric]})
            print(f"{task_name} {method:>17} {lang}: {task.metric} {metrics[task.metric]:.4f}")
    write_json(layout.results_file(task_name, "lt-sft"), rows)
    return rows
