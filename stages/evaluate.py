"""Stage `evaluate@<task>` (and `evaluate_head@<task>`): compose diffs onto θ0 and score
zero-shot on every target language.

Method groups (one results file each, results/<task>/<group>.json):
- `lt-sft`:    `lt-sft` = θ0 + φ_task + φ_lang(target)  (the paper's method) and
               `lt-sft-task-only` = θ0 + φ_task          (no target-language adaptation)
- `head-only`: θ0 with a head trained on the frozen encoder (the floor)
Each method starts from the same composed model, restored bit-exactly between targets
from a snapshot (not by reverting, which would accumulate rounding).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import write_json
from pipeline.models import load_tokenizer
from pipeline.sft import SparseDiff, snapshot
from pipeline.tasks import get_task
from stages import layout
from stages.common import require_files
from stages.config import ConfigError, Params

# group -> (the diff applied whole, [(method, add the target language's diff?)])
GROUPS: dict[str, tuple[Callable[[str], Path], list[tuple[str, bool]]]] = {
    "lt-sft": (layout.task_diff, [("lt-sft-task-only", False), ("lt-sft", True)]),
    "head-only": (layout.head_diff, [("head-only", False)]),
}


def run(params: Params, task_name: str, group: str = "lt-sft") -> list[dict[str, Any]]:
    if group not in GROUPS:
        raise ConfigError(f"--methods: unknown method group {group!r} (known: {', '.join(GROUPS)})")
    base_diff_path, methods = GROUPS[group]
    spec = params.task(task_name)
    task = get_task(task_name)
    tests = {lang: layout.task_split(task_name, lang, "test", task.data_format) for lang in spec.targets}
    lang_diffs = {lang: layout.lang_diff(lang) for lang in spec.targets} if any(m[1] for m in methods) else {}
    require_files(layout.BASE_MODEL, base_diff_path(task_name), *tests.values(), *lang_diffs.values())

    tokenizer = load_tokenizer(layout.BASE_MODEL)
    model = task.build_model(layout.BASE_MODEL, params.seed)
    SparseDiff.load(base_diff_path(task_name)).apply(model, with_dense=True)  # dense = the head
    composed = snapshot(model)

    rows = []
    for lang in spec.targets:
        examples = task.read(tests[lang])
        for method, with_lang in methods:
            with torch.no_grad():
                for name, value in model.named_parameters():
                    value.copy_(composed[name])
            if with_lang:
                # Sparse part only: the language diff's MLM head stays out of the task model.
                SparseDiff.load(lang_diffs[lang]).apply(model)
            metrics = task.evaluate(model, examples, tokenizer, params.eval_max_length, params.eval_batch_size)
            rows.append({"task": task_name, "method": method, "lang": lang,
                         "metric": task.metric, "value": metrics[task.metric]})
            print(f"{task_name} {method:>17} {lang}: {task.metric} {metrics[task.metric]:.4f}")
    write_json(layout.results_file(task_name, group), rows)
    return rows
