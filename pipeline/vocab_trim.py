"""Vocabulary trimming: drop the pieces a corpus never uses, from tokenizer and model alike.

multilingual-e5-small spends 96M of its 118M parameters on 250k embedding rows, most of
them for scripts and words that the languages of a given experiment never produce. Sparse
fine-tuning scores, masks and stores every maskable entry, so dead rows cost memory and
time at every step and dilute any density stated against the parameter count. Trimming them to the pieces of the
training and evaluation text changes nothing that the experiment can observe: every
sentence of that text tokenises to the same pieces and encodes to the same vectors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from tokenizers import Tokenizer
from transformers import PreTrainedModel, PreTrainedTokenizerFast

CONFIG_TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id")


def used_token_ids(
    tokenizer: PreTrainedTokenizerFast, texts: Iterable[str], batch_size: int = 1024
) -> set[int]:
    """Every id the tokenizer produces for ``texts`` (special tokens of the template included)."""
    backend = tokenizer.backend_tokenizer
    used: set[int] = set()
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == batch_size:
            used.update(i for encoding in backend.encode_batch(batch) for i in encoding.ids)
            batch.clear()
    if batch:
        used.update(i for encoding in backend.encode_batch(batch) for i in encoding.ids)
    return used


def _remap_post_processor(processor: dict[str, Any] | None, mapping: Mapping[int, int]) -> None:
    """Rewrite, in place, the token ids that a serialised post-processor carries."""
    if processor is None:
        return
    kind = processor.get("type")
    if kind == "TemplateProcessing":
        for special in processor["special_tokens"].values():
            special["ids"] = [mapping[i] for i in special["ids"]]
    elif kind in ("RobertaProcessing", "BertProcessing"):
        for field in ("sep", "cls"):
            token, old = processor[field]
            processor[field] = [token, mapping[old]]
    elif kind == "Sequence":
        for inner in processor["processors"]:
            _remap_post_processor(inner, mapping)
    elif kind != "ByteLevel":
        raise ValueError(f"cannot remap token ids in a {kind} post-processor")


def _replace_parameter(model: torch.nn.Module, old: torch.nn.Parameter, new: torch.nn.Parameter) -> None:
    """Swap ``old`` for ``new`` in every module that holds it, so that ties survive
    (BERT's decoder weight is the word-embedding matrix; its decoder bias is ``predictions.bias``)."""
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is old:
                module._parameters[name] = new


def _gather_rows(model: torch.nn.Module, param: torch.nn.Parameter, index: torch.Tensor) -> torch.nn.Parameter:
    new = torch.nn.Parameter(param.detach().index_select(0, index.to(param.device)).clone(),
                             requires_grad=param.requires_grad)
    _replace_parameter(model, param, new)
    return new


def trim_vocabulary(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    texts: Iterable[str],
    keep: Iterable[str] = (),
    verify: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast, dict[int, int]]:
    """Keep only the pieces that ``texts`` use; returns (model, tokenizer, old id → new id).

    Kept: every id that tokenising ``texts`` produces, every special and added token of the
    tokenizer, the ids named in the model config (pad, bos, eos, ...), the pieces listed in
    ``keep``, and the lowest-scoring piece (see below). Kept pieces keep their order and
    their scores, so new ids are the old ones renumbered densely. The model (any
    ``PreTrainedModel`` with ``get_input_embeddings``) is changed in place: input-embedding
    rows are gathered; the output embeddings are gathered too unless they are tied (then
    they follow the input matrix), and so is their bias (BERT's ``cls.predictions.bias``).
    ``config.vocab_size`` and the config's special ids are updated. Text outside ``texts``
    may now hit ``<unk>`` where it did not before. The trimmed rows are new Parameter
    objects: build optimisers after trimming. With ``verify`` the corpus is tokenised again
    (before the model is touched) and any difference is a RuntimeError.

    Why a corpus sentence keeps its segmentation. After normalisation and pre-tokenisation
    (both unchanged), a Unigram tokenizer picks for each word the Viterbi path: the
    segmentation into vocabulary pieces with the highest total score, unknown characters
    covered by an ``<unk>`` node scored ``min(score) − 10``. Trimming removes only pieces
    that no corpus path uses, so (1) every original best path is still available with the
    same score; (2) every other path was already available, with the same score, or is new
    because a removed single-character piece now leaves that character to an ``<unk>`` node,
    which scores strictly less than the piece did, hence strictly below the original best.
    The best path therefore stays the best, ties included: the lattice offers the
    survivors in the same order (pieces by length at each position, ``<unk>`` last) and the
    strict ``>`` of the Viterbi update keeps the first. The one thing that could move is
    the ``<unk>`` score, ``min(score) − 10`` over the whole vocabulary, which is why the
    lowest-scoring piece is always kept. The argument needs Unigram: WordPiece's greedy
    longest match is not monotone in the vocabulary (a word that failed, and became
    ``[UNK]``, can succeed once an unused longer piece is gone), so other models are refused.
    """
    texts = list(texts)
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    spec = state["model"]
    if spec.get("type") != "Unigram":
        raise ValueError(f"trim_vocabulary needs a Unigram tokenizer, got {spec.get('type')}")
    vocab: list[list[Any]] = spec["vocab"]
    embeddings = model.get_input_embeddings()
    rows = embeddings.weight.shape[0]

    kept = used_token_ids(tokenizer, texts)
    kept.update(tokenizer.all_special_ids)
    kept.update(token["id"] for token in state.get("added_tokens", []))
    kept.update(getattr(model.config, name) for name in CONFIG_TOKEN_IDS
                if getattr(model.config, name, None) is not None)
    if spec.get("unk_id") is not None:
        kept.add(spec["unk_id"])
    if vocab:
        kept.add(min(range(len(vocab)), key=lambda i: vocab[i][1]))  # keeps the <unk> score
    for token in keep:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id and token != tokenizer.unk_token:
            raise ValueError(f"cannot keep {token!r}: not in the vocabulary")
        kept.add(token_id)
    order = sorted(kept)
    if order[-1] >= rows:
        raise ValueError(f"token id {order[-1]} has no embedding row (the model has {rows})")
    mapping = {old: new for new, old in enumerate(order)}

    spec["vocab"] = [vocab[i] for i in order if i < len(vocab)]
    if spec.get("unk_id") is not None:
        spec["unk_id"] = mapping[spec["unk_id"]]
    for token in state.get("added_tokens", []):
        token["id"] = mapping[token["id"]]
    _remap_post_processor(state.get("post_processor"), mapping)
    if state.get("padding") and "pad_id" in state["padding"]:
        state["padding"]["pad_id"] = mapping[state["padding"]["pad_id"]]
    trimmed = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(state)),
        model_max_length=tokenizer.model_max_length,
        padding_side=tokenizer.padding_side,
        truncation_side=tokenizer.truncation_side,
        **tokenizer.special_tokens_map,
    )
    inverse = trimmed.convert_ids_to_tokens(list(range(len(order))))
    expected = tokenizer.convert_ids_to_tokens(order)
    if inverse != expected:
        first = next(i for i, (a, b) in enumerate(zip(inverse, expected)) if a != b)
        raise RuntimeError(
            f"trimmed tokenizer gives id {first} to {inverse[first]!r}, expected {expected[first]!r}")

    if verify:  # before the model is touched, so that a failure leaves it as it was
        _verify(tokenizer, trimmed, texts, mapping)
    _trim_model(model, torch.tensor(order, dtype=torch.long), mapping)
    return model, trimmed, mapping


