"""CoNLL-U and text readers, and the `smoke` fixture data they read."""

from __future__ import annotations

import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.formats.conllu import UPOS_TAGS, Sentence, read_conllu, write_conllu
from pipeline.formats.text import read_lines, write_lines

FIXTURES = Path(__file__).parent / "fixtures"
SMOKE = FIXTURES / "smoke"
LANGS = ("en", "xx", "yy")
SPLIT_SIZES = {"train": 24, "dev": 8, "test": 8}

HEADER = "# sent_id = s1\n# text = Don't go.\n"
MULTIWORD = (
    HEADER
    + "1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
    + "1\tDo\tdo\tAUX\t_\t_\t3\taux\t_\t_\n"
    + "2\tn't\tnot\tPART\t_\t_\t3\tadvmod\t_\t_\n"
    + "3\tgo\tgo\tVERB\t_\t_\t0\troot\t_\tSpaceAfter=No\n"
    + "3.1\tgone\tgo\tVERB\t_\t_\t_\t_\t3:conj\t_\n"
    + "4\t.\t.\tPUNCT\t_\t_\t3\tpunct\t_\t_\n"
)


def squash(text: str) -> str:
    """A sentence's characters without whitespace: tokenisation-independent comparison."""
    return "".join(text.split())


# --- conllu ------------------------------------------------------------------


def test_upos_tags_are_the_ud_v2_set() -> None:
    assert UPOS_TAGS == tuple(
        "ADJ ADP ADV AUX CCONJ DET INTJ NOUN NUM PART PRON PROPN PUNCT SCONJ SYM VERB X".split()
    )


def test_sentence_rejects_ragged_columns() -> None:
    with pytest.raises(ValueError):
        Sentence(("a", "b"), ("DET",), (0, 1), ("root", "det"), None)


def test_round_trip(tmp_path: Path) -> None:
    sentences = [
        Sentence(("The", "dog", "barks", "."), ("DET", "NOUN", "VERB", "PUNCT"), (2, 3, 0, 3),
                 ("det", "nsubj", "root", "punct"), "a-1"),
        Sentence(("Ça", "va", "?"), ("PRON", "VERB", "PUNCT"), (2, 0, 2), ("nsubj", "root", "punct"), None),
    ]
    path = tmp_path / "out.conllu"
    write_conllu(sentences, path)
    assert read_conllu(path) == sentences
    for line in path.read_text(encoding="utf-8").splitlines():
        assert not line or line.startswith("#") or len(line.split("\t")) == 10


words = st.text(st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=8)


@st.composite
def sentences(draw: st.DrawFn) -> Sentence:
    n = draw(st.integers(1, 8))
    return Sentence(
        words=tuple(draw(st.lists(words, min_size=n, max_size=n))),
        upos=tuple(draw(st.lists(st.sampled_from(UPOS_TAGS), min_size=n, max_size=n))),
        heads=tuple(draw(st.lists(st.integers(0, n), min_size=n, max_size=n))),
        deprels=tuple(draw(st.lists(st.sampled_from(["root", "nsubj", "obj", "obl:tmod"]), min_size=n, max_size=n))),
        sent_id=draw(st.none() | st.from_regex(r"[A-Za-z0-9_-]{1,10}", fullmatch=True)),
    )


@settings(max_examples=50, deadline=None)
@given(st.lists(sentences(), max_size=5))
def test_round_trip_property(tmp_path_factory: pytest.TempPathFactory, batch: list[Sentence]) -> None:
    path = tmp_path_factory.mktemp("rt") / "x.conllu"
    write_conllu(batch, path)
    assert read_conllu(path) == batch


def test_skips_multiword_tokens_and_empty_nodes(tmp_path: Path) -> None:
    path = tmp_path / "mwt.conllu"
    path.write_text(MULTIWORD, encoding="utf-8")  # no final blank line: tolerated
    [sentence] = read_conllu(path)
    assert sentence.words == ("Do", "n't", "go", ".")
    assert sentence.upos == ("AUX", "PART", "VERB", "PUNCT")
    assert sentence.heads == (3, 3, 0, 3)
    assert sentence.deprels == ("aux", "advmod", "root", "punct")
    assert sentence.sent_id == "s1"


