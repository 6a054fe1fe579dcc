"""Stage `train_lang@<lang>`: an LT-SFT language diff, trained by masked LM on raw text."""

from __future__ import annotations

from pipeline.models import load_tokenizer
from pipeline.tasks import get_task
from stages import layout
from stages.common import require_files, train_diff
from stages.config import Params


def run(params: Params, lang: str) -> None:
    params.language(lang)
    train_path, dev_path = layout.text_split(lang, "train"), layout.text_split(lang, "dev")
    require_files(layout.BASE_MODEL, train_path, dev_path)
    task = get_task("mlm")
    tokenizer = load_tokenizer(layout.BASE_MODEL)
    model = task.build_model(layout.BASE_MODEL, params.seed)
    train_diff(
        params, "lang", task, model, tokenizer,
        task.read(train_path), task.read(dev_path), params.lang_sft,
        layout.lang_diff(lang), {"lang": lang},
    )
