"""Stage `overlap@<task>`: per layer, how many entries the task diff shares with each
target's language diff (LT-SFT), against what independent random choices would share."""

from __future__ import annotations

from pipeline.core.atomic import write_json
from pipeline.formats.sparse_diff import SparseDiff
from pipeline.overlap import diff_overlap
from stages import layout
from stages.common import require_files


def run(params, task_name: str) -> None:
    spec = params.task(task_name)
    task_path = layout.COMPONENTS.component("lt-sft", "task", task_name)
    lang_paths = {lang: layout.COMPONENTS.component("lt-sft", "lang", lang) for lang in spec.targets}
    require_files(task_path, *lang_paths.values())
    task_diff = SparseDiff.load(task_path)
    langs, layers = {}, []
    for lang, path in lang_paths.items():
        found = diff_overlap(SparseDiff.load(path), task_diff)
        layers = found.pop("layers")
        langs[lang] = found
        print(f"{task_name}/{lang}: {sum(found['shared']):,} shared entries "
              f"({sum(found['expected']):,.0f} expected by chance)")
    write_json(layout.overlap_file(task_name), {"layers": layers, "langs": langs})
