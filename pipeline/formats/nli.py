"""Sentence-pair NLI data as JSON lines: {"premise", "hypothesis", "label"} per line, the
label one of NLI_LABELS (MultiNLI's and AmericasNLI's order)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.atomic import atomic_file

NLI_LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")


@dataclass(frozen=True)
class NliExample:
    premise: str
    hypothesis: str
    label: str

    def __post_init__(self) -> None:
        if self.label not in NLI_LABELS:
            raise ValueError(f"unknown NLI label {self.label!r} (known: {', '.join(NLI_LABELS)})")


def parse_label(value: object) -> str:
    """A label as its name; integers 0/1/2 index NLI_LABELS."""
    if isinstance(value, bool):
        raise ValueError(f"unknown NLI label {value!r}")
    if isinstance(value, int):
        if not 0 <= value < len(NLI_LABELS):
            raise ValueError(f"NLI label index {value} out of range 0..{len(NLI_LABELS) - 1}")
        return NLI_LABELS[value]
    if value not in NLI_LABELS:
        raise ValueError(f"unknown NLI label {value!r} (known: {', '.join(NLI_LABELS)})")
    return str(value)


def read_nli(path: str | Path) -> list[NliExample]:
    """Parse a JSON-lines file; a malformed line raises ValueError naming file and line."""
    examples = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or set(row) != {"premise", "hypothesis", "label"}:
                    raise ValueError("expected exactly the keys premise, hypothesis, label")
                examples.append(NliExample(str(row["premise"]), str(row["hypothesis"]), parse_label(row["label"])))
            except (ValueError, json.JSONDecodeError) as err:
                raise ValueError(f"{path}, line {lineno}: {err}") from None
    return examples


def write_nli(examples: Iterable[NliExample], path: str | Path) -> None:
    with atomic_file(path) as handle:
        for example in examples:
            row = {"premise": example.premise, "hypothesis": example.hypothesis, "label": example.label}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
