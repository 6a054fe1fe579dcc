"""Token-level NER data in IOB2 (``B-X`` opens an entity, ``I-X`` continues it, ``O`` is outside).

Files are CoNLL style: one ``word<TAB>tag`` line per token, a blank line after each
sentence, UTF-8 with ``\\n`` endings. Sources that tag differently (IOB1, BIOSE, their own
entity types) are brought to ``NER_TAGS`` with ``biose_to_bio``, ``to_bio`` and
``map_entity_types`` before writing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.atomic import atomic_file

NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
OUTSIDE = "O"


@dataclass(frozen=True)
class TaggedSentence:
    """One sentence's words and their tags, one tag per word."""

    words: tuple[str, ...]
    tags: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.words) != len(self.tags):
            raise ValueError(f"{len(self.words)} words but {len(self.tags)} tags")


def _split_tag(tag: str) -> tuple[str, str]:
    """``("B", "PER")`` for ``B-PER``, ``("O", "")`` for ``O``; any other prefix is an error."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, sep, kind = tag.partition("-")
    if not sep or not kind or len(prefix) != 1 or prefix not in "BIES":
        raise ValueError(f"not an entity tag: {tag!r}")
    return prefix, kind


def iob2_error(tags: Sequence[str]) -> str | None:
    """Why ``tags`` are not valid IOB2 (only O, B-X, I-X; I-X only after B-X or I-X), or None."""
    prev_kind = None
    for i, tag in enumerate(tags):
        prefix, kind = _split_tag(tag)
        if prefix in "ES":
            return f"tag {i + 1} is {tag!r}, not IOB2"
        if prefix == "I" and kind != prev_kind:
            return f"tag {i + 1} is {tag!r} after {tags[i - 1] if i else 'the start'}"
        prev_kind = kind if prefix != OUTSIDE else None
    return None


def to_bio(tags: Iterable[str]) -> tuple[str, ...]:
    """IOB2 tags: an ``I-X`` at the start, after ``O`` or after another type becomes ``B-X``
    (IOB1 to IOB2). Other tags are kept; BIOSE ``E-``/``S-`` are an error (see ``biose_to_bio``)."""
    out: list[str] = []
    prev_kind = None
    for tag in tags:
        prefix, kind = _split_tag(tag)
        if prefix in "ES":
            raise ValueError(f"BIOSE tag {tag!r}: use biose_to_bio")
        if prefix == "I" and kind != prev_kind:
            tag = f"B-{kind}"
        out.append(tag)
        prev_kind = kind if prefix != OUTSIDE else None
    return tuple(out)


def biose_to_bio(tags: Iterable[str]) -> tuple[str, ...]:
    """BIOSE (also called BIOES/BILOU-like) to IOB2: ``S-X`` to ``B-X``, ``E-X`` to ``I-X``,
    then ``to_bio`` repairs any continuation that does not follow its own type."""
    swap = {"S": "B", "E": "I"}
    out = []
    for tag in tags:
        prefix, kind = _split_tag(tag)
        out.append(f"{swap[prefix]}-{kind}" if prefix in swap else tag)
    return to_bio(out)


def map_entity_types(tags: Iterable[str], table: Mapping[str, str]) -> tuple[str, ...]:
    """Entity types renamed by ``table`` (``{"person": "PER", "GPE": "LOC"}``), keeping the
    B-/I- prefix; a type not in ``table`` becomes ``O``. The result is passed through
    ``to_bio``, so merging or dropping types never leaves a dangling ``I-``."""
    out = []
    for tag in tags:
        prefix, kind = _split_tag(tag)
        if prefix in "ES":
            raise ValueError(f"BIOSE tag {tag!r}: use biose_to_bio first")
        out.append(f"{prefix}-{table[kind]}" if prefix != OUTSIDE and kind in table else OUTSIDE)
    return to_bio(out)


def _check_word(word: str) -> None:
    # One non-empty, whitespace-free field per word: whitespace (tab, space, U+3000, line
    # breaks including the ones str.splitlines knows) would break the line or the column.
    if word.split() != [word]:
        raise ValueError(f"word {word!r} is empty or contains whitespace")


def write_bio(sentences: Iterable[TaggedSentence], path: str | Path) -> None:
    """Write CoNLL-style ``word<TAB>tag`` lines, a blank line after each sentence, atomically."""
    with atomic_file(path) as handle:
        for n, sentence in enumerate(sentences, start=1):
            if not sentence.words:
                raise ValueError(f"{path}: sentence {n} is empty")
            for word, tag in zip(sentence.words, sentence.tags):
                try:
                    _check_word(word)
                    _split_tag(tag)
                except ValueError as err:
                    raise ValueError(f"{path}: sentence {n}: {err}") from None
                handle.write(f"{word}\t{tag}\n")
            handle.write("\n")


def read_bio(path: str | Path, tagset: Collection[str] | None = NER_TAGS) -> list[TaggedSentence]:
    """Sentences of a ``write_bio`` file. Every tag must be in ``tagset`` (unless it is None)
    and each sentence valid IOB2; errors name the file and line."""
    with open(path, encoding="utf-8", newline="") as handle:
        text = handle.read()
    sentences: list[TaggedSentence] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0

    def close() -> None:
        problem = iob2_error(tags)
        if problem is not None:
            raise ValueError(f"{path}, line {start}: sentence {len(sentences) + 1}: {problem}")
        sentences.append(TaggedSentence(tuple(words), tuple(tags)))

    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    for lineno, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        if line == "":
            if words:
                close()
            words, tags = [], []
            continue
        cols = line.split("\t")
        if len(cols) != 2 or cols[0].split() != [cols[0]]:
            raise ValueError(f"{path}, line {lineno}: expected 'word<TAB>tag', got {line!r}")
        word, tag = cols
        if tagset is not None and tag not in tagset:
            raise ValueError(f"{path}, line {lineno}: unknown tag {tag!r}")
        try:
            _split_tag(tag)
        except ValueError as err:
            raise ValueError(f"{path}, line {lineno}: {err}") from None
        if not words:
            start = lineno
        words.append(word)
        tags.append(tag)
    if words:
        close()
    return sentences
