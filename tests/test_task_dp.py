"""The dependency-parsing task: features, both parser heads, greedy and MST decoding, UAS/LAS, and
the tasks.dp settings."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoModelForTokenClassification, BertForMaskedLM, BertForPreTraining, PreTrainedTokenizerFast
from transformers.modeling_outputs import BaseModelOutputWithPooling

from pipeline.core.config import TASK_ONLY, ConfigError, TaskSpec, parse_params
from pipeline.core.models import SPECIAL_TOKENS
from pipeline.core.parameters import maskable_parameter_names
from pipeline.tasks.dp import (
    DEPREL_IDS,
    DEPRELS,
    REFERENCE_DEPRELS,
    BiaffineParser,
    DependencyParsing,
    ParserOutput,
    ReferenceParser,
    attachment_scores,
    chu_liu_edmonds,
    greedy_heads,
    mean_pool_words,
)
from pipeline.core.training import PhaseBudget, run_trainer
from pipeline.tasks import task_for
from tests.conftest import make_tiny_config

REPO = Path(__file__).resolve().parents[1]

# Whole-word vocabulary: "barks" and "sleeps" are not in it, so they split into characters.
WORDS = ["the", "dog", "cat", "sees", "big"]  # "a" is a letter already
LETTERS = "abcdefghijklmnopqrstuvwxyz"

CONLLU = """\
# sent_id = s1
1\tthe\t_\tDET\t_\t_\t2\tdet\t_\t_
2\tdog\t_\tNOUN\t_\t_\t3\tnsubj\t_\t_
3\tbarks\t_\tVERB\t_\t_\t0\troot\t_\t_
4\t.\t_\tPUNCT\t_\t_\t3\tpunct\t_\t_

# sent_id = s2
1\tdog\t_\tNOUN\t_\t_\t2\tnsubj:pass\t_\t_
2\tsees\t_\tVERB\t_\t_\t0\troot\t_\t_
3\tcat\t_\tNOUN\t_\t_\t2\tdobj\t_\t_

# sent_id = s3
1\ta\t_\tDET\t_\t_\t3\tdet\t_\t_
2\tbig\t_\tADJ\t_\t_\t3\tamod\t_\t_
3\tcat\t_\tNOUN\t_\t_\t4\tnsubj\t_\t_
4\tsleeps\t_\tVERB\t_\t_\t0\troot\t_\t_
5\t.\t_\tPUNCT\t_\t_\t4\tpunct\t_\t_

"""
R = DEPREL_IDS
DIMS = dict(arc_dim=16, rel_dim=8)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    vocab = [*SPECIAL_TOKENS, ".", ",", *LETTERS, *(f"##{c}" for c in LETTERS), *WORDS]
    inner = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    inner.normalizer = normalizers.NFC()
    inner.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    inner.decoder = decoders.WordPiece()
    inner.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))])
    return PreTrainedTokenizerFast(tokenizer_object=inner, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


@pytest.fixture(scope="module")
def sentences(tmp_path_factory):
    path = tmp_path_factory.mktemp("dp") / "train.conllu"
    path.write_text(CONLLU, encoding="utf-8")
    return DependencyParsing().read(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    """A tiny BertForMaskedLM saved as a pretrained checkpoint (no pooler weights)."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("base")
    config = make_tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    BertForMaskedLM(config).save_pretrained(out)
    return out


# --------------------------------------------------------------------------- features


