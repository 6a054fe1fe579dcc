"""MAD-G's generator (pipeline/methods/mad_g): sizes, generation, training, storage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertForTokenClassification

from pipeline.core.errors import LtsftError
from pipeline.core.parameters import count_parameters
from pipeline.formats.adapter import AdapterError, load_adapter
from pipeline.formats.mad_g_generator import (
    META_FILE,
    TENSORS_FILE,
    GeneratorError,
    save_generator,
)
from pipeline.methods.mad_g.generator import (
    MadGenerator,
    generate_adapter,
    generated_forward,
    install,
    load_generator,
    save_generated_adapter,
)
from pipeline.methods.mad_g.training import GeneratorTraining, train_generator
from pipeline.methods.madx.adapters import LanguageAdapter, add_madx
from tests.conftest import make_tiny_config

HIDDEN, LAYERS, TYPOLOGY = 32, 2, 289
BASE = "tiny-bert"


def adapter_entries(d: int, layers: int, rf: int) -> int:
    """One generated adapter: per layer W_down, b_down, W_up, b_up (MAD-X's bottleneck)."""
    return layers * (2 * d * (d // rf) + d // rf + d)


def generator_entries(d: int, layers: int, rf: int, typology: int = TYPOLOGY, lang: int = 32, layer: int = 0) -> int:
    """The formula: (D + D_l) generator weights per generated entry (one layer's when shared),
    the language embedding's T·D + D, and the L·D_l layer embeddings."""
    embedding = typology * lang + lang
    if not layer:
        return lang * adapter_entries(d, layers, rf) + embedding
    return (lang + layer) * adapter_entries(d, 1, rf) + embedding + layers * layer


def typology_vector(seed: int) -> torch.Tensor:
    """A random 0/1 vector standing in for a URIEL one."""
    return torch.randint(0, 2, (TYPOLOGY,), generator=torch.Generator().manual_seed(seed)).float()


TYPOLOGY_TABLE = {lang: typology_vector(seed) for seed, lang in enumerate(("aa", "bb", "cc"))}


def mlm(seed: int = 0, **overrides) -> BertForMaskedLM:
    torch.manual_seed(seed)
    return BertForMaskedLM(make_tiny_config(hidden_size=HIDDEN, **overrides)).eval()


def batch(seed: int) -> dict[str, torch.Tensor]:
    rng = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (4, 9), generator=rng)
    labels = torch.full_like(ids, -100)
    labels[:, 1::3] = ids[:, 1::3]
    ids = ids.masked_fill(labels != -100, 4)  # a stand-in [MASK]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def batches(languages: tuple[str, ...] = ("aa", "bb")) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    step = 0
    while True:
        yield languages[step % len(languages)], batch(step)
        step += 1


SETTINGS = GeneratorTraining(steps=6, learning_rate=1e-2, seed=3)


def trained(layer_dim: int = 0, seed: int = 0) -> tuple[BertForMaskedLM, MadGenerator]:
    model = mlm()
    generator = MadGenerator.for_model(model, layer_dim=layer_dim, seed=seed)
    train_generator(model, generator, TYPOLOGY_TABLE, batches(), SETTINGS)
    return model, generator


# --- sizes -----------------------------------------------------------------------------------


def test_parameter_counts_on_mbert_shapes_match_the_formula_and_the_reference_figures():
    config = BertConfig()  # bert-base shapes: d 768, 12 layers (mBERT's encoder; no weights needed)
    assert (config.hidden_size, config.num_hidden_layers) == (768, 12)
    with torch.device("meta"):
        default = MadGenerator.for_model(config)
        shared = MadGenerator.for_model(config, layer_dim=32)
    assert count_parameters(default) == generator_entries(768, 12, 16) == 28_634_176
    assert count_parameters(shared) == generator_entries(768, 12, 16, layer=32) == 4_780_480
    assert count_parameters(default.empty_adapter()) == adapter_entries(768, 12, 16) == 894_528


@pytest.mark.parametrize(("d", "layers", "rf", "layer_dim"), [(32, 2, 16, 0), (32, 3, 4, 8), (48, 2, 8, 0), (48, 4, 2, 5)])
def test_generated_tensors_have_the_madx_shapes_and_the_count_follows_the_formula(d, layers, rf, layer_dim):
    generator = MadGenerator(d, layers, rf, layer_dim=layer_dim, seed=0)
    assert count_parameters(generator) == generator_entries(d, layers, rf, layer=layer_dim)
    expected = LanguageAdapter(d, layers, rf, invertible=False).state_dict()
    generated = generator(typology_vector(0))
    assert list(generated) == list(expected)
    assert {n: t.shape for n, t in generated.items()} == {n: t.shape for n, t in expected.items()}
    assert count_parameters(generate_adapter(generator, typology_vector(0))) == adapter_entries(d, layers, rf)


def test_initialisation_follows_the_authors_code_and_is_seeded():
    before = torch.random.get_rng_state()
    generator = MadGenerator(64, 2, 4, layer_dim=32, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)  # a private generator
    for name, tensor in generator.weights.items():  # N(0, 1/context): context 32 + 32
        assert tensor.shape[-1] == 64
        assert abs(tensor.mean().item()) < 5 / 64 / tensor.numel() ** 0.5, name
        assert tensor.std().item() == pytest.approx(1 / 64, rel=0.1), name
    assert generator.layer_embeddings.std().item() == pytest.approx(1 / 32, rel=0.35)
    bound = 1 / TYPOLOGY ** 0.5  # nn.Linear's init: U(±1/sqrt(fan_in)) for both (kaiming a=sqrt(5))
    assert generator.language.weight.abs().max() <= bound and generator.language.weight.abs().max() > 0.9 * bound
    same = MadGenerator(64, 2, 4, layer_dim=32, seed=5)
    other = MadGenerator(64, 2, 4, layer_dim=32, seed=6)
    assert all(torch.equal(a, b) for a, b in zip(generator.state_dict().values(), same.state_dict().values()))
    assert not torch.equal(generator.language.weight, other.language.weight)


# --- generation ------------------------------------------------------------------------------


@pytest.mark.parametrize("layer_dim", [0, 32])
def test_generated_adapters_differ_between_languages_and_are_deterministic_for_a_seed(layer_dim):
    _, generator = trained(layer_dim)
    _, again = trained(layer_dim)
    first, second = (generate_adapter(generator, TYPOLOGY_TABLE[lang]).state_dict() for lang in ("aa", "bb"))
    for name in first:
        assert not torch.equal(first[name], second[name]), name
    if layer_dim:  # one shared generator, but each layer's adapter is its own
        assert not torch.equal(first["layers.0.down.weight"], first["layers.1.down.weight"])
    repeated = generate_adapter(again, TYPOLOGY_TABLE["aa"]).state_dict()
    assert all(torch.equal(first[name], repeated[name]) for name in first)


def test_a_language_absent_from_training_gets_its_own_adapter_which_changes_the_model():
    model, generator = trained()  # trained on aa and bb only
    unseen = typology_vector(99)
    adapter = generate_adapter(generator, unseen).state_dict()
    for lang in ("aa", "bb"):
        seen = generate_adapter(generator, TYPOLOGY_TABLE[lang]).state_dict()
        assert not torch.equal(adapter["layers.1.up.weight"], seen["layers.1.up.weight"])
    assert all(torch.isfinite(t).all() for t in adapter.values())
    inputs = {k: v for k, v in batch(0).items() if k != "labels"}
    with torch.no_grad():
        base = mlm()(**inputs).logits
        adapted = generated_forward(model, generator, unseen, **inputs).logits
    assert not torch.allclose(base, adapted)


def test_a_typology_vector_of_the_wrong_width_is_refused_in_one_line():
    model = mlm()
    generator = MadGenerator.for_model(model, seed=0)
    table = {**TYPOLOGY_TABLE, "bb": torch.zeros(TYPOLOGY - 1)}
    with pytest.raises(LtsftError, match=r"^typology vector of 'bb' has shape \(288,\)[^\n]*\(289,\)$"):
        train_generator(model, generator, table, batches(), SETTINGS)


# --- training --------------------------------------------------------------------------------


def test_training_moves_only_the_generator_and_every_pretrained_weight_stays_bit_identical():
    model = mlm()
    generator = MadGenerator.for_model(model, seed=0)
    madx = install(model, generator)
    pretrained = {n: p.detach().clone() for n, p in model.named_parameters()}  # the slot's placeholders too
    start = {n: t.clone() for n, t in generator.state_dict().items()}
    log = train_generator(model, generator, TYPOLOGY_TABLE, batches(), SETTINGS)
    for name, param in model.named_parameters():
        assert torch.equal(param, pretrained[name]), name
        assert param.grad is None, name
    assert any(name.startswith("madx.language.") for name in pretrained) and madx.language is model.madx.language
    for name, tensor in generator.state_dict().items():  # every generator tensor is in the loss's path
        assert not torch.equal(tensor, start[name]), name
    assert log[-1]["batches_per_language"] == {"aa": 3, "bb": 3}
    assert all(entry["loss"] > 0 for entry in log[:-1])


def test_training_is_deterministic_for_a_seed_and_the_seed_matters():
    _, first = trained()
    _, second = trained()
    model = mlm()
    third = MadGenerator.for_model(model, seed=0)
    train_generator(model, third, TYPOLOGY_TABLE, batches(), GeneratorTraining(steps=6, learning_rate=1e-2, seed=4))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert not torch.equal(first.weights["layers-0-down-weight"], third.weights["layers-0-down-weight"])


def test_a_language_without_typology_and_too_few_batches_are_refused_in_one_line():
    model = mlm()
    generator = MadGenerator.for_model(model, seed=0)
    with pytest.raises(LtsftError, match=r"^generator training: a batch of language 'zz', which has no typology vector$"):
        train_generator(model, generator, TYPOLOGY_TABLE, batches(("aa", "zz")), SETTINGS)
    few = [("aa", batch(0)), ("bb", batch(1))]
    with pytest.raises(LtsftError, match=r"^generator training: the batches ran out after 2 of 6 steps$"):
        train_generator(model, generator, TYPOLOGY_TABLE, iter(few), SETTINGS)


# --- the generated adapter in MAD-X ----------------------------------------------------------


@pytest.mark.parametrize("layer_dim", [0, 32])
def test_a_saved_generated_adapter_in_madx_gives_the_logits_of_the_generators_forward(tmp_path: Path, layer_dim):
    model, generator = trained(layer_dim)
    model.eval()
    inputs = {k: v for k, v in batch(7).items() if k != "labels"}
    with torch.no_grad():
        expected = generated_forward(model, generator, typology_vector(42), **inputs).logits
    save_generated_adapter(generator, typology_vector(42), tmp_path / "lang", {"language": "xx"})
    fresh = mlm()
    madx = add_madx(fresh, language_rf=16, task_rf=None, language_invertible=False)
    meta = load_adapter(tmp_path / "lang", madx.language)
    assert meta["generated_by"] == "mad-g" and meta["invertible"] is False
    with torch.no_grad():
        assert torch.equal(fresh(**inputs).logits, expected)
    with pytest.raises(AdapterError, match=r"missing tensors \['invertible"):  # not an ordinary MAD-X adapter with one
        load_adapter(tmp_path / "lang", LanguageAdapter(HIDDEN, LAYERS, 16))


def test_a_language_adapter_with_its_invertible_part_describes_itself_as_before():
    assert "invertible" not in LanguageAdapter(HIDDEN, LAYERS).describe()  # its files stay byte-identical
    assert LanguageAdapter(HIDDEN, LAYERS, invertible=False).describe()["invertible"] is False
    model = BertForMaskedLM(make_tiny_config(hidden_size=HIDDEN))
    add_madx(model, language_rf=16, task_rf=16, language_invertible=False)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())  # no invertible hooks


def test_the_generators_forward_needs_its_slot():
    model = mlm()
    generator = MadGenerator.for_model(model, seed=0)
    add_madx(model, language_rf=2, task_rf=None)
    with pytest.raises(LtsftError, match="the model's MAD-X language adapter is"):
        generated_forward(model, generator, typology_vector(0), input_ids=batch(0)["input_ids"])


# --- storage ---------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, BertForMaskedLM, MadGenerator]:
    model, generator = trained(layer_dim=8)
    path = tmp_path / "generator"
    save_generator(generator, path, model, BASE, {"languages": ["aa", "bb"]})
    return path, model, generator


def test_save_and_load_roundtrip_is_bit_identical_and_serves_a_task_model(saved):
    path, model, generator = saved
    meta = json.loads((path / META_FILE).read_text())
    assert meta["parameters"] == count_parameters(generator) and meta["languages"] == ["aa", "bb"]
    assert meta["base_model"] == BASE and meta["layer_dim"] == 8
    tagger = BertForTokenClassification(make_tiny_config(hidden_size=HIDDEN))  # another head, same encoder
    loaded = load_generator(path, tagger, base_model=BASE)
    assert list(loaded.state_dict()) == list(generator.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), generator.state_dict().values()))
    again = path.parent / "again"  # identical inputs, byte-identical files
    save_generator(loaded, again, model, BASE, {"languages": ["aa", "bb"]})
    assert (again / TENSORS_FILE).read_bytes() == (path / TENSORS_FILE).read_bytes()
    assert (again / META_FILE).read_bytes() == (path / META_FILE).read_bytes()


