"""The dependency-parsing task: features, the biaffine parser, MST decoding and UAS/LAS."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoModelForTokenClassification, BertForMaskedLM, PreTrainedTokenizerFast

from pipeline.core.models import SPECIAL_TOKENS
from pipeline.core.parameters import maskable_parameter_names
from pipeline.tasks.dp import (
    DEPREL_IDS,
    DEPRELS,
    BiaffineParser,
    DependencyParsing,
    ParserOutput,
    attachment_scores,
    chu_liu_edmonds,
    greedy_heads,
)
from pipeline.core.training import PhaseBudget, run_trainer
from tests.conftest import make_tiny_config

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


def test_training_lowers_the_loss_and_evaluate_scores(tokenizer, sentences, checkpoint):
    task = DependencyParsing(**DIMS)
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
        scores = DependencyParsing(decoding=decoding).evaluate(parser, sentences, tokenizer, 32, batch_size=2)
        assert set(scores) == {"uas", "las", "words"} and scores["words"] == 12.0
        assert 0.0 <= scores["las"] <= scores["uas"] <= 1.0
