"""Stage `download`: bring every split and raw-text corpus into data/ in our own formats.

What each source provides is collected by pipeline/sources/collect.py (`data.source`:
local, registry or hub); this stage caps the evaluation splits and writes everything
under data/ atomically, with a manifest of counts and sources.
"""

from __future__ import annotations

import json

from pipeline.core.atomic import atomic_dir, write_json
from pipeline.core.config import ConfigError, Params, UserError
from pipeline.formats.examples import write_examples
from pipeline.formats.text import write_lines
from pipeline.sources import hub
from pipeline.sources.collect import SOURCES, Collected, cap_evaluation_splits, example_text, split_text
from pipeline.sources.registry import RegistryError
from pipeline.tasks import get_task
from stages import layout


def write(collected: Collected) -> None:
    """Normalise everything into data/ atomically, with a manifest of counts and sources."""
    manifest: dict[str, object] = {"provenance": collected.provenance, "splits": {}, "text": {}}
    with atomic_dir(layout.DATA) as out:
        for (task_name, lang, split), examples in sorted(collected.splits.items()):
            data_format = get_task(task_name).data_format
            write_examples(data_format, examples, out / layout.task_split(task_name, lang, split, data_format).relative_to(layout.DATA))
            manifest["splits"][f"{task_name}/{lang}/{split}"] = {  # type: ignore[index]
                "examples": len(examples), "words": sum(len(line.split()) for line in example_text(task_name, examples))}
        for lang, lines in sorted(collected.texts.items()):
            train, dev = split_text(lines)
            for split, split_lines in (("train", train), ("dev", dev)):
                write_lines(split_lines, out / layout.text_split(lang, split).relative_to(layout.DATA))
            manifest["text"][lang] = {"train_lines": len(train), "dev_lines": len(dev),  # type: ignore[index]
                                      "train_words": sum(len(line.split()) for line in train)}
            print(f"text {lang}: {len(train)} train / {len(dev)} dev lines")
        write_json(out / "manifest.json", manifest)


def run(params: Params) -> None:
    source = params.data.source
    if source not in SOURCES:
        raise ConfigError(f"data.source: unknown source {source!r} (known: {', '.join(SOURCES)})")
    try:
        collected = SOURCES[source](params)
    except (RegistryError, hub.HubError) as err:
        raise UserError(str(err)) from None
    cap_evaluation_splits(collected, params)
    write(collected)
    print(json.dumps(collected.provenance, indent=None)[:300])
