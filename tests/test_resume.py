"""Resumable training (pipeline/core/resume.py): a run interrupted after a checkpoint and run
again ends bit-identical to an uninterrupted one; other keys and damaged files are ignored.

In-process runs are "killed" by an exception right after a checkpoint is written (the state
on disk is then exactly what a SIGKILL would leave); the last test SIGKILLs a real stage."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pipeline.core import resume
from pipeline.core.best_checkpoint import DevCheck
from pipeline.core.config import RuntimeSettings
from pipeline.core.runtime import component
from pipeline.methods.lt_sft.lottery import LotteryConfig, PhaseBudget, train_lt_sft
from pipeline.tasks.mlm import MaskedLM
from pipeline.tasks.pos import PosTagging

REPO = Path(__file__).resolve().parents[1]


class Killed(Exception):
    pass


def features(vocab: int, n: int = 12, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(4, 12, (1,), generator=generator))
        ids = torch.randint(5, vocab, (length,), generator=generator).tolist()
        labels = torch.randint(0, 5, (length,), generator=generator).tolist()
        labels[0] = labels[-1] = -100
        out.append({"input_ids": ids, "attention_mask": [1] * length, "labels": labels})
    return out


def lottery(**overrides) -> LotteryConfig:
    # 12 examples in batches of 4: 3 steps an epoch, so a phase of 8 steps spans three epochs.
    settings = {"k": 400, "phase1": PhaseBudget(steps=8, eval_every=3, select_best=True),
                "phase2": PhaseBudget(steps=8, eval_every=3, select_best=True), "learning_rate": 1e-2,
                "batch_size": 4, "l1_lambda": 0.1, "max_grad_norm": 1.0, "seed": 5, "progress": False}
    return LotteryConfig(**(settings | overrides))


def dev_check(data: list[dict], collate) -> DevCheck:
    """A dev score that varies with training (the loss on a fixed batch)."""
    batch = collate(copy.deepcopy(data[:4]))

    def score(model):
        with torch.no_grad():
            return {"loss": float(model(**batch).loss)}
    return DevCheck(score, "loss", higher_is_better=False)


def train(model0, data, collate, config, root: Path, every: int, kill_after: int | None = None, dev=None):
    """LT-SFT under a checkpoint session; ``kill_after``: raise once that many checkpoints are written."""
    model = copy.deepcopy(model0)
    settings = RuntimeSettings(checkpoint_every=every, checkpoint_dir=str(root))
    written = []
    real_save = resume.Phase.save

    def save(self, state, pending):
        real_save(self, state, pending)
        written.append((self.description, state.global_step))
        if kill_after is not None and len(written) >= kill_after:
            raise Killed

    resume.Phase.save = save
    try:
        # The key's facts: in a stage, the params sections the run reads (here: the whole config).
        with component(settings, "lt-sft-test-x", {"config": repr(config)}, model, data) as session:
            result = train_lt_sft(model, data, collate, config, dev=dev)
        session.remove()
        return result, written
    finally:
        resume.Phase.save = real_save


def assert_same_diff(a, b) -> None:
    assert a.indices.keys() == b.indices.keys()
    for name in a.indices:
        assert torch.equal(a.indices[name], b.indices[name]), name
        assert torch.equal(a.values[name], b.values[name]), name
    for name in a.dense:
        assert torch.equal(a.dense[name], b.dense[name]), name


@pytest.fixture(scope="module")
def tagging(tiny_config, tiny_tokenizer):
    from transformers import BertForTokenClassification

    torch.manual_seed(0)
    return BertForTokenClassification(tiny_config), features(tiny_config.vocab_size), PosTagging().collator(tiny_tokenizer)


@pytest.mark.parametrize("kill_after", [1, 2, 4])  # phase 1 at step 3; phase 1 at step 6; phase 2 at step 3
def test_killed_lt_sft_resumes_bit_identical(tagging, tmp_path, capsys, kill_after):
    model0, data, collate = tagging
    dev = dev_check(data, collate)
    reference, written = train(model0, data, collate, lottery(), tmp_path / "a", every=3, dev=dev)
    assert [step for _, step in written] == [3, 6, 3, 6]  # never at a phase's last step
    assert not any((tmp_path / "a").iterdir())  # removed once the run finished

    with pytest.raises(Killed):
        train(model0, data, collate, lottery(), tmp_path / "b", every=3, kill_after=kill_after, dev=dev)
    capsys.readouterr()
    resumed, _ = train(model0, data, collate, lottery(), tmp_path / "b", every=3, dev=dev)
    out = capsys.readouterr().out
    phase, step = written[kill_after - 1]
    assert f"{phase} from step {step} of 8" in out
    if phase.endswith("phase2"):
        assert "iter1-phase1 finished before" in out
    assert_same_diff(resumed.diff, reference.diff)
    assert_same_diff(resumed.phase1_diff, reference.phase1_diff)
    # The dev scores and the best-state choice carried over too.
    strip = [{k: v for k, v in e.items() if not k.startswith("train_") and k != "total_flos"} for e in reference.log]
    again = [{k: v for k, v in e.items() if not k.startswith("train_") and k != "total_flos"} for e in resumed.log]
    assert [e for e in again if "eval_loss" in e or "best_step" in e] == \
        [e for e in strip if "eval_loss" in e or "best_step" in e]


def test_masked_lm_resumes_with_the_same_masks(tiny_config, tiny_tokenizer, tmp_path, capsys):
    """The MLM collator draws masks from the global RNG, for batches fetched ahead of training:
    a resume mid-epoch and one at an epoch's end both replay them exactly."""
    from transformers import BertForMaskedLM

    task = MaskedLM()
    text = [f"the {w} walks to the {v} and the {w} sees it" for w, v in
            zip(["cat", "dog", "man", "kid", "cow", "owl", "fox", "elk"], ["town", "sea", "farm", "hill"] * 2)]
    data = task.featurize(text, tiny_tokenizer, 32)
    collate = task.collator(tiny_tokenizer)
    torch.manual_seed(1)
    model0 = BertForMaskedLM(tiny_config)
    config = lottery(batch_size=2, k=300, phase1=PhaseBudget(steps=9), phase2=PhaseBudget(steps=2))  # 4 steps/epoch
    reference, _ = train(model0, data, collate, config, tmp_path / "a", every=2)
    for kill_after in (1, 2):  # step 2 (mid-epoch), step 4 (an epoch's end)
        root = tmp_path / f"k{kill_after}"
        with pytest.raises(Killed):
            train(model0, data, collate, config, root, every=2, kill_after=kill_after)
        resumed, _ = train(model0, data, collate, config, root, every=2)
        assert f"from step {2 * kill_after} of 9" in capsys.readouterr().out
        assert_same_diff(resumed.diff, reference.diff)