def test_featurize_word_starts_heads_and_rels(tokenizer, sentences):
    task = DependencyParsing()
    ids = tokenizer(["the", "dog", "barks", "."], is_split_into_words=True)["input_ids"]
    pieces = ["[CLS]", "the", "dog", "b", "##a", "##r", "##k", "##s", ".", "[SEP]"]
    assert tokenizer.convert_ids_to_tokens(ids) == pieces
    s1, s2, s3 = task.featurize(sentences, tokenizer, max_length=32)
    assert s1["word_starts"] == [1, 2, 3, 8]
    assert s1["heads"] == [2, 3, 0, 3]
    assert s1["rels"] == [R["det"], R["nsubj"], R["root"], R["punct"]]
    assert s2["word_starts"] == [1, 2, 3]
    assert s2["heads"] == [2, 0, 2]
    assert s2["rels"] == [R["nsubj"], R["root"], R["dep"]]  # nsubj:pass → nsubj; Stanford dobj → dep
    assert s3["word_starts"] == [1, 2, 3, 4, 10]
    assert s3["heads"] == [3, 3, 4, 0, 4]

    # Truncation: the last word's first piece is cut; "barks" keeps its first piece only.
    (cut,) = task.featurize(sentences[:1], tokenizer, max_length=6)  # [CLS] the dog b ##a [SEP]
    assert cut["word_starts"] == [1, 2, 3] and cut["heads"] == [2, 3, 0]
    assert cut["rels"] == [R["det"], R["nsubj"], R["root"]]
    # A head cut off by truncation is ignored, and so is the label at it.
    (cut,) = task.featurize(sentences[:1], tokenizer, max_length=4)  # [CLS] the dog [SEP]
    assert cut["word_starts"] == [1, 2] and cut["heads"] == [2, -100] and cut["rels"] == [R["det"], -100]


