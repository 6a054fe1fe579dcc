"""Task registry: one module per task; the pipeline looks tasks up by name here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.tasks.base import Task
from pipeline.tasks.dp import DependencyParsing
from pipeline.tasks.mlm import MaskedLM
from pipeline.tasks.ner import NamedEntityRecognition
from pipeline.tasks.nli import NaturalLanguageInference
from pipeline.tasks.pos import PosTagging

if TYPE_CHECKING:
    from pipeline.core.config import TaskSpec

TASKS: dict[str, Task] = {
    task.name: task
    for task in (MaskedLM(), PosTagging(), DependencyParsing(), NamedEntityRecognition(), NaturalLanguageInference())
}

# Tasks that produce task diffs (MLM trains language diffs instead).
DOWNSTREAM_TASKS = tuple(name for name in TASKS if name != "mlm")


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}") from None


def task_for(spec: TaskSpec) -> Task:
    """The task of ``tasks.<name>`` in params (a ``TaskSpec``), built with the settings it
    takes (``Task.options``, e.g. dp's head and decoding); unset ones keep the task's defaults.
    Every stage that builds a task's model or scores it gets its task here."""
    task = get_task(spec.name)
    chosen = {option: getattr(spec, option) for option in task.options if getattr(spec, option, None) is not None}
    return type(task)(**chosen) if chosen else task
