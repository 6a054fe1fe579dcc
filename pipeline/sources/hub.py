"""Hugging Face hub sources for the `paper` preset: UD, MasakhaNER 1.0 / 2.0, CoNLL-2003,
AmericasNLI, MultiNLI and Wikipedia, read with datasets 5.x (which cannot run loading
scripts, hence the parquet branches below; see the design notes' HUB.md).

Two ways to read a split:
- from the hub (``load_dataset(repo, revision=…, data_dir=…, split=…)``), after a quick
  reachability check so that an offline machine fails in seconds with one line instead of
  hanging in retries;
- from a local copy (``local_root``): parquet files laid out as the hub's parquet branch,
  ``<local_root>/<repo>/<data_dir>/<split>/*.parquet``, which is also how the tests feed
  the loaders small files written in the hub's schema.
Readers turn rows into the project's own types; both typings of UD's columns are handled
(older revisions: ``upos`` as ClassLabel ids and ``head`` as strings; newer: strings and ints).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.formats.bio import NER_TAGS, TaggedSentence, to_bio
from pipeline.formats.conllu import UPOS_TAGS, Sentence

PARQUET_BRANCH = "refs/convert/parquet"
REACH_TIMEOUT_S = 10.0


class HubError(RuntimeError):
    """A hub source that cannot be read; the message is one line and says what to do."""


@dataclass(frozen=True)
class HubSplit:
    """One split of one hub dataset: where it lives and how the hub names it."""

    repo: str
    split: str
    data_dir: str | None = None  # the config, on parquet branches
    revision: str | None = None
    name: str | None = None  # a config name, for repos that load without data_dir

    def local_files(self, root: Path) -> list[Path]:
        folder = root / self.repo / (self.data_dir or self.name or "") / self.split
        return sorted(folder.glob("*.parquet"))

    def describe(self) -> str:
        where = "/".join(part for part in (self.data_dir or self.name, self.split) if part)
        return f"{self.repo}{'@' + self.revision if self.revision else ''}:{where}"


# ----------------------------------------------------------------------------- the benchmarks
def ud_split(treebank: str, split: str) -> HubSplit:
    """A UD treebank split (UD names its validation split `dev`)."""
    return HubSplit("universal-dependencies/universal_dependencies", "dev" if split == "dev" else split,
                    data_dir=treebank, revision=PARQUET_BRANCH)


@dataclass(frozen=True)
class NerBenchmark:
    """A MasakhaNER release on the hub: its repo and (where known) its languages = configs."""

    title: str
    repo: str
    languages: tuple[str, ...] | None  # None: not checked here (the hub names a missing config)


# 1.0 is the reference's data (its examples/token-classification/ner_dataset.py reads the same
# files from github masakhane-io/masakhane-ner, data/<lang>/); 2.0 re-annotated the overlapping
# languages, so its scores do not compare with the paper's. Both repos still hold a loading
# script on main (datasets >= 4 refuses it): read their parquet branches, one config per
# language, splits train / validation / test, `ner_tags` a ClassLabel sequence (1.0: O, B-PER,
# I-PER, B-ORG, I-ORG, B-LOC, I-LOC, B-DATE, I-DATE; ner_sentences maps through the names).
MASAKHANER: dict[str, NerBenchmark] = {
    "masakhaner1": NerBenchmark("MasakhaNER 1.0", "masakhane/masakhaner",
                                ("amh", "hau", "ibo", "kin", "lug", "luo", "pcm", "swa", "wol", "yor")),
    "masakhaner2": NerBenchmark("MasakhaNER 2.0", "masakhane/masakhaner2", None),
}


def masakhaner_split(lang: str, split: str, benchmark: str = "masakhaner2") -> HubSplit:
    """A MasakhaNER split; ``lang`` is the config name (a language code such as ``hau``)."""
    return HubSplit(MASAKHANER[benchmark].repo, "validation" if split == "dev" else split, data_dir=lang,
                    revision=PARQUET_BRANCH)


def conll2003_split(split: str) -> HubSplit:
    return HubSplit("eriktks/conll2003", "validation" if split == "dev" else split, data_dir="conll2003",
                    revision=PARQUET_BRANCH)


def americas_nli_split(lang: str, split: str) -> HubSplit:
    return HubSplit("nala-cub/americas_nli", "validation" if split == "dev" else split, name=lang)


def multi_nli_split(split: str) -> HubSplit:
    return HubSplit("nyu-mll/multi_nli", "validation_matched" if split == "dev" else split)


def wikipedia_split(wiki: str, dump: str = "20231101") -> HubSplit:
    return HubSplit("wikimedia/wikipedia", "train", data_dir=f"{dump}.{wiki}")


# ----------------------------------------------------------------------------- loading
def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def check_reachable(timeout: float = REACH_TIMEOUT_S) -> None:
    """Fail fast, in one line, when the hub cannot be reached (or offline mode is on)."""
    advice = ("set data.local_root to a directory of parquet copies laid out as "
              "<repo>/<config>/<split>/*.parquet (see README, 'The paper preset')")
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("HF_DATASETS_OFFLINE", "") not in ("", "0"):
        raise HubError(f"HF_HUB_OFFLINE is set, so the hub is not used; {advice}")
    url = f"{hub_endpoint()}/api/datasets/universal-dependencies/universal_dependencies"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # the server answered: reachable (auth or rate limits surface later, from datasets)
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise HubError(f"cannot reach the Hugging Face hub at {hub_endpoint()} ({reason}); {advice}") from None


def load_split(split: HubSplit, local_root: Path | None = None, streaming: bool = False) -> Any:
    """The split as a `datasets.Dataset` (an iterable one when ``streaming``: Wikipedia is
    read only as far as needed), from ``local_root`` when given, else from the hub."""
    import datasets

    if local_root is not None:
        files = split.local_files(Path(local_root))
        if not files:
            folder = Path(local_root) / split.repo / (split.data_dir or split.name or "") / split.split
            raise HubError(f"{folder}: no parquet files (local copy of {split.describe()})")
        return datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train", streaming=streaming)
    try:
        return datasets.load_dataset(split.repo, name=split.name, data_dir=split.data_dir,
                                     revision=split.revision, split=split.split, streaming=streaming)
    except Exception as err:  # datasets raises many types; the user needs one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HubError(f"{split.describe()}: {first}") from None


# ----------------------------------------------------------------------------- readers
def _feature_names(dataset: Any, column: str) -> Sequence[str] | None:
    """Label names when ``column`` is a sequence of ClassLabel (older UD typing), else None."""
    feature = (getattr(dataset, "features", None) or {}).get(column)
    inner = getattr(feature, "feature", None)
    return getattr(inner, "names", None)


def _label_names(dataset: Any, column: str) -> Sequence[str] | None:
    """Label names when ``column`` is a ClassLabel, else None."""
    return getattr((getattr(dataset, "features", None) or {}).get(column), "names", None)


def ud_sentences(dataset: Any) -> list[Sentence]:
    """UD rows → Sentences. Handles `upos` as strings or ClassLabel ids and `head` as ints
    or strings; multiword-token rows (head "None"/None) are dropped as in read_conllu."""
    upos_names = _feature_names(dataset, "upos")
    sentences = []
    for row in dataset:
        words, upos, heads, deprels = [], [], [], []
        for word, tag, head, deprel in zip(row["tokens"], row["upos"], row["head"], row["deprel"]):
            if head is None or head in ("None", "_"):
                continue  # a multiword token's surface line, not a syntactic word
            tag = upos_names[tag] if upos_names is not None and isinstance(tag, int) else str(tag)
            words.append(word)
            upos.append(tag if tag in UPOS_TAGS else "X")
            heads.append(int(head))
            deprels.append(str(deprel))
        if words:
            sentences.append(Sentence(tuple(words), tuple(upos), tuple(heads), tuple(deprels), row.get("idx")))
    return sentences


# Entity types outside PER/ORG/LOC (CoNLL's MISC, MasakhaNER's DATE) become O, as in the paper.
def ner_sentences(dataset: Any, keep: Iterable[str] = ("PER", "ORG", "LOC")) -> list[TaggedSentence]:
    names = _feature_names(dataset, "ner_tags")
    keep = set(keep)
    sentences = []
    for row in dataset:
        tags = [names[t] if names is not None and isinstance(t, int) else str(t) for t in row["ner_tags"]]
        tags = [t if t == "O" or t.split("-", 1)[1] in keep else "O" for t in tags]
        tags = to_bio(tags)  # dropping a type can leave I- after O; CoNLL-2003 is IOB1 on some mirrors
        if any(t not in NER_TAGS for t in tags):
            raise HubError(f"unexpected NER tag in {sorted(set(tags) - set(NER_TAGS))}")
        if row["tokens"]:
            sentences.append(TaggedSentence(tuple(row["tokens"]), tuple(tags)))
    return sentences


NLI_LABELS = ("entailment", "neutral", "contradiction")


def nli_rows(dataset: Any) -> list[dict[str, str]]:
    """{premise, hypothesis, label} with string labels; MultiNLI's unlabelled rows (-1) dropped."""
    names = _label_names(dataset, "label")
    rows = []
    for row in dataset:
        label = row["label"]
        if isinstance(label, int):
            if label < 0:
                continue
            label = (names or NLI_LABELS)[label]
        rows.append({"premise": row["premise"], "hypothesis": row["hypothesis"], "label": str(label)})
    return rows


def wikipedia_lines(dataset: Any, max_lines: int | None = None, min_words: int = 3) -> list[str]:
    """Paragraphs of Wikipedia articles as lines (short headings dropped), up to ``max_lines``."""
    lines: list[str] = []
    for row in dataset:
        for paragraph in row["text"].split("\n"):
            paragraph = paragraph.strip()
            if len(paragraph.split()) >= min_words:
                lines.append(paragraph)
                if max_lines is not None and len(lines) >= max_lines:
                    return lines
    return lines


def text_column_lines(dataset: Any, columns: Sequence[str]) -> list[str]:
    """Every non-empty value of ``columns`` as a line (e.g. an NLI split's premises)."""
    return [str(row[c]).strip() for row in dataset for c in columns if row.get(c) and str(row[c]).strip()]

