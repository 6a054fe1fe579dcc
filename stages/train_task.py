"""Stage `train_task*@<task>`: a task's component, trained on the task's source language,
over the source language's component where the method has one (swapped for the target's
at test time). `--method`: any registered method that trains (`ltsft train-task --help`).
"""

from __future__ import annotations

from pipeline.methods import task_methods
from pipeline.core.method import TrainContext
from pipeline.core.models import load_tokenizer
from pipeline.tasks import task_for
from stages import layout
from stages.common import get_method, require_files, write_curves, write_run_logs


def run(params, task_name: str, method: str = "lt-sft") -> None:
    chosen = get_method(method, task_methods(), "a task")
    spec = params.task(task_name)
    params = params.for_task(task_name)
    task = task_for(spec)
    train_path = layout.task_split(task_name, spec.source, "train", task.data_format)
    dev_path = layout.task_split(task_name, spec.source, "dev", task.data_format)
    require_files(layout.BASE_MODEL, train_path, dev_path, *chosen.task_inputs(layout.COMPONENTS, task_name, spec.source))
    tokenizer = load_tokenizer(layout.BASE_MODEL)
    model = task.build_model(layout.BASE_MODEL, params.seed)
    ctx = TrainContext(params=params, task=task, kind="task", name=task_name, model=model, tokenizer=tokenizer,
                       train=task.read(train_path), dev=task.read(dev_path), paths=layout.COMPONENTS,
                       source=spec.source, facts={"task": task_name, "source_lang": spec.source})
    result = chosen.train_task(ctx)
    write_curves(result.curves)
    write_run_logs(result.facts)
