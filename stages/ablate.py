"""The ablation stages.

`ablate_sparsity@<K>`: the sparsity sweep — zero-shot scores of LT-SFT (composed
and task-only) and Rand-SFT as the task diff's K varies.

Only the task diff's K varies; language diffs stay those of the main run (K =
sparsity.lang_k). Phase 1 is not re-run: LT-SFT's phase 1 is identical for every K (same
start, data, seed and budget), so the main run's phase-1 change is loaded and each K is
selected from it, then phase 2 trains the K entries. Rand-SFT skips phase 1 anyway. The
swept diffs are scored and dropped; only their results are kept.

Both ablations run on the first of ``seeds`` only (whose components sit at the unnested
paths): a curve from one seed, at a fraction of the cost of every seed's.

`ablate_l1@<λ>`: the L1 term of language diffs — every target language's LT-SFT diff
retrained with ``lang_sft.l1_lambda = λ`` (by the same method code as the main run, into a
scratch directory), composed with the main run's task diff and scored; the diffs are dropped.
The task diff, and the source language diff it was trained over, stay the main run's.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

from pipeline.core.atomic import write_json
from pipeline.core.best_checkpoint import DevCheck
from pipeline.core.composition import DiffComposer
from pipeline.core.config import parse_params
from pipeline.core.curves import combined, from_history
from pipeline.core.distributed import is_main_process
from pipeline.core.errors import ConfigError
from pipeline.core.method import Variant
from pipeline.core.evaluation import score
from pipeline.methods import METHODS
from pipeline.core.models import load_tokenizer
from pipeline.core.runs import DevScorer, run_facts
from pipeline.tasks import task_for
from stages import layout
from stages.common import require_files, write_curves, write_run_logs
from stages.seeds import first_seed

def run(params, task_name: str, k: int) -> None:
    from pipeline.formats.sparse_diff import SparseDiff
    from pipeline.methods.lt_sft.lottery import train_lt_sft
    from pipeline.core.parameters import count_parameters_named, maskable_parameter_names, restore, snapshot

    swept = [name for name, method in METHODS.items() if method.swept]
    spec = params.task(task_name)
    params = first_seed(params.for_task(task_name))  # the sweep reads the first seed's components
    task = task_for(spec)
    paths = layout.COMPONENTS
    train_path = layout.task_split(task_name, spec.source, "train", task.data_format)
    dev_path = layout.task_split(task_name, spec.source, "dev", task.data_format)
    tests = {lang: layout.task_split(task_name, lang, "test", task.data_format) for lang in spec.targets}
    lang_paths = {method: {lang: paths.component(method, "lang", lang) for lang in spec.targets} for method in swept}
    phase1 = paths.component("lt-sft", "task-phase1", task_name)
    require_files(layout.BASE_MODEL, train_path, dev_path, phase1, *(paths.component(m, "lang", spec.source) for m in swept),
                  *(path for by_lang in lang_paths.values() for path in by_lang.values()), *tests.values())
    started = time.monotonic()
    tokenizer = load_tokenizer(layout.BASE_MODEL)
    features = task.featurize(task.read(train_path), tokenizer, params.task_sft.max_length)
    # Phase 2 ends on its best dev state where the main run's does (task_sft.phase2.select_best).
    dev = DevCheck(DevScorer(params, task, tokenizer, task.read(dev_path), params.task_sft.max_length),
                   task.metric, task.higher_is_better)
    rows, curves = [], {}
    for method in swept:
        model = task.build_model(layout.BASE_MODEL, params.seed)
        SparseDiff.load(paths.component(method, "lang", spec.source)).apply(model)
        total = count_parameters_named(model, maskable_parameter_names(model))
        if not 0 < k <= total:
            raise ConfigError(f"ablation.k: K={k} is outside 1..{total} (the maskable entries)")
        phase1_state = None
        if METHODS[method].selection == "magnitude":  # LT-SFT: select from the main run's phase 1
            start = snapshot(model)
            SparseDiff.load(phase1).apply(model, with_dense=True)
            phase1_state = snapshot(model)
            restore(model, start)
        config = params.task_sft.lottery(k, params.seed, METHODS[method].selection)
        result = train_lt_sft(model, features, task.collator(tokenizer), config, phase1_state=phase1_state, dev=dev)
        diff, curves[method] = result.diff, from_history(result.log)
        diff.provenance["k"] = k
        diff.provenance["trainable_parameters"] = k + sum(t.numel() for t in diff.dense.values())
        composer = DiffComposer(paths.component(method, "task", task_name), lang_paths[method], task_diff=diff)
        rows += score(params, task, task_name, layout.BASE_MODEL, tests, composer, METHODS[method].variants,
                      {"ablation": "sparsity"})
    out = layout.sparsity_file(task_name, k)
    if is_main_process():  # data-parallel: every process trained and scored alike; one writes
        write_json(out, {"rows": rows})
        write_curves({str(out): combined(curves)})
    write_run_logs({str(out): run_facts(params, time.monotonic() - started)})


def run_l1(params, task_name: str, l1: float) -> None:
    from stages import train_lang

    spec = params.task(task_name)
    params = first_seed(params)  # composed with the first seed's task diff
    task_params = params.for_task(task_name)
    task = task_for(spec)
    task_path = layout.COMPONENTS.component("lt-sft", "task", task_name)
    tests = {lang: layout.task_split(task_name, lang, "test", task.data_format) for lang in spec.targets}
    require_files(layout.BASE_MODEL, task_path, *tests.values(),
                  *(layout.text_split(lang, split) for lang in spec.targets for split in ("train", "dev")))
    tree = copy.deepcopy(params.raw)
    tree["lang_sft"]["l1_lambda"] = l1
    ablated = parse_params(tree).for_seed(params.seed)
    started = time.monotonic()
    curves = {}
    with tempfile.TemporaryDirectory(prefix="ltsft-l1-") as scratch:
        paths = layout.Components(Path(scratch))
        for lang in spec.targets:
            curves[lang] = train_lang.train(ablated, lang, "lt-sft", paths).curves[
                str(paths.component("lt-sft", "lang", lang))]
        if not is_main_process():
            return  # data-parallel: only the main process saved the diffs, and it scores them
        composer = DiffComposer(task_path, {lang: paths.component("lt-sft", "lang", lang) for lang in spec.targets})
        rows = score(task_params, task, task_name, layout.BASE_MODEL, tests, composer, [Variant("lt-sft", True)],
                     {"ablation": "l1", "l1_lambda": l1})
    out = layout.l1_file(task_name, l1)
    write_json(out, {"rows": rows})
    write_curves({str(out): combined(curves)})
    write_run_logs({str(out): run_facts(params, time.monotonic() - started)})
