"""Where every stage reads and writes: the only module that knows the file layout.

dvc.yaml spells the same paths; tests/test_dvc_yaml.py checks that the two agree.
"""

from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")
PRESETS = Path("presets")
DATA = Path("data")
BASE_MODEL = Path("models/base")
DIFFS = Path("diffs")
RESULTS = Path("results")
REPORTS = Path("reports")


def task_split(task: str, lang: str, split: str, suffix: str) -> Path:
    """A labelled split: data/<task>/<lang>/<split>.<suffix>."""
    return DATA / task / lang / f"{split}.{suffix}"


def text_split(lang: str, split: str) -> Path:
    """Raw text for a language's masked-LM diff: data/text/<lang>/<split>.txt."""
    return DATA / "text" / lang / f"{split}.txt"


def lang_diff(lang: str) -> Path:
    return DIFFS / "lang" / lang


def task_diff(task: str) -> Path:
    return DIFFS / "task" / task


def head_diff(task: str) -> Path:
    """The head-only baseline: a diff with no sparse entries, only the trained head."""
    return DIFFS / "head" / task


def results_file(task: str, method_group: str) -> Path:
    return RESULTS / task / f"{method_group}.json"


def preset_file(name: str) -> Path:
    return PRESETS / f"{name}.yaml"
