"""Zero-shot scoring of composed models: every (target language, variant) of a method,
every metric the task reports, as result rows for the report and `dvc metrics`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.core.method import Composer, Variant


def score(params: Any, task: Any, task_name: str, base: Path, tests: Mapping[str, Path], composer: Composer,
          variants: Sequence[Variant], extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows of every (target, variant) and reported metric, each with the run's seed
    (``params.seed``: components of several seeds are scored one seed at a time); ``extra``
    fields added to each.

    ``tests`` maps each target language to its test split; the model is θ0 from ``base``
    with the task's head, composed by ``composer``."""
    from pipeline.core.models import load_tokenizer

    tokenizer = load_tokenizer(base)
    model = task.build_model(base, params.seed)
    composer.load(model)
    rows = []
    for lang, test_path in tests.items():
        examples = task.read(test_path)
        for variant in variants:
            lang_params = composer.prepare(model, lang, variant.with_language)
            metrics = task.evaluate(model, examples, tokenizer, params.eval_max_length, params.eval_batch_size)
            for metric in task.reported_metrics():
                row = {"task": task_name, "method": variant.name, "lang": lang, "metric": metric, "seed": params.seed,
                       "value": metrics[metric], "params_lang": lang_params, "params_task": composer.task_params}
                shared = getattr(composer, "shared_params", 0)  # only where there is one: other rows unchanged
                rows.append(row | ({"k": composer.k} if composer.k is not None else {})
                            | ({"params_shared": shared} if shared else {}) | (extra or {}))
            shown = ", ".join(f"{m} {metrics[m]:.4f}" for m in task.reported_metrics())
            print(f"{task_name} {variant.name:>24} {lang}: {shown}")
    return rows
