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
from stages.seeds import seed_runs


def run(params, task_name: str, method: str = "lt-sft") -> None:
    chosen = get_method(method, task_methods(), "a task")
    spec = params.task(task_name)
    params = params.for_task(task_name)
    task = task_for(spec)
    train_path = layout.task_split(task_name, spec.source, "train", task.data_format)
    dev_path = layout.task_split(task_name, spec.source, "dev", task.data_format)
    runs = list(seed_runs(params))
    require_files(layout.BASE_MODEL, train_path, dev_path,
                  *(path for _, paths in runs for path in chosen.task_inputs(paths, task_name, spec.source)))
    tokenizer = load_tokenizer(layout.BASE_MODEL)
    train, dev = task.read(train_path), task.read(dev_path)
    for run_params, paths in runs:
        model = task.build_model(layout.BASE_MODEL, run_params.seed)
        ctx = TrainContext(params=run_params, task=task, kind="task", name=task_name, model=model, tokenizer=tokenizer,
                           train=train, dev=dev, paths=paths, source=spec.source,
                           facts={"task": task_name, "source_lang": spec.source})
        result = chosen.train_task(ctx)
        write_curves(result.curves)
        write_run_logs(result.facts)
