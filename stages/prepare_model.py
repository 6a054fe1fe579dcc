"""Stage `prepare_model`: write the pretrained encoder θ0 (with an MLM head) to models/base.

Sources: `tiny` builds a small random BERT from `model.tiny` (BertConfig keys) with a
WordPiece vocabulary learnt from the training text (smoke preset); `hub` / `local` load
`model.name` with transformers (a hub id, or a directory).
"""

from __future__ import annotations

from pipeline.atomic import atomic_dir
from pipeline.data.text import read_lines
from pipeline.models import build_tiny_mlm, save_model, train_wordpiece_tokenizer
from stages import layout
from stages.common import require_files
from stages.config import ConfigError, Params


def prepare_tiny(params: Params) -> None:
    tiny = dict(params.model.get("tiny") or {})
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


def prepare_pretrained(params: Params) -> None:
    from transformers import AutoModelForMaskedLM

    from pipeline.models import load_tokenizer

    name = params.model.get("name")
    if not name:
        raise ConfigError("model.name: required for model.source hub/local")
    try:
        tokenizer = load_tokenizer(name)
        model = AutoModelForMaskedLM.from_pretrained(name)
    except OSError as err:
        raise ConfigError(f"model.name: cannot load {name!r} ({str(err).splitlines()[0]})") from None
    with atomic_dir(layout.BASE_MODEL) as out:
        save_model(model, tokenizer, out)


SOURCES = {"tiny": prepare_tiny, "hub": prepare_pretrained, "local": prepare_pretrained}


def run(params: Params) -> None:
    source = params.model["source"]
    if source not in SOURCES:
        raise ConfigError(f"model.source: unknown source {source!r} (known: {', '.join(SOURCES)})")
    SOURCES[source](params)
