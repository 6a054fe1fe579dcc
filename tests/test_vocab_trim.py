"""Vocabulary trimming on a tiny Unigram tokenizer and a tiny BertForMaskedLM built here."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

from pipeline.core.models import train_wordpiece_tokenizer, untie_output_embeddings
from pipeline.vocab_trim import trim_vocabulary

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
# "zzzz" has the lowest score and no corpus sentence uses it, but it fixes the <unk> score
# (min − 10 = −110) that decides "▁qbbbb" (q has no piece): ▁ qb bbb scores −26 against
# −113 for ▁ <unk> bbbb. Without zzzz the lowest kept score is −12, <unk> scores −22, and
# ▁ <unk> bbbb (−25) would win.
PIECES = [
    ("▁", -2.0), ("a", -3.0), ("b", -5.0), ("c", -4.0), ("d", -4.0), ("e", -3.5), ("g", -4.5), ("h", -4.0),
    ("m", -4.5), ("n", -3.5), ("o", -3.5), ("r", -4.0), ("s", -3.5), ("t", -3.0), ("u", -5.0), ("x", -6.0),
    ("z", -2.0), ("▁the", -2.5), ("▁cat", -5.0), ("▁sat", -6.0), ("▁on", -4.0), ("▁mat", -7.0),
    ("▁dog", -5.5), ("▁ran", -6.5), ("at", -3.5), ("og", -5.0), ("▁c", -5.0), ("▁d", -5.0), ("an", -4.0),
    ("▁zebra", -8.0), ("ebra", -9.0), ("xyz", -9.5), ("▁and", -4.5), ("qb", -12.0), ("bbb", -12.0),
    ("bbbb", -1.0), ("▁mouse", -8.0), ("zzzz", -100.0),
]
CORPUS = ["the cat sat on the mat", "The dog ran", "a cat and a dog", "the qbbbb bbbb", "ñandú & the  cat"]


def build_tokenizer(pieces=PIECES) -> PreTrainedTokenizerFast:
    vocab = [(s, 0.0) for s in SPECIALS] + list(pieces) + [("<mask>", 0.0)]
    backend = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(),
                                               normalizers.Replace(Regex(" {2,}"), " ")])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in [*SPECIALS, "<mask>"]])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                   sep_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")


def build_model(vocab_size: int, seed: int = 0) -> BertForMaskedLM:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, pad_token_id=1, bos_token_id=0,
                        eos_token_id=2)
    model = BertForMaskedLM(config).eval()
    with torch.no_grad():  # a non-zero decoder bias, so that its rows must move too
        model.cls.predictions.bias.normal_()
    return model


@torch.no_grad()
def outputs(model, tokenizer, texts):
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    out = model(**batch, output_hidden_states=True)
    return batch, out.hidden_states[-1], out.logits


@pytest.fixture
def trimmed():
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer) + 3)  # rows past the tokenizer, as e5's 250,037 vs 250,002
    batch, hidden, logits = outputs(model, tokenizer, CORPUS)
    new_model, new_tokenizer, mapping = trim_vocabulary(model, tokenizer, CORPUS)
    return tokenizer, new_model, new_tokenizer, mapping, (batch, hidden, logits)


def test_corpus_tokenises_to_the_same_pieces(trimmed):
    tokenizer, _, new_tokenizer, mapping, _ = trimmed
    for text in CORPUS:
        old, new = tokenizer(text)["input_ids"], new_tokenizer(text)["input_ids"]
        assert new_tokenizer.convert_ids_to_tokens(new) == tokenizer.convert_ids_to_tokens(old)
        assert new == [mapping[i] for i in old]
    assert tokenizer.unk_token_id in tokenizer("ñandú")["input_ids"]  # the corpus does exercise <unk>


def test_hidden_states_and_logits_are_unchanged(trimmed):
    _, model, new_tokenizer, mapping, (batch, hidden, logits) = trimmed
    new_batch, new_hidden, new_logits = outputs(model, new_tokenizer, CORPUS)
    torch.testing.assert_close(new_batch["attention_mask"], batch["attention_mask"])
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(new_hidden[mask], hidden[mask], atol=1e-6, rtol=0)
    kept = torch.tensor(sorted(mapping))
    torch.testing.assert_close(new_logits[mask], logits[mask][:, kept], atol=1e-6, rtol=0)


def test_special_tokens_are_kept_with_remapped_ids(trimmed):
    tokenizer, model, new_tokenizer, mapping, _ = trimmed
    for name in ("bos_token", "eos_token", "pad_token", "unk_token", "mask_token", "cls_token", "sep_token"):
        token = getattr(tokenizer, name)
        assert getattr(new_tokenizer, name) == token
        assert new_tokenizer.convert_tokens_to_ids(token) == mapping[tokenizer.convert_tokens_to_ids(token)]
    assert (new_tokenizer.bos_token_id, new_tokenizer.pad_token_id, new_tokenizer.eos_token_id) == (0, 1, 2)
    assert new_tokenizer.mask_token_id == len(new_tokenizer) - 1
    assert (model.config.pad_token_id, model.config.bos_token_id, model.config.eos_token_id) == (1, 0, 2)
    assert model.get_input_embeddings().padding_idx == 1
    ids = new_tokenizer("the <mask>")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and new_tokenizer.mask_token_id in ids


def test_vocabulary_shrank_and_the_model_follows(trimmed):
    tokenizer, model, new_tokenizer, mapping, _ = trimmed
    size = len(new_tokenizer)
    assert size == len(mapping) < len(tokenizer)
    assert not {"▁zebra", "xyz", "▁mouse"} & set(new_tokenizer.get_vocab())
    assert model.config.vocab_size == size
    assert model.get_input_embeddings().weight.shape == (size, 16)
    assert model.get_input_embeddings().num_embeddings == size
    output = model.get_output_embeddings()
    assert output.weight is model.get_input_embeddings().weight and output.out_features == size
    assert output.bias is model.cls.predictions.bias and output.bias.shape == (size,)
    new_state = json.loads(new_tokenizer.backend_tokenizer.to_str())["model"]
    old_vocab = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["vocab"]
    assert new_state["vocab"] == [old_vocab[i] for i in sorted(mapping)]  # same order, same scores


def test_lowest_scoring_piece_is_kept_for_the_unk_score(trimmed):
    tokenizer, _, new_tokenizer, _, _ = trimmed
    assert "zzzz" in new_tokenizer.get_vocab()
    def pieces(tok):
        return tok.convert_ids_to_tokens(tok("qbbbb", add_special_tokens=False)["input_ids"])

    assert pieces(new_tokenizer) == pieces(tokenizer) == ["▁", "qb", "bbb"]
    # without it the <unk> penalty shrinks and "▁qz" would segment differently
    kept = [p for p in PIECES if p[0] in new_tokenizer.get_vocab() and p[0] != "zzzz"]
    assert pieces(build_tokenizer(kept)) == ["▁", "<unk>", "bbbb"]


def test_untied_output_embeddings_are_gathered():
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer))
    untie_output_embeddings(model)
    with torch.no_grad():
        model.get_output_embeddings().weight.add_(1.0)  # make it differ from the input matrix
    batch, _, logits = outputs(model, tokenizer, CORPUS)
    model, new_tokenizer, mapping = trim_vocabulary(model, tokenizer, CORPUS)
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    assert not model.get_output_embeddings().weight.requires_grad
    _, _, new_logits = outputs(model, new_tokenizer, CORPUS)
    mask = batch["attention_mask"].bool()
    kept = torch.tensor(sorted(mapping))
    torch.testing.assert_close(new_logits[mask], logits[mask][:, kept], atol=1e-6, rtol=0)


def test_keep_adds_pieces_and_rejects_unknown_ones():
    tokenizer = build_tokenizer()
    _, new_tokenizer, _ = trim_vocabulary(build_model(len(tokenizer)), tokenizer, CORPUS, keep=["▁zebra"])
    assert new_tokenizer.tokenize("zebra") == ["▁zebra"]
    with pytest.raises(ValueError, match="cannot keep 'nope'"):
        trim_vocabulary(build_model(len(tokenizer)), tokenizer, CORPUS, keep=["nope"])


def test_wordpiece_is_refused():
    tokenizer = train_wordpiece_tokenizer(["a small text", "another text"], vocab_size=60)
    with pytest.raises(ValueError, match="needs a Unigram tokenizer, got WordPiece"):
        trim_vocabulary(build_model(len(tokenizer)), tokenizer, ["a text"])


ALPHABET = "abcdeq"


@settings(max_examples=25, deadline=None)
@given(
    pieces=st.dictionaries(st.text(ALPHABET, min_size=2, max_size=4).map(lambda s: s.replace("q", "▁", 1)),
                           st.sampled_from([-1.0, -2.0, -3.0, -4.0]), max_size=25),
    singles=st.sets(st.sampled_from(ALPHABET), max_size=len(ALPHABET)),
    corpus=st.lists(st.text(ALPHABET + "  ", min_size=1, max_size=20), min_size=1, max_size=6),
)
def test_any_unigram_segmentation_survives(pieces, singles, corpus):
    """Random vocabularies with tied scores and missing characters: the corpus keeps its
    segmentation (trim_vocabulary re-tokenises it and raises if not)."""
    vocab = [("▁", -2.0)] + [(c, -2.5) for c in sorted(singles)] + sorted(pieces.items())
    vocab = list(dict(vocab).items())
    tokenizer = build_tokenizer(vocab)
    _, new_tokenizer, mapping = trim_vocabulary(build_model(len(tokenizer)), tokenizer, corpus)
    for text in corpus:
        old, new = tokenizer(text)["input_ids"], new_tokenizer(text)["input_ids"]
        assert new == [mapping[i] for i in old]
