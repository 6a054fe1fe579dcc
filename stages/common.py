"""Mechanism shared by the stages: provenance, quiet logging, and the training runs that
several stages share (an LT-SFT diff, a dense diff)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.dense_ft import train_dense
from pipeline.lottery import LotteryResult, train_lt_sft
from pipeline.sft import SparseDiff, maskable_parameter_names
from pipeline.tasks.base import Task
from stages.config import ConfigError, DenseSpec, Params, TrainSpec, UserError


def quiet_transformers() -> None:
    """Expected notices (e.g. 'newly initialized classifier') would drown the progress bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def params_hash(raw: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]


def require_files(*paths: Path) -> None:
    """Fail before any work, naming the first missing input."""
    for path in paths:
        if not Path(path).exists():
            raise UserError(f"{path}: not found (run `dvc repro` or the stage that writes it)")


def k_key(params: Params, kind: str) -> str:
    """The params key that set K for ``kind`` ("lang" or "task"), for error messages."""
    override = params.raw.get("sparsity", {}).get(f"{kind}_k")
    return f"sparsity.{kind}_k" if override is not None else "sparsity.k"


def provenance(params: Params, method: str, sections: Sequence[str], **facts: Any) -> dict[str, Any]:
    """What produced an artefact: method, preset, seed, the params sections it read, code
    revision, and when it started (``finish`` adds the wall time)."""
    return {"method": method, **facts, "preset": params.preset, "seed": params.seed,
            "git_revision": git_revision(), "params_hash": params_hash(params.raw),
            "params": {key: params.raw.get(key) for key in sections}, "_started": time.monotonic()}


def finish(record: dict[str, Any]) -> dict[str, Any]:
    """Replace the start mark with the wall time spent (the report sums them per table)."""
    record["wall_seconds"] = round(time.monotonic() - record.pop("_started", time.monotonic()), 1)
    return record


def numel(model: Any, names: Sequence[str]) -> int:
    weights = dict(model.named_parameters())
    return sum(weights[name].numel() for name in names)


class DevScorer:
    """A task's dev metrics for a model, printed as 'before -> after' around training."""

    def __init__(self, params: Params, task: Task, tokenizer: Any, examples: Sequence[Any], max_length: int):
        self.params, self.task, self.tokenizer, self.examples, self.max_length = params, task, tokenizer, examples, max_length

    def __call__(self, model: Any) -> dict[str, float]:
        if not self.examples:
            return {}
        return self.task.evaluate(model, self.examples, self.tokenizer, self.max_length, self.params.eval_batch_size)

    def line(self, before: dict[str, float], after: dict[str, float]) -> str:
        metric = self.task.metric
        start = f"{before[metric]:.4f} -> " if metric in before else ""
        return f"dev {metric} {start}{after.get(metric, float('nan')):.4f}"


def train_diff(
    params: Params,
    kind: str,
    task: Task,
    model: Any,
    tokenizer: Any,
    train_examples: Sequence[Any],
    dev_examples: Sequence[Any],
    spec: TrainSpec,
    out_dir: Path,
    facts: dict[str, Any],
    method: str = "lt-sft",
) -> LotteryResult:
    """Run LT-SFT (``method`` lt-sft) or Rand-SFT (rand-sft) for one language or task and save
    the diff with its provenance.

    The model arrives as the starting point θ0 (for task diffs: θ0 + source-language
    diff); the saved diff is relative to it, and carries dev metrics before and after.
    """
    k = params.lang_k if kind == "lang" else params.task_k
    maskable = maskable_parameter_names(model)
    total = numel(model, maskable)
    if k > total:
        raise ConfigError(f"{k_key(params, kind)}: K={k} exceeds the model's {total} maskable entries")
    if not train_examples:
        raise UserError(f"no training examples for {facts}")
    record = provenance(params, method, ["sparsity", f"{kind}_sft"], kind=kind, **facts, k=k,
                        train_examples=len(train_examples))
    scorer = DevScorer(params, task, tokenizer, dev_examples, spec.max_length)
    # The starting dev loss says what a language diff achieved; a task head starts random,
    # so its starting score says nothing (and costs an evaluation).
    before = scorer(model) if kind == "lang" else {}
    features = task.featurize(train_examples, tokenizer, spec.max_length)
    selection = "random" if method == "rand-sft" else "magnitude"
    result = train_lt_sft(
        model, features, task.collator(tokenizer), spec.lottery(k, params.seed, selection),
        diff_meta={"base_model": str(params.model.get("name", "")), "provenance": record},
    )
    after = scorer(model)
    head = [] if kind == "lang" else list(result.diff.dense)  # a language diff's MLM head is never composed
    result.diff.provenance["trainable_parameters"] = k + numel(model, head)
    result.diff.provenance["dev_metrics"] = {"before": before, "after": after}
    finish(result.diff.provenance)
    result.diff.save(out_dir)
    print(f"{out_dir}: {method}, nnz {result.diff.nnz:,} of K {k:,}; {scorer.line(before, after)}")
    return result


def train_dense_diff(
    params: Params,
    method: str,
    task: Task,
    model: Any,
    tokenizer: Any,
    train_examples: Sequence[Any],
    dev_examples: Sequence[Any],
    spec: DenseSpec,
    sections: Sequence[str],
    out_dir: Path,
    facts: dict[str, Any],
    train_body: bool = True,
) -> SparseDiff:
    """Dense fine-tuning (full-ft, dense-composed) or a head on the frozen encoder
    (head-only), saved as a diff from the model's starting state."""
    head = task.head_parameter_names(model)
    record = provenance(params, method, sections, kind="task", **facts, train_examples=len(train_examples))
    scorer = DevScorer(params, task, tokenizer, dev_examples, spec.max_length)
    before: dict[str, float] = {}  # a random head's starting score says nothing
    features = task.featurize(train_examples, tokenizer, spec.max_length)
    diff = train_dense(model, features, task.collator(tokenizer), head, spec.phase, spec.run(params.seed),
                       train_body=train_body, max_grad_norm=spec.max_grad_norm, description=method,
                       head_learning_rate=spec.head_learning_rate if train_body else None,
                       diff_meta={"base_model": str(params.model.get("name", "")), "provenance": record})
    after = scorer(model)
    body = numel(model, maskable_parameter_names(model)) if train_body else 0
    diff.provenance["trainable_parameters"] = body + numel(model, head)
    diff.provenance["dev_metrics"] = {"before": before, "after": after}
    finish(diff.provenance)
    diff.save(out_dir)
    print(f"{out_dir}: {method}, {diff.provenance['trainable_parameters']:,} trained parameters; "
          f"{scorer.line(before, after)}")
    return diff
