"""Stage `evaluate*@<task>`: compose each method's components onto θ0 and score zero-shot
on every target language.

One results file per trained method (results/<task>/<method>.json) holding its variants:
- `lt-sft`:         `lt-sft` = θ0 + φ_task + φ_lang(target), `lt-sft-task-only` = θ0 + φ_task
- `rand-sft`:       `rand-sft` = θ0 + φ_task + φ_lang(target), both with random masks
- `dense-composed`: θ0 + dense task diff + dense language diff (target), and
                    `dense-composed-task-only` (for the interference plot's dense gain)
- `full-ft`, `head-only`: θ0 + the task's dense diff (no language component)
- `madx`:           `madx` = task adapter over the target's language adapter,
                    `madx-task-only` = the task adapter alone
- `lt-sft-published`: the paper authors' released diffs, composed like ours
Each row carries the trainable parameters of the language and task components it used
(and K for sparse methods); the file also records the wall time of every component
behind it and of this evaluation, which the report sums per table.
Every variant starts from the same composed model, restored bit-exactly from a snapshot
between targets (not by reverting, which would accumulate rounding).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import write_json
from pipeline.madx import add_madx, load_adapter, set_active
from pipeline.models import load_tokenizer
from pipeline.sft import SparseDiff, snapshot
from pipeline.tasks import get_task
from stages import layout
from stages.common import require_files
from stages.config import ConfigError, Params

# trained method -> [(reported method, composes the target language's component?)]
VARIANTS: dict[str, list[tuple[str, bool]]] = {
    "lt-sft": [("lt-sft-task-only", False), ("lt-sft", True)],
    "rand-sft": [("rand-sft", True)],
    "dense-composed": [("dense-composed-task-only", False), ("dense-composed", True)],
    "full-ft": [("full-ft", False)],
    "head-only": [("head-only", False)],
    "madx": [("madx-task-only", False), ("madx", True)],
    "lt-sft-published": [("lt-sft-published", True)],  # the authors' released diffs (paper preset)
}


class DiffComposer:
    """θ0 + task diff (with its head), plus a target language's diff on request.

    The task diff is read from ``task_path``, or given in memory (the sparsity sweep
    evaluates diffs it does not keep)."""

    def __init__(self, task_path: Path, lang_paths: dict[str, Path], task_diff: SparseDiff | None = None):
        self.task_path, self.lang_paths, self.task_diff = task_path, lang_paths, task_diff

    @classmethod
    def for_method(cls, method: str, task_name: str, targets: list[str]) -> DiffComposer:
        return cls(layout.task_diff(task_name, method), {lang: layout.lang_diff(lang, method) for lang in targets})

    def inputs(self, with_lang: bool) -> list[Path]:
        return [self.task_path, *(self.lang_paths.values() if with_lang else [])]

    def load(self, model: Any) -> None:
        task_diff = self.task_diff or SparseDiff.load(self.task_path)
        task_diff.apply(model, with_dense=True)  # dense = the head
        self.task_params = int(task_diff.provenance.get("trainable_parameters", task_diff.nnz))
        self.k = task_diff.provenance.get("k")
        self.seconds = {str(self.task_path): task_diff.provenance.get("wall_seconds")}
        self.composed = snapshot(model)

    def prepare(self, model: Any, lang: str, with_lang: bool) -> int:
        """Set the model up for ``lang``; returns the language component's trainable parameters."""
        with torch.no_grad():
            for name, value in model.named_parameters():
                value.copy_(self.composed[name])
        if not with_lang:
            return 0
        lang_diff = SparseDiff.load(self.lang_paths[lang])
        lang_diff.apply(model)  # sparse part only: a language diff's MLM head stays out
        self.seconds[str(self.lang_paths[lang])] = lang_diff.provenance.get("wall_seconds")
        return int(lang_diff.provenance.get("trainable_parameters", lang_diff.nnz))


class AdapterComposer:
    """θ0 with MAD-X adapters: the task adapter (and head) over a target's language adapter."""

    def __init__(self, params: Params, task_name: str, targets: list[str]):
        self.params = params
        self.task_dir = layout.task_adapter(task_name)
        self.lang_paths = {lang: layout.lang_adapter(lang) for lang in targets}

    def inputs(self, with_lang: bool) -> list[Path]:
        return [self.task_dir, *(self.lang_paths.values() if with_lang else [])]

    def load(self, model: Any) -> None:
        self.madx = add_madx(model, language_rf=self.params.madx_language.reduction_factor,
                             task_rf=self.params.madx_task.reduction_factor)
        meta = load_adapter(self.task_dir / "adapter", self.madx.task)
        SparseDiff.load(self.task_dir / "head").apply(model, with_dense=True)
        self.task_params = int(meta["trainable_parameters"])
        self.k = None
        self.seconds = {str(self.task_dir): meta.get("wall_seconds")}

    def prepare(self, model: Any, lang: str, with_lang: bool) -> int:
        set_active(self.madx, language=with_lang, task=True)
        if not with_lang:
            return 0
        meta = load_adapter(self.lang_paths[lang], self.madx.language)
        self.seconds[str(self.lang_paths[lang])] = meta.get("wall_seconds")
        return int(meta["trainable_parameters"])


def score(params: Params, task: Any, task_name: str, targets: list[str], composer: Any,
          variants: list[tuple[str, bool]], extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows of every (target, variant), every reported metric; ``extra`` fields added to each."""
    tokenizer = load_tokenizer(layout.BASE_MODEL)
    model = task.build_model(layout.BASE_MODEL, params.seed)
    composer.load(model)
    rows = []
    for lang in targets:
        examples = task.read(layout.task_split(task_name, lang, "test", task.data_format))
        for variant, with_lang in variants:
            lang_params = composer.prepare(model, lang, with_lang)
            metrics = task.evaluate(model, examples, tokenizer, params.eval_max_length, params.eval_batch_size)
            for metric in task.reported_metrics():
                row = {"task": task_name, "method": variant, "lang": lang, "metric": metric,
                       "value": metrics[metric], "params_lang": lang_params, "params_task": composer.task_params}
                rows.append(row | ({"k": composer.k} if composer.k is not None else {}) | (extra or {}))
            shown = ", ".join(f"{m} {metrics[m]:.4f}" for m in task.reported_metrics())
            print(f"{task_name} {variant:>24} {lang}: {shown}")
    return rows


def run(params: Params, task_name: str, method: str = "lt-sft") -> list[dict[str, Any]]:
    if method not in VARIANTS:
        raise ConfigError(f"--method: unknown method {method!r} (known: {', '.join(VARIANTS)})")
    spec = params.task(task_name)
    params = params.for_task(task_name)
    task = get_task(task_name)
    targets = list(spec.targets)
    tests = [layout.task_split(task_name, lang, "test", task.data_format) for lang in targets]
    composer = (AdapterComposer(params, task_name, targets) if method == "madx"
                else DiffComposer.for_method(method, task_name, targets))
    with_any_lang = any(with_lang for _, with_lang in VARIANTS[method])
    require_files(layout.BASE_MODEL, *tests, *composer.inputs(with_any_lang))
    started = time.monotonic()
    rows = score(params, task, task_name, targets, composer, VARIANTS[method])
    seconds = {"evaluation": round(time.monotonic() - started, 1), "components": composer.seconds}
    write_json(layout.results_file(task_name, method), {"rows": rows, "seconds": seconds})
    return rows