def test_collator_pads_words_and_subwords(tokenizer, sentences):
    task = DependencyParsing()
    features = task.featurize(sentences[:2], tokenizer, max_length=32)
    batch = task.collator(tokenizer)(features)
    assert batch["input_ids"].shape == (2, 10)
    assert batch["input_ids"][1, 5:].tolist() == [tokenizer.pad_token_id] * 5
    assert batch["attention_mask"][1].tolist() == [1] * 5 + [0] * 5
    assert batch["word_starts"].tolist() == [[1, 2, 3, 8], [1, 2, 3, 0]]
    assert batch["word_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["heads"].tolist() == [[2, 3, 0, 3], [2, 0, 2, -100]]
    assert batch["rels"][1, 3] == -100


# --------------------------------------------------------------------------- model


def test_parser_shapes_names_and_seeding(tokenizer, sentences, checkpoint):
    task = DependencyParsing(**DIMS)
    parser = task.build_model(checkpoint, seed=0)
    assert isinstance(parser, BiaffineParser) and parser.base_model_prefix == "bert"
    assert parser.base_model is parser.bert and parser.config.hidden_size == 32

    # The encoder's parameters are named (and loaded) exactly as in the token-classification model.
    tagger = AutoModelForTokenClassification.from_pretrained(str(checkpoint), num_labels=3)
    tagger_body = {n: p for n, p in tagger.named_parameters() if n.startswith("bert.")}
    parser_body = {n: p for n, p in parser.named_parameters() if n.startswith("bert.")}
    assert list(parser_body) == list(tagger_body)
    assert all(torch.equal(parser_body[n], tagger_body[n]) for n in tagger_body)
    maskable = maskable_parameter_names(parser)
    assert maskable and all(n.startswith("bert.") for n in maskable)
    assert maskable == maskable_parameter_names(tagger)
    head = task.head_parameter_names(parser)
    assert head and set(head) == {n for n, _ in parser.named_parameters() if not n.startswith("bert.")}
    assert {"arc_attention.weight", "rel_attention.weight"} <= set(head)

    # The head comes from the seed.
    same, other = task.build_model(checkpoint, seed=0), task.build_model(checkpoint, seed=1)
    first = dict(parser.named_parameters())
    assert all(torch.equal(first[n], p) for n, p in same.named_parameters())
    assert not torch.equal(first["arc_dep_mlp.0.weight"], dict(other.named_parameters())["arc_dep_mlp.0.weight"])

    batch = task.collator(tokenizer)(task.featurize(sentences, tokenizer, max_length=32))
    output = parser(**batch)
    assert output.arc_scores.shape == (3, 5, 6)
    assert output.rel_scores.shape == (3, 5, 6, len(DEPRELS)) and len(DEPRELS) == 37
    assert torch.isfinite(output.loss)
    # Padding words and self-loops can never be heads.
    low = torch.finfo(output.arc_scores.dtype).min
    assert (output.arc_scores[1, :, 4:] == low).all()  # sentence 2 has 3 words: nodes 4, 5 are padding
    assert all(output.arc_scores[0, i, i + 1] == low for i in range(4))


# --------------------------------------------------------------------------- metric


def test_attachment_scores_by_hand():
    gold_heads = [2, 3, 0, 3]
    gold_rels = ["det", "nsubj:pass", "root", "punct"]
    # 3 of 4 heads right; labels right on det and root only ("nsubj" is right but its head is wrong).
    scores = attachment_scores(gold_heads, gold_rels, [2, 1, 0, 3], ["det", "nsubj", "root", "obj"])
    assert scores == {"uas": 0.75, "las": 0.5, "words": 4.0}
    # A word lost to truncation (None) is wrong; a non-UD gold label never matches.
    scores = attachment_scores([2, 0, 2], ["nsubj", "root", "dobj"], [None, 0, 2], [None, "root", "dobj"])
    assert scores["uas"] == pytest.approx(2 / 3) and scores["las"] == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- decoding


def _is_tree(heads) -> bool:
    if sum(h == 0 for h in heads) != 1:
        return False
    for start in range(1, len(heads) + 1):
        node, steps = start, 0
        while node != 0:
            node, steps = heads[node - 1], steps + 1
            if steps > len(heads):
                return False
    return True


def _score(scores, heads) -> float:
    return float(sum(scores[i, h] for i, h in enumerate(heads)))


def _best_tree(scores) -> float:
    n = scores.shape[0]
    candidates = (heads for heads in itertools.product(range(n + 1), repeat=n)
                  if all(h != i + 1 for i, h in enumerate(heads)) and _is_tree(heads))
    return max(_score(scores, heads) for heads in candidates)


def test_greedy_cycle_is_repaired_by_mst():
    # Words 1 and 2 prefer each other (a cycle); word 3 prefers word 1.
    scores = np.array([
        # root   w1    w2    w3
        [1.0, 0.0, 10.0, 0.0],   # word 1
        [2.0, 9.0, 0.0, 0.0],    # word 2
        [0.0, 5.0, 1.0, 0.0],    # word 3
    ])
    assert greedy_heads(scores).tolist() == [2, 1, 1]  # 1 ↔ 2: not a tree
    heads = chu_liu_edmonds(scores).tolist()
    assert _is_tree(heads) and heads == [2, 0, 1]
    assert _score(scores, heads) == _best_tree(scores) == 17.0


def test_mst_has_a_single_root():
    # Every word prefers the root: the unconstrained maximum would attach all of them to it.
    scores = np.array([[10.0, 0.0, 1.0], [9.0, 3.0, 0.0]])
    heads = chu_liu_edmonds(scores).tolist()
    assert heads == [0, 1] and _score(scores, heads) == _best_tree(scores)


def test_mst_matches_brute_force():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 4):
        for _ in range(30):
            scores = rng.normal(size=(n, n + 1)).round(1) * 3
            heads = chu_liu_edmonds(scores).tolist()
            assert _is_tree(heads), (scores, heads)
            assert _score(scores, heads) == pytest.approx(_best_tree(scores)), (scores, heads)


# --------------------------------------------------------------------------- training and evaluation


class OracleParser(torch.nn.Module):
    """Returns, batch by batch, arc and label scores that put all mass on the gold tree."""

    def __init__(self, batches):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.outputs = []
        for batch in batches:
            heads, rels = batch["heads"], batch["rels"]
            b, w = heads.shape
            arcs = torch.zeros(b, w, w + 1)
            arcs.scatter_(2, heads.clamp(min=0)[..., None], 10.0)
            arcs[heads == -100] = 0.0
            labels = torch.zeros(b, w, w + 1, len(DEPRELS))
            labels[..., :] = torch.nn.functional.one_hot(rels.clamp(min=0), len(DEPRELS))[:, :, None].float()
            self.outputs.append(ParserOutput(arc_scores=arcs, rel_scores=labels))

    def forward(self, **batch):
        return self.outputs.pop(0)


