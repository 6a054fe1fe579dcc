"""MAD-G's generator loop under the run's runtime: mixed precision (bf16 autocast on CPU) and
resumable checkpoints (pipeline/core/resume.py's LoopCheckpoints): a run killed after a
checkpoint and run again ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import pytest
import torch

from pipeline.core import resume
from pipeline.core.config import RuntimeSettings
from pipeline.core.runtime import Runtime, component, using
from pipeline.methods.mad_g.generator import MadGenerator
from pipeline.methods.mad_g.training import GeneratorTraining, train_generator
from tests.test_mad_g import TYPOLOGY_TABLE, batches, mlm

SETTINGS = GeneratorTraining(steps=7, learning_rate=1e-2, seed=3)


class Killed(Exception):
    pass


def run(root, every: int = 0, kill_after: int | None = None, precision: str = "fp32"):
    """Train a fresh generator over the same θ0 under ``runtime`` settings; ``kill_after``:
    raise once that many checkpoints are written (what a SIGKILL then would leave on disk)."""
    model = mlm()
    generator = MadGenerator.for_model(model, seed=0)
    settings = RuntimeSettings(precision=precision, checkpoint_every=every, checkpoint_dir=str(root))
    written = []
    real_save = resume.LoopCheckpoints.save

    def save(self, step, schedule, scaler, log):
        before = set(self.dir.glob("step-*")) if self.session is not None and self.dir.is_dir() else set()
        real_save(self, step, schedule, scaler, log)
        if self.session is not None and set(self.dir.glob("step-*")) != before:
            written.append(step)
            if kill_after is not None and len(written) >= kill_after:
                raise Killed

    resume.LoopCheckpoints.save = save
    try:
        with component(settings, "mad-g-generator-test", {"settings": repr(SETTINGS)}, model, ["text"]) as session:
            log = train_generator(model, generator, TYPOLOGY_TABLE, batches(), SETTINGS)
        if session is not None:
            session.remove()
        return generator, log, written
    finally:
        resume.LoopCheckpoints.save = real_save


def same(a: MadGenerator, b: MadGenerator) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("kill_after", [1, 3])  # at step 2; at step 6, the last checkpoint before the end
def test_a_killed_generator_run_resumes_bit_identical(tmp_path, capsys, kill_after):
    reference, log, written = run(tmp_path / "a", every=2)
    assert written == [2, 4, 6]  # never at the last step (7)
    assert not any((tmp_path / "a").iterdir())  # removed once the run finished
    plain, plain_log, _ = run(tmp_path / "none")
    assert same(plain, reference) and plain_log == log  # checkpointing changes no bit

    with pytest.raises(Killed):
        run(tmp_path / "b", every=2, kill_after=kill_after)
    capsys.readouterr()
    resumed, resumed_log, _ = run(tmp_path / "b", every=2)
    assert f"mad-g-generator from step {written[kill_after - 1]} of 7" in capsys.readouterr().out
    assert same(resumed, reference)
    assert resumed_log == log  # the log before the kill came back with the checkpoint


def test_a_damaged_checkpoint_is_ignored_with_one_line_and_training_starts_afresh(tmp_path, capsys):
    reference, log, _ = run(tmp_path / "a", every=2)
    with pytest.raises(Killed):
        run(tmp_path / "b", every=2, kill_after=1)
    [step] = list((tmp_path / "b").glob("*/phase-00/step-*"))
    (step / resume.TENSORS).write_bytes(b"not safetensors")
    capsys.readouterr()
    again, again_log, _ = run(tmp_path / "b", every=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if "ignoring checkpoint" in line]
    assert len(lines) == 1 and "training mad-g-generator from its start" in lines[0]
    assert same(again, reference) and again_log == log


def test_bf16_autocast_trains_the_generator_in_fp32_weights_and_moves_the_numbers(tmp_path):
    fp32, _, _ = run(tmp_path / "a")
    bf16, log, _ = run(tmp_path / "b", precision="bf16")
    assert all(t.dtype == torch.float32 for t in bf16.state_dict().values())  # master weights stay fp32
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in log[:-1])
    assert not same(bf16, fp32)  # the forward really ran in bf16
    untrained = MadGenerator.for_model(mlm(), seed=0)
    assert not same(bf16, untrained)


def test_autocast_is_bf16_inside_the_generator_forward(monkeypatch):
    """What the forward sees: bf16 matmuls under runtime bf16, none under fp32."""
    import pipeline.methods.mad_g.training as training

    seen = []
    real = training.generated_forward

    def spy(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "generated_forward", spy)
    for precision in ("fp32", "bf16"):
        model = mlm()
        with using(Runtime(precision=precision)):
            train_generator(model, MadGenerator.for_model(model, seed=0), TYPOLOGY_TABLE, batches(),
                            GeneratorTraining(steps=2, learning_rate=1e-2, seed=3))
    assert seen == [False, False, torch.bfloat16, torch.bfloat16]
