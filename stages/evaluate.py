"""Stage `evaluate*@<task>`: compose a method's components onto θ0 and score zero-shot on
every target language of the task (an imported method skips the targets it has no released
module for; the results file lists them under "skipped" and the report says so).

One results file per method (results/<task>/<method>.json) holding every variant the
method reports (e.g. `lt-sft` = θ0 + φ_task + φ_lang(target) and `lt-sft-task-only` =
θ0 + φ_task), for every seed of ``seeds``. Each row carries its seed, the trainable
parameters of the language and task components it used (and K for sparse methods). The run log records the evaluation's wall
time and the components behind it, which the report sums per table.
"""

from __future__ import annotations

import time

from pipeline.core.atomic import write_json
from pipeline.core.evaluation import score
from pipeline.methods import METHODS
from pipeline.core.runs import run_facts
from pipeline.tasks import task_for
from stages import layout
from stages.common import get_method, require_files, write_run_logs
from stages.seeds import seed_runs


def run(params, task_name: str, method: str = "lt-sft") -> list[dict]:
    chosen = get_method(method, list(METHODS), "evaluation")
    spec = params.task(task_name)
    params = params.for_task(task_name)
    task = task_for(spec)
    skipped = chosen.skipped_targets(params, spec.targets)
    for lang, reason in skipped.items():
        print(f"{task_name} {method}: {lang} skipped: {reason}")
    targets = [lang for lang in spec.targets if lang not in skipped]
    tests = {lang: layout.task_split(task_name, lang, "test", task.data_format) for lang in targets}
    # Released components have no seed: scored once (another seed would repeat the numbers).
    runs = list(seed_runs(params, seeds=params.seeds[:1] if chosen.imported else None))
    composers = [chosen.composer(run_params, paths, task_name, targets) for run_params, paths in runs]
    with_language = any(variant.with_language for variant in chosen.variants)
    require_files(layout.BASE_MODEL, *tests.values(), *(p for c in composers for p in c.inputs(with_language)))
    started = time.monotonic()
    rows = [row for (run_params, _), composer in zip(runs, composers)
            for row in score(run_params, task, task_name, layout.BASE_MODEL, tests, composer, chosen.variants)]
    out = layout.results_file(task_name, method)
    write_json(out, {"rows": rows} | ({"skipped": {method: skipped}} if skipped else {}))
    used = [str(path) for composer in composers for path in composer.used]
    write_run_logs({str(out): run_facts(params, time.monotonic() - started, components=used)})
    return rows
