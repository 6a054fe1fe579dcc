"""Dependency parsing: two biaffine parser heads (Dozat & Manning, 2017), two decodings.

Heads are indices into ``[root, word1, ..., wordN]`` (0 = root, as in CoNLL-U). The encoder
is registered under ``base_model_prefix`` (``bert``, ``roberta``), so its parameters carry
the same names as in the masked-LM and token-classification models and language diffs
trained on the MLM model apply as is. ``tasks.dp.head`` chooses the head:

- ``"mlp-biaffine"`` (default; :class:`BiaffineParser`): each word is its FIRST sub-word's
  final hidden state; the sequence's first token ([CLS] / <s>) stands for the ROOT. Four
  one-layer MLPs (LeakyReLU, dropout) project dependents and heads into arc space
  (``arc_dim``, 256 by default) and relation space (``rel_dim``, 64); a biaffine arc scorer
  ``[d;1]ᵀ U h`` (the ``1`` appended to the dependent gives each head a prior score) scores
  every (dependent, head) pair, and a biaffine label scorer ``[d;1]ᵀ U_l [h;1]`` scores each
  relation label for every pair.
- ``"reference"`` (:class:`ReferenceParser`): the reference implementation's head
  (``TransformerForBiaffineParsing`` in cambridgeltl/composable-sft, after Glavaš & Vulić):
  the same two biaffine scorers directly on the encoder's (dropout) hidden states, no MLP;
  each word is the MEAN of its sub-words' vectors; the ROOT is the encoder's pooler output.
  Its parameters have the reference's names and shapes (``biaffine_arcs.weight``
  ``[1, H+1, H]``, ``biaffine_rels.weight`` ``[38, H+1, H+1]``), so a released head loads
  as is.

Both are trained by cross-entropy over heads for every word with a known head plus
cross-entropy over labels at the GOLD head. A head is always the root or a word of the
sentence, never the dependent itself (the reference also lets padding positions and the
word itself compete; see :class:`ReferenceParser`).

Labels. The 37 UD v2 universal relations (``DEPRELS``); the reference head scores the
reference's 38 (``REFERENCE_DEPRELS``: its padding label ``_``, never a gold label, then
the same 37). A treebank's DEPREL is reduced to its universal part (``nsubj:pass`` →
``nsubj``). A label outside the set (e.g. the Stanford-style labels of the Turkish demo
treebank) is trained as ``dep`` and, in LAS, never matches a prediction.

Decoding (``tasks.dp.decoding``). ``"mst"`` (default): the maximum spanning tree with
exactly one word attached to the root, by Chu-Liu/Edmonds; ``"greedy"``: each word's
best-scoring head independently (may produce cycles or several roots), as the reference
evaluates. Labels are the best-scoring relation at the predicted head.

Evaluation. UAS and LAS over ALL words, punctuation INCLUDED: the CoNLL 2018 shared task
convention (its official scorer counts every syntactic word). A word lost to truncation
(no sub-word left within ``max_length``) counts as wrong, as in the POS task.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, PreTrainedModel, PreTrainedTokenizerFast
from transformers.modeling_outputs import ModelOutput
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from pipeline.core.models import load_encoder_with_pooler
from pipeline.formats.conllu import Sentence, read_conllu
from pipeline.tasks.base import Features, Task, eval_batches

IGNORE = -100

# The 37 universal dependency relations of UD v2, alphabetical.
DEPRELS: tuple[str, ...] = (
    "acl", "advcl", "advmod", "amod", "appos", "aux", "case", "cc", "ccomp", "clf",
    "compound", "conj", "cop", "csubj", "dep", "det", "discourse", "dislocated", "expl",
    "fixed", "flat", "goeswith", "iobj", "list", "mark", "nmod", "nsubj", "nummod", "obj",
    "obl", "orphan", "parataxis", "punct", "reparandum", "root", "vocative", "xcomp",
)
DEPREL_IDS: dict[str, int] = {label: i for i, label in enumerate(DEPRELS)}
FALLBACK_DEPREL = "dep"  # the training label of a relation outside DEPRELS
# The reference implementation's label list (its UD_HEAD_LABELS): a padding label "_" first,
# never a gold label, then the same 37 relations. The reference head scores all 38, so its
# relation scorer has the released head's rows in the released order.
REFERENCE_DEPRELS: tuple[str, ...] = ("_", *DEPRELS)

PARSER_HEADS = ("mlp-biaffine", "reference")  # tasks.dp.head; the first is the default
DECODINGS = ("mst", "greedy")  # tasks.dp.decoding; the first is the default


def universal_deprel(deprel: str) -> str:
    """The universal part of a DEPREL: ``nsubj:pass`` → ``nsubj``."""
    return deprel.split(":", 1)[0]


def deprel_id(deprel: str, ids: dict[str, int] = DEPREL_IDS) -> int:
    """Training label id in ``ids``: the universal relation, or ``dep`` when it is not a UD relation."""
    return ids.get(universal_deprel(deprel), ids[FALLBACK_DEPREL])


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class Biaffine(nn.Module):
    """``s[b, i, j, o] = [x_i; 1]ᵀ W_o [y_j; 1]``, each ``1`` optional.

    ``x`` are dependents, ``y`` heads. Weights start at zero (as in Dozat & Manning's
    parser and the reference), so the initial scores are uniform: in the MLP head the MLPs
    carry the seed; the reference head has no random initialisation at all.
    """

    def __init__(self, dim: int, out: int = 1, bias_dep: bool = True, bias_head: bool = True) -> None:
        super().__init__()
        self.out, self.bias_dep, self.bias_head = out, bias_dep, bias_head
        self.weight = nn.Parameter(torch.zeros(out, dim + bias_dep, dim + bias_head))

    def forward(self, dep: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        if self.bias_dep:
            dep = torch.cat([dep, torch.ones_like(dep[..., :1])], -1)
        if self.bias_head:
            head = torch.cat([head, torch.ones_like(head[..., :1])], -1)
        scores = torch.einsum("bxi,oij,byj->bxyo", dep, self.weight, head)  # [B, deps, heads, out]
        return scores.squeeze(-1) if self.out == 1 else scores


def _mlp(hidden: int, dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, dim), nn.LeakyReLU(0.1), nn.Dropout(dropout))


@dataclass
class ParserOutput(ModelOutput):
    loss: torch.Tensor | None = None
    arc_scores: torch.Tensor | None = None  # [batch, words, words + 1]: head 0 is the root
    rel_scores: torch.Tensor | None = None  # [batch, words, words + 1, labels]


class EncoderParser(nn.Module):
    """What both parser heads share: the encoder (registered as ``self.<base_model_prefix>``),
    and turning arc and label scores into a :class:`ParserOutput` with its loss."""

    accepts_loss_kwargs = False  # Trainer: do not pass num_items_in_batch to forward
    loss_items = "heads"  # the loss is a mean over words with a gold head (pipeline/core/loss_scaling.py)

    def __init__(self, encoder: PreTrainedModel) -> None:
        super().__init__()
        self.base_model_prefix: str = encoder.base_model_prefix
        self.config = encoder.config
        self.add_module(self.base_model_prefix, encoder)  # parameters named bert.… / roberta.…

    @property
    def base_model(self) -> PreTrainedModel:
        return getattr(self, self.base_model_prefix)

    def get_input_embeddings(self) -> nn.Module:
        return self.base_model.get_input_embeddings()

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               token_type_ids: torch.Tensor | None) -> ModelOutput:
        encoder_inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            encoder_inputs["token_type_ids"] = token_type_ids
        return self.base_model(**encoder_inputs)

    @staticmethod
    def scored(arc_scores: torch.Tensor, rel_scores: torch.Tensor, word_mask: torch.Tensor,
               heads: torch.Tensor | None, rels: torch.Tensor | None) -> ParserOutput:
        """Arc scores with impossible heads masked out, and the loss where gold is given."""
        batch, n_words = word_mask.shape
        # A head must be the root or a real word, never the dependent itself.
        head_ok = torch.cat([word_mask.new_ones(batch, 1), word_mask], 1)  # [B, W + 1]
        self_loop = torch.eye(n_words, n_words + 1, dtype=torch.bool, device=arc_scores.device).roll(1, 1)
        invalid = ~head_ok.unsqueeze(1) | self_loop.unsqueeze(0)
        arc_scores = arc_scores.masked_fill(invalid, torch.finfo(arc_scores.dtype).min)

        loss = None
        if heads is not None:
            loss = _mean_cross_entropy(arc_scores.reshape(-1, n_words + 1), heads.reshape(-1))
            if rels is not None:
                gold = heads.clamp(min=0).long()  # ignored heads pick any row; their rels are ignored too
                at_gold = rel_scores.gather(
                    2, gold[:, :, None, None].expand(-1, -1, 1, rel_scores.size(-1))).squeeze(2)
                rels = rels.masked_fill(heads == IGNORE, IGNORE)
                loss = loss + _mean_cross_entropy(at_gold.reshape(-1, at_gold.size(-1)), rels.reshape(-1))
        return ParserOutput(loss=loss, arc_scores=arc_scores, rel_scores=rel_scores)


def _word_mask(word_starts: torch.Tensor, word_mask: torch.Tensor | None) -> torch.Tensor:
    return (torch.ones_like(word_starts, dtype=torch.bool) if word_mask is None else word_mask).bool()


class BiaffineParser(EncoderParser):
    """The ``mlp-biaffine`` head: MLP projections, then biaffine scorers, over first sub-words."""

    def __init__(self, encoder: PreTrainedModel, num_labels: int = len(DEPRELS), arc_dim: int = 256,
                 rel_dim: int = 64, dropout: float = 0.33) -> None:
        super().__init__(encoder)
        hidden = int(encoder.config.hidden_size)
        self.arc_dep_mlp = _mlp(hidden, arc_dim, dropout)
        self.arc_head_mlp = _mlp(hidden, arc_dim, dropout)
        self.rel_dep_mlp = _mlp(hidden, rel_dim, dropout)
        self.rel_head_mlp = _mlp(hidden, rel_dim, dropout)
        self.arc_attention = Biaffine(arc_dim, 1, bias_dep=True, bias_head=False)
        self.rel_attention = Biaffine(rel_dim, num_labels, bias_dep=True, bias_head=True)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        word_starts: torch.Tensor | None = None,
        word_mask: torch.Tensor | None = None,
        heads: torch.Tensor | None = None,
        rels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> ParserOutput:
        if word_starts is None:
            raise ValueError("BiaffineParser needs word_starts (each word's first sub-word position)")
        hidden = self.encode(input_ids, attention_mask, token_type_ids).last_hidden_state  # [B, T, H]
        index = word_starts.long().unsqueeze(-1).expand(-1, -1, hidden.size(-1))
        words = hidden.gather(1, index)  # [B, W, H]
        nodes = torch.cat([hidden[:, :1], words], 1)  # [B, W + 1, H]: the root is position 0

        arc_scores = self.arc_attention(self.arc_dep_mlp(words), self.arc_head_mlp(nodes))  # [B, W, W+1]
        rel_scores = self.rel_attention(self.rel_dep_mlp(words), self.rel_head_mlp(nodes))  # [B, W, W+1, L]
        return self.scored(arc_scores, rel_scores, _word_mask(word_starts, word_mask), heads, rels)


def mean_pool_words(hidden: torch.Tensor, word_starts: torch.Tensor, word_ends: torch.Tensor,
                    word_mask: torch.Tensor) -> torch.Tensor:
    """``[B, W, H]``: each word the mean of its sub-word vectors ``hidden[b, start:end]``;
    padding words (``word_mask`` 0) are zero vectors, as in the reference."""
    positions = torch.arange(hidden.size(1), device=hidden.device)
    inside = ((positions >= word_starts.unsqueeze(-1)) & (positions < word_ends.unsqueeze(-1))
              & word_mask.bool().unsqueeze(-1))  # [B, W, T]
    weights = inside.to(hidden.dtype) / inside.sum(-1, keepdim=True).clamp(min=1).to(hidden.dtype)
    return torch.bmm(weights, hidden)


class ReferenceParser(EncoderParser):
    """The ``reference`` head: the reference implementation's ``TransformerForBiaffineParsing``.

    A biaffine arc scorer (bias on the dependent side) and a biaffine relation scorer (bias on
    both sides) directly on the encoder's hidden states after dropout (the encoder's
    ``hidden_dropout_prob``), no MLP; each word is the MEAN of its sub-words' vectors; the
    ROOT candidate is the encoder's pooler output (``tanh(W h_[CLS] + b)``, without dropout).
    Parameter names and shapes are the reference's: ``biaffine_arcs.weight`` ``[1, H+1, H]``,
    ``biaffine_rels.weight`` ``[labels, H+1, H+1]``.

    Without a pretrained pooler in θ0 (a checkpoint saved without one, e.g. the demo's e5
    rebuild or the smoke preset's tiny BERT: :func:`load_encoder` builds none), the ROOT
    is the first token's final hidden state (the pooler's input): a pooler initialised at
    random would make the root a random projection that only the selected entries could train.

    Where we differ from the reference, on purpose: its scores also let padding positions
    (zero vectors, so a score of exactly 0 that depends on the batch's padding) and the word
    itself compete for a word's head, in the loss and in greedy decoding; here a head is the
    root or another word of the sentence, as in the MLP head. And its loss and metric skip
    every word attached to the root (its padding value for heads, 0, is also the root's
    index); here every word with a known head is trained and scored.
    """

    def __init__(self, encoder: PreTrainedModel, num_labels: int = len(REFERENCE_DEPRELS)) -> None:
        super().__init__(encoder)
        hidden = int(encoder.config.hidden_size)
        self.biaffine_arcs = Biaffine(hidden, 1, bias_dep=True, bias_head=False)
        self.biaffine_rels = Biaffine(hidden, num_labels, bias_dep=True, bias_head=True)
        self.dropout = nn.Dropout(float(getattr(encoder.config, "hidden_dropout_prob", 0.1)))

    @property
    def root_from_pooler(self) -> bool:
        """Whether the ROOT is the pooler output (else the first token's hidden state)."""
        return getattr(self.base_model, "pooler", None) is not None

    def nodes(
        self, input_ids: torch.Tensor, word_starts: torch.Tensor, word_ends: torch.Tensor, word_mask: torch.Tensor,
        attention_mask: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dependents ``[B, W, H]`` (mean-pooled words) and head candidates ``[B, W + 1, H]``
        (the ROOT, then the same words)."""
        output = self.encode(input_ids, attention_mask, token_type_ids)
        hidden = output.last_hidden_state
        words = mean_pool_words(self.dropout(hidden), word_starts, word_ends, word_mask)
        root = output.pooler_output if self.root_from_pooler else hidden[:, 0]
        return words, torch.cat([root.unsqueeze(1), words], 1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        word_starts: torch.Tensor | None = None,
        word_ends: torch.Tensor | None = None,
        word_mask: torch.Tensor | None = None,
        heads: torch.Tensor | None = None,
        rels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> ParserOutput:
        if word_starts is None or word_ends is None:
            raise ValueError("ReferenceParser needs word_starts and word_ends (each word's sub-word span)")
        word_mask = _word_mask(word_starts, word_mask)
        words, nodes = self.nodes(input_ids, word_starts, word_ends, word_mask, attention_mask, token_type_ids)
        arc_scores = self.biaffine_arcs(words, nodes)  # [B, W, W + 1]
        rel_scores = self.biaffine_rels(words, nodes)  # [B, W, W + 1, L]
        return self.scored(arc_scores, rel_scores, word_mask, heads, rels)


def _mean_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over non-ignored targets; 0 (with a graph) when every target is ignored."""
    total = F.cross_entropy(logits.float(), targets.long(), ignore_index=IGNORE, reduction="sum")
    return total / (targets != IGNORE).sum().clamp(min=1)


def load_encoder(base: str | Path, pooler: bool = False) -> PreTrainedModel:
    """The bare encoder of the checkpoint at ``base`` (an MLM checkpoint is fine: its head is
    dropped).

    Without ``pooler``, no pooling layer, exactly as AutoModelForTokenClassification builds
    it: the MLP head never uses the pooler, and parameters without gradients would only
    inflate the maskable set. With ``pooler``, the checkpoint's pretrained pooler where it
    has one (models/base keeps the hub model's: ``keep_pretrained_pooler``); where it has
    none, no pooler either (never a randomly initialised one).
    """
    if pooler:
        return load_encoder_with_pooler(base)
    config = AutoConfig.from_pretrained(str(base))
    model_class = MODEL_MAPPING[type(config)]
    has_pooler_option = "add_pooling_layer" in inspect.signature(model_class.__init__).parameters
    kwargs = {"add_pooling_layer": False} if has_pooler_option else {}
    return AutoModel.from_pretrained(str(base), **kwargs)


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def greedy_heads(scores: np.ndarray) -> np.ndarray:
    """Each word's best head. ``scores[i, j]``: word ``i + 1`` attached to head ``j`` (0 = root)."""
    scores = _square(scores)[1:]
    return scores.argmax(1)


def chu_liu_edmonds(scores: np.ndarray) -> np.ndarray:
    """The maximum spanning tree with exactly one word attached to the root.

    ``scores[i, j]`` (shape ``[n, n + 1]``) is the score of word ``i + 1`` taking head ``j``
    (0 = root); returns the ``n`` heads. Self-loops are never chosen. The single-root
    constraint uses the exact penalty trick (Gabow & Tarjan): every root edge is lowered by
    ``M``, more than any two trees' scores can differ, so the best tree has one root edge
    and, among those, the best original score.
    """
    square = _square(scores)
    n = square.shape[0] - 1
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    finite = np.where(np.isfinite(square[1:]), square[1:], np.nan)
    penalty = float(np.nansum(np.nanmax(finite, 1) - np.nanmin(finite, 1))) + 1.0
    square[1:, 0] -= penalty
    return _cle(square)[1:]


def _square(scores: np.ndarray) -> np.ndarray:
    """``[n + 1, n + 1]`` float64 matrix ``S[dependent, head]``; the root row and self-loops -inf."""
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[0]
    if scores.shape != (n, n + 1):
        raise ValueError(f"arc scores must have shape [n, n + 1], got {scores.shape}")
    square = np.full((n + 1, n + 1), -np.inf)
    square[1:] = scores
    np.fill_diagonal(square, -np.inf)
    return square


def _find_cycle(heads: np.ndarray) -> list[int] | None:
    """A cycle in the head graph (``heads[0]`` is ignored: the root has no head), or None."""
    state = np.zeros(len(heads), dtype=np.int8)  # 0 new, 1 on the current path, 2 done
    state[0] = 2
    for start in range(1, len(heads)):
        path, node = [], start
        while state[node] == 0:
            state[node] = 1
            path.append(node)
            node = int(heads[node])
        if state[node] == 1:  # came back onto the current path
            return path[path.index(node):]
        state[path] = 2
    return None


def _cle(square: np.ndarray) -> np.ndarray:
    """Chu-Liu/Edmonds maximum spanning arborescence rooted at node 0 (recursive contraction)."""
    heads = square.argmax(1)
    heads[0] = -1
    cycle = _find_cycle(heads)
    if cycle is None:
        return heads
    cycle = np.array(cycle)
    in_cycle = np.zeros(len(heads), dtype=bool)
    in_cycle[cycle] = True
    rest = np.flatnonzero(~in_cycle)  # rest[0] == 0, the root
    m = len(rest)
    contracted = np.full((m + 1, m + 1), -np.inf)
    contracted[:m, :m] = square[np.ix_(rest, rest)]
    # Edges out of the cycle: the best head inside it for each outside dependent.
    out_scores = square[np.ix_(rest, cycle)]
    out_from = cycle[out_scores.argmax(1)]
    contracted[:m, m] = out_scores.max(1)
    # Edges into the cycle: entering at v replaces v's cycle edge.
    in_scores = square[np.ix_(cycle, rest)] - square[cycle, heads[cycle]][:, None]
    in_to = cycle[in_scores.argmax(0)]
    contracted[m, :m] = in_scores.max(0)
    contracted[0] = -np.inf
    sub = _cle(contracted)

    result = heads.copy()  # cycle members keep their cycle edge, except the entry point
    for i in range(1, m):
        h = sub[i]
        result[rest[i]] = out_from[i] if h == m else rest[h]
    entry_head = sub[m]
    result[in_to[entry_head]] = rest[entry_head]
    return result


# ---------------------------------------------------------------------------------------------
# Metric
# ---------------------------------------------------------------------------------------------


def attachment_scores(
    gold_heads: Sequence[int], gold_rels: Sequence[str],
    pred_heads: Sequence[int | None], pred_rels: Sequence[str | None],
) -> dict[str, float]:
    """UAS and LAS over every word given (flat, parallel sequences; punctuation included).

    A predicted head of ``None`` (the word was lost to truncation) is wrong. LAS compares
    the universal part of the gold DEPREL with the predicted label, so a gold label outside
    the UD relations never matches.
    """
    if not len(gold_heads) == len(gold_rels) == len(pred_heads) == len(pred_rels):
        raise ValueError("gold and predicted heads and labels must have the same length")
    words = len(gold_heads)
    attached = labelled = 0
    for gold_head, gold_rel, head, rel in zip(gold_heads, gold_rels, pred_heads, pred_rels):
        if head is None or head != gold_head:
            continue
        attached += 1
        gold_label = universal_deprel(gold_rel)
        labelled += gold_label in DEPREL_IDS and rel == gold_label
    nan = float("nan")
    return {"uas": attached / words if words else nan, "las": labelled / words if words else nan,
            "words": float(words)}


# ---------------------------------------------------------------------------------------------
# Task
# ---------------------------------------------------------------------------------------------


def kept_words(word_ids: Sequence[int | None]) -> list[tuple[int, int, int]]:
    """``(word index, first, end)`` for each word with a sub-word left: its kept sub-words
    are positions ``first .. end - 1`` (a fast tokenizer keeps a word's pieces together)."""
    kept: list[tuple[int, int, int]] = []
    seen: set[int] = set()
    for position, word in enumerate(word_ids):
        if word is not None and kept and kept[-1][0] == word:
            kept[-1] = (word, kept[-1][1], position + 1)
        elif word is not None and word not in seen:
            seen.add(word)
            kept.append((word, position, position + 1))
    return kept


class DependencyParsing(Task):
    name = "dp"
    title = "Dependency parsing (DP)"
    metric = "las"
    report_metrics = ("uas", "las")
    data_format = "conllu"
    labels = DEPRELS  # the mlp-biaffine head's; an instance with the reference head has REFERENCE_DEPRELS
    options = ("head", "decoding")

    def __init__(self, decoding: Literal["mst", "greedy"] = "mst",
                 head: Literal["mlp-biaffine", "reference"] = "mlp-biaffine", arc_dim: int = 256,
                 rel_dim: int = 64, dropout: float = 0.33) -> None:
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
        if head not in PARSER_HEADS:
            raise ValueError(f"head must be one of {', '.join(PARSER_HEADS)}, got {head!r}")
        self.decoding, self.head = decoding, head
        self.labels = REFERENCE_DEPRELS if head == "reference" else DEPRELS
        self.label_ids = {label: i for i, label in enumerate(self.labels)}
        self.arc_dim, self.rel_dim, self.dropout = arc_dim, rel_dim, dropout  # the mlp-biaffine head's

    def read(self, path: str | Path) -> list[Sentence]:
        return read_conllu(path)

    def build_model(self, base: str | Path, seed: int) -> EncoderParser:
        if self.head == "reference":  # its head starts at zero: nothing to seed
            parser: EncoderParser = ReferenceParser(load_encoder(base, pooler=True), len(self.labels))
        else:
            encoder = load_encoder(base)
            torch.manual_seed(seed)  # the new head's initial weights
            parser = BiaffineParser(encoder, len(self.labels), self.arc_dim, self.rel_dim, self.dropout)
        return parser.eval()  # like from_pretrained; the Trainer switches to training mode

    def _encode(self, examples: Sequence[Sentence], tokenizer: PreTrainedTokenizerFast,
                max_length: int) -> tuple[list[Features], list[list[int]]]:
        """Features, and for each the original (0-based) index of every kept word."""
        encoded = tokenizer([list(s.words) for s in examples], is_split_into_words=True,
                            truncation=True, max_length=max_length)
        features, kept_indices = [], []
        for i, sentence in enumerate(examples):
            kept = kept_words(encoded.word_ids(i))
            node = {word + 1: k + 1 for k, (word, _, _) in enumerate(kept)}  # 1-based word → node
            node[0] = 0
            heads = [node.get(sentence.heads[word], IGNORE) for word, _, _ in kept]
            rels = [deprel_id(sentence.deprels[word], self.label_ids) if head != IGNORE else IGNORE
                    for (word, _, _), head in zip(kept, heads)]
            feature = {
                "input_ids": encoded["input_ids"][i],
                "attention_mask": encoded["attention_mask"][i],
                "word_starts": [first for _, first, _ in kept],
                "heads": heads,
                "rels": rels,
            }
            if self.head == "reference":  # it averages each word's sub-words, so needs where they end
                feature["word_ends"] = [end for _, _, end in kept]
            features.append(feature)
            kept_indices.append([word for word, _, _ in kept])
        return features, kept_indices

    def featurize(self, examples: Sequence[Sentence], tokenizer: PreTrainedTokenizerFast,
                  max_length: int) -> list[Features]:
        return self._encode(examples, tokenizer, max_length)[0]

    def collator(self, tokenizer: PreTrainedTokenizerFast) -> Callable[[list[Features]], dict[str, torch.Tensor]]:
        return ParserCollator(tokenizer.pad_token_id)

    def decode(self, arc_scores: np.ndarray) -> np.ndarray:
        """Heads (0 = root) for one sentence's ``[n, n + 1]`` arc scores."""
        return chu_liu_edmonds(arc_scores) if self.decoding == "mst" else greedy_heads(arc_scores)

    @torch.no_grad()
    def evaluate(
        self, model: EncoderParser, examples: Sequence[Sentence], tokenizer: PreTrainedTokenizerFast,
        max_length: int, batch_size: int,
    ) -> dict[str, float]:
        features, kept_indices = self._encode(examples, tokenizer, max_length)
        pred_heads: list[int | None] = []
        pred_rels: list[str | None] = []
        sentence = 0
        for batch in eval_batches(model, features, self.collator(tokenizer), batch_size):
            batch.pop("heads", None)
            batch.pop("rels", None)
            output = model(**batch)
            arcs = output.arc_scores.float().cpu().numpy()
            rel_scores = output.rel_scores.float().cpu()
            lengths = batch["word_mask"].sum(1).tolist()
            for b, n in enumerate(lengths):
                kept = kept_indices[sentence]
                heads = self.decode(arcs[b, :n, :n + 1])
                labels = rel_scores[b, torch.arange(n), torch.as_tensor(heads, dtype=torch.long)].argmax(-1).tolist()
                words = [None] * len(examples[sentence].words)
                for k, word in enumerate(kept):  # node k + 1 is original word kept[k]
                    words[word] = (0 if heads[k] == 0 else kept[heads[k] - 1] + 1, self.labels[labels[k]])
                pred_heads += [w[0] if w else None for w in words]
                pred_rels += [w[1] if w else None for w in words]
                sentence += 1
        gold_heads = [h for s in examples for h in s.heads]
        gold_rels = [r for s in examples for r in s.deprels]
        return attachment_scores(gold_heads, gold_rels, pred_heads, pred_rels)


class ParserCollator:
    """Pads sub-word lists with the pad id (mask 0) and word lists with -100 (``word_starts``
    and ``word_ends`` with 0), adding ``word_mask``; all on the right."""

    def __init__(self, pad_token_id: int | None) -> None:
        self.pad_token_id = 0 if pad_token_id is None else pad_token_id

    def __call__(self, features: list[Features]) -> dict[str, torch.Tensor]:
        tokens = max(len(f["input_ids"]) for f in features)
        words = max(len(f["word_starts"]) for f in features)

        def pad(key: str, length: int, value: int) -> torch.Tensor:
            return torch.tensor([list(f[key]) + [value] * (length - len(f[key])) for f in features],
                                dtype=torch.long)

        batch = {
            "input_ids": pad("input_ids", tokens, self.pad_token_id),
            "attention_mask": pad("attention_mask", tokens, 0),
            "word_starts": pad("word_starts", words, 0),
            "word_mask": torch.tensor([[1] * len(f["word_starts"]) + [0] * (words - len(f["word_starts"]))
                                       for f in features], dtype=torch.long),
        }
        if all("word_ends" in f for f in features):  # the reference head's features
            batch["word_ends"] = pad("word_ends", words, 0)
        for key in ("heads", "rels"):
            if all(key in f for f in features):
                batch[key] = pad(key, words, IGNORE)
        return batch
