"""Writers per data format: the download stage normalises every source into these files,
which the tasks then read (a task names its format in ``Task.data_format``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.formats.bio import write_bio
from pipeline.formats.conllu import write_conllu
from pipeline.formats.nli import write_nli

WRITERS: dict[str, Callable[[Sequence[Any], str | Path], None]] = {
    "conllu": write_conllu,
    "bio": write_bio,
    "jsonl": write_nli,
}


def write_examples(data_format: str, examples: Sequence[Any], path: str | Path) -> None:
    if data_format not in WRITERS:
        raise ValueError(f"no writer for data format {data_format!r} (known: {', '.join(WRITERS)})")
    WRITERS[data_format](examples, path)
