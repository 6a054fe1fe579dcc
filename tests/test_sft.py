"""SparseDiff (pipeline/formats/sparse_diff.py): model surgery, composition, storage and refusals."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import pipeline.formats.checked as checked_module
from pipeline.core.models import untie_output_embeddings
from pipeline.methods.lt_sft.selection import magnitude_scorer, select_top_k
from pipeline.formats.checked import sha256_file as _sha256
from pipeline.formats.sparse_diff import META_FILE, TENSORS_FILE, DiffError, SparseDiff
from pipeline.core.parameters import maskable_parameter_names, snapshot

HEAD = ["classifier.weight", "classifier.bias"]


# --------------------------------------------------------------------------- helpers
def random_diff(
    theta0: dict[str, torch.Tensor], seed: int, density: float, dense: dict[str, torch.Tensor] | None = None, **meta
) -> SparseDiff:
    """A diff changing a random ``density`` share of each tensor by random amounts."""
    rng = np.random.default_rng(seed)
    indices, values = {}, {}
    for name, tensor in theta0.items():
        chosen = np.flatnonzero(rng.random(tensor.numel()) < density)
        if chosen.size:
            indices[name] = torch.from_numpy(chosen)
            values[name] = torch.from_numpy(rng.standard_normal(chosen.size).astype(np.float32) * 0.1)
    return SparseDiff.from_masks(theta0, indices, values, dense=dense, **meta)


def bits(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def assert_diffs_identical(a: SparseDiff, b: SparseDiff) -> None:
    assert a.shapes == b.shapes and a.dtypes == b.dtypes
    assert a.k == b.k and a.base_model == b.base_model and a.provenance == b.provenance
    assert a.base_fingerprint == b.base_fingerprint
    assert sorted(a.indices) == sorted(b.indices) and sorted(a.values) == sorted(b.values)
    for name in a.indices:
        assert a.indices[name].dtype == b.indices[name].dtype == torch.int64
        assert torch.equal(a.indices[name], b.indices[name]), name
        assert a.values[name].dtype == b.values[name].dtype
        assert bits(a.values[name]) == bits(b.values[name]), name
    assert sorted(a.dense) == sorted(b.dense)
    for name in a.dense:
        assert a.dense[name].dtype == b.dense[name].dtype and a.dense[name].shape == b.dense[name].shape
        assert bits(a.dense[name]) == bits(b.dense[name]), name


def max_abs_error(model: torch.nn.Module, reference: dict[str, torch.Tensor]) -> float:
    params = dict(model.named_parameters())
    return max(float((params[n].detach() - t).abs().max()) for n, t in reference.items())


def small_theta0(seed: int, shapes: list[tuple[int, ...]]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {f"t{i}": torch.randn(shape, generator=generator) for i, shape in enumerate(shapes)}


shape_lists = st.lists(
    st.lists(st.integers(1, 9), min_size=1, max_size=3).map(tuple), min_size=1, max_size=4
)


@pytest.fixture
def tagger(make_tagger):
    return make_tagger(seed=0)


@pytest.fixture
def tagger_diff(tagger) -> SparseDiff:
    maskable = maskable_parameter_names(tagger)
    theta0 = snapshot(tagger, maskable)
    head = snapshot(tagger, HEAD)
    head = {n: t + 1.0 for n, t in head.items()}
    return random_diff(theta0, seed=1, density=0.05, dense=head, k=123, base_model="tiny-bert",
                       provenance={"task": "pos", "lang": "en"})


# --------------------------------------------------------------------------- maskable names
def test_maskable_names_exclude_layer_norm_and_heads_and_agree(make_mlm, make_tagger):
    mlm, tagger = make_mlm(seed=0), make_tagger(seed=0)
    untie_output_embeddings(mlm)  # as the MLM task does: the decoder must stay out of the diff
    names_mlm, names_tagger = maskable_parameter_names(mlm), maskable_parameter_names(tagger)
    assert names_mlm == names_tagger
    for model, names in ((mlm, names_mlm), (tagger, names_tagger)):
        params = dict(model.named_parameters())
        assert names and all(n in params for n in names)
        assert not any("LayerNorm" in n for n in names)
        assert not any(n.startswith(("cls.", "classifier.")) for n in names)
        assert all(n.startswith("bert.") for n in names)
        # ... and every other encoder-body parameter is maskable.
        body = {n for n in params if n.startswith("bert.") and "LayerNorm" not in n}
        assert set(names) == body
    assert "bert.embeddings.word_embeddings.weight" in names_mlm
    # So a language diff from the MLM model composes into the tagger.
    language = random_diff(snapshot(mlm, names_mlm), seed=3, density=0.1,
                           dense={"cls.predictions.bias": torch.ones(mlm.config.vocab_size)})
    language.apply(tagger)  # the sparse part applies; the MLM head stays out
    with pytest.raises(DiffError, match="cls.predictions.bias"):
        language.apply(tagger, with_dense=True)


# --------------------------------------------------------------------------- apply / revert
def test_apply_then_revert_restores_theta0(tagger, tagger_diff):
    theta0 = snapshot(tagger)
    tagger_diff.apply(tagger)
    assert max_abs_error(tagger, theta0) > 1e-3  # it did change something
    tagger_diff.revert(tagger)
    assert max_abs_error(tagger, theta0) <= 1e-6


def test_apply_changes_exactly_the_diff_entries(tagger, tagger_diff):
    theta0 = snapshot(tagger)
    tagger_diff.apply(tagger)
    params = dict(tagger.named_parameters())
    for name, before in theta0.items():
        delta = (params[name].detach() - before).reshape(-1)
        changed = torch.nonzero(delta, as_tuple=True)[0]
        if name in tagger_diff.indices:
            assert torch.equal(changed, tagger_diff.indices[name])
            torch.testing.assert_close(delta[changed], tagger_diff.values[name], rtol=0, atol=1e-6)
        else:
            assert changed.numel() == 0, name  # heads untouched without with_dense, LayerNorms too


def test_with_dense_applies_head_only_when_asked(make_tagger, tagger_diff):
    model = make_tagger(seed=0)
    head_before = snapshot(model, HEAD)
    tagger_diff.apply(model)
    for name in HEAD:
        assert torch.equal(dict(model.named_parameters())[name].detach(), head_before[name])
    model = make_tagger(seed=0)
    tagger_diff.apply(model, with_dense=True)
    for name in HEAD:
        assert torch.equal(dict(model.named_parameters())[name].detach(), tagger_diff.dense[name])
    # revert is sparse only: the head keeps the dense value.
    tagger_diff.revert(model)
    for name in HEAD:
        assert torch.equal(dict(model.named_parameters())[name].detach(), tagger_diff.dense[name])


def test_fingerprint_mismatch_refused(make_tagger, tagger_diff, tmp_path):
    other = make_tagger(seed=0, hidden_size=16, intermediate_size=32)
    before = snapshot(other)
    for diff in (tagger_diff, SparseDiff.load(tagger_diff.save(tmp_path / "d"))):
        with pytest.raises(DiffError, match="fingerprint") as err:
            diff.apply(other)
        assert "\n" not in str(err.value)
        assert diff.base_fingerprint in str(err.value)
        with pytest.raises(DiffError, match="fingerprint"):
            diff.revert(other)
    assert max_abs_error(other, before) == 0.0  # nothing was written before the refusal
    loaded = SparseDiff.load(tmp_path / "d")
    with pytest.raises(DiffError) as err:
        loaded.apply(other)
    assert str(err.value).startswith(f"{tmp_path / 'd'}: ")  # a loaded diff names its file


def test_dtype_mismatch_refused(make_tagger, tagger_diff):
    other = make_tagger(seed=0).double()
    with pytest.raises(DiffError, match="fingerprint"):
        tagger_diff.apply(other)


# --------------------------------------------------------------------------- composition
@st.composite
def diff_pairs(draw):
    shapes = draw(shape_lists)
    theta0 = small_theta0(draw(st.integers(0, 2**16)), shapes)
    seed_a, seed_b = draw(st.integers(0, 2**16)), draw(st.integers(0, 2**16))
    density_a = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    density_b = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    a = random_diff(theta0, seed_a, density_a, k=7)
    b = random_diff(theta0, seed_b, density_b, k=5)
    if draw(st.booleans()) and a.indices and b.indices:
        # Force an overlap that cancels exactly: the entry must vanish from the sum.
        name = sorted(a.indices)[0]
        idx = int(a.indices[name][0])
        values = dict(b.values)
        indices = dict(b.indices)
        if name in indices:
            keep = indices[name] != idx
            indices[name] = torch.cat([indices[name][keep], torch.tensor([idx])])
            values[name] = torch.cat([values[name][keep], -a.values[name][:1]])
        else:
            indices[name], values[name] = torch.tensor([idx]), -a.values[name][:1]
        b = SparseDiff.from_masks(theta0, indices, values, k=5)
    return theta0, a, b


@settings(max_examples=60, deadline=None)
@given(diff_pairs())
def test_composition_is_commutative_bit_for_bit(pair):
    theta0, a, b = pair
    ab, ba = a + b, b + a
    assert sorted(ab.indices) == sorted(ba.indices)
    for name in ab.indices:
        assert torch.equal(ab.indices[name], ba.indices[name])
        assert bits(ab.values[name]) == bits(ba.values[name])
    assert ab.k == ba.k == 12
    # The sum is the union of entries, values summed where both change one; zeros dropped.
    for name, shape in ab.shapes.items():
        numel = int(np.prod(shape))
        dense = torch.zeros(numel)
        for d in (a, b):
            if name in d.indices:
                dense.index_add_(0, d.indices[name], d.values[name])
        expected = torch.nonzero(dense, as_tuple=True)[0]
        got = ab.indices.get(name, torch.empty(0, dtype=torch.int64))
        assert torch.equal(got, expected)
        if expected.numel():
            assert torch.equal(ab.values[name], dense[expected])
            assert bool((got[1:] > got[:-1]).all())


def test_composition_with_overlap_applies_like_sequential(make_tagger, tagger):
    maskable = maskable_parameter_names(tagger)
    theta0 = snapshot(tagger, maskable)
    a = random_diff(theta0, seed=10, density=0.3)
    b = random_diff(theta0, seed=11, density=0.3)
    overlap = sum(
        int(np.intersect1d(a.indices[n].numpy(), b.indices[n].numpy()).size)
        for n in a.indices if n in b.indices
    )
    assert overlap > 0
    sequential, composed = make_tagger(seed=0), make_tagger(seed=0)
    a.apply(sequential)
    b.apply(sequential)
    (a + b).apply(composed)
    assert max_abs_error(composed, snapshot(sequential)) <= 1e-6
    composed = make_tagger(seed=0)
    (b + a).apply(composed)
    assert max_abs_error(composed, snapshot(sequential)) <= 1e-6


def test_composition_refusals(tagger, tagger_diff):
    with pytest.raises(DiffError, match="dense tensor"):
        tagger_diff + tagger_diff
    other_base = random_diff(small_theta0(0, [(3, 3)]), seed=0, density=0.5)
    with pytest.raises(DiffError, match="different bases"):
        tagger_diff + other_base


# --------------------------------------------------------------------------- construction
def test_from_states_drops_unchanged_entries(tagger):
    maskable = maskable_parameter_names(tagger)
    theta0 = snapshot(tagger, maskable)
    theta = {n: t.clone() for n, t in theta0.items()}
    first, second = maskable[0], maskable[3]
    theta[first].view(-1)[[5, 2, 9]] += torch.tensor([1.0, -2.0, 0.5])
    theta[second].view(-1)[0] += 3.0
    theta[second].view(-1)[1] += 0.0  # "changed" by zero: not an entry
    theta["classifier.weight"] = torch.full(tagger.classifier.weight.shape, 0.25)
    diff = SparseDiff.from_states(theta0, theta, maskable, dense_names=["classifier.weight"], k=4)
    assert set(diff.indices) == {first, second}
    assert diff.indices[first].tolist() == [2, 5, 9]
    torch.testing.assert_close(diff.values[first], torch.tensor([-2.0, 1.0, 0.5]), rtol=0, atol=1e-6)
    assert diff.indices[second].tolist() == [0]
    assert diff.nnz == 4 <= diff.k
    assert set(diff.shapes) == set(maskable)  # unchanged tensors still count towards the base
    assert list(diff.dense) == ["classifier.weight"]
    assert torch.equal(diff.dense["classifier.weight"], theta["classifier.weight"])
    empty = SparseDiff.from_states(theta0, theta0, maskable)
    assert empty.nnz == 0 and not empty.indices and empty.density == 0.0


def test_from_states_shape_mismatch_refused():
    theta0 = small_theta0(0, [(3, 4)])
    with pytest.raises(DiffError, match="shape"):
        SparseDiff.from_states(theta0, {"t0": torch.zeros(4, 3)}, ["t0"])


def test_from_masks_refusals():
    theta0 = small_theta0(0, [(3, 4)])
    with pytest.raises(DiffError, match="out of range"):
        SparseDiff.from_masks(theta0, {"t0": torch.tensor([12])}, {"t0": torch.tensor([1.0])})
    with pytest.raises(DiffError, match="duplicate"):
        SparseDiff.from_masks(theta0, {"t0": torch.tensor([1, 1])}, {"t0": torch.tensor([1.0, 2.0])})
    with pytest.raises(DiffError, match="values"):
        SparseDiff.from_masks(theta0, {"t0": torch.tensor([1, 2])}, {"t0": torch.tensor([1.0])})
    with pytest.raises(DiffError, match="not a maskable"):
        SparseDiff.from_masks(theta0, {"nope": torch.tensor([1])}, {"nope": torch.tensor([1.0])})


@pytest.mark.parametrize("k", [1, 50, 1000])
def test_lt_sft_like_selection_gives_at_most_k_entries(tagger, k):
    maskable = maskable_parameter_names(tagger)
    theta0 = snapshot(tagger, maskable)
    generator = torch.Generator().manual_seed(k)
    # "Phase 1": every entry moves. Selection: the K that moved most, one global threshold.
    phase1 = {n: t + 0.01 * torch.randn(t.shape, generator=generator) for n, t in theta0.items()}
    selected = select_top_k(magnitude_scorer(theta0, phase1), {n: t.numel() for n, t in theta0.items()}, k)
    assert sum(int(i.numel()) for i in selected.values()) == k
    # "Phase 2": only the selected entries move (some of them back to exactly θ0).
    theta = {n: t.clone() for n, t in theta0.items()}
    for name, idx in selected.items():
        theta[name].view(-1)[idx] = phase1[name].view(-1)[idx]
        theta[name].view(-1)[idx[:1]] = theta0[name].view(-1)[idx[:1]]
    diff = SparseDiff.from_states(theta0, theta, maskable, k=k)
    assert diff.nnz <= k
    assert diff.nnz == k - len(selected)
    for name, idx in diff.indices.items():
        assert bool(torch.isin(idx, selected[name]).all())


# --------------------------------------------------------------------------- storage
def test_save_load_roundtrip_model_diff(tagger_diff, tmp_path):
    path = tagger_diff.save(tmp_path / "diff")
    assert sorted(p.name for p in path.iterdir()) == sorted([TENSORS_FILE, META_FILE])
    loaded = SparseDiff.load(path)
    assert_diffs_identical(tagger_diff, loaded)
    meta = json.loads((path / META_FILE).read_text())
    assert meta["nnz"] == tagger_diff.nnz and meta["k"] == 123
    assert meta["base_fingerprint"] == tagger_diff.base_fingerprint
    # Saving over an existing diff replaces it.
    smaller = SparseDiff(tagger_diff.shapes, tagger_diff.dtypes, {}, {}, k=0)
    smaller.save(path)
    assert_diffs_identical(smaller, SparseDiff.load(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diff"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shapes=shape_lists,
    seed=st.integers(0, 2**16),
    density=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    k=st.one_of(st.none(), st.integers(0, 10**9)),
    with_dense=st.booleans(),
)
def test_save_load_is_bit_identical(shapes, seed, density, dtype, k, with_dense):
    theta0 = {n: t.to(dtype) for n, t in small_theta0(seed, shapes).items()}
    dense = {"head.weight": torch.randn(3, 2), "head.bias": torch.tensor([-0.0, 1.5])} if with_dense else None
    diff = random_diff(theta0, seed, density, dense=dense, k=k, base_model="b", provenance={"seed": seed})
    if diff.indices:
        # Special bit patterns survive the trip too.
        name = sorted(diff.values)[0]
        diff.values[name][0] = -0.0
    with tempfile.TemporaryDirectory() as tmp:
        loaded = SparseDiff.load(diff.save(Path(tmp) / "d"))
    assert_diffs_identical(diff, loaded)
    assert loaded.nnz == diff.nnz


def test_save_is_atomic(tagger_diff, tmp_path, monkeypatch):
    target = tmp_path / "diff"

    def exploding_save_file(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(checked_module, "save_file", exploding_save_file)
    with pytest.raises(RuntimeError, match="disk full"):
        tagger_diff.save(target)
    assert list(tmp_path.iterdir()) == []  # no target, no temporary directory left behind

    # An existing diff at the target is left exactly as it was.
    monkeypatch.setattr(checked_module, "save_file", save_file)
    old = SparseDiff(tagger_diff.shapes, tagger_diff.dtypes, {}, {}, k=1)
    old.save(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    monkeypatch.setattr(checked_module, "save_file", exploding_save_file)
    with pytest.raises(RuntimeError):
        tagger_diff.save(target)
    assert [p.name for p in tmp_path.iterdir()] == ["diff"]
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert_diffs_identical(old, SparseDiff.load(target))


# --------------------------------------------------------------------------- refusals on load
@pytest.fixture
def saved(tagger_diff, tmp_path) -> Path:
    return tagger_diff.save(tmp_path / "diff")


def load_refused(path: Path, file_name: str, match: str | None) -> str:
    with pytest.raises(DiffError, match=match) as err:
        SparseDiff.load(path)
    message = str(err.value)
    assert "\n" not in message
    assert str(path / file_name) in message
    return message


def test_truncated_tensors_refused(saved):
    blob = saved / TENSORS_FILE
    data = blob.read_bytes()
    blob.write_bytes(data[: len(data) // 2])
    load_refused(saved, TENSORS_FILE, "truncated")


def test_flipped_byte_refused(saved):
    blob = saved / TENSORS_FILE
    data = bytearray(blob.read_bytes())
    data[len(data) - 10] ^= 0x01
    blob.write_bytes(bytes(data))
    load_refused(saved, TENSORS_FILE, "sha256")


@pytest.mark.parametrize("prefix", ["values/", "index_high/", "index_low/", "dense/"])
def test_missing_tensor_refused(saved, prefix):
    blob = saved / TENSORS_FILE
    stored = load_file(str(blob))
    victim = sorted(k for k in stored if k.startswith(prefix))[0]
    del stored[victim]
    save_file(stored, str(blob))
    # Fix the checksum so that it is the missing-tensor check that fires.
    meta = json.loads((saved / META_FILE).read_text())
    meta["tensors_sha256"] = _sha256(blob)
    meta["tensors_bytes"] = blob.stat().st_size
    (saved / META_FILE).write_text(json.dumps(meta))
    message = load_refused(saved, TENSORS_FILE, "missing tensor")
    assert victim in message


def test_missing_tensors_file_refused(saved):
    (saved / TENSORS_FILE).unlink()
    load_refused(saved, TENSORS_FILE, "missing")


def test_missing_meta_refused(saved):
    (saved / META_FILE).unlink()
    load_refused(saved, META_FILE, "missing")


def test_not_a_directory_refused(tmp_path):
    load_refused(tmp_path / "nowhere", META_FILE, "missing")


@pytest.mark.parametrize(
    "rewrite",
    [
        pytest.param(lambda meta: "{ not json", id="not-json"),
        pytest.param(lambda meta: b"\xff\xfe garbage", id="not-utf8"),
        pytest.param(lambda meta: json.dumps({**meta, "format": "something-else"}), id="wrong-format"),
        pytest.param(lambda meta: json.dumps({**meta, "version": 99}), id="wrong-version"),
        pytest.param(lambda meta: json.dumps({k: v for k, v in meta.items() if k != "format"}), id="no-format"),
        pytest.param(lambda meta: json.dumps([meta]), id="array"),
        pytest.param(lambda meta: json.dumps("ltsft-sparse-diff"), id="string"),
        pytest.param(lambda meta: json.dumps({k: v for k, v in meta.items() if k != "maskable"}), id="no-maskable"),
        pytest.param(lambda meta: json.dumps({k: v for k, v in meta.items() if k != "tensors_sha256"}),
                     id="no-sha256"),
    ],
)
def test_wrong_meta_format_refused(saved, rewrite):
    meta_path = saved / META_FILE
    new = rewrite(json.loads(meta_path.read_text()))
    if isinstance(new, bytes):
        meta_path.write_bytes(new)
    else:
        meta_path.write_text(new)
    load_refused(saved, META_FILE, None)


def test_fingerprint_disagreeing_with_tensor_list_refused(saved):
    meta_path = saved / META_FILE
    meta = json.loads(meta_path.read_text())
    meta["base_fingerprint"] = "0" * 16
    meta_path.write_text(json.dumps(meta))
    load_refused(saved, META_FILE, "fingerprint")
