"""Stage `ablate_sparsity@<K>`: the sparsity sweep — zero-shot scores of LT-SFT (composed
and task-only) and Rand-SFT as the task diff's K varies.

Only the task diff's K varies; language diffs stay those of the main run (K =
sparsity.lang_k). Phase 1 is not re-run: LT-SFT's phase 1 is identical for every K (same
start, data, seed and budget), so the main run's phase-1 change is loaded and each K is
selected from it, then phase 2 trains the K entries. Rand-SFT skips phase 1 anyway. The
swept diffs are scored and dropped; only their results are kept.
"""

from __future__ import annotations

import time

import torch

from pipeline.atomic import write_json
from pipeline.lottery import train_lt_sft
from pipeline.models import load_tokenizer
from pipeline.sft import SparseDiff, maskable_parameter_names, snapshot
from pipeline.tasks import get_task
from stages import layout
from stages.common import numel, require_files
from stages.config import ConfigError, Params
from stages.evaluate import DiffComposer, score

SWEPT = {"lt-sft": [("lt-sft-task-only", False), ("lt-sft", True)], "rand-sft": [("rand-sft", True)]}


def run(params: Params, task_name: str, k: int) -> None:
    spec = params.task(task_name)
    params = params.for_task(task_name)
    task = get_task(task_name)
    targets = list(spec.targets)
    train_path = layout.task_split(task_name, spec.source, "train", task.data_format)
    lang_paths = {method: {lang: layout.lang_diff(lang, method) for lang in targets} for method in SWEPT}
    require_files(layout.BASE_MODEL, train_path, layout.task_phase1(task_name),
                  *(layout.lang_diff(spec.source, m) for m in SWEPT),
                  *(path for paths in lang_paths.values() for path in paths.values()),
                  *(layout.task_split(task_name, lang, "test", task.data_format) for lang in targets))
    started = time.monotonic()
    tokenizer = load_tokenizer(layout.BASE_MODEL)
    features = task.featurize(task.read(train_path), tokenizer, params.task_sft.max_length)
    rows = []
    for method, variants in SWEPT.items():
        model = task.build_model(layout.BASE_MODEL, params.seed)
        SparseDiff.load(layout.lang_diff(spec.source, method)).apply(model)
        total = numel(model, maskable_parameter_names(model))
        if not 0 < k <= total:
            raise ConfigError(f"ablation.k: K={k} is outside 1..{total} (the maskable entries)")
        phase1_state = None
        if method == "lt-sft":
            start = snapshot(model)
            SparseDiff.load(layout.task_phase1(task_name)).apply(model, with_dense=True)
            phase1_state = snapshot(model)
            with torch.no_grad():
                for name, value in model.named_parameters():
                    value.copy_(start[name])
        config = params.task_sft.lottery(k, params.seed, "random" if method == "rand-sft" else "magnitude")
        diff = train_lt_sft(model, features, task.collator(tokenizer), config, phase1_state=phase1_state).diff
        diff.provenance["k"] = k
        diff.provenance["trainable_parameters"] = k + sum(t.numel() for t in diff.dense.values())
        composer = DiffComposer(layout.task_diff(task_name, method), lang_paths[method], task_diff=diff)
        rows += score(params, task, task_name, targets, composer, variants, {"ablation": "sparsity"})
    write_json(layout.sparsity_file(task_name, k),
               {"rows": rows, "seconds": {"evaluation": round(time.monotonic() - started, 1), "components": {}}})