@pytest.mark.parametrize("decoding", ["mst", "greedy"])
def test_evaluate_maps_predictions_back_to_words(tokenizer, sentences, decoding):
    task = DependencyParsing(decoding=decoding)
    collate = task.collator(tokenizer)

    def oracle(max_length):
        features = task.featurize(sentences, tokenizer, max_length)
        return OracleParser([collate(features[:2]), collate(features[2:])])

    scores = task.evaluate(oracle(32), sentences, tokenizer, max_length=32, batch_size=2)
    # Every head right; every label right except the non-UD "dobj" (trained as dep, never matched).
    assert scores == {"uas": 1.0, "las": pytest.approx(11 / 12), "words": 12.0}
    # max_length 4 keeps two words of each sentence ([CLS] w1 w2 [SEP]): only heads inside them can be right.
    scores = task.evaluate(oracle(4), sentences, tokenizer, max_length=4, batch_size=2)
    right = 1 + 2 + 0  # s1: the→dog; s2: dog→sees, sees→root; s3: a→cat and big→cat are cut off
    assert scores["uas"] == pytest.approx(right / 12) and scores["words"] == 12.0


@pytest.mark.parametrize("head", ["mlp-biaffine", "reference"])
def test_training_lowers_the_loss_and_evaluate_scores(tokenizer, sentences, checkpoint, head):
    task = DependencyParsing(head=head, **DIMS)
    parser = task.build_model(checkpoint, seed=0)
    features = task.featurize(sentences, tokenizer, max_length=32)
    collate = task.collator(tokenizer)
    batch = collate(features)

    def eval_loss() -> float:
        parser.eval()
        with torch.no_grad():
            return float(parser(**batch).loss)

    before = eval_loss()
    optimizer = torch.optim.AdamW(parser.parameters(), lr=3e-3)
    settings = SimpleNamespace(batch_size=3, learning_rate=3e-3, seed=0, progress=False)
    history = run_trainer(parser, optimizer, features, collate, PhaseBudget(steps=8), settings, "dp-test")
    assert history and eval_loss() < before

    for decoding in ("mst", "greedy"):
        scores = DependencyParsing(decoding=decoding, head=head).evaluate(parser, sentences, tokenizer, 32, 2)
        assert set(scores) == {"uas", "las", "words"} and scores["words"] == 12.0
        assert 0.0 <= scores["las"] <= scores["uas"] <= 1.0


# --------------------------------------------------------------------------- the reference head

# The reference implementation's relation labels (UD_HEAD_LABELS in cambridgeltl/composable-sft,
# examples/dependency-parsing/dp/utils_udp.py), spelled out: the released head's rows.
REFERENCE_LABELS = ["_", *sorted(DEPRELS)]
RR = {label: i for i, label in enumerate(REFERENCE_LABELS)}


