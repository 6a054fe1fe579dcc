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
ADAPTERS = Path("adapters")
RESULTS = Path("results")
REPORTS = Path("reports")


def task_split(task: str, lang: str, split: str, suffix: str) -> Path:
    """A labelled split: data/<task>/<lang>/<split>.<suffix>."""
    return DATA / task / lang / f"{split}.{suffix}"


def text_split(lang: str, split: str) -> Path:
    """Raw text for a language's masked-LM diff: data/text/<lang>/<split>.txt."""
    return DATA / "text" / lang / f"{split}.txt"


def lang_diff(lang: str, method: str = "lt-sft") -> Path:
    """A language's diff for a diff-based method: diffs/<method>/lang/<lang>."""
    return DIFFS / method / "lang" / lang


def task_diff(task: str, method: str = "lt-sft") -> Path:
    """A task's diff (with its head as dense tensors): diffs/<method>/task/<task>."""
    return DIFFS / method / "task" / task


def task_phase1(task: str) -> Path:
    """LT-SFT's dense phase-1 change of a task diff, kept for the sparsity sweep (which then
    selects each K from it instead of re-running phase 1)."""
    return DIFFS / "lt-sft" / "task-phase1" / task


def lang_adapter(lang: str) -> Path:
    """A MAD-X language adapter (bottlenecks + invertible adapter): adapters/madx/lang/<lang>."""
    return ADAPTERS / "madx" / "lang" / lang


def task_adapter(task: str) -> Path:
    """A MAD-X task adapter: adapters/madx/task/<task>/adapter, its head as a diff in .../head."""
    return ADAPTERS / "madx" / "task" / task


def results_file(task: str, method: str) -> Path:
    """Scores of one trained method (and its variants, e.g. lt-sft-task-only) on a task."""
    return RESULTS / task / f"{method}.json"


def sparsity_file(task: str, k: int | str) -> Path:
    """Scores of the sparsity sweep at one K (lt-sft, lt-sft-task-only, rand-sft)."""
    return RESULTS / task / "sparsity" / f"k{k}.json"


def overlap_file(task: str) -> Path:
    """Per-layer overlap of the task diff with each target's language diff."""
    return RESULTS / task / "overlap.json"


def preset_file(name: str) -> Path:
    return PRESETS / f"{name}.yaml"