def _trim_model(model: PreTrainedModel, index: torch.Tensor, mapping: Mapping[int, int]) -> None:
    embeddings = model.get_input_embeddings()
    output = model.get_output_embeddings()
    old_input = embeddings.weight
    tied = output is not None and output.weight is old_input
    new_input = _gather_rows(model, old_input, index)
    embeddings.num_embeddings = len(index)
    if getattr(embeddings, "padding_idx", None) is not None:
        embeddings.padding_idx = mapping.get(embeddings.padding_idx)
    if output is not None:
        if not tied:
            _gather_rows(model, output.weight, index)
        elif output.weight is not new_input:  # a module that copies rather than shares
            raise RuntimeError("tied output embeddings did not follow the input embeddings")
        if getattr(output, "bias", None) is not None:
            _gather_rows(model, output.bias, index)
        if hasattr(output, "out_features"):
            output.out_features = len(index)
    model.config.vocab_size = len(index)
    for name in CONFIG_TOKEN_IDS:
        if getattr(model.config, name, None) is not None:
            setattr(model.config, name, mapping[getattr(model.config, name)])


def _verify(
    before: PreTrainedTokenizerFast,
    after: PreTrainedTokenizerFast,
    texts: list[str],
    mapping: Mapping[int, int],
) -> None:
    old = before.backend_tokenizer.encode_batch(texts)
    new = after.backend_tokenizer.encode_batch(texts)
    for text, a, b in zip(texts, old, new):
        if [mapping[i] for i in a.ids] != b.ids:
            raise RuntimeError(f"trimming changed the tokenisation of {text[:60]!r}")