def test_other_keys_and_damaged_checkpoints_are_ignored(tagging, tmp_path, capsys):
    model0, data, collate = tagging
    reference, _ = train(model0, data, collate, lottery(phase1=PhaseBudget(steps=8), phase2=PhaseBudget(steps=8)),
                         tmp_path / "ref", every=3)
    config = lottery(phase1=PhaseBudget(steps=8), phase2=PhaseBudget(steps=8))
    root = tmp_path / "ckpt"
    with pytest.raises(Killed):
        train(model0, data, collate, config, root, every=3, kill_after=1)
    (run,) = root.iterdir()
    (step,) = (run / "phase-00").glob("step-*")
    # Another key (other params): its checkpoint is named, never used; the run starts afresh.
    train(model0, data, collate, replace(config, learning_rate=2e-2), root, every=3)
    assert f"ignoring checkpoint {run}: written for other params or inputs" in capsys.readouterr().out
    assert step.exists()  # left for the run it belongs to
    # Damaged files: one line each, a fresh start, the same result as an uninterrupted run.
    for damage in ("ltsft.json", "ltsft.safetensors", "model.safetensors", "trainer_state.json"):
        with pytest.raises(Killed):
            train(model0, data, collate, config, root, every=3, kill_after=1)
        (step,) = (run / "phase-00").glob("step-*")
        (step / damage).write_bytes(b"\x00garbage{")
        result, _ = train(model0, data, collate, config, root, every=3)
        lines = [line for line in capsys.readouterr().out.splitlines() if "ignoring checkpoint" in line]
        assert len(lines) == 1 and str(step) in lines[0] and "from its start" in lines[0], lines
        assert_same_diff(result.diff, reference.diff)
    # A foreign file in its place: the same.
    with pytest.raises(Killed):
        train(model0, data, collate, config, root, every=3, kill_after=1)
    (step,) = (run / "phase-00").glob("step-*")
    (step / "ltsft.json").write_text('{"format": "something-else"}')
    train(model0, data, collate, config, root, every=3)
    assert "not an ltsft checkpoint" in capsys.readouterr().out


def _smoke_copy(tmp_path: Path, name: str) -> Path:
    """A scratch copy of the repository with the smoke preset prepared (data, base model)."""
    work = tmp_path / name
    shutil.copytree(REPO, work, ignore=shutil.ignore_patterns(".venv*", ".git", ".dvc", "data", "models", "diffs",
                                                              "adapters", "results", "runs", ".ltsft", "__pycache__"))
    return work


def _ltsft(work: Path, *args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "stages.cli", *args], cwd=work, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def test_sigkilled_stage_resumes_bit_identical(tmp_path):
    """`ltsft train-lang` on the smoke preset, SIGKILLed after its first checkpoint in phase 2
    and run again, writes the same diff tensor by tensor as a run never interrupted."""
    import yaml
    from safetensors.torch import load_file

    work = _smoke_copy(tmp_path, "repo")
    for args in (("preset", "smoke"), ("download",), ("prepare-model",)):
        proc = _ltsft(work, *args)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["runtime"]["checkpoint_every"] = 5
    (work / "params.yaml").write_text(yaml.safe_dump(params))

    proc = _ltsft(work, "train-lang", "en")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    diff = work / "diffs" / "lt-sft" / "lang" / "en"
    reference = load_file(diff / "diff.safetensors")
    reference_json = (diff / "diff.json").read_bytes()
    assert not list((work / ".ltsft" / "checkpoints").iterdir())
    shutil.rmtree(diff)

    proc = _ltsft(work, "train-lang", "en")
    checkpoints = work / ".ltsft" / "checkpoints"
    deadline = time.monotonic() + 240
    while not list(checkpoints.glob("*/phase-01/step-*/ltsft.json")):  # phase 2's first checkpoint, written
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not diff.exists()

    proc = _ltsft(work, "train-lang", "en")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "iter1-phase1 finished before" in out and "iter1-phase2 from step" in out, out
    resumed = load_file(diff / "diff.safetensors")
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name
    assert (diff / "diff.json").read_bytes() == reference_json
    assert not list(checkpoints.iterdir())