@pytest.fixture(scope="module")
def pooled_checkpoint(tmp_path_factory, tokenizer):
    """A tiny BERT saved with a pooler (as BertForPreTraining: MLM head, pooler, NSP head)."""
    torch.manual_seed(1)
    out = tmp_path_factory.mktemp("pooled")
    config = make_tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    BertForPreTraining(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_reference_head_names_shapes_and_labels(checkpoint):
    task = DependencyParsing(head="reference")
    assert task.labels == REFERENCE_DEPRELS and list(task.labels) == REFERENCE_LABELS and len(task.labels) == 38
    parser = task.build_model(checkpoint, seed=0)
    assert isinstance(parser, ReferenceParser) and parser.base_model is parser.bert
    hidden = parser.config.hidden_size
    head = {n: p for n, p in parser.named_parameters() if not n.startswith("bert.")}
    # The reference's Biaffine(n_in=H, bias_x=True, bias_y=False) and Biaffine(H, n_out=38, True, True):
    # weight [n_out, n_in + bias_x, n_in + bias_y], initialised to zeros. No MLP.
    assert {n: tuple(p.shape) for n, p in head.items()} == {
        "biaffine_arcs.weight": (1, hidden + 1, hidden), "biaffine_rels.weight": (38, hidden + 1, hidden + 1)}
    assert all(not p.any() for p in head.values())
    assert set(task.head_parameter_names(parser)) == set(head)
    assert parser.dropout.p == parser.config.hidden_dropout_prob
    # A masked-LM checkpoint has no pooler weights: no pooler, so none among the maskable parameters.
    assert parser.bert.pooler is None and not parser.root_from_pooler
    assert not any("pooler" in n for n in maskable_parameter_names(parser))
    assert maskable_parameter_names(parser) == maskable_parameter_names(DependencyParsing().build_model(checkpoint, 0))


def test_reference_features_carry_word_spans_and_reference_label_ids(tokenizer, sentences):
    task = DependencyParsing(head="reference")
    # [CLS] the dog b ##a ##r ##k ##s . [SEP]: "barks" is positions 3..7
    s1, s2, _ = task.featurize(sentences, tokenizer, max_length=32)
    assert s1["word_starts"] == [1, 2, 3, 8] and s1["word_ends"] == [2, 3, 8, 9]
    assert s1["heads"] == [2, 3, 0, 3]
    assert s1["rels"] == [RR["det"], RR["nsubj"], RR["root"], RR["punct"]] == [R["det"] + 1, R["nsubj"] + 1,
                                                                                R["root"] + 1, R["punct"] + 1]
    assert s2["rels"] == [RR["nsubj"], RR["root"], RR["dep"]]
    (cut,) = task.featurize(sentences[:1], tokenizer, max_length=6)  # [CLS] the dog b ##a [SEP]
    assert cut["word_starts"] == [1, 2, 3] and cut["word_ends"] == [2, 3, 5]  # "barks": its 2 kept pieces
    batch = task.collator(tokenizer)([s1, s2])
    assert batch["word_ends"].tolist() == [[2, 3, 8, 9], [2, 3, 4, 0]]
    assert "word_ends" not in DependencyParsing().featurize(sentences[:1], tokenizer, 32)[0]


def test_mean_pooling_by_hand():
    hidden = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [0.0, 3.0], [3.0, 3.0], [3.0, 0.0], [7.0, 7.0]]])
    starts, ends = torch.tensor([[1, 2, 0]]), torch.tensor([[2, 5, 0]])
    words = mean_pool_words(hidden, starts, ends, torch.tensor([[1, 1, 0]]))
    # word 1 is position 1 alone; word 2 is pieces 2, 3, 4: ([0,3] + [3,3] + [3,0]) / 3 = [2, 2]; word 3 is padding.
    torch.testing.assert_close(words, torch.tensor([[[1.0, 0.0], [2.0, 2.0], [0.0, 0.0]]]))


class StubEncoder(torch.nn.Module):
    """Fixed final hidden states and pooler output, to check the reference head by hand."""

    base_model_prefix = "bert"

    def __init__(self, hidden, pooled, with_pooler: bool):
        super().__init__()
        self.config = SimpleNamespace(hidden_size=hidden.shape[-1], hidden_dropout_prob=0.5)
        self.hidden, self.pooled = hidden, pooled
        self.pooler = torch.nn.Identity() if with_pooler else None

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return BaseModelOutputWithPooling(last_hidden_state=self.hidden,
                                          pooler_output=self.pooled if self.pooler is not None else None)