def assert_refused(path: Path, model, fragment: str, needle: Path, base_model: str | None = BASE) -> None:
    with pytest.raises(GeneratorError) as info:
        load_generator(path, model, base_model=base_model)
    message = str(info.value)
    assert "\n" not in message and str(needle) in message and fragment in message, message


def test_a_flipped_byte_a_missing_file_and_a_foreign_format_are_refused(saved):
    path, model, _ = saved
    blob = path / TENSORS_FILE
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert_refused(path, model, "sha256", blob)
    blob.unlink()
    assert_refused(path, model, "file missing", blob)
    meta_path = path / META_FILE
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "format": "ltsft-adapter"}))
    assert_refused(path, model, "format", meta_path)
    meta_path.write_text("{")
    assert_refused(path, model, "unreadable", meta_path)


def test_another_base_model_is_refused(saved):
    path, model, _ = saved
    assert_refused(path, model, "trained on base model 'tiny-bert', not 'other-bert'", path / META_FILE, "other-bert")
    deeper = mlm(num_hidden_layers=3)  # another encoder: the fingerprint, even without a name
    assert_refused(path, deeper, "base fingerprint", path / META_FILE, None)
    wider = BertForMaskedLM(make_tiny_config(hidden_size=48, num_attention_heads=2))
    assert_refused(path, wider, "base fingerprint", path / META_FILE)


def test_a_described_architecture_that_is_not_the_files_is_refused(saved):
    path, model, _ = saved
    meta_path = path / META_FILE
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "layer_dim": 0}))  # the checksum covers the tensors only
    assert_refused(path, model, "missing tensors", path / TENSORS_FILE)
    meta_path.write_text(json.dumps({**meta, "reduction_factor": 5}))
    assert_refused(path, model, "cannot build the described generator", path)


def test_a_refused_save_writes_nothing(tmp_path: Path):
    generator = MadGenerator(HIDDEN, LAYERS, seed=0)
    with pytest.raises(GeneratorError, match="has no base_model.encoder"):
        save_generator(generator, tmp_path / "out", torch.nn.Linear(2, 2), BASE, {})
    assert list(tmp_path.iterdir()) == []
