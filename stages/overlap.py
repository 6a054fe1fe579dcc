"""Stage `overlap@<task>`: per layer, how many entries the task diff shares with each
target's language diff (LT-SFT), against what independent random choices would share."""

from __future__ import annotations

from pipeline.atomic import write_json
from pipeline.overlap import diff_overlap
from pipeline.sft import SparseDiff
from stages import layout
from stages.common import require_files
from stages.config import Params


def run(params: Params, task_name: str) -> None:
    spec = params.task(task_name)
    lang_paths = {lang: layout.lang_diff(lang) for lang in spec.targets}
    require_files(layout.task_diff(task_name), *lang_paths.values())
    task_diff = SparseDiff.load(layout.task_diff(task_name))
    langs, layers = {}, []
    for lang, path in lang_paths.items():
        found = diff_overlap(SparseDiff.load(path), task_diff)
        layers = found.pop("layers")
        langs[lang] = found
        print(f"{task_name}/{lang}: {sum(found['shared']):,} shared entries "
              f"({sum(found['expected']):,.0f} expected by chance)")
    write_json(layout.overlap_file(task_name), {"layers": layers, "langs": langs})
