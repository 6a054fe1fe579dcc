"""Encoders and tokenizers: load from a hub name or a local directory, or build a tiny one.

The tiny model is the `smoke` preset's "pretrained" encoder: a BERT built from a config in
code with a seeded random initialisation and a WordPiece vocabulary counted from the
fixture text, so the whole pipeline runs in seconds with no download.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoModel, AutoTokenizer, BertConfig, BertForMaskedLM, PreTrainedModel, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_vocabulary(texts: Iterable[str], vocab_size: int) -> list[str]:
    """Special tokens, every character (alone and as a ``##`` continuation), then the most
    frequent words, ties broken alphabetically.

    Built here rather than with ``tokenizers``' WordPieceTrainer, whose choice among equally
    frequent candidates changes from process to process: a fixed seed must give a fixed model.
    """
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    normalizer = normalizers.NFC()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({char for word in counts for char in word})
    vocab = [*SPECIAL_TOKENS, *chars, *(f"##{char}" for char in chars)]
    known = set(vocab)
    for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if len(vocab) >= vocab_size:
            break
        if word not in known:
            vocab.append(word)
    return vocab


def train_wordpiece_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A BERT-style cased WordPiece tokenizer over ``texts`` (deterministic)."""
    vocab = wordpiece_vocabulary(texts, vocab_size)
    tokenizer = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )


def build_tiny_mlm(tokenizer: PreTrainedTokenizerFast, seed: int, **config: Any) -> BertForMaskedLM:
    """A randomly initialised BERT masked LM sized by ``config`` (BertConfig keys)."""
    torch.manual_seed(seed)
    bert_config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **config)
    return BertForMaskedLM(bert_config)


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> None:
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(str(name_or_path))


def load_encoder_with_pooler(name_or_path: str | Path) -> PreTrainedModel:
    """The bare encoder of a checkpoint with its pretrained pooler, or with none (``pooler``
    None) where the checkpoint has no pooler weights: never a randomly initialised one."""
    encoder, info = AutoModel.from_pretrained(str(name_or_path), output_loading_info=True)
    if getattr(encoder, "pooler", None) is not None and any(
            key.split(".")[0] == "pooler" for key in info["missing_keys"]):
        encoder.pooler = None
    return encoder


def keep_pretrained_pooler(model: PreTrainedModel, name_or_path: str | Path) -> bool:
    """Give a masked LM (whose encoder is built without a pooler) the checkpoint's pretrained
    pooler, so that saving it keeps ``<prefix>.pooler.*`` in θ0: the reference parser head's
    root is the pooler output, and the released task diffs change it (mBERT's encoder body
    includes it). Loading the saved model as a masked LM ignores these weights again.
    Returns whether the checkpoint had a pooler."""
    pooler = getattr(load_encoder_with_pooler(name_or_path), "pooler", None)
    if pooler is None:
        return False
    model.base_model.pooler = pooler
    return True


def untie_output_embeddings(model: PreTrainedModel) -> None:
    """Give the MLM decoder its own frozen copy of the input embeddings.

    The reference implementation unties and freezes the output embedding matrix during
    language SFT, so that the (maskable) input embeddings can move without the decoder
    moving with them and the diff stays an encoder-only change.
    """
    output = model.get_output_embeddings()
    if output is None:
        return
    output.weight = torch.nn.Parameter(output.weight.detach().clone(), requires_grad=False)
    model.config.tie_word_embeddings = False


def keep_lower_layers(model: PreTrainedModel, num_layers: int) -> None:
    """Keep only the encoder's lowest ``num_layers`` transformer layers (in place).

    On a CPU budget this buys training steps; for multilingual-e5-small the middle layers
    also transfer token-level information better than its top layers, which were tuned for
    sentence embeddings (see EMBEDDED.md's probe: layer 8 ≈ layer 4 > layer 12 for POS).
    """
    encoder = model.base_model.encoder
    total = len(encoder.layer)
    if not 1 <= num_layers <= total:
        raise ValueError(f"num_layers must be in 1..{total}, got {num_layers}")
    encoder.layer = encoder.layer[:num_layers]
    model.config.num_hidden_layers = num_layers
