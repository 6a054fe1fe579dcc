"""Shared fixtures: a tiny WordPiece tokenizer and tiny BERT models built in code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertForTokenClassification, PreTrainedTokenizerFast

from pipeline.core.models import train_wordpiece_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
SMOKE_TEXT = FIXTURES / "smoke" / "text"
TINY_VOCAB = 100
NUM_LABELS = 5


@pytest.fixture(scope="session", autouse=True)
def single_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's
    barriers make a tiny BERT's backward pass ~100x slower; one thread keeps the suite fast."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    texts = []
    for path in sorted(SMOKE_TEXT.glob("*.txt")):
        texts += path.read_text(encoding="utf-8").splitlines()
    return train_wordpiece_tokenizer(texts, vocab_size=TINY_VOCAB)


def make_tiny_config(vocab_size: int = TINY_VOCAB, hidden_size: int = 32, **overrides) -> BertConfig:
    """A BERT small enough that a forward/backward pass takes milliseconds."""
    settings = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        pad_token_id=0,
        num_labels=NUM_LABELS,
    )
    settings.update(overrides)
    return BertConfig(**settings)


@pytest.fixture(scope="session")
def tiny_config(tiny_tokenizer: PreTrainedTokenizerFast) -> BertConfig:
    return make_tiny_config(vocab_size=len(tiny_tokenizer), pad_token_id=tiny_tokenizer.pad_token_id)


def _with(config: BertConfig, **overrides) -> BertConfig:
    return make_tiny_config(vocab_size=config.vocab_size, pad_token_id=config.pad_token_id, **overrides)


@pytest.fixture
def make_mlm(tiny_config: BertConfig) -> Callable[..., BertForMaskedLM]:
    """Factory: a tiny BertForMaskedLM initialised from ``seed`` (same seed, same θ0)."""

    def make(seed: int = 0, **overrides) -> BertForMaskedLM:
        torch.manual_seed(seed)
        config = tiny_config if not overrides else _with(tiny_config, **overrides)
        return BertForMaskedLM(config).eval()

    return make


@pytest.fixture
def make_tagger(tiny_config: BertConfig) -> Callable[..., BertForTokenClassification]:
    """Factory: a tiny BertForTokenClassification initialised from ``seed``."""

    def make(seed: int = 0, **overrides) -> BertForTokenClassification:
        torch.manual_seed(seed)
        config = tiny_config if not overrides else _with(tiny_config, **overrides)
        return BertForTokenClassification(config).eval()

    return make
