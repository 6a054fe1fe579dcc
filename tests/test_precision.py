"""``runtime.precision`` (pipeline/core/precision.py): the modes, their errors, and LT-SFT's
guarantees under bf16 autocast and fp16's gradient scaler."""

from __future__ import annotations

import copy

import pytest
import torch

from pipeline.core import precision
from pipeline.core.config import parse_params
from pipeline.core.errors import ConfigError
from pipeline.core.runtime import Runtime, using
from pipeline.core.sparse_adamw import SparseAdamW
from pipeline.methods.lt_sft.lottery import LotteryConfig, PhaseBudget, train_lt_sft
from pipeline.tasks.pos import PosTagging
from tests.test_config import tree as preset_tree
from tests.test_resume import features as random_tagging_features


def test_unknown_precision_names_the_key():
    tree = preset_tree("smoke")
    tree["runtime"]["precision"] = "fp8"
    with pytest.raises(ConfigError, match=r"^runtime\.precision: must be one of fp32, bf16, fp16, auto \(got 'fp8'\)$"):
        parse_params(tree)


def test_runtime_defaults_when_absent():
    tree = preset_tree("smoke")
    del tree["runtime"]
    runtime = parse_params(tree).runtime
    assert (runtime.precision, runtime.checkpoint_every, runtime.checkpoint_dir) == ("fp32", 0, ".ltsft/checkpoints")


def test_fp16_without_a_gpu_is_one_line_naming_the_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^runtime\.precision: fp16 needs a CUDA GPU") as err:
        precision.resolve("fp16")
    assert "\n" not in str(err.value)


def test_auto_is_bf16_only_on_a_gpu_that_has_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.resolve("auto") == "fp32"
    assert precision.resolve("bf16") == "bf16"  # bf16 autocast runs on CPU
    assert precision.trainer_arguments("fp32") == {"bf16": False, "fp16": False}  # the Trainer's defaults
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert precision.resolve("auto") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert precision.trainer_arguments("auto") == {"bf16": True, "fp16": False}


def test_the_cli_refuses_fp16_on_cpu_before_any_work(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from stages.cli import app

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    tree = preset_tree("smoke")
    tree["runtime"]["precision"] = "fp16"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tree))
    result = CliRunner().invoke(app, ["train-lang", "en", "--params", str(params)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: runtime.precision: fp16 needs a CUDA GPU"), result.output


def test_bf16_lt_sft_keeps_unselected_entries_at_theta0(tiny_config, tiny_tokenizer, monkeypatch):
    """bf16 autocast on CPU: the weights stay fp32, phase 2 moves only the K selected entries."""
    from transformers import BertForTokenClassification, TrainingArguments

    torch.manual_seed(0)
    model0 = BertForTokenClassification(tiny_config)
    config = LotteryConfig(k=300, phase1=PhaseBudget(steps=3), phase2=PhaseBudget(steps=3), learning_rate=1e-2,
                           batch_size=4, l1_lambda=0.1, seed=3, progress=False)
    features, collate = random_tagging_features(tiny_config.vocab_size, n=16), PosTagging().collator(tiny_tokenizer)
    seen = []
    real_init = TrainingArguments.__init__
    monkeypatch.setattr(TrainingArguments, "__init__",
                        lambda self, *a, **k: seen.append(k.get("bf16")) or real_init(self, *a, **k))

    def run(mode: str):
        model = copy.deepcopy(model0)
        with using(Runtime(precision=mode)):
            result = train_lt_sft(model, features, collate, config)
        return model, result.diff

    model, diff = run("bf16")
    assert seen == [True, True]  # both phases ran under the Trainer's bf16 autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    theta0 = dict(model0.named_parameters())
    moved = 0
    for name, param in model.named_parameters():
        if name not in diff.indices:
            continue
        changed = (param.detach() != theta0[name].detach()).reshape(-1)
        outside = torch.ones_like(changed)
        outside[diff.indices[name].long()] = False
        assert not changed[outside].any(), f"{name}: an unselected entry moved"
        moved += int(changed.sum())
    assert 0 < moved <= config.k
    _, fp32_diff = run("fp32")
    assert any(not torch.equal(diff.values[n], fp32_diff.values[n]) for n in diff.values)  # bf16 did compute


def _sparse_setup(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    weight = model[0].weight
    theta0 = {p: p.detach().clone() for p in model.parameters()}
    indices = {weight: torch.tensor([0, 4, 7, 11, 29]), model[2].weight: torch.tensor([], dtype=torch.int64)}
    optimizer = SparseAdamW(model.parameters(), lr=1e-2, weight_decay=0.1, trainable_indices=indices,
                            max_grad_norm=0.5, l1_lambda=0.3, l1_reference=theta0, l1_normaliser=50)
    return model, optimizer, theta0


def _loss(model, step: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(step)
    x, y = torch.randn(8, 6, generator=generator), torch.randint(0, 3, (8,), generator=generator)
    return torch.nn.functional.cross_entropy(model(x), y)


def test_grad_scaler_unscales_before_sparse_adamw_and_skips_what_it_skips():
    """fp16's GradScaler (here on CPU, as accelerate drives it on a GPU): SparseAdamW's clipping
    and L1 see the unscaled gradients (the update equals the unscaled one bit for bit: the scale
    is a power of two), and a step with an inf gradient is skipped whole."""
    reference, ref_opt, _ = _sparse_setup()
    scaled, opt, theta0 = _sparse_setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=1)
    for step in range(4):
        _loss(reference, step).backward()
        ref_opt.step()
        ref_opt.zero_grad()
        scaler.scale(_loss(scaled, step)).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        for p, q in zip(reference.parameters(), scaled.parameters()):
            assert torch.equal(p, q)
    assert scaler.get_scale() == 2.0**16  # it grew every step: none was skipped

    before = [p.detach().clone() for p in scaled.parameters()]
    state_steps = [float(s["step"]) for s in opt.state.values()]
    loss = _loss(scaled, 99)
    scaler.scale(loss).backward()
    scaled[2].bias.grad[0] = float("inf")
    scaler.step(opt)
    scaler.update()
    opt.zero_grad()
    assert all(torch.equal(p, q) for p, q in zip(before, scaled.parameters()))
    assert [float(s["step"]) for s in opt.state.values()] == state_steps
    assert scaler.get_scale() == 2.0**15  # backed off
    # Unselected entries never moved: θ0 bit-exactly outside the five indices.
    changed = (scaled[0].weight.detach() != theta0[scaled[0].weight]).reshape(-1)
    assert set(changed.nonzero().reshape(-1).tolist()) <= {0, 4, 7, 11, 29}
    assert torch.equal(scaled[2].weight.detach(), theta0[scaled[2].weight])
