"""Plain-text corpora, one sentence (or document) per line."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from pathlib import Path

from pipeline.core.atomic import atomic_file


def read_lines(path: str | Path) -> list[str]:
    """The file's non-empty lines, stripped and NFC-normalised (UTF-8)."""
    with open(path, encoding="utf-8-sig") as handle:
        lines = (unicodedata.normalize("NFC", line.strip()) for line in handle)
        return [line for line in lines if line]


def write_lines(lines: Iterable[str], path: str | Path) -> None:
    """Write one line per item (UTF-8, ``\\n`` endings), atomically."""
    with atomic_file(path) as handle:
        for line in lines:
            if "\n" in line or "\r" in line:
                raise ValueError(f"line contains a line break: {line!r}")
            handle.write(line + "\n")