@pytest.mark.parametrize("with_pooler", [True, False])
def test_reference_scores_by_hand_with_the_pooler_or_cls_as_root(with_pooler):
    # [CLS]=[5,5], word 1 = position 1, word 2 = positions 2..4 (mean [2,2]), [SEP]; pooler output [-1, 1].
    hidden = torch.tensor([[[5.0, 5.0], [1.0, 0.0], [0.0, 3.0], [3.0, 3.0], [3.0, 0.0], [4.0, 4.0]]])
    pooled = torch.tensor([[-1.0, 1.0]])
    parser = ReferenceParser(StubEncoder(hidden, pooled, with_pooler), num_labels=2).eval()
    assert parser.root_from_pooler == with_pooler
    with torch.no_grad():
        # s(d, h) = [d;1]ᵀ W h with W = [[1,0],[0,1],[1,0]]: d·h + h[0]
        parser.biaffine_arcs.weight.copy_(torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]]))
        parser.biaffine_rels.weight[1, 2, 2] = 1.0  # label 1 scores 1 everywhere, label 0 scores 0
    batch = {"input_ids": torch.zeros(1, 6, dtype=torch.long), "word_starts": torch.tensor([[1, 2]]),
             "word_ends": torch.tensor([[2, 5]]), "word_mask": torch.tensor([[1, 1]])}
    out = parser(**batch, heads=torch.tensor([[2, 0]]), rels=torch.tensor([[1, 0]]))
    root = pooled[0] if with_pooler else hidden[0, 0]  # the ROOT: pooler output, else the [CLS] state
    d1, d2 = torch.tensor([1.0, 0.0]), torch.tensor([2.0, 2.0])
    low = torch.finfo(torch.float32).min
    expected = torch.tensor([[float(d1 @ root + root[0]), low, float(d1 @ d2 + d2[0])],
                             [float(d2 @ root + root[0]), float(d2 @ d1 + d1[0]), low]])
    torch.testing.assert_close(out.arc_scores[0], expected)
    if with_pooler:
        torch.testing.assert_close(out.arc_scores[0, :, 0], torch.tensor([-2.0, -1.0]))
    assert out.rel_scores.shape == (1, 2, 3, 2)
    torch.testing.assert_close(out.rel_scores[..., 1], torch.ones(1, 2, 3))
    arc_loss = torch.nn.functional.cross_entropy(expected, torch.tensor([2, 0]))
    rel_loss = torch.nn.functional.cross_entropy(torch.tensor([[0.0, 1.0], [0.0, 1.0]]), torch.tensor([1, 0]))
    torch.testing.assert_close(out.loss, arc_loss + rel_loss)

    # Training mode: dropout (the encoder's rate) on the word vectors, never on the ROOT.
    parser.train()
    torch.manual_seed(0)
    words, nodes = parser.nodes(**batch)
    assert not torch.equal(words, torch.stack([d1, d2])[None])
    assert torch.equal(nodes[0, 0], root) and torch.equal(nodes[:, 1:], words)


def test_reference_root_is_the_pretrained_pooler(tokenizer, sentences, pooled_checkpoint):
    parser = DependencyParsing(head="reference").build_model(pooled_checkpoint, seed=0)
    saved = BertForPreTraining.from_pretrained(str(pooled_checkpoint)).bert.pooler
    assert parser.root_from_pooler
    assert torch.equal(parser.bert.pooler.dense.weight, saved.dense.weight)
    assert {"bert.pooler.dense.weight", "bert.pooler.dense.bias"} <= set(maskable_parameter_names(parser))
    task = DependencyParsing(head="reference")
    batch = task.collator(tokenizer)(task.featurize(sentences, tokenizer, max_length=32))
    with torch.no_grad():
        encoded = parser.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        words, nodes = parser.nodes(batch["input_ids"], batch["word_starts"], batch["word_ends"], batch["word_mask"],
                                    batch["attention_mask"])
    assert torch.equal(nodes[:, 1:], words)
    assert torch.equal(nodes[:, 0], encoded.pooler_output)
    assert not torch.equal(nodes[:, 0], encoded.last_hidden_state[:, 0])
    # The MLP head never builds a pooler, pretrained or not.
    assert DependencyParsing().build_model(pooled_checkpoint, 0).bert.pooler is None


def test_prepare_model_keeps_the_pretrained_pooler(tmp_path, monkeypatch, pooled_checkpoint):
    from stages import layout
    from stages.prepare_model import prepare_pretrained

    tree = yaml.safe_load((REPO / "presets" / "smoke.yaml").read_text())
    tree["model"] = {"source": "local", "name": str(pooled_checkpoint)}
    monkeypatch.chdir(tmp_path)
    prepare_pretrained(parse_params(tree))
    saved = BertForPreTraining.from_pretrained(str(pooled_checkpoint))
    parser = DependencyParsing(head="reference").build_model(layout.BASE_MODEL, seed=0)
    assert torch.equal(parser.bert.pooler.dense.weight, saved.bert.pooler.dense.weight)
    mlm = BertForMaskedLM.from_pretrained(str(layout.BASE_MODEL))  # the MLM model still loads, pooler ignored
    assert torch.equal(mlm.cls.predictions.transform.dense.weight, saved.cls.predictions.transform.dense.weight)


