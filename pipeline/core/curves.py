"""Training curves: what each training phase logged, kept as small deterministic files.

A run's log history (``run_trainer``'s return: the Trainer's ``log_history`` plus the dev
scores of :mod:`pipeline.core.best_checkpoint`, every entry tagged with its ``phase``) becomes
:class:`Curves`: per phase, per metric, ``(step, value)`` points. On disk a phase is a folder
with one two-column TSV per metric, ``<phase>/<metric>.tsv`` (``step`` and the metric), the
layout DVCLive uses, because `dvc plots` then draws each file against ``x: step`` with no
per-file settings (a folder of mixed columns would need one plot definition per column).

Only deterministic fields are kept (loss, learning rate, grad norm, dev metrics): wall-clock
entries such as ``train_runtime`` would make identical runs differ byte for byte.

Grad norm: our optimizer clips itself, over exactly the trainable entries (the Trainer gets
``max_grad_norm=0``). The Trainer (transformers 5) still logs a ``grad_norm``, but of every
parameter's whole gradient: in LT-SFT's phase 2 that includes the entries that cannot move,
and it lacks the L1 term. :func:`grad_norm_callback`, a public ``TrainerCallback``, puts the
pre-clip norm SparseAdamW computed at the logged step in its place.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.core.atomic import atomic_dir
from pipeline.core.errors import LtsftError

# Points per phase that the Trainer logs (the loss is the mean over each window): enough to
# see a curve's shape, few enough that the printed log stays readable.
CURVE_POINTS = 50
TRAIN_METRICS = ("loss", "learning_rate", "grad_norm")
EVAL_PREFIX = "eval_"  # dev scores (BestOnDev logs eval_<metric>)
STEP = "step"
SUFFIX = ".tsv"

# phase -> metric -> [(step, value)], steps increasing
Curves = dict[str, dict[str, list[tuple[int, float]]]]


def logging_steps(max_steps: int) -> int:
    """The Trainer's ``logging_steps`` for a phase of ``max_steps`` steps (~CURVE_POINTS points)."""
    return max(1, max_steps // CURVE_POINTS)


def grad_norm_callback(optimizer: Any) -> Any:
    """A ``TrainerCallback`` that sets ``grad_norm`` in every training log to the optimizer's
    last pre-clip gradient norm (``optimizer.grad_norm``, as SparseAdamW records it; an
    optimizer without one leaves the Trainer's value). The Trainer appends a copy of the logs
    to ``state.log_history`` before callbacks see them, so the entry just appended (in the
    public state every callback gets) is updated too; the printed log line comes after.

    Built here rather than at import: reading curves (the report) must not import torch."""
    from transformers import TrainerCallback

    class GradNormToLogs(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            norm = getattr(optimizer, "grad_norm", None)
            if logs is None or "loss" not in logs or norm is None:
                return
            logs["grad_norm"] = float(norm)
            last = state.log_history[-1] if state.log_history else None
            if last is not None and last.get("step") == state.global_step and "loss" in last:
                last["grad_norm"] = logs["grad_norm"]

    return GradNormToLogs()


def from_history(history: Iterable[Mapping[str, Any]]) -> Curves:
    """The curves in a run's log history, phases in the order they ran."""
    curves: Curves = {}
    for entry in history:
        phase, step = entry.get("phase"), entry.get(STEP)
        if phase is None or step is None:
            continue  # a phase's summary (best step, ...): no point of a curve
        points = curves.setdefault(str(phase), {})
        metrics = TRAIN_METRICS if "loss" in entry else [k for k in entry if k.startswith(EVAL_PREFIX)]
        for metric in metrics:
            value = entry.get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                points.setdefault(metric, []).append((int(step), float(value)))
    return {phase: {metric: sorted(points) for metric, points in metrics.items()}
            for phase, metrics in curves.items()}


def combined(runs: Mapping[str, Curves]) -> Curves:
    """Several runs' curves as one output's (an ablation trains several components and keeps
    only scores): each phase named ``<run>-<phase>``, runs in the given order."""
    return {f"{run}-{phase}": metrics for run, curves in runs.items() for phase, metrics in curves.items()}


def _format(value: float) -> str:
    # repr is exact and platform-independent: identical runs give identical bytes.
    return "nan" if math.isnan(value) else repr(value)


def write(curves: Curves, directory: Path | str) -> Path:
    """Write ``curves`` as ``directory/<phase>/<metric>.tsv``, replacing whatever was there
    (an empty folder when there are none: it is still a declared DVC output)."""
    for phase in curves:
        if not phase or "/" in phase or phase.startswith("."):
            raise LtsftError(f"curves: phase name {phase!r} cannot be a folder name")
    with atomic_dir(Path(directory)) as out:
        for phase, metrics in curves.items():
            (out / phase).mkdir()
            for metric, points in metrics.items():
                lines = [f"{STEP}\t{metric}", *(f"{step}\t{_format(value)}" for step, value in points)]
                (out / phase / f"{metric}{SUFFIX}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(directory)


def read(directory: Path | str) -> Curves:
    """The curves written by :func:`write` (phases and metrics in name order); {} when absent."""
    directory = Path(directory)
    curves: Curves = {}
    if not directory.is_dir():
        return curves
    for phase_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        for path in sorted(phase_dir.glob(f"*{SUFFIX}")):
            header, *lines = path.read_text(encoding="utf-8").splitlines()
            columns = header.split("\t")
            if len(columns) != 2 or columns[0] != STEP:
                raise LtsftError(f"{path}: not a curve file (header must be 'step<TAB><metric>')")
            try:
                points = [(int(step), float(value)) for step, value in (line.split("\t") for line in lines if line)]
            except ValueError:
                raise LtsftError(f"{path}: not a curve file (rows must be '<step><TAB><number>')") from None
            curves.setdefault(phase_dir.name, {})[columns[1]] = points
    return curves
