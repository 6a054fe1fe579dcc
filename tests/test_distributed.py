"""Data parallelism: two CPU processes (torchrun, gloo) train the smoke model's language components
exactly as one process does on the same global batches, and only rank 0 writes or prints.

The end-to-end test runs `ltsft train-lang` for LT-SFT (both phases: its dense phase 1 is kept
as the dense-composed diff, phase 2 is the LT-SFT diff) and MAD-X, once alone and once under
`torchrun --nproc_per_node 2`, through tests/distributed_worker.py (which makes masked-LM masks
depend on each example alone; the base model is saved without dropout). Each rank works in its
own copy of the project, so a write by rank 1 would show up in its copy. The fast tests check
the pieces: batch splitting, the params check, loss scaling and provenance.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from pipeline.core import distributed
from pipeline.core.errors import ConfigError, LtsftError
from pipeline.core.loss_scaling import global_item_mean
from stages.cli import app

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "distributed_worker.py"
COMMANDS = ("train-lang en --method lt-sft", "train-lang en --method madx")
LAUNCHER_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# The attention key bias gets no gradient in exact arithmetic (softmax ignores a shift shared
# by every key's score): what it gets is rounding noise, which Adam normalises into full-size
# steps whose sign depends on the summation order. No two orders agree on it, so it is left out.
NOISE_ONLY = "attention.self.key.bias"


def smoke_params(steps: int = 12) -> dict:
    params = yaml.safe_load((REPO / "presets" / "smoke.yaml").read_text())
    params["data"]["root"] = str(REPO / "tests" / "fixtures" / "smoke")
    # 80 training lines, batch 8: 12 steps cross an epoch boundary, with full batches only.
    params["lang_sft"]["phase1"] = params["lang_sft"]["phase2"] = {"steps": steps}
    params["madx"]["language"]["phase"] = {"steps": steps}
    return params


def run(*command: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``command`` in a fresh process, outside any launcher (its output checked by the caller)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV}
    return subprocess.run([sys.executable, *command], cwd=cwd, env=env | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The project prepared once, then trained alone (single/rank0) and by two ranks (ddp/rank*)."""
    base = tmp_path_factory.mktemp("ddp")
    prepared = base / "prepared"
    prepared.mkdir()
    (prepared / "params.yaml").write_text(yaml.safe_dump(smoke_params()))
    for step in (["download"], ["prepare-model"]):
        done = run("-m", "stages.cli", *step, cwd=prepared)
        assert done.returncode == 0, done.stderr
    config = prepared / "models" / "base" / "config.json"
    settings = json.loads(config.read_text())
    config.write_text(json.dumps(settings | {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}))
    for copy in ("single/rank0", "ddp/rank0", "ddp/rank1"):
        shutil.copytree(prepared, base / copy)
    alone = run(str(WORKER), str(base / "single"), *COMMANDS)
    assert alone.returncode == 0, alone.stderr[-3000:]
    together = run("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   str(WORKER), str(base / "ddp"), *COMMANDS)
    assert together.returncode == 0, together.stderr[-3000:]
    return {"base": base, "prepared": prepared, "single": base / "single" / "rank0", "rank0": base / "ddp" / "rank0",
            "rank1": base / "ddp" / "rank1", "stdout": together.stdout}


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def assert_close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=lambda m: f"{what}: {m}")


def assert_same_diff(single: Path, ddp: Path) -> int:
    from pipeline.formats.sparse_diff import SparseDiff

    a, b = SparseDiff.load(single), SparseDiff.load(ddp)
    assert a.nnz == b.nnz and set(a.indices) == set(b.indices) and set(a.dense) == set(b.dense)
    compared = 0
    for name in a.indices:
        if NOISE_ONLY in name:
            continue
        assert torch.equal(a.indices[name], b.indices[name]), f"{name}: other entries changed"
        assert_close(a.values[name], b.values[name], name)
        compared += a.values[name].numel()
    for name in a.dense:
        assert_close(a.dense[name], b.dense[name], name)
    return compared


@pytest.mark.slow
def test_two_processes_train_like_one_on_the_same_batches(runs):
    # Phase 1 (kept as the dense-composed diff) and phase 2 (the LT-SFT diff): the same
    # selection (rank 0's, broadcast) and the same values within float tolerance.
    assert assert_same_diff(runs["single"] / "diffs/dense-composed/lang/en", runs["rank0"] / "diffs/dense-composed/lang/en") > 50_000
    assert assert_same_diff(runs["single"] / "diffs/lt-sft/lang/en", runs["rank0"] / "diffs/lt-sft/lang/en") > 19_000
    from safetensors.torch import load_file

    adapter = "adapters/madx/lang/en/madx_adapter.safetensors"
    alone, together = load_file(runs["single"] / adapter), load_file(runs["rank0"] / adapter)
    assert alone.keys() == together.keys()
    for name in alone:
        assert_close(alone[name], together[name], name)


