"""The UDHR languages MAD-G's generator could train on (pipeline/methods/mad_g/udhr_languages.py)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from pipeline.core.errors import LtsftError
from pipeline.methods.mad_g.udhr_languages import (
    main,
    udhr_declarations,
    uriel_udhr_languages,
)
from pipeline.sources.registry import PINS
from pipeline.typology import knows

LONG = "one two three four five six seven eight nine ten eleven"  # 11 whitespace tokens
SHORT = "Article one"


def _html(code: str, iso: str, *paragraphs: str) -> str:
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (f'<!doctype html>\n<html data-code="{code}" data-iso6393="{iso}" dir="ltr">'
            f"<head><title>x</title></head><body><h1>{SHORT}</h1>{body}</body></html>")


def _archive(tmp_path: Path, files: dict[str, str]) -> Path:
    path = tmp_path / "udhr-test.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    assert not knows("cnr") and knows("hau") and knows("jpn")  # the premises of the cases below
    return _archive(tmp_path, {
        "package/readme.md": "not a declaration",
        "package/declaration/eng.html": _html("eng", "eng", LONG, SHORT),
        "package/declaration/hau_NG.html": _html("hau_NG", "hau", LONG, LONG, LONG),
        "package/declaration/hau.html": _html("hau", "hau", LONG),  # the bare ISO code wins
        "package/declaration/fuv_1.html": _html("fuv_1", "fuv", LONG),
        "package/declaration/fuv_2.html": _html("fuv_2", "fuv", LONG, f"{LONG} more"),  # most text wins
        "package/declaration/heb.html": _html("heb", "heb", LONG),  # excluded below as "he"
        "package/declaration/jpn.html": _html("jpn", "jpn", "すべての人間は、生まれながらにして自由であり、"),
        "package/declaration/cnr.html": _html("cnr", "cnr", LONG),  # not in URIEL
        "package/declaration/013.html": _html("013", "und", LONG),  # undetermined language
        "package/declaration/yor.html": _html("yor", "yor", SHORT, SHORT),  # no line of 10 tokens
    })


def test_usable_languages(archive: Path) -> None:
    declarations = udhr_declarations(archive)
    assert [d.code for d in declarations] == sorted(d.code for d in declarations)
    assert len(declarations) == 10
    usable = uriel_udhr_languages(declarations, exclude=["he"])
    assert {iso: d.code for iso, d in usable.items()} == {"eng": "eng", "fuv": "fuv_2", "hau": "hau"}
    assert list(usable) == sorted(usable)
    assert usable["eng"].lines == (LONG, SHORT) and usable["eng"].training_lines == [LONG]
    assert "heb" in uriel_udhr_languages(declarations)
    assert "heb" not in uriel_udhr_languages(declarations, exclude=["heb"])


def test_count_command(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([str(archive), "he", "ja"])
    out = capsys.readouterr().out
    assert "10 declarations, 7 languages (not und, mis, mul, zxx), 6 of them in URIEL" in out
    assert f"3 usable languages, 4 lines of >= 10 tokens, {4 * len(LONG) + len(' more')} characters" in out


def test_bad_archives_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(LtsftError, match="no package/declaration"):
        udhr_declarations(_archive(tmp_path, {"package/readme.md": "x"}))
    with pytest.raises(LtsftError, match="names no language"):
        udhr_declarations(_archive(tmp_path, {"package/declaration/x.html": "<html><p>x</p></html>"}))
    (tmp_path / "broken.tgz").write_bytes(b"not a tarball")
    with pytest.raises(LtsftError, match="cannot read the udhr archive"):
        udhr_declarations(tmp_path / "broken.tgz")
    with pytest.raises(LtsftError, match="language code 'x'"):
        uriel_udhr_languages([], exclude=["x"])


CACHED = Path.home() / ".cache" / "ltsft" / "registry" / PINS["udhr"].filename


@pytest.mark.skipif(not CACHED.is_file(), reason="the pinned udhr archive is not in the local cache (never fetched here)")
def test_the_real_archive_keeps_targets_unseen() -> None:
    usable = uriel_udhr_languages(udhr_declarations(CACHED), exclude=["he", "tr", "ja"])
    assert len(usable) > 400 and {"eng", "hau", "yor", "swh"} <= set(usable)
    assert not {"heb", "tur", "jpn", "und"} & set(usable)
    assert all(knows(iso) and d.training_lines for iso, d in usable.items())
