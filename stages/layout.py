"""Where every stage reads and writes: the only module that knows the file layout.

dvc.yaml spells the same paths; tests/test_dvc_yaml.py checks that the two agree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

PARAMS = Path("params.yaml")
PRESETS = Path("presets")
DATA = Path("data")
BASE_MODEL = Path("models/base")
DIFFS = Path("diffs")
ADAPTERS = Path("adapters")
RESULTS = Path("results")
REPORTS = Path("reports")
# Run logs (wall time, date, host, git revision): beside the outputs, never inside them, so
# that identical inputs give byte-identical outputs. Not DVC outputs; the report reads them.
RUNS = Path("runs")
# `ltsft slurm submit`: one job script and one log per stage, and the submitted ids (git-ignored).
SLURM = Path(".ltsft/slurm")
# Training curves (loss, learning rate, grad norm, dev metric against step, per phase) of
# every trained output: curves/<output path>/<phase>/<metric>.tsv. DVC outputs (declared as
# plots, x: step), separate from the components so that `dvc plots` finds only curve files.
CURVES = Path("curves")


def task_split(task: str, lang: str, split: str, suffix: str) -> Path:
    """A labelled split: data/<task>/<lang>/<split>.<suffix>."""
    return DATA / task / lang / f"{split}.{suffix}"


def text_split(lang: str, split: str) -> Path:
    """Raw text for a language's masked-LM component: data/text/<lang>/<split>.txt."""
    return DATA / "text" / lang / f"{split}.txt"


class Components:
    """The layout of trained components (pipeline.core.method.ComponentPaths):
    ``diffs/<method>/<kind>/<name>``, or ``adapters/<method>/<kind>/<name>`` for adapters.
    Kinds: ``lang``, ``task``, and ``task-phase1`` (LT-SFT's dense phase 1 of a task diff,
    kept for the sparsity sweep). ``base``: the directory that holds them (an ablation
    trains components it does not keep under a scratch directory).

    Seeds (``for_seed``): the first seed's component is where a single seed's always was;
    each further seed's sits inside it, ``<component>/seed<S>``. Why nested: a stage loops
    over the seeds (stages/seeds.py says why) and DVC needs its outputs named in dvc.yaml whatever
    the number of seeds, so the component directory is the stage's one output for all of
    them; and a single-seed run's outputs, and everything that reads the first seed only
    (the sparsity sweep, the overlap), stay where they were. Imported (released) components
    have no seed: they are never nested."""

    def __init__(self, base: Path = Path("."), seed: int | None = None):
        self.base, self.seed = base, seed

    def component(self, method: str, kind: str, name: str) -> Path:
        from pipeline.methods import METHODS

        chosen = METHODS[method]
        root = ADAPTERS if chosen.stores_adapters else DIFFS
        path = self.base / root / method / kind / name
        released = chosen.imported or (chosen.imports_language and kind == "lang")
        return path / seed_dir(self.seed) if self.seed is not None and not released else path

    def for_seed(self, seed: int, seeds: Sequence[int]) -> Components:
        """This layout for the run of ``seed``, one of ``seeds`` (the first: the unnested layout)."""
        return Components(self.base, None if seed == seeds[0] else seed)


def seed_dir(seed: int) -> str:
    """The folder of a further seed's component inside the first seed's: seed<S>."""
    return f"seed{seed}"


COMPONENTS = Components()


def results_file(task: str, method: str) -> Path:
    """Scores of one trained method (and its variants, e.g. lt-sft-task-only) on a task."""
    return RESULTS / task / f"{method}.json"


def sparsity_file(task: str, k: int | str) -> Path:
    """Scores of the sparsity sweep at one K (lt-sft, lt-sft-task-only, rand-sft)."""
    return RESULTS / task / "sparsity" / f"k{k}.json"


def l1_file(task: str, l1: float) -> Path:
    """Scores of the L1 ablation at one λ (lt-sft with target language diffs trained at λ)."""
    return RESULTS / task / "l1" / f"l1_{l1}.json"


def overlap_file(task: str) -> Path:
    """Per-layer overlap of the task diff with each target's language diff."""
    return RESULTS / task / "overlap.json"


def run_log(output: Path | str) -> Path:
    """The run log of an output: runs/<output path>, with .json added to a directory's name
    (runs/diffs/lt-sft/lang/en.json) and a JSON file's own name kept (runs/results/pos/lt-sft.json)."""
    output = Path(output)
    return RUNS / (output if output.suffix == ".json" else output.with_name(output.name + ".json"))


def curves_dir(output: Path | str) -> Path:
    """Where the training curves of ``output`` (a component, models/base, or an ablation's
    results file) live: curves/<output path>, a JSON file's without .json
    (curves/diffs/lt-sft/lang/en, curves/results/pos/sparsity/k5000)."""
    output = Path(output)
    return CURVES / output.with_name(output.name.removesuffix(".json"))


# The report draws one figure of loss against step per family of components: (family,
# pattern of the output's path), first match wins.
CURVE_FAMILIES = (
    ("language diffs", f"{DIFFS}/*/lang/*"),
    ("task diffs", f"{DIFFS}/*/task/*"),
    ("language adapters", f"{ADAPTERS}/*/lang/*"),
    ("task adapters", f"{ADAPTERS}/*/task/*"),
    ("MLM-head warm-up of the base model", str(BASE_MODEL)),
    ("sparsity sweep (task diffs)", f"{RESULTS}/*/sparsity/*"),
    ("L1 ablation (language diffs)", f"{RESULTS}/*/l1/*"),
)


def curve_outputs() -> list[Path]:
    """Every output that has curves on disk (a folder under CURVES holding phase folders of TSVs)."""
    return sorted({path.parent.parent.relative_to(CURVES) for path in CURVES.glob("**/*.tsv")})


def curve_family(output: Path | str) -> tuple[str, str]:
    """The report's family of an output's curves, and the output's label in that figure:
    (language diffs, lt-sft en) for diffs/lt-sft/lang/en, (language diffs, lt-sft en seed43)
    for a further seed's diffs/lt-sft/lang/en/seed43."""
    output = Path(output)
    seed = output.name if re.fullmatch(r"seed\d+", output.name) else None  # a further seed's (seed_dir)
    bare = output.parent if seed else output
    for family, pattern in CURVE_FAMILIES:
        if bare.match(pattern) and len(bare.parts) == len(Path(pattern).parts):
            parts = bare.parts
            label = f"{parts[1]} {parts[3]}" if len(parts) == 4 else str(bare)
            return family, f"{label} {seed}" if seed else label
    return "other runs", str(output)


def preset_file(name: str) -> Path:
    return PRESETS / f"{name}.yaml"