# --------------------------------------------------------------------------- decoding at evaluation


class FixedParser(torch.nn.Module):
    """One sentence's given arc scores; label ``acl`` is best at the root, ``advcl`` at a word."""

    def __init__(self, arcs):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.arcs = torch.tensor(arcs)[None]

    def forward(self, **batch):
        n = self.arcs.shape[1]
        rels = torch.zeros(1, n, n + 1, len(DEPRELS))
        rels[:, :, 0, DEPREL_IDS["acl"]] = 1.0
        rels[:, :, 1:, DEPREL_IDS["advcl"]] = 1.0
        return ParserOutput(arc_scores=self.arcs, rel_scores=rels)


def test_greedy_and_mst_decode_differently_at_evaluation(tokenizer, tmp_path):
    # Words 1 and 2 prefer each other (a cycle); word 3 prefers word 1. Gold: 2 → root, 1 → 2, 3 → 1.
    scores = [[1.0, 0.0, 10.0, 0.0], [2.0, 9.0, 0.0, 0.0], [0.0, 5.0, 1.0, 0.0]]
    greedy = DependencyParsing(decoding="greedy").decode(np.array(scores)).tolist()
    mst = DependencyParsing(decoding="mst").decode(np.array(scores)).tolist()
    assert greedy == [2, 1, 1] and not _is_tree(greedy)  # plain argmax: 1 ↔ 2 is a cycle
    assert mst == [2, 0, 1] and _is_tree(mst)
    conllu = tmp_path / "s.conllu"
    conllu.write_text("1\tthe\t_\t_\t_\t_\t2\tadvcl\t_\t_\n2\tdog\t_\t_\t_\t_\t0\tacl\t_\t_\n"
                      "3\tcat\t_\t_\t_\t_\t1\tadvcl\t_\t_\n\n", encoding="utf-8")
    task = DependencyParsing(decoding="greedy")
    sentence = task.read(conllu)
    # Greedy: word 2 → 1 is wrong; labels come from the predicted heads (advcl at a word, acl at the root).
    scores_greedy = task.evaluate(FixedParser(scores), sentence, tokenizer, 32, batch_size=1)
    assert scores_greedy == {"uas": pytest.approx(2 / 3), "las": pytest.approx(2 / 3), "words": 3.0}
    scores_mst = DependencyParsing(decoding="mst").evaluate(FixedParser(scores), sentence, tokenizer, 32, 1)
    assert scores_mst == {"uas": 1.0, "las": 1.0, "words": 3.0}


# --------------------------------------------------------------------------- tasks.dp settings


def _tree(name: str = "demo-seeds") -> dict:  # the demo's parser settings (the demo itself trades DP away)
    return yaml.safe_load((REPO / "presets" / f"{name}.yaml").read_text())


