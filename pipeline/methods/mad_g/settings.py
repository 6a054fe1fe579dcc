"""The ``mad_g`` params section (torch-free: the method registry declares it at import)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.config import DenseSpec, setting
from pipeline.methods.mad_g.sampling import DEFAULT_TEMPERATURE_S, MIN_LINE_TOKENS


@dataclass(frozen=True, kw_only=True)
class MadGSettings:
    """``mad_g``: the MAD-G generator (methods mad-g and mad-g-ls). Task adapters, and mad-g-ls'
    fine-tuning of a generated adapter, use the ``madx`` section's budgets."""

    generator: DenseSpec = setting(
        "Training of the generator: multilingual masked LM, the encoder frozen, one language per batch "
        "(phase: {steps: N} only; learning_rate, batch_size, max_grad_norm, max_length).")
    train_languages: tuple[str, ...] | None = setting(
        "The languages the generator trains on. null (registry source only): every UDHR translation whose "
        "language URIEL knows, minus every task target (kept unseen). A list: codes whose text the source gives "
        "(local: <root>/text/<code>.txt; hub: Wikipedia <code>; registry: a UDHR language, ISO 639-1 or 639-3).",
        None, nonempty=True)
    typology: dict[str, str] = setting(
        "Our language code -> the code looked up in URIEL where they differ (a made-up or unlisted language "
        "borrowing a relative's typology).", default_factory=dict)
    reduction_factor: int = setting("Generated adapters' bottleneck reduction factor (the authors': 16).", 16,
                                    minimum=1)
    language_dim: int = setting("Width of the language embedding (the authors': 32).", 32, minimum=1)
    layer_dim: int = setting("0: a generator tensor per adapter tensor of every layer (the default); N > 0: one "
                             "generator shared by all layers, reading an N-dim layer embedding too (the "
                             "authors' layer-shared variant).", 0, minimum=0)
    temperature_s: float = setting(
        "Language sampling exponent: P(lang) ∝ size^s (1: by size, 0: uniform). The paper's value is unconfirmed "
        f"(1.0 on the authors' command line, {DEFAULT_TEMPERATURE_S} in their dataset class).",
        DEFAULT_TEMPERATURE_S, minimum=0.0)
    min_line_tokens: int = setting("Lines with fewer whitespace-separated tokens are dropped (the authors': 10).",
                                   MIN_LINE_TOKENS, minimum=1)
    max_lines: int | None = setting("At most this many lines per training language (null: all).", None, minimum=1)
    max_unknown_share: float | None = setting(
        "Leave out a training language whose text is more than this share of the tokenizer's unknown token (null: "
        "keep every language). Masked LM on text the encoder's vocabulary cannot spell teaches the generator to "
        "predict the unknown token; the authors trained on mBERT's own languages, which its vocabulary covers.",
        None, minimum=0.0)
