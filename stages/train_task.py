"""Stage `train_task@<task>`: an LT-SFT task diff on the source language.

The source language's diff is applied first (sparse part only), so the task diff learns
the task on top of the source language's adaptation, as in the paper; at test time the
source language diff is swapped for the target's.
"""

from __future__ import annotations

from pipeline.models import load_tokenizer
from pipeline.sft import SparseDiff
from pipeline.tasks import get_task
from stages import layout
from stages.common import require_files, train_diff
from stages.config import Params


def run(params: Params, task_name: str) -> None:
    spec = params.task(task_name)
    task = get_task(task_name)
    train_path = layout.task_split(task_name, spec.source, "train", task.data_format)
    dev_path = layout.task_split(task_name, spec.source, "dev", task.data_format)
    require_files(layout.BASE_MODEL, train_path, dev_path, layout.lang_diff(spec.source))
    tokenizer = load_tokenizer(layout.BASE_MODEL)
    model = task.build_model(layout.BASE_MODEL, params.seed)
    SparseDiff.load(layout.lang_diff(spec.source)).apply(model)
    train_diff(
        params, "task", task, model, tokenizer,
        task.read(train_path), task.read(dev_path), params.task_sft,
        layout.task_diff(task_name), {"task": task_name, "source_lang": spec.source},
    )
