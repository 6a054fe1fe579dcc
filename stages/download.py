"""Stage `download`: bring every split and raw-text corpus into data/ in our own formats.

Source `local` (the smoke preset's fixtures, or a user's own copies) reads a directory laid
out as `<root>/<task>/<lang>/<split>.<suffix>` and `<root>/text/<lang>.txt`. Raw text for a
language's masked-LM diff is its text file plus the TRAINING split of every task in that
language — never a test split — with every 20th line held out as its dev set.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.atomic import atomic_dir
from pipeline.data.conllu import read_conllu
from pipeline.data.text import read_lines, write_lines
from pipeline.tasks import get_task
from stages import layout
from stages.config import ConfigError, Params, UserError

DEV_EVERY = 20  # 5% of raw text held out for masked-LM evaluation, as in the reference


def split_text(lines: list[str]) -> tuple[list[str], list[str]]:
    dev = lines[DEV_EVERY - 1 :: DEV_EVERY]
    train = [line for i, line in enumerate(lines) if i % DEV_EVERY != DEV_EVERY - 1]
    return train, dev


def _needed_task_splits(params: Params) -> list[tuple[str, str, str]]:
    """(task, lang, split): the source needs train and dev; every target needs test."""
    needed = []
    for spec in params.tasks.values():
        needed += [(spec.name, spec.source, "train"), (spec.name, spec.source, "dev")]
        needed += [(spec.name, lang, "test") for lang in spec.targets]
    return needed


def download_local(params: Params) -> None:
    root = Path(params.data.get("root", ""))
    if not root.is_dir():
        raise ConfigError(f"data.root: {root} is not a directory")
    tasks = {name: get_task(name) for name in params.tasks}
    sources = {}
    for task_name, lang, split in _needed_task_splits(params):
        path = root / task_name / lang / f"{split}.{tasks[task_name].data_format}"
        if not path.is_file():
            raise UserError(f"{path}: not found (needed for {task_name} {lang} {split})")
        sources[(task_name, lang, split)] = path
    for lang in params.languages:
        path = root / "text" / f"{lang}.txt"
        if not path.is_file():
            raise UserError(f"{path}: not found (raw text for the {lang} language diff)")

    # Optional extra splits (e.g. a target's train/dev) are copied when present.
    for spec in params.tasks.values():
        for lang in (spec.source, *spec.targets):
            for split in ("train", "dev", "test"):
                path = root / spec.name / lang / f"{split}.{tasks[spec.name].data_format}"
                if path.is_file():
                    sources.setdefault((spec.name, lang, split), path)

    with atomic_dir(layout.DATA) as out:
        for (task_name, lang, split), path in sorted(sources.items()):
            target = out / layout.task_split(task_name, lang, split, tasks[task_name].data_format).relative_to(layout.DATA)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
        for lang in params.languages:
            lines = read_lines(root / "text" / f"{lang}.txt")
            for (task_name, task_lang, split), path in sorted(sources.items()):
                if task_lang == lang and split == "train" and tasks[task_name].data_format == "conllu":
                    lines += [" ".join(s.words) for s in read_conllu(path)]
            train, dev = split_text(lines)
            for split, split_lines in (("train", train), ("dev", dev)):
                write_lines(split_lines, out / layout.text_split(lang, split).relative_to(layout.DATA))
            print(f"text {lang}: {len(train)} train / {len(dev)} dev lines")


SOURCES = {"local": download_local}


def run(params: Params) -> None:
    source = params.data["source"]
    if source not in SOURCES:
        raise ConfigError(f"data.source: unknown source {source!r} (known: {', '.join(SOURCES)})")
    SOURCES[source](params)