@pytest.mark.slow
def test_only_rank_0_writes_and_prints_and_provenance_says_two(runs):
    written = files(runs["rank0"]) - files(runs["prepared"])
    assert written == files(runs["single"]) - files(runs["prepared"])
    assert {"diffs/lt-sft/lang/en/diff.json", "adapters/madx/lang/en/adapter.json",
            "runs/diffs/lt-sft/lang/en.json"} <= written
    assert files(runs["rank1"]) == files(runs["prepared"])  # rank 1 trained, and wrote nothing
    for component in ("diffs/lt-sft/lang/en", "diffs/dense-composed/lang/en"):
        ddp = json.loads((runs["rank0"] / component / "diff.json").read_text())["provenance"]
        single = json.loads((runs["single"] / component / "diff.json").read_text())["provenance"]
        assert ddp["world_size"] == 2 and "world_size" not in single
    assert runs["stdout"].count("diffs/lt-sft/lang/en: lt-sft") == 1
    assert runs["stdout"].count("adapters/madx/lang/en: madx") == 1


def test_one_process_keeps_todays_arguments(monkeypatch):
    for name in LAUNCHER_ENV:
        monkeypatch.delenv(name, raising=False)
    assert distributed.world_size() == 1 and distributed.is_main_process()
    assert distributed.trainer_arguments(8, "phase") == {"per_device_train_batch_size": 8}
    assert distributed.shared_from_main(lambda: "chosen") == "chosen"
    distributed.barrier()  # no process group needed
    distributed.check_batch_sizes({"lang_sft": {"batch_size": 7}})


def test_the_global_batch_is_split_over_the_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    arguments = distributed.trainer_arguments(8, "iter1-phase1")
    assert arguments["per_device_train_batch_size"] == 4
    if not torch.cuda.is_available():  # transformers runs DDP on CPU only when told to use it
        assert arguments["use_cpu"] is True and arguments["ddp_backend"] == "gloo"
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(LtsftError, match="iter1-phase1: batch_size 8 is not divisible by the 3 processes"):
        distributed.trainer_arguments(8, "iter1-phase1")


def test_one_process_seeing_several_gpus_keeps_the_global_batch(monkeypatch):
    # The Trainer wraps the model in nn.DataParallel and multiplies the per-device batch by
    # the GPU count; the per-device batch is divided so that a step still sees batch_size.
    for name in LAUNCHER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert distributed.trainer_arguments(8, "phase") == {"per_device_train_batch_size": 2}
    with pytest.raises(LtsftError, match="phase: batch_size 6 is not divisible by the 4 visible GPUs"):
        distributed.trainer_arguments(6, "phase")


def test_an_indivisible_batch_size_is_named_before_any_work(monkeypatch, tmp_path):
    params = smoke_params()
    params["eval"]["batch_size"] = 33  # evaluation is not split: not checked
    with pytest.raises(ConfigError, match=r"^lang_sft\.batch_size: 8 is not divisible by the 3 "):
        distributed.check_batch_sizes(params, 3)
    params["tasks"]["pos"]["overrides"] = {"task_sft": {"batch_size": 6}}
    for section in ("lang_sft", "task_sft", "head_only", "full_ft", "bitfit"):
        params[section]["batch_size"] = 4
    params["madx"]["language"]["batch_size"] = params["madx"]["task"]["batch_size"] = 4
    with pytest.raises(ConfigError, match=r"^tasks\.pos\.overrides\.task_sft\.batch_size: 6 "):
        distributed.check_batch_sizes(params, 4)
    distributed.check_batch_sizes(params, 2)

    params = smoke_params()
    for section in ("task_sft", "head_only", "full_ft", "bitfit"):  # only lang_sft's 8 does not split in 3
        params[section]["batch_size"] = 6
    params["madx"]["language"]["batch_size"] = params["madx"]["task"]["batch_size"] = 6
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "3")
    result = CliRunner().invoke(app, ["train-lang", "en"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        ("error: lang_sft.batch_size: 8 is not divisible by the 3 data-parallel processes "
         "(it is the global batch; each process takes batch_size / 3)")]


def _mlm_batch(vocab: int, lengths: list[int], generator: torch.Generator) -> dict[str, torch.Tensor]:
    width = max(lengths)
    ids = torch.randint(5, vocab, (len(lengths), width), generator=generator)
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    labels = torch.where((torch.rand(ids.shape, generator=generator) < 0.3) & mask.bool(), ids, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_split_losses_add_up_to_the_whole_batch_mean(make_mlm):
    """Two parts of a step (micro-batches, or processes' shards) with different numbers of masked
    positions: each part's rescaled loss is its share, so their sum is the whole step's mean."""
    from pipeline.tasks.mlm import score_masked_positions_only

    model = score_masked_positions_only(make_mlm(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    generator = torch.Generator().manual_seed(0)
    parts = [_mlm_batch(model.config.vocab_size, [9, 5, 7], generator), _mlm_batch(model.config.vocab_size, [4], generator)]
    counts = [int(p["labels"].ne(-100).sum()) for p in parts]
    assert counts[0] != counts[1]
    total = sum(counts)
    model.train()
    plain = model.forward
    with global_item_mean(model, world_size=1, accumulation_steps=2):
        assert model.forward is not plain
        shares = [model(**p, num_items_in_batch=torch.tensor(total)).loss for p in parts]
        means = [plain(**p).loss for p in parts]
    assert model.forward == plain  # removed on exit
    whole = sum(m * c for m, c in zip(means, counts)) / total
    torch.testing.assert_close(sum(shares), whole)
    assert not torch.allclose(sum(shares), sum(means) / 2)  # the equal-weight mean the Trainer would take


def test_one_process_gets_the_model_untouched(make_mlm):
    model = make_mlm()
    with global_item_mean(model, world_size=1):
        assert "forward" not in model.__dict__
