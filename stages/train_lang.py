"""Stage `train_lang*@<lang>`: a language's component, trained by masked LM on its raw text.

`--method` is any registered method with a language component of its own (`ltsft
train-lang --help` lists them); each writes where stages/layout.py puts its components.
"""

from __future__ import annotations

from pipeline.methods import language_methods
from pipeline.core.method import ComponentPaths, TrainContext
from pipeline.core.runs import RunResult
from pipeline.core.models import load_tokenizer
from pipeline.tasks import get_task
from stages import layout
from stages.common import get_method, require_files, write_curves, write_run_logs
from stages.seeds import seed_runs


def run(params, lang: str, method: str = "lt-sft") -> None:
    for run_params, paths in seed_runs(params):
        result = train(run_params, lang, method, paths)
        write_curves(result.curves)
        write_run_logs(result.facts)


def train(params, lang: str, method: str = "lt-sft", paths: ComponentPaths = layout.COMPONENTS) -> RunResult:
    """Train ``lang``'s component with ``method``, written where ``paths`` puts it."""
    chosen = get_method(method, language_methods(), "a language")
    params.language(lang)
    train_path, dev_path = layout.text_split(lang, "train"), layout.text_split(lang, "dev")
    require_files(layout.BASE_MODEL, train_path, dev_path, *chosen.language_inputs(paths, lang))
    task = get_task("mlm")
    tokenizer = load_tokenizer(layout.BASE_MODEL)
    model = task.build_model(layout.BASE_MODEL, params.seed)
    ctx = TrainContext(params=params, task=task, kind="lang", name=lang, model=model, tokenizer=tokenizer,
                       train=task.read(train_path), dev=task.read(dev_path), paths=paths, facts={"lang": lang})
    return chosen.train_language(ctx)
