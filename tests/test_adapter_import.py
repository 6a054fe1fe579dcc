"""Importing released MAD-X language adapters (pipeline/sources/adapterhub.py) from files in the
`adapters` library's layout written here (tests/released_adapter.py), for a tiny BERT."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F
from transformers import BertConfig, BertForMaskedLM

from pipeline.core.config import ConfigError, parse_params
from pipeline.formats.adapter import META_FILE, AdapterError, load_adapter
from pipeline.methods import METHODS
from pipeline.methods.madx.adapters import add_madx
from pipeline.sources.adapterhub import import_adapter
from tests.released_adapter import (
    MADX_CONFIG,
    random_roles,
    released_tensors,
    write_released,
)

HIDDEN, LAYERS = 32, 2
REPO = Path(__file__).resolve().parents[1]


def tiny_mlm() -> BertForMaskedLM:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=0)
    return BertForMaskedLM(config).eval()


BATCH = {"input_ids": torch.randint(5, 100, (2, 7), generator=torch.Generator().manual_seed(1)),
         "attention_mask": torch.ones(2, 7, dtype=torch.long)}


@torch.no_grad()
def logits(model: nn.Module) -> torch.Tensor:
    return model(**BATCH).logits


@torch.no_grad()
def set_directly(language: nn.Module, roles: dict[str, torch.Tensor]) -> None:
    """The same weights put straight into our module, role by role (no importer involved)."""
    for role, tensor in roles.items():
        part, rest = role.split(".", 1)
        if part in ("down", "up"):
            index, kind = rest.split(".")
            getattr(getattr(language.layers[int(index)], part), kind).copy_(tensor)
        else:
            position, kind = rest.split(".")
            getattr(getattr(language.invertible, part)[int(position)], kind).copy_(tensor)


def ours_directly(roles: dict[str, torch.Tensor], non_linearity: str = "relu") -> BertForMaskedLM:
    model = tiny_mlm()
    madx = add_madx(model, language_rf=2, task_rf=None, seed=3)
    madx.language.use_non_linearity(non_linearity)
    set_directly(madx.language, roles)
    return model


def ours_imported(path: Path) -> tuple[BertForMaskedLM, dict]:
    model = tiny_mlm()
    madx = add_madx(model, language_rf=2, task_rf=None, seed=4)
    meta = json.loads((path / META_FILE).read_text())
    madx.language.use_non_linearity(meta["non_linearity"])
    load_adapter(path, madx.language)
    return model, meta


# --- the imported adapter computes what our adapter with the same weights computes -----------


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
@pytest.mark.parametrize("prefix", ["bert.", ""])  # saved from a model with a head, or from a bare encoder
def test_imported_adapter_gives_the_outputs_of_ours_with_the_same_weights(tmp_path, fmt, prefix):
    roles = random_roles(HIDDEN, LAYERS, seed=0)
    released = write_released(tmp_path / "released", released_tensors(roles, prefix=prefix), fmt=fmt,
                              hidden_size=HIDDEN)
    meta = import_adapter(released, tmp_path / "ours", reduction_factor=2)
    assert (meta["kind"], meta["hidden_size"], meta["num_layers"], meta["reduction_factor"]) == (
        "language", HIDDEN, LAYERS, 2)
    assert meta["non_linearity"] == "relu" and meta["trainable_parameters"] == sum(t.numel() for t in roles.values())
    assert meta["weights_file"] == ("pytorch_adapter.bin" if fmt == "bin" else "adapter.safetensors")
    imported, _ = ours_imported(tmp_path / "ours")
    direct = ours_directly(roles)
    assert torch.equal(logits(imported), logits(direct))  # bit-identical: max abs diff 0.0
    assert (logits(imported) - logits(tiny_mlm())).abs().max() > 0.1  # and the adapter matters


def test_each_released_tensor_lands_where_the_library_uses_it(tmp_path):
    """The library's formulas, written from its source (Adapter.pre_forward / forward /
    post_forward for this config; NICECouplingBlock), on the raw released tensors."""
    roles = random_roles(HIDDEN, LAYERS, seed=5)
    import_adapter(write_released(tmp_path / "r", released_tensors(roles)), tmp_path / "ours")
    model, _ = ours_imported(tmp_path / "ours")
    madx = model.madx
    generator = torch.Generator().manual_seed(2)
    hidden_states, input_tensor = torch.randn(2, 5, 64, generator=generator), torch.randn(2, 5, HIDDEN,
                                                                                           generator=generator)
    for i, layer in enumerate(model.bert.encoder.layer):
        out = layer.output
        h = out.dense(hidden_states)  # eval: dropout is the identity
        residual = h  # residual_before_ln
        a = out.LayerNorm(h + input_tensor)  # original_ln_before
        up = F.linear(F.relu(F.linear(a, roles[f"down.{i}.weight"], roles[f"down.{i}.bias"])),
                      roles[f"up.{i}.weight"], roles[f"up.{i}.bias"])
        library = out.LayerNorm(up + residual + input_tensor)  # original_ln_after
        with torch.no_grad():
            ours = madx.block_output(i, out, hidden_states, input_tensor)
        torch.testing.assert_close(ours, library, rtol=0, atol=1e-6)

    def mlp(name: str, v: torch.Tensor) -> torch.Tensor:
        return F.linear(F.relu(F.linear(v, roles[f"{name}.0.weight"], roles[f"{name}.0.bias"])),
                        roles[f"{name}.2.weight"], roles[f"{name}.2.bias"])

    x = torch.randn(2, 5, HIDDEN, generator=generator)
    x1, x2 = x[..., : HIDDEN // 2], x[..., HIDDEN // 2:]
    y1 = x1 + mlp("F", x2)
    library = torch.cat([y1, x2 + mlp("G", y1)], dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(madx.language.invertible(x), library, rtol=0, atol=1e-6)


def test_an_adapter_transformers_1x_file_with_gelu(tmp_path):
    """1.x: legacy tensor names, the invertible adapter nested in the config, no version, and
    `gelu` meaning the tanh approximation (the library renames it to gelu_new)."""
    config = {k: v for k, v in MADX_CONFIG.items() if k in (
        "mh_adapter", "output_adapter", "reduction_factor", "original_ln_before", "original_ln_after",
        "residual_before_ln", "adapter_residual_before_ln", "ln_before", "ln_after", "leave_out")}
    config |= {"non_linearity": "gelu", "invertible_adapter": {"block_type": "nice", "non_linearity": "relu",
                                                               "reduction_factor": 2}}
    roles = random_roles(HIDDEN, LAYERS, seed=1)
    released = write_released(tmp_path / "v1", released_tensors(roles, legacy=True), config=config, version=None,
                              type="text_lang")
    assert import_adapter(released, tmp_path / "ours")["non_linearity"] == "gelu_new"
    imported, meta = ours_imported(tmp_path / "ours")
    assert torch.equal(logits(imported), logits(ours_directly(roles, "gelu_new")))
    assert not torch.allclose(logits(imported), logits(ours_directly(roles, "relu")))
    assert meta["library_version"] is None and meta["adapter_name"] == "en"


def test_an_xlmr_adapter_maps_from_the_roberta_prefix(tmp_path):
    roles = random_roles(HIDDEN, LAYERS, seed=2)
    released = write_released(tmp_path / "x", released_tensors(roles, name="sw", prefix="roberta."), fmt="safetensors",
                              name="sw", model_type="xlm-roberta", model_name="xlm-roberta-base")
    import_adapter(released, tmp_path / "ours", base_model="xlm-roberta-base")
    _, meta = ours_imported(tmp_path / "ours")
    assert meta["model_name"] == "xlm-roberta-base" and meta["adapter_name"] == "sw"


# --- refusals: one line naming what --------------------------------------------------------


def refused(directory: Path, fragment: str, needle: Path, **kwargs) -> None:
    with pytest.raises(AdapterError) as info:
        import_adapter(directory, directory.parent / "out", **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(needle) in message and fragment in message, message
    assert not (directory.parent / "out").exists()


def released_with(tmp_path: Path, config_changes: dict | None = None, tensors: dict | None = None,
                  **top: object) -> Path:
    config = {**MADX_CONFIG, **(config_changes or {})}
    return write_released(tmp_path / "r", released_tensors(random_roles(HIDDEN, LAYERS)) if tensors is None
                          else tensors, config={k: v for k, v in config.items() if v is not _DROP}, **top)


_DROP = object()


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"architecture": "lora"}, "config.architecture is 'lora'"),
    ({"mh_adapter": True}, "config.mh_adapter is True"),  # Houlsby-style placement
    ({"original_ln_before": False}, "config.original_ln_before is False"),
    ({"is_parallel": True}, "config.is_parallel is True"),
    ({"reduction_factor": 16}, "config.reduction_factor is 16, expected 2"),
    ({"reduction_factor": {"default": 2, "1": 4}}, "config.reduction_factor is {'1': 4, 'default': 2}"),
    ({"non_linearity": "tanh"}, "config.non_linearity is 'tanh'"),
    ({"inv_adapter": None}, "config.inv_adapter missing"),
    ({"inv_adapter": _DROP, "inv_adapter_reduction_factor": _DROP}, "config.inv_adapter missing"),
    ({"inv_adapter": "glow"}, "config.inv_adapter is 'glow'"),
    ({"inv_adapter_reduction_factor": 4}, "config.inv_adapter_reduction_factor is 4"),
    ({"leave_out": [1]}, "config.leave_out is [1]"),
    ({"dropout": 0.1}, "config.dropout is 0.1"),
    ({"scaling": True}, "config.scaling is True"),
    ({"mh_adapter": _DROP}, "config.mh_adapter missing"),
])
def test_a_config_that_is_not_madx_is_refused(tmp_path, changes, fragment):
    directory = released_with(tmp_path, changes)
    refused(directory, fragment, directory / "adapter_config.json")


def test_another_adapter_type_model_or_base_is_refused(tmp_path):
    directory = released_with(tmp_path, type="text_task")
    refused(directory, "type is 'text_task'", directory / "adapter_config.json")
    directory = released_with(tmp_path / "b", model_type="gpt2")
    refused(directory, "model_type is 'gpt2'", directory / "adapter_config.json")
    directory = released_with(tmp_path / "c", model_name="xlm-roberta-base")
    refused(directory, "model_name is 'xlm-roberta-base'", directory / "adapter_config.json",
            base_model="bert-base-multilingual-cased")
    (directory / "adapter_config.json").write_text(json.dumps({"config": "pfeiffer+inv"}))
    refused(directory, "'config' must be the adapter's full config", directory / "adapter_config.json")
    (directory / "adapter_config.json").unlink()
    refused(directory, "file missing", directory / "adapter_config.json")


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_missing_extra_and_misshapen_tensors_are_refused(tmp_path, fmt):
    def weights(directory: Path) -> Path:
        return directory / ("pytorch_adapter.bin" if fmt == "bin" else "adapter.safetensors")

    full = released_tensors(random_roles(HIDDEN, LAYERS))
    fewer = {k: v for k, v in full.items() if k != "bert.encoder.layer.1.output.adapters.en.adapter_up.bias"}
    directory = released_with(tmp_path / "missing", tensors=fewer, fmt=fmt)
    refused(directory, "missing tensors for layers.1.up.bias", weights(directory))
    more = {**full, "bert.encoder.layer.0.attention.output.adapters.en.adapter_down.0.weight": torch.zeros(16, 32)}
    directory = released_with(tmp_path / "extra", tensors=more, fmt=fmt)
    refused(directory, "extra tensors bert.encoder.layer.0.attention.output.adapters.en", weights(directory))
    other = released_tensors(random_roles(HIDDEN, LAYERS), name="de")  # another adapter's weights
    directory = released_with(tmp_path / "name", tensors=other, fmt=fmt)
    refused(directory, "no bottleneck adapter tensors for adapter 'en'", weights(directory))
    wrong = {**full, "bert.invertible_adapters.en.G.2.weight": torch.zeros(16, 4)}
    directory = released_with(tmp_path / "shape", tensors=wrong, fmt=fmt)
    refused(directory, "shape mismatch for invertible.G.2.weight: file (16, 4), MAD-X (16, 8)", weights(directory))


class Exploit:
    """Unpickling this would run a shell command: torch.save writes the os.system global."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_bin_that_is_not_weights_only_is_refused_without_running_it(tmp_path):
    directory = released_with(tmp_path)
    marker = tmp_path / "ran"
    tensors = released_tensors(random_roles(HIDDEN, LAYERS))
    torch.save({**tensors, "bert.encoder.layer.0.output.adapters.en.extra": Exploit(marker)},
               directory / "pytorch_adapter.bin")
    refused(directory, "not a weights-only state dict", directory / "pytorch_adapter.bin")
    with pytest.raises(AdapterError, match="system"):  # the unpickler's own reason names the global
        import_adapter(directory, tmp_path / "out")
    assert not marker.exists()
    torch.save([1, 2, 3], directory / "pytorch_adapter.bin")
    refused(directory, "not a state dict of tensors (found list)", directory / "pytorch_adapter.bin")
    (directory / "pytorch_adapter.bin").unlink()
    refused(directory, "neither adapter.safetensors nor pytorch_adapter.bin", directory)


