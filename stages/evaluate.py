"""Stage `evaluate*@<task>`: compose a method's components onto θ0 and score zero-shot on
every target language of the task.

One results file per method (results/<task>/<method>.json) holding every variant the
method reports (e.g. `lt-sft` = θ0 + φ_task + φ_lang(target) and `lt-sft-task-only` =
θ0 + φ_task). Each row carries the trainable parameters of the language and task
components it used (and K for sparse methods). The run log records the evaluation's wall
time and the components behind it, which the report sums per table.
"""

from __future__ import annotations

import time

from pipeline.core.atomic import write_json
from pipeline.core.evaluation import score
from pipeline.methods import METHODS
from pipeline.core.runs import run_facts
from pipeline.tasks import get_task
from stages import layout
from stages.common import get_method, require_files, write_run_logs


def run(params, task_name: str, method: str = "lt-sft") -> list[dict]:
    chosen = get_method(method, list(METHODS), "evaluation")
    spec = params.task(task_name)
    params = params.for_task(task_name)
    task = get_task(task_name)
    targets = chosen.evaluated_targets(params, spec.targets)
    if len(targets) < len(spec.targets):  # released components cover only some targets
        print(f"{method}: no component for {', '.join(t for t in spec.targets if t not in targets)}: not scored")
    tests = {lang: layout.task_split(task_name, lang, "test", task.data_format) for lang in targets}
    composer = chosen.composer(params, layout.COMPONENTS, task_name, targets)
    with_language = any(variant.with_language for variant in chosen.variants)
    require_files(layout.BASE_MODEL, *tests.values(), *composer.inputs(with_language))
    started = time.monotonic()
    rows = score(params, task, task_name, layout.BASE_MODEL, tests, composer, chosen.variants)
    out = layout.results_file(task_name, method)
    write_json(out, {"rows": rows})
    write_run_logs({str(out): run_facts(params, time.monotonic() - started, components=[str(p) for p in composer.used])})
    return rows
