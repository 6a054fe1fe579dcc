"""Mechanism shared by the stages: provenance, quiet logging, and one LT-SFT training run."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.lottery import train_lt_sft
from pipeline.sft import SparseDiff, maskable_parameter_names
from pipeline.tasks.base import Task
from stages.config import ConfigError, Params, TrainSpec, UserError


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
    extra_provenance: dict[str, Any],
) -> SparseDiff:
    """Run LT-SFT for one language or task and save the diff with its provenance.

    The model arrives as the starting point θ0 (for task diffs: θ0 + source-language
    diff); the saved diff is relative to it, and carries dev metrics before and after.
    """
    k = params.lang_k if kind == "lang" else params.task_k
    weights = dict(model.named_parameters())
    maskable = sum(weights[name].numel() for name in maskable_parameter_names(model))
    if k > maskable:
        raise ConfigError(f"{k_key(params, kind)}: K={k} exceeds the model's {maskable} maskable entries")
    if not train_examples:
        raise UserError(f"no training examples for {extra_provenance}")

    def dev_metrics() -> dict[str, float]:
        return task.evaluate(model, dev_examples, tokenizer, spec.max_length, params.eval_batch_size)

    before = dev_metrics() if dev_examples else {}
    features = task.featurize(train_examples, tokenizer, spec.max_length)
    provenance = {
        "kind": kind, **extra_provenance, "preset": params.preset, "seed": params.seed, "k": k,
        "train_examples": len(train_examples), "git_revision": git_revision(),
        "params_hash": params_hash(params.raw), "params": {f"{kind}_sft": params.raw[f"{kind}_sft"]},
    }
    result = train_lt_sft(
        model, features, task.collator(tokenizer), spec.lottery(k, params.seed),
        diff_meta={"base_model": str(params.model.get("name", "")), "provenance": provenance},
    )
    after = dev_metrics() if dev_examples else {}
    result.diff.provenance["dev_metrics"] = {"before": before, "after": after}
    result.diff.save(out_dir)
    print(f"{out_dir}: nnz {result.diff.nnz:,} of K {k:,}; dev {task.metric} "
          f"{before.get(task.metric, float('nan')):.4f} -> {after.get(task.metric, float('nan')):.4f}")
    return result.diff