# --- the command, the stage, the params ----------------------------------------------------


def test_adapter_import_command(tmp_path):
    from typer.testing import CliRunner

    from stages.cli import app

    released = released_with(tmp_path)
    result = CliRunner().invoke(app, ["adapter", "import", str(released), str(tmp_path / "ours")])
    assert result.exit_code == 0, result.output
    assert "layers 2" not in result.output and "2 layers, hidden 32, rf 2, relu" in result.output
    assert (tmp_path / "ours" / "madx_adapter.safetensors").is_file()
    result = CliRunner().invoke(app, ["adapter", "import", str(released), str(tmp_path / "o2"),
                                      "--reduction-factor", "4"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "config.reduction_factor is 2, expected 4" in lines[0]


def paper_like(**published: object) -> dict:
    raw = yaml.safe_load((REPO / "presets" / "smoke.yaml").read_text())
    raw["published"].update(published)
    return raw


def test_the_import_stage_reads_a_local_copy_and_writes_madx_published_components(tmp_path, monkeypatch):
    from stages import import_published, layout

    roles = random_roles(HIDDEN, LAYERS)
    write_released(tmp_path / "copies" / "Hub" / "tiny-en-wiki", released_tensors(roles))
    write_released(tmp_path / "copies" / "Hub" / "tiny_xx_wiki", released_tensors(roles, name="xx"), name="xx")
    monkeypatch.chdir(tmp_path)
    params = parse_params(paper_like(adapter_languages=["en", "xx"], adapter_tasks=["pos"],
                                     adapter_repo="Hub/tiny-{code}-wiki", adapter_repos={"xx": "Hub/tiny_xx_wiki"},
                                     local_root=str(tmp_path / "copies")))
    for lang in ("en", "xx"):
        import_published.run(params, "adapter", lang)
        meta = json.loads((layout.COMPONENTS.component("madx-published", "lang", lang) / META_FILE).read_text())
        assert meta["repo"] == ("Hub/tiny-en-wiki" if lang == "en" else "Hub/tiny_xx_wiki")
        assert meta["method"] == "madx-published" and meta["kind"] == "language"
    method = METHODS["madx-published"]
    assert method.stage_task_names(params) == ["pos"]
    assert list(method.skipped_targets(params, ["xx", "yy"])) == ["yy"]  # yy has no released adapter
    with pytest.raises(Exception, match="not found"):
        import_published.run(params, "adapter", "yy")


@pytest.mark.parametrize(("published", "message"), [
    ({"adapter_languages": ["zz"]}, "published.adapter_languages: unknown language 'zz'"),
    ({"adapter_tasks": ["ner"]}, "published.adapter_tasks: unknown task 'ner'"),
    ({"adapter_languages": ["xx"], "adapter_tasks": ["pos"]},
     "published.adapter_tasks: pos's source language 'en' is not under published.adapter_languages"),
])
def test_bad_adapter_params_are_refused_naming_the_key(published, message):
    with pytest.raises(ConfigError) as info:
        parse_params(paper_like(**published))
    assert str(info.value).startswith(message), info.value


def test_demo_and_smoke_run_no_madx_published_stage():
    for preset in ("demo", "smoke"):
        params = parse_params(yaml.safe_load((REPO / "presets" / f"{preset}.yaml").read_text()))
        assert params.published.adapter_languages == () and params.published.adapter_tasks == ()
    paper = parse_params(yaml.safe_load((REPO / "presets" / "paper.yaml").read_text()))
    assert paper.published.adapter_tasks and "en" in paper.published.adapter_languages
    assert copy.deepcopy(METHODS["madx-published"]).trains_language is False
