"""The one run choreography every component's training follows, whatever the method:

    provenance → dev score before (languages only) → train → dev score after
    → record trainable parameters and dev metrics → save → one summary line

Provenance inside a saved component holds only what determines it (method, preset, seed,
the params sections it read, data sizes, dev metrics), so identical inputs give
byte-identical outputs and DVC can tell that a re-run changed nothing. Facts about the run
itself (wall time, date, host, git revision, the whole params hash) go to a separate run
log that the stage writes beside, never into a hashed output (:func:`run_facts`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core import distributed
from pipeline.core.curves import Curves, from_history
from pipeline.core.errors import LtsftError
from pipeline.core.runtime import component as component_runtime
from pipeline.core.runtime import current as current_runtime

if TYPE_CHECKING:  # runs is imported while the method registry registers (no cycle at run time)
    from pipeline.core.method import TrainContext


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def params_hash(raw: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]


def hardware() -> str:
    return f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count() or 1} CPU cores"


def run_facts(params: Any, wall_seconds: float, **extra: Any) -> dict[str, Any]:
    """What a run log records: everything about the run that must not enter an output."""
    return {"wall_seconds": round(wall_seconds, 1), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "hardware": hardware(), "git_revision": git_revision(),
            "params_hash": params_hash(params.raw), **extra}


def provenance(params: Any, method: str, sections: Sequence[str], **facts: Any) -> dict[str, Any]:
    """What produced a component: deterministic facts only (see the module docstring).

    ``world_size`` when several processes trained it data-parallel: float sums then run in
    another order, so the numbers may differ in their last bits from one process's. Absent
    with one process, so that single-process outputs stay byte-identical to earlier ones."""
    size = distributed.world_size()
    return {"method": method, **facts, "preset": params.preset, "seed": params.seed,
            "params": {key: _dotted(params.raw, key) for key in sections}} | ({"world_size": size} if size > 1 else {})


def _dotted(tree: dict[str, Any], key: str) -> Any:
    """The value at a dotted params key (``madx.language``), or None."""
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


class DevScorer:
    """A task's dev metrics for a model, printed as 'before -> after' around training."""

    def __init__(self, params: Any, task: Any, tokenizer: Any, examples: Sequence[Any], max_length: int):
        self.params, self.task, self.tokenizer, self.examples, self.max_length = params, task, tokenizer, examples, max_length

    def __call__(self, model: Any) -> dict[str, float]:
        if not self.examples:
            return {}
        return self.task.evaluate(model, self.examples, self.tokenizer, self.max_length, self.params.eval_batch_size)

    def line(self, before: dict[str, float], after: dict[str, float]) -> str:
        metric = self.task.metric
        if not after:
            return "no dev set"
        start = f"{before[metric]:.4f} -> " if metric in before else ""
        return f"dev {metric} {start}{after.get(metric, float('nan')):.4f}"


@dataclass
class Trained:
    """What a method's training returns to the choreography.

    ``component``: what is saved at the run's output (a SparseDiff, or anything with
    ``provenance`` and ``save(path)``); ``extras``: further artefacts the same run produced
    (LT-SFT's dense phase 1), each with its directory and a share of the wall time; ``log``:
    the run's log history, every phase's (``run_trainer``'s return), kept as its curves."""

    component: Any
    trainable_parameters: int
    note: str = ""
    extras: list[tuple[Path, Any, float]] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunResult:
    """A finished run: the component as trained (in memory), the run facts of every
    directory written (the stage writes them to its run logs) and the training curves of
    the component at each output (the stage writes them where its layout keeps curves)."""

    component: Any
    trainable_parameters: int
    facts: dict[str, dict[str, Any]]
    curves: dict[str, Curves] = field(default_factory=dict)


def run_component(ctx: TrainContext, method: str, sections: Sequence[str], max_length: int, out: Path,
                  train: Callable[[dict[str, Any]], Trained]) -> RunResult:
    """Train one component with ``train`` and save it at ``out``.

    Data-parallel (several processes): every process trains; only the main one saves and
    prints, the others wait until it has (then return the same RunResult, with no facts:
    they wrote nothing)."""
    if not ctx.train:
        raise LtsftError(f"{method}: no training examples for {ctx.kind} {ctx.name}")
    record = provenance(ctx.params, method, sections, kind=ctx.kind, **ctx.facts, train_examples=len(ctx.train))
    scorer = DevScorer(ctx.params, ctx.task, ctx.tokenizer, ctx.dev, max_length)
    # A language's starting dev loss says what its component achieved; a task head starts
    # random, so its starting score says nothing (and costs an evaluation).
    before = scorer(ctx.model) if ctx.kind == "lang" else {}
    # Precision and, with runtime.checkpoint_every, a checkpoint session keyed by this run's
    # params, starting model and data: a killed run re-run resumes (pipeline/core/resume.py).
    with component_runtime(getattr(ctx.params, "runtime", None), f"{method}-{ctx.kind}-{ctx.name}", record, ctx.model,
                           ctx.train, ctx.dev) as checkpoints:
        if (mode := current_runtime().precision) != "fp32":
            record["precision"] = mode  # the numbers depend on it (fp32, the default, is recorded by omission)
        started = time.monotonic()
        trained = train(record)
        seconds = time.monotonic() - started
    after = scorer(ctx.model)
    trained.component.provenance.update(
        record | {"trainable_parameters": trained.trainable_parameters, "dev_metrics": {"before": before, "after": after}})
    facts = {}
    if distributed.is_main_process():
        for path, artefact, share in trained.extras:
            artefact.save(path)
            facts[str(path)] = run_facts(ctx.params, seconds * share)
        trained.component.save(out)
        if checkpoints is not None:
            checkpoints.remove()  # everything it would resume is saved
        facts[str(out)] = run_facts(ctx.params, seconds)
        note = f"{trained.note}; " if trained.note else ""
        print(f"{out}: {method}, {note}{trained.trainable_parameters:,} trained parameters; {scorer.line(before, after)}")
    distributed.barrier()
    # Every phase's curve goes with the run's own component (LT-SFT's extra, its dense phase 1,
    # is one of those phases: no copy of it).
    return RunResult(trained.component, trained.trainable_parameters, facts, {str(out): from_history(trained.log)})