def test_several_sentences_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "two.conllu"
    path.write_text("# newdoc\n" + MULTIWORD + "\n\n# text = Hi\n1\tHi\t_\tINTJ\t_\t_\t0\troot\t_\t_\n\n", encoding="utf-8")
    first, second = read_conllu(path)
    assert first.sent_id == "s1" and len(first.words) == 4
    assert second == Sentence(("Hi",), ("INTJ",), (0,), ("root",), None)


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ("3\tgo\tgo\tVERB\t_\t_\t0\troot\t_", "columns"),  # 9 columns
        ("3\tgo\tgo\tVERB\t_\t_\t0\troot\t_\t_\textra", "columns"),  # 11 columns
        ("3\tgo go\tgo\tVERB _ _ 0 root _ _", "columns"),  # spaces instead of tabs
        ("3\tgo\tgo\tVERB\t_\t_\tX\troot\t_\t_", "HEAD"),  # non-integer head
        ("3\tgo\tgo\tVERB\t_\t_\t_\troot\t_\t_", "HEAD"),
        ("3\tgo\tgo\tVERB\t_\t_\t9\troot\t_\t_", "HEAD"),  # head beyond the sentence
        ("x\tgo\tgo\tVERB\t_\t_\t0\troot\t_\t_", "ID"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, bad_line: str, fragment: str) -> None:
    lines = MULTIWORD.splitlines()
    lines[5] = bad_line  # the "3\tgo..." word line: line 6 of the file
    path = tmp_path / "broken_file.conllu"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as error:
        read_conllu(path)
    message = str(error.value)
    assert "broken_file.conllu" in message
    assert "line 6" in message
    assert fragment in message


# --- text --------------------------------------------------------------------


def test_read_lines_strips_skips_blank_and_normalises(tmp_path: Path) -> None:
    decomposed = unicodedata.normalize("NFD", "café")
    path = tmp_path / "t.txt"
    path.write_text(f"  hello world \n\n   \n{decomposed}\r\nlast", encoding="utf-8")
    assert read_lines(path) == ["hello world", unicodedata.normalize("NFC", "café"), "last"]


def test_write_read_lines_round_trip(tmp_path: Path) -> None:
    lines = ["one sentence .", "Mä thei thöshä", "三"]
    path = tmp_path / "sub" / "t.txt"
    write_lines(lines, path)
    assert read_lines(path) == lines
    with pytest.raises(ValueError):
        write_lines(["two\nlines"], tmp_path / "bad.txt")


# --- smoke fixtures ----------------------------------------------------------


def fixture(lang: str, split: str) -> list[Sentence]:
    return read_conllu(SMOKE / "pos" / lang / f"{split}.conllu")


@pytest.mark.parametrize("lang", LANGS)
def test_fixture_treebanks_parse_with_valid_tags_and_trees(lang: str) -> None:
    for split, size in SPLIT_SIZES.items():
        sentences = fixture(lang, split)
        assert len(sentences) == size
        for s in sentences:
            assert s.sent_id and s.sent_id.startswith(f"smoke-{lang}-")
            assert set(s.upos) <= set(UPOS_TAGS)
            assert s.heads.count(0) == 1 and s.deprels[s.heads.index(0)] == "root"
            assert all(0 <= h <= len(s.words) and h != i for i, h in enumerate(s.heads, 1))


def test_fixture_languages_are_parallel_with_different_surface_forms() -> None:
    for split in SPLIT_SIZES:
        en, xx, yy = (fixture(lang, split) for lang in LANGS)
        for a, b, c in zip(en, xx, yy):
            assert a.sent_id[-3:] == b.sent_id[-3:] == c.sent_id[-3:]
            assert a.upos == b.upos and sorted(a.upos) == sorted(c.upos)
            assert a.words != b.words and a.words != c.words
    train = fixture("en", "train")
    assert len({tag for s in train for tag in s.upos}) >= 15


@pytest.mark.parametrize("lang", LANGS)
def test_no_test_sentence_leaks_into_text_or_train(lang: str) -> None:
    test = {squash("".join(s.words)) for s in fixture(lang, "test")}
    train = {squash("".join(s.words)) for s in fixture(lang, "train")}
    text = read_lines(SMOKE / "text" / f"{lang}.txt")
    assert len(text) >= 50
    assert not test & train
    assert not test & {squash(line) for line in text}


def test_fixtures_match_generator(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(FIXTURES / "make_smoke.py"), str(tmp_path)], check=True)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(SMOKE) for p in SMOKE.rglob("*") if p.is_file())
    assert generated == committed
    for rel in generated:
        assert (tmp_path / rel).read_bytes() == (SMOKE / rel).read_bytes(), rel
