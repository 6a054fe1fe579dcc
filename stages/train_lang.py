"""Stage `train_lang*@<lang>`: a language's component, trained by masked LM on raw text.

Methods (``--method``):
- `lt-sft`:   the LT-SFT language diff. Its dense phase 1 (full fine-tuning of the same
              budget) is saved too, as the `dense-composed` ablation's language diff.
- `rand-sft`: the same with a random mask of the same K (phase 1 skipped: not needed).
- `madx`:     a MAD-X language adapter (bottlenecks + invertible adapter), everything
              pretrained frozen, MLM head included.
"""

from __future__ import annotations

from typing import Any

from pipeline.madx import add_madx, count_parameters, save_adapter
from pipeline.models import load_tokenizer
from pipeline.sft import maskable_parameter_names
from pipeline.tasks import get_task
from pipeline.training import train_parameters
from stages import layout
from stages.common import DevScorer, finish, numel, provenance, require_files, train_diff
from stages.config import ConfigError, Params

METHODS = ("lt-sft", "rand-sft", "madx")


def run(params: Params, lang: str, method: str = "lt-sft") -> None:
    if method not in METHODS:
        raise ConfigError(f"--method: unknown method {method!r} for a language (known: {', '.join(METHODS)})")
    params.language(lang)
    train_path, dev_path = layout.text_split(lang, "train"), layout.text_split(lang, "dev")
    require_files(layout.BASE_MODEL, train_path, dev_path)
    task = get_task("mlm")
    tokenizer = load_tokenizer(layout.BASE_MODEL)
    model = task.build_model(layout.BASE_MODEL, params.seed)
    train, dev = task.read(train_path), task.read(dev_path)
    if method == "madx":
        train_language_adapter(params, lang, task, model, tokenizer, train, dev)
        return
    result = train_diff(params, "lang", task, model, tokenizer, train, dev, params.lang_sft,
                        layout.lang_diff(lang, method), {"lang": lang}, method=method)
    if method == "lt-sft" and result.phase1_diff is not None:
        dense = result.phase1_diff
        dense.provenance = provenance(params, "dense-composed", ["lang_sft"], kind="lang", lang=lang,
                                      note="LT-SFT's dense phase 1 for this language (same budget and L1)")
        dense.provenance.pop("_started")
        dense.provenance["wall_seconds"] = result.diff.provenance["wall_seconds"] / 2  # phase 1 of the two
        dense.provenance["trainable_parameters"] = numel(model, maskable_parameter_names(model))
        dense.save(layout.lang_diff(lang, "dense-composed"))
        print(f"{layout.lang_diff(lang, 'dense-composed')}: dense phase-1 diff, nnz {dense.nnz:,}")


def train_language_adapter(params: Params, lang: str, task: Any, model: Any, tokenizer: Any,
                           train: list[str], dev: list[str]) -> None:
    spec = params.madx_language
    meta = provenance(params, "madx", ["madx"], kind="lang", lang=lang, train_examples=len(train))
    madx = add_madx(model, language_rf=spec.reduction_factor, task_rf=None, seed=params.seed)
    names = [name for name, _ in model.named_parameters() if name.startswith("madx.language.")]
    scorer = DevScorer(params, task, tokenizer, dev, spec.max_length)
    before = scorer(model)
    features = task.featurize(train, tokenizer, spec.max_length)
    train_parameters(model, names, features, task.collator(tokenizer), spec.phase, spec.run(params.seed),
                     "madx-language", max_grad_norm=spec.max_grad_norm)
    after = scorer(model)
    meta |= {"trainable_parameters": count_parameters(madx.language), "dev_metrics": {"before": before, "after": after}}
    finish(meta)
    save_adapter(madx.language, layout.lang_adapter(lang), meta)
    print(f"{layout.lang_adapter(lang)}: madx language adapter, {meta['trainable_parameters']:,} parameters; "
          f"{scorer.line(before, after)}")
