"""Task registry: one module per task; the pipeline looks tasks up by name here."""

from __future__ import annotations

from pipeline.tasks.base import Task
from pipeline.tasks.dp import DependencyParsing
from pipeline.tasks.mlm import MaskedLM
from pipeline.tasks.ner import NamedEntityRecognition
from pipeline.tasks.nli import NaturalLanguageInference
from pipeline.tasks.pos import PosTagging

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
