"""CoNLL-U reading and writing: words, UPOS tags and the basic dependency tree.

Only the columns the tasks use are kept (FORM, UPOS, HEAD, DEPREL) plus the ``sent_id``
comment. Multiword-token lines (``3-4``) and empty nodes (``5.1``) are skipped, so a
sentence is its sequence of syntactic words, as UD's evaluation counts them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.atomic import atomic_file

# The 17 Universal Dependencies v2 UPOS tags, in the standard (alphabetical) order.
UPOS_TAGS: tuple[str, ...] = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
    "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
)
N_COLUMNS = 10


@dataclass(frozen=True)
class Sentence:
    """One sentence: parallel per-word tuples; ``heads`` are 1-based, 0 for the root."""

    words: tuple[str, ...]
    upos: tuple[str, ...]
    heads: tuple[int, ...]
    deprels: tuple[str, ...]
    sent_id: str | None = None

    def __post_init__(self) -> None:
        if not len(self.words) == len(self.upos) == len(self.heads) == len(self.deprels):
            raise ValueError("words, upos, heads and deprels must have the same length")


def read_conllu(path: str | Path) -> list[Sentence]:
    """Parse a CoNLL-U file; a malformed line raises ``ValueError`` naming file and line."""
    sentences: list[Sentence] = []
    rows: list[tuple[str, str, int, str]] = []
    linenos: list[int] = []
    sent_id: str | None = None

    def flush() -> None:
        nonlocal rows, linenos, sent_id
        for (_, _, head, _), lineno in zip(rows, linenos):
            if head > len(rows):
                raise ValueError(f"{path}, line {lineno}: HEAD {head} is beyond the sentence's {len(rows)} words")
        if rows:
            words, upos, heads, deprels = zip(*rows)
            sentences.append(Sentence(words, upos, heads, deprels, sent_id))
        rows, linenos, sent_id = [], [], None

    with open(path, encoding="utf-8-sig") as handle:
        for lineno, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                flush()
                continue
            if line.startswith("#"):
                key, sep, value = line[1:].partition("=")
                if sep and key.strip() == "sent_id":
                    sent_id = value.strip()
                continue
            where = f"{path}, line {lineno}"
            cols = line.split("\t")
            if len(cols) != N_COLUMNS:
                raise ValueError(f"{where}: expected {N_COLUMNS} tab-separated columns, got {len(cols)}")
            token_id = cols[0]
            if "-" in token_id or "." in token_id:  # multiword token or empty node
                continue
            if token_id != str(len(rows) + 1):
                raise ValueError(f"{where}: expected word ID {len(rows) + 1}, got {token_id!r}")
            try:
                head = int(cols[6])
            except ValueError:
                raise ValueError(f"{where}: HEAD must be an integer, got {cols[6]!r}") from None
            if head < 0:
                raise ValueError(f"{where}: HEAD must not be negative, got {head}")
            rows.append((cols[1], cols[3], head, cols[7]))
            linenos.append(lineno)
    flush()
    return sentences


def write_conllu(sentences: Iterable[Sentence], path: str | Path) -> None:
    """Write ``sentences`` as CoNLL-U (columns not kept by ``Sentence`` as ``_``), atomically."""
    with atomic_file(path) as handle:
        for sentence in sentences:
            if sentence.sent_id is not None:
                handle.write(f"# sent_id = {sentence.sent_id}\n")
            handle.write(f"# text = {' '.join(sentence.words)}\n")
            for i, (word, upos, head, deprel) in enumerate(
                zip(sentence.words, sentence.upos, sentence.heads, sentence.deprels), start=1
            ):
                fields = (word, upos, deprel)
                if any(not f or "\t" in f or "\n" in f or "\r" in f for f in fields):
                    raise ValueError(f"sentence {sentence.sent_id!r}, word {i}: empty field or tab/newline in {fields}")
                handle.write("\t".join((str(i), word, "_", upos, "_", "_", str(head), deprel, "_", "_")) + "\n")
            handle.write("\n")
