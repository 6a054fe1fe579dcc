"""A Hugging Face model card (README.md) for a pushed component: YAML metadata the Hub
indexes (base_model, language, datasets, library_name, tags), then the facts in words.

Rendering only: the caller gathers the facts (stages/hub_push.py reads them from the
component's JSON and its run log). A fact nobody recorded is listed under "Not recorded"
instead of being guessed, so a card built from a bare directory still says what it knows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import yaml

from pipeline.formats.hub_repo import LIBRARY_NAME

README = "README.md"


@dataclass
class Card:
    """Everything a card says. ``metrics``: name -> (before training, after), None if unknown."""

    title: str
    summary: str
    usage: str  # Python that loads and applies the component
    base_model: str | None = None
    languages: Sequence[str] = ()
    datasets: Sequence[str] = ()
    tags: Sequence[str] = ()
    size: Sequence[tuple[str, str]] = ()  # K, entries, density, parameters...
    budget: Sequence[tuple[str, str]] = ()  # steps, batch size, learning rate, wall time...
    metrics: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)
    commands: Sequence[str] = ()  # what made it, one shell line each
    unknown: Sequence[str] = ()  # facts the files do not record


def metadata(card: Card) -> dict[str, object]:
    """The YAML header; keys with nothing to say are left out (the Hub rejects empty ones)."""
    meta: dict[str, object] = {}
    if card.base_model:
        meta["base_model"] = card.base_model
    if card.languages:
        meta["language"] = list(card.languages)
    if card.datasets:
        meta["datasets"] = list(card.datasets)
    meta["library_name"] = LIBRARY_NAME
    meta["tags"] = list(dict.fromkeys(card.tags))  # deduplicated, order kept
    return meta


def _table(rows: Sequence[tuple[str, str]], head: tuple[str, str] = ("", "")) -> list[str]:
    return [f"| {head[0]} | {head[1]} |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows)]


def _number(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4g}"


def render(card: Card) -> str:
    """The README.md text: identical cards give identical bytes."""
    header = yaml.safe_dump(metadata(card), sort_keys=False, allow_unicode=True).strip()
    lines = ["---", header, "---", "", f"# {card.title}", "", card.summary, ""]
    if card.size:
        lines += ["## Size", "", *_table(card.size), ""]
    lines += ["## Training budget", ""]
    lines += [*_table(card.budget), ""] if card.budget else ["Not recorded.", ""]
    lines += ["## Dev metrics", ""]
    if card.metrics:
        lines += ["| metric | before training | after training |", "|---|---|---|"]
        lines += [f"| {name} | {_number(b)} | {_number(a)} |" for name, (b, a) in card.metrics.items()]
        lines += [""]
    else:
        lines += ["Not recorded.", ""]
    lines += ["## How it was made", ""]
    lines += ["```bash", *card.commands, "```", ""] if card.commands else ["Not recorded.", ""]
    lines += ["## Use it", "", "```python", card.usage.strip(), "```", ""]
    if card.unknown:
        lines += ["## Not recorded", "", "The component's files do not say:", ""]
        lines += [f"- {item}" for item in card.unknown] + [""]
    return "\n".join(lines)
