"""MAD-X adapters (pipeline/methods/madx): sizes, placement in the computation, freezing, storage."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForTokenClassification,
    PreTrainedModel,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
    XLMRobertaForTokenClassification,
)

from pipeline.formats.adapter import META_FILE, TENSORS_FILE, AdapterError, load_adapter, save_adapter
from pipeline.formats.checked import sha256_file as _sha256
from pipeline.methods.madx.adapters import (
    BottleneckAdapter,
    InvertibleAdapter,
    LanguageAdapter,
    MadX,
    TaskAdapter,
    add_madx,
    freeze_all_except,
    set_active,
)
from pipeline.core.parameters import count_parameters

VOCAB = 100
HIDDEN = 32
LAYERS = 2
TINY = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
            intermediate_size=64, num_labels=5)


def bert_config() -> BertConfig:
    return BertConfig(**TINY, max_position_embeddings=64, pad_token_id=0)


def xlmr_config() -> XLMRobertaConfig:
    # RoBERTa positions start after padding_idx, hence the two extra positions.
    return XLMRobertaConfig(**TINY, max_position_embeddings=66, pad_token_id=1)


MODEL_KINDS: dict[str, Callable[[], PreTrainedModel]] = {
    "bert-mlm": lambda: BertForMaskedLM(bert_config()),
    "bert-tagger": lambda: BertForTokenClassification(bert_config()),
    "xlmr-mlm": lambda: XLMRobertaForMaskedLM(xlmr_config()),
    "xlmr-tagger": lambda: XLMRobertaForTokenClassification(xlmr_config()),
}


def make(kind: str, seed: int = 0) -> PreTrainedModel:
    torch.manual_seed(seed)
    return MODEL_KINDS[kind]().eval()


def inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (2, 7), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).logits


def bottleneck_count(d: int, rf: int) -> int:
    return 2 * d * (d // rf) + d // rf + d


def invertible_count(d: int) -> int:
    h = d // 2
    return 2 * (2 * h * (h // 2) + h // 2 + h)


@torch.no_grad()
def zero_adapter_outputs(madx: MadX) -> None:
    """Zero every up-projection and the last layer of F and G: adapters become identities."""
    for adapters in (madx.language, madx.task):
        if adapters is None:
            continue
        for bottleneck in adapters.layers:
            bottleneck.up.weight.zero_()
            bottleneck.up.bias.zero_()
    if madx.language is not None:
        for mlp in (madx.language.invertible.F, madx.language.invertible.G):
            mlp[-1].weight.zero_()
            mlp[-1].bias.zero_()


@torch.no_grad()
def randomise(module: nn.Module, seed: int = 7, std: float = 0.3) -> None:
    """Large non-zero weights everywhere, biases included: an adapter that clearly matters."""
    generator = torch.Generator().manual_seed(seed)
    for param in module.parameters():
        param.copy_(torch.randn(param.shape, generator=generator) * std)


# --- 1. sizes --------------------------------------------------------------------------------


def test_parameter_counts_of_a_768_wide_12_layer_encoder():
    assert count_parameters(LanguageAdapter(768, 12).layers) == 7_091_712
    assert count_parameters(InvertibleAdapter(768)) == 296_064
    assert count_parameters(LanguageAdapter(768, 12)) == 7_091_712 + 296_064
    assert count_parameters(TaskAdapter(768, 12, reduction_factor=16)) == 894_528
    assert count_parameters(TaskAdapter(768, 12)) == 894_528  # rf 16 is the default


def test_parameter_counts_of_a_384_wide_8_layer_encoder_match_the_formula():
    language = LanguageAdapter(384, 8)
    assert count_parameters(language.layers) == 8 * bottleneck_count(384, 2)
    assert count_parameters(language.invertible) == invertible_count(384)
    assert count_parameters(TaskAdapter(384, 8)) == 8 * bottleneck_count(384, 16)
    assert count_parameters(BottleneckAdapter(384, 4)) == bottleneck_count(384, 4)


def test_parameter_counts_inside_a_real_tiny_model():
    model = make("bert-mlm")
    before = count_parameters(model)
    madx = add_madx(model, seed=0)
    language = LAYERS * bottleneck_count(HIDDEN, 2) + invertible_count(HIDDEN)
    task = LAYERS * bottleneck_count(HIDDEN, 16)
    assert count_parameters(madx.language) == language
    assert count_parameters(madx.task) == task
    assert count_parameters(model) == before + language + task


def test_initialisation_is_normal_002_with_zero_biases_and_seeded():
    adapter = BottleneckAdapter(512, 2)
    assert torch.all(adapter.down.bias == 0) and torch.all(adapter.up.bias == 0)
    assert abs(adapter.down.weight.std().item() - 0.02) < 1e-3
    assert abs(adapter.down.weight.mean().item()) < 1e-3
    model = make("bert-tagger")
    state = torch.random.get_rng_state()
    first = add_madx(model, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # a seeded init leaves the global RNG alone
    second = add_madx(make("bert-tagger"), seed=3)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_indivisible_widths_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        BottleneckAdapter(30, 16)
    with pytest.raises(ValueError, match="divisible"):
        InvertibleAdapter(30)


# --- 2./3. placement in the computation ------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_zeroed_adapters_leave_outputs_unchanged(kind: str):
    batch = inputs()
    base = logits(make(kind), batch)
    model = make(kind)
    madx = add_madx(model, seed=0)
    zero_adapter_outputs(madx)
    torch.testing.assert_close(logits(model, batch), base, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_random_adapters_change_outputs_and_switching_them_off_restores_the_base(kind: str):
    batch = inputs()
    base = logits(make(kind), batch)
    model = make(kind)
    madx = add_madx(model, seed=0)
    randomise(madx)
    outputs = {}
    for language, task in [(True, True), (True, False), (False, True)]:
        set_active(madx, language=language, task=task)
        outputs[language, task] = logits(model, batch)
        assert (outputs[language, task] - base).abs().max() > 1e-2, (language, task)
    assert not torch.allclose(outputs[True, True], outputs[True, False])
    assert not torch.allclose(outputs[True, True], outputs[False, True])
    set_active(madx, language=False, task=False)
    assert torch.equal(logits(model, batch), base)


@pytest.mark.parametrize("language_rf,task_rf", [(2, None), (None, 16)])
def test_a_single_adapter_can_be_omitted(language_rf, task_rf):
    batch = inputs()
    base = logits(make("bert-mlm"), batch)
    model = make("bert-mlm")
    madx = add_madx(model, language_rf=language_rf, task_rf=task_rf, seed=0)
    assert (madx.language is None) == (language_rf is None)
    assert (madx.task is None) == (task_rf is None)
    randomise(madx)
    assert not torch.allclose(logits(model, batch), base)
    set_active(madx, language=False, task=False)
    assert torch.equal(logits(model, batch), base)


@torch.no_grad()
def test_block_output_follows_the_madx_formulas():
    model = make("xlmr-tagger")
    block = model.base_model.encoder.layer[1].output
    dense, dropout, norm = block.dense, block.dropout, block.LayerNorm
    madx = add_madx(model, seed=0)
    randomise(madx)
    generator = torch.Generator().manual_seed(0)
    intermediate = torch.randn(2, 5, 64, generator=generator)
    x = torch.randn(2, 5, HIDDEN, generator=generator)
    lang, task = madx.language.layers[1], madx.task.layers[1]
    h = dropout(dense(intermediate))

    out_lang = h + lang(norm(h + x))
    out_task = out_lang + task(norm(out_lang + x))
    torch.testing.assert_close(block(intermediate, x), norm(out_task + x))

    set_active(madx, language=False, task=True)  # madx-task-only
    torch.testing.assert_close(block(intermediate, x), norm(h + task(norm(h + x)) + x))

    set_active(madx, language=True, task=False)
    torch.testing.assert_close(block(intermediate, x), norm(out_lang + x))

    set_active(madx, language=False, task=False)
    assert torch.equal(block(intermediate, x), norm(h + x))


# --- 4./5. invertible adapter ----------------------------------------------------------------


@torch.no_grad()
def test_invertible_adapter_is_exactly_invertible():
    adapter = InvertibleAdapter(64)
    randomise(adapter, std=0.5)
    x = torch.randn(3, 9, 64, generator=torch.Generator().manual_seed(2))
    y = adapter(x)
    assert (y - x).abs().max() > 0.1  # non-trivial coupling
    torch.testing.assert_close(adapter.inverse(y), x, rtol=0, atol=1e-5)
    torch.testing.assert_close(adapter(adapter.inverse(x)), x, rtol=0, atol=1e-5)


@torch.no_grad()
def test_invertible_adapter_follows_the_nice_coupling():
    adapter = InvertibleAdapter(8)
    randomise(adapter)
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(3))
    x1, x2 = x[:, :4], x[:, 4:]
    y1 = x1 + adapter.F(x2)
    y2 = x2 + adapter.G(y1)
    assert torch.equal(adapter(x), torch.cat([y1, y2], dim=-1))
    assert [type(layer) for layer in adapter.F] == [nn.Linear, nn.ReLU, nn.Linear]
    assert adapter.F[0].weight.shape == (2, 4) and adapter.F[2].weight.shape == (4, 2)


@pytest.mark.parametrize("kind", ["bert-mlm", "xlmr-mlm"])
@torch.no_grad()
def test_embeddings_pass_through_the_invertible_adapter_and_the_decoder_gets_its_inverse(kind: str):
    model = make(kind)
    madx = add_madx(model, seed=0)
    randomise(madx)
    invertible = madx.language.invertible
    base = model.base_model
    seen: dict[str, torch.Tensor] = {}
    # Registered after add_madx's hooks, so these see what the next module really receives.
    base.embeddings.register_forward_hook(lambda m, a, out: seen.__setitem__("embeddings", out))
    model.get_output_embeddings().register_forward_pre_hook(
        lambda m, args: seen.__setitem__("decoder_input", args[0]))
    batch = inputs()
    result = model(**batch, output_hidden_states=True)
    adapted_embeddings = seen["embeddings"]

    set_active(madx, language=False, task=True)
    raw_embeddings = base.embeddings(input_ids=batch["input_ids"])
    set_active(madx, language=True, task=True)
    assert not torch.allclose(adapted_embeddings, raw_embeddings)
    torch.testing.assert_close(adapted_embeddings, invertible(raw_embeddings))
    torch.testing.assert_close(result.hidden_states[0], invertible(raw_embeddings))

    # Manual MLM head: the head's transform, then the inverse, then the decoder's linear map.
    head = model.cls.predictions if kind == "bert-mlm" else model.lm_head
    if kind == "bert-mlm":
        transformed = head.transform(result.hidden_states[-1])
    else:
        transformed = head.layer_norm(torch.nn.functional.gelu(head.dense(result.hidden_states[-1])))
    decoder = model.get_output_embeddings()
    expected_input = invertible.inverse(transformed)
    torch.testing.assert_close(seen["decoder_input"], expected_input)
    expected_logits = torch.nn.functional.linear(expected_input, decoder.weight, decoder.bias)
    torch.testing.assert_close(result.logits, expected_logits)


def test_task_models_have_no_output_embedding_and_no_inverse():
    for kind in ("bert-tagger", "xlmr-tagger"):
        model = make(kind)
        assert model.get_output_embeddings() is None
        add_madx(model, seed=0)
        hooked = [name for name, module in model.named_modules() if module._forward_pre_hooks]
        assert hooked == []


# --- 6./7. freezing and names ----------------------------------------------------------------


def test_training_only_the_adapters_leaves_pretrained_weights_bit_identical():
    model = make("bert-mlm")
    madx = add_madx(model, seed=0)
    pretrained = {name: p.detach().clone() for name, p in model.named_parameters() if not name.startswith("madx.")}
    adapters = {name: p.detach().clone() for name, p in madx.named_parameters()}
    trainable = freeze_all_except(model, ["madx."])
    assert trainable == [name for name, _ in model.named_parameters() if name.startswith("madx.")]
    assert len(trainable) == len(adapters)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)
    model.train()
    batch = inputs()
    labels = batch["input_ids"].clone()
    labels[:, ::2] = -100
    for step in range(3):
        optimizer.zero_grad()
        model(**batch, labels=labels).loss.backward()
        if step == 0:  # every adapter tensor is in the computation path of the MLM loss
            for name, param in madx.named_parameters():
                assert param.grad is not None and param.grad.abs().max() > 0, name
        optimizer.step()
    for name, param in model.named_parameters():
        if name.startswith("madx."):
            assert not torch.equal(param, adapters[name[len("madx."):]]), name
        else:
            assert param.grad is None, name
            assert torch.equal(param, pretrained[name]), name


def test_freeze_all_except_returns_exactly_the_trainable_names():
    model = make("bert-tagger")
    add_madx(model, seed=0)
    names = freeze_all_except(model, ["madx.task.", "classifier."])
    assert names and all(n.startswith(("madx.task.", "classifier.")) for n in names)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(names)


@pytest.mark.parametrize("kind", ["bert-mlm", "xlmr-tagger"])
def test_pretrained_names_are_unchanged_and_adapters_live_only_under_madx(kind: str):
    model = make(kind)
    names_before = [name for name, _ in model.named_parameters()]
    keys_before = list(model.state_dict())
    modules_before = [name for name, _ in model.named_modules()]
    madx = add_madx(model, seed=0)
    names_after = [name for name, _ in model.named_parameters()]
    keys_after = list(model.state_dict())
    assert [n for n in names_after if not n.startswith("madx.")] == names_before
    assert keys_after[: len(keys_before)] == keys_before
    adapter_keys = keys_after[len(keys_before):]
    assert adapter_keys == [f"madx.{k}" for k in madx.state_dict()]
    assert len(set(keys_after)) == len(keys_after)
    assert "madx.language.layers.0.down.weight" in adapter_keys
    assert "madx.language.invertible.F.0.weight" in adapter_keys
    assert "madx.task.layers.1.up.bias" in adapter_keys
    # The output modules were overridden in place, not replaced: no new module paths but madx's.
    new_modules = [n for n, _ in model.named_modules() if n not in modules_before]
    assert new_modules and all(n.startswith("madx") for n in new_modules)
    assert len({id(t) for k, t in model.state_dict().items() if k.startswith("madx.")}) == len(adapter_keys)


def test_adapters_follow_the_model_dtype():
    model = make("bert-tagger").to(torch.float64)
    madx = add_madx(model, seed=0)
    assert {p.dtype for p in madx.parameters()} == {torch.float64}
    assert model(**inputs()).logits.dtype == torch.float64


@torch.no_grad()
def test_a_deep_copy_uses_its_own_adapters():
    model = make("bert-mlm")
    madx = add_madx(model, seed=0)
    randomise(madx)
    batch = inputs()
    original = logits(model, batch)
    clone = copy.deepcopy(model)
    torch.testing.assert_close(logits(clone, batch), original)
    randomise(clone.madx, seed=99)
    assert not torch.allclose(logits(clone, batch), original)
    assert torch.equal(logits(model, batch), original)
    set_active(clone.madx, language=False, task=False)
    assert torch.equal(logits(model, batch), original)


def test_adding_madx_twice_is_refused():
    model = make("bert-tagger")
    add_madx(model, seed=0)
    with pytest.raises(ValueError, match="already") as info:
        add_madx(model, seed=1)
    assert "\n" not in str(info.value)


# --- 8. storage ------------------------------------------------------------------------------


def tiny_language_adapter(seed: int) -> LanguageAdapter:
    adapter = LanguageAdapter(HIDDEN, LAYERS)
    randomise(adapter, seed=seed)
    return adapter


@pytest.mark.parametrize("factory", [lambda s: tiny_language_adapter(s),
                                     lambda s: TaskAdapter(HIDDEN, LAYERS, generator=torch.Generator().manual_seed(s))])
def test_save_and_load_roundtrip_is_bit_identical(tmp_path: Path, factory):
    adapter = factory(1)
    save_adapter(adapter, tmp_path / "adapter", {"language": "sw", "steps": 3})
    fresh = factory(2)
    assert any(not torch.equal(a, b) for a, b in zip(adapter.state_dict().values(), fresh.state_dict().values()))
    meta = load_adapter(tmp_path / "adapter", fresh)
    for name, tensor in adapter.state_dict().items():
        assert torch.equal(tensor, fresh.state_dict()[name]), name
    assert meta["language"] == "sw" and meta["steps"] == 3
    assert meta["format"] == "ltsft-adapter" and meta["version"] == 3
    assert meta["kind"] == ("language" if isinstance(adapter, LanguageAdapter) else "task")
    assert (meta["hidden_size"], meta["num_layers"]) == (HIDDEN, LAYERS)
    assert meta["reduction_factor"] == adapter.reduction_factor
    assert meta["non_linearity"] == "relu"
    assert meta["parameters"] == count_parameters(adapter)
    assert meta["tensors_sha256"] == _sha256(tmp_path / "adapter" / TENSORS_FILE)
    assert meta["tensors_bytes"] == (tmp_path / "adapter" / TENSORS_FILE).stat().st_size
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [META_FILE, TENSORS_FILE]
    assert TENSORS_FILE == "madx_adapter.safetensors"  # never the `adapters` library's adapter.safetensors


def test_a_version_2_directory_is_still_read(tmp_path: Path):
    """Before the rename, the tensors were in adapter.safetensors and the meta had no
    non_linearity (every v2 adapter is ReLU): such a directory loads bit-identically."""
    adapter = tiny_language_adapter(1)
    save_adapter(adapter, tmp_path / "v2", {})
    (tmp_path / "v2" / TENSORS_FILE).rename(tmp_path / "v2" / "adapter.safetensors")
    meta_path = tmp_path / "v2" / META_FILE
    meta = json.loads(meta_path.read_text())
    del meta["non_linearity"]
    meta_path.write_text(json.dumps({**meta, "version": 2}))
    fresh = tiny_language_adapter(2)
    assert load_adapter(tmp_path / "v2", fresh)["non_linearity"] == "relu"
    for name, tensor in adapter.state_dict().items():
        assert torch.equal(tensor, fresh.state_dict()[name]), name
    meta_path.write_text(json.dumps({**meta, "version": 4}))
    assert_refused(tmp_path / "v2", fresh, "expected 'ltsft-adapter' v3 or v2", meta_path)


def test_gelu_is_an_architecture_field_and_switching_to_it_changes_only_the_function(tmp_path: Path):
    """Released AdapterHub language adapters use GELU: the field is stored, checked on load,
    and ``use_non_linearity`` changes the computation but no weight."""
    relu = tiny_language_adapter(1)
    gelu = tiny_language_adapter(1)
    gelu.use_non_linearity("gelu_new")
    assert all(torch.equal(a, b) for a, b in zip(relu.state_dict().values(), gelu.state_dict().values()))
    x = torch.randn(2, 3, HIDDEN, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(relu.layers[0](x), gelu.layers[0](x))
    assert not torch.allclose(relu.invertible(x), gelu.invertible(x))
    torch.testing.assert_close(gelu.invertible.inverse(gelu.invertible(x)), x, rtol=0, atol=1e-5)
    save_adapter(gelu, tmp_path / "gelu", {})
    assert_refused(tmp_path / "gelu", tiny_language_adapter(2), "non_linearity", tmp_path / "gelu" / META_FILE)
    other = tiny_language_adapter(2)
    other.use_non_linearity("gelu_new")
    assert load_adapter(tmp_path / "gelu", other)["non_linearity"] == "gelu_new"
    torch.testing.assert_close(other.layers[1](x), gelu.layers[1](x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="tanh"):
        LanguageAdapter(HIDDEN, LAYERS, non_linearity="tanh")


def test_save_adapter_of_a_model_submodule(tmp_path: Path):
    model = make("bert-mlm")
    madx = add_madx(model, seed=0)
    save_adapter(madx.language, tmp_path / "lang", {})
    other = add_madx(make("bert-mlm"), seed=5)
    load_adapter(tmp_path / "lang", other.language)
    for name, tensor in madx.language.state_dict().items():
        assert torch.equal(tensor, other.language.state_dict()[name]), name


def assert_refused(path: Path, module: nn.Module, fragment: str, needle: Path) -> None:
    with pytest.raises(AdapterError) as info:
        load_adapter(path, module)
    message = str(info.value)
    assert "\n" not in message
    assert str(needle) in message, message
    assert fragment in message, message


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "lang"
    save_adapter(tiny_language_adapter(1), path, {"language": "sw"})
    return path


def test_a_flipped_byte_is_refused_and_leaves_the_module_untouched(saved: Path):
    blob = saved / TENSORS_FILE
    data = bytearray(blob.read_bytes())
    data[-3] ^= 0xFF
    blob.write_bytes(bytes(data))
    target = tiny_language_adapter(2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    assert_refused(saved, target, "sha256", blob)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


@pytest.mark.parametrize("name", [TENSORS_FILE, META_FILE])
def test_a_missing_file_is_refused(saved: Path, name: str):
    (saved / name).unlink()
    assert_refused(saved, tiny_language_adapter(2), "missing", saved / name)


def test_bad_json_and_a_foreign_format_are_refused(saved: Path):
    meta_path = saved / META_FILE
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format": "something-else"}))
    assert_refused(saved, tiny_language_adapter(2), "format", meta_path)
    meta_path.write_text("{not json")
    assert_refused(saved, tiny_language_adapter(2), "unreadable", meta_path)


def test_wrong_kind_and_wrong_size_are_refused(saved: Path):
    assert_refused(saved, TaskAdapter(HIDDEN, LAYERS), "kind", saved / META_FILE)
    assert_refused(saved, LanguageAdapter(HIDDEN, LAYERS, reduction_factor=4), "reduction_factor", saved / META_FILE)
    assert_refused(saved, LanguageAdapter(HIDDEN, LAYERS + 1), "num_layers", saved / META_FILE)


def test_a_tensor_of_the_wrong_shape_is_refused(saved: Path):
    """Consistent meta and checksum, but a tensor whose shape is not the module's."""
    blob = saved / TENSORS_FILE
    tensors = {k: v.clone() for k, v in tiny_language_adapter(1).state_dict().items()}
    tensors["layers.0.down.weight"] = torch.zeros(8, HIDDEN)
    save_file(tensors, str(blob))
    meta_path = saved / META_FILE
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "tensors_sha256": _sha256(blob), "tensors_bytes": blob.stat().st_size}))
    assert_refused(saved, tiny_language_adapter(2), "shape mismatch", blob)