def _error(tree: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_params(tree)
    return str(info.value)


def test_settings_build_the_task_and_default_to_todays_parser():
    tree = _tree()
    demo = task_for(parse_params(tree).task("dp"))
    assert (demo.head, demo.decoding) == ("reference", "greedy")  # the demo's choice (README)
    for key in ("head", "decoding"):
        tree["tasks"]["dp"].pop(key, None)
    default = task_for(parse_params(tree).task("dp"))
    assert (default.head, default.decoding, default.labels) == ("mlp-biaffine", "mst", DEPRELS)
    tree["tasks"]["dp"].update(head="reference", decoding="greedy")
    task = task_for(parse_params(tree).task("dp"))
    assert isinstance(task, DependencyParsing) and (task.head, task.decoding) == ("reference", "greedy")
    assert task.labels == REFERENCE_DEPRELS
    paper = task_for(parse_params(_tree("paper")).task("dp"))
    assert (paper.head, paper.decoding) == ("reference", "greedy")
    assert "dp" in parse_params(_tree("paper")).published.tasks


def test_settings_are_validated_naming_the_key():
    tree = _tree()
    tree["tasks"]["pos"]["head"] = "reference"
    assert _error(tree) == "tasks.pos.head: only tasks.dp takes this setting"
    tree = _tree()
    tree["tasks"]["pos"]["decoding"] = "greedy"
    assert _error(tree) == "tasks.pos.decoding: only tasks.dp takes this setting"
    tree = _tree()
    tree["tasks"]["dp"]["head"] = "bilinear"
    assert _error(tree) == "tasks.dp.head: must be one of mlp-biaffine, reference (got 'bilinear')"
    tree = _tree()
    tree["tasks"]["dp"]["decoding"] = "eisner"
    assert _error(tree) == "tasks.dp.decoding: must be one of mst, greedy (got 'eisner')"
    tree = _tree("paper")
    del tree["tasks"]["dp"]["head"]
    assert _error(tree).startswith("published.tasks: the released dp diff carries the reference's parser head")
    for message in ("tasks.pos.head", "tasks.dp.head"):
        assert "\n" not in message


def test_settings_schema_agrees_with_the_tasks():
    from pipeline.tasks import TASKS
    from pipeline.tasks.dp import DECODINGS, PARSER_HEADS

    assert {name: task.options for name, task in TASKS.items() if task.options} == {
        owner: tuple(option for option, o in TASK_ONLY.items() if o == owner) for owner in set(TASK_ONLY.values())}
    rules = {f.name: f.metadata["choices"] for f in dataclasses.fields(TaskSpec) if f.name in TASK_ONLY}
    assert rules == {"head": PARSER_HEADS, "decoding": DECODINGS}
    with pytest.raises(ValueError):
        DependencyParsing(head="bilinear")


# --------------------------------------------------------------------------- the released head


def test_released_head_imports_onto_the_reference_head(tmp_path, monkeypatch, tokenizer, sentences,
                                                       pooled_checkpoint):
    from pipeline.formats.sparse_diff import SparseDiff
    from stages import import_published, layout
    from tests.test_published import published_file

    task = DependencyParsing(head="reference", decoding="greedy")
    model = task.build_model(pooled_checkpoint, seed=0)
    hidden = model.config.hidden_size
    torch.manual_seed(3)
    # The reference's head, in its names and shapes (rows in its label order, "_" first).
    head = {"biaffine_arcs.weight": torch.randn(1, hidden + 1, hidden),
            "biaffine_rels.weight": torch.randn(len(REFERENCE_LABELS), hidden + 1, hidden + 1)}
    # Sparse changes to the body, the pooler (the root) included: a released task diff changes it too.
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    body, pooler = "bert.encoder.layer.0.attention.self.query.weight", "bert.pooler.dense.weight"
    changes = {body: [((0, 1), 0.5), ((3, 0), -1.0), ((shapes[body][0] - 1, shapes[body][1] - 1), 2.0)],
               pooler: [((2, 5), 0.75)]}
    repo = "cambridgeltl/mbert-task-sft-dp"
    (tmp_path / "released" / repo).mkdir(parents=True)
    published_file(tmp_path / "released" / repo / "pytorch_diff.bin",
                   {n: (shapes[n], [pos for pos, _ in c], [v for _, v in c]) for n, c in changes.items()}, head)

    tree = _tree("paper")
    tree["published"]["local_root"] = str(tmp_path / "released")
    monkeypatch.chdir(tmp_path)
    import_published.run(parse_params(tree), "task", "dp")
    imported = SparseDiff.load(layout.COMPONENTS.component("lt-sft-published", "task", "dp"))
    imported.apply(model, with_dense=True)

    direct = task.build_model(pooled_checkpoint, seed=0)
    with torch.no_grad():
        weights = dict(direct.named_parameters())
        for name, entries in changes.items():
            for (r, c), v in entries:
                weights[name][r, c] += v
        direct.load_state_dict(head, strict=False)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    imported_scores = task.evaluate(model, sentences, tokenizer, 32, batch_size=2)
    assert imported_scores == task.evaluate(direct, sentences, tokenizer, 32, batch_size=2)
    assert imported_scores["words"] == 12.0
