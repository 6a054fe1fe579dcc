"""Seeds: every training and evaluation stage runs once per seed of ``seeds``, in a loop
inside its one process (the layout nests a further seed's components inside the first's:
stages/layout.py ``Components``).

Why a loop and not seeds as a DVC dimension (a ``matrix:`` over seeds, one process per
component and seed). Measured on the 2-core machine (README "Seeds"): a stage process spends
~6 s before any work importing torch and transformers' Trainer and reading the base model,
and the demo's 56 stages already pay that ~5.6 min of its ~30; a seed dimension would pay it
again for every further seed, where the loop pays it once (the smoke preset under `dvc repro`:
1235 s with one seed, 1306 s with two, the same 30 processes; ~21 s of each process went to
work outside training and scoring, which 23 more processes would have added). And a matrix cannot express what
dvc.yaml depends on today: a task stage needs its task's source language
(``${tasks[${item.task}].source}`` does not parse in a DVC 3 matrix; stages/dvc_yaml.py),
so it would have to depend on every language's component of every seed. What the loop
costs: adding a seed re-runs every seed of every training stage (the stages depend on the
whole ``seeds`` list), where a matrix would run only the new one — `dvc exp run -S
seeds=[...]` trains everything again. The first run of a fresh clone, which is most
people's only run, is what the loop makes cheaper.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from stages import layout


def seed_runs(params: Any, paths: layout.Components = layout.COMPONENTS,
              seeds: tuple[int, ...] | None = None) -> Iterator[tuple[Any, layout.Components]]:
    """(params for the run, where its components live) for each seed, the first seed first:
    its components are saved (atomically replacing their directory) before any further seed's
    is written inside them. ``seeds``: a subset (default: every seed of ``params``)."""
    for seed in seeds if seeds is not None else params.seeds:
        yield params.for_seed(seed), paths.for_seed(seed, params.seeds)


def first_seed(params: Any) -> Any:
    """The params of the first seed's run: what reads only the first seed's components (the
    sparsity sweep, the L1 ablation, methods whose components are all released files)."""
    return params.for_seed(params.seeds[0])
