"""Resumable training: a run killed at step 90,000 continues from its last checkpoint and ends
bit-identical to a run that was never interrupted (``runtime.checkpoint_every``).

What a checkpoint holds, per training phase (LT-SFT: phase 1, selection, phase 2, ...):
- every ``checkpoint_every`` optimizer steps, ``<run>/phase-<n>/step-<s>/``: the model's
  trainable tensors, SparseAdamW's state (K-sized in phase 2) and its selection, the
  schedule, the grad scaler (fp16), the RNG states (python, numpy, torch, CUDA) including
  those the collator drew its last prefetched batches from, the best-on-dev selection so far
  (its in-memory best state included) and the Trainer's own state (step, epoch, log);
- when a phase ends, ``<run>/phase-<n>/done/``: its final trainable tensors and log, so a
  resumed run skips the phase and the code after it (LT-SFT's selection) recomputes exactly
  what it computed from them. The selection is stored in the next phase's step checkpoints
  and checked against the recomputed one.
``<run>`` is ``<checkpoint_dir>/<method>-<kind>-<name>-<key>``: the key hashes the run's params
sections, its precision, the model it starts from and its training and dev data, so a
checkpoint of other params or inputs is never used (one line says so). Unreadable or foreign
checkpoints are ignored with a one-line warning and the phase starts afresh; the run's
directory is removed once its component is saved.

Files are safetensors (tensors) and JSON (everything else), each checkpoint written whole
into a temporary directory and renamed into place (pipeline/core/atomic.py); nothing is
pickled. The directory is also a Trainer checkpoint (``model.safetensors`` with the trainable
tensors, ``trainer_state.json``): resuming goes through the Trainer's public
``train(resume_from_checkpoint=...)``, which restores the step, the epoch and the data order
(it skips the batches already trained). Why not the Trainer's own ``save_strategy`` as well:
it pickles the optimizer and RNG states (``torch.save``), saves the whole model but not our
in-memory best-on-dev state nor SparseAdamW's selection, writes non-atomically, and restores
the RNG only after it has already drawn the resumed epoch's first (prefetched) masked-LM
masks, so a resumed masked-LM run would differ from an uninterrupted one. This module's
callback instead restores the optimizer, schedule and scaler when training begins, and the
RNG exactly where the uninterrupted run was: it records the RNG state before each collator
call and replays those of the batches that were prefetched but not yet trained.

One process only: with several data-parallel processes the runtime trains without
checkpoints (pipeline/core/runtime.py says so in one line).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from pipeline.core.atomic import atomic_dir

FORMAT = "ltsft-checkpoint-1"
TENSORS, META = "ltsft.safetensors", "ltsft.json"
MODEL, TRAINER_STATE = "model.safetensors", "trainer_state.json"  # the Trainer's names for a checkpoint


def warn(message: str) -> None:
    print(f"ltsft: {message}", flush=True)


# ----------------------------------------------------------------------------- the key
def run_key(facts: Any, model: torch.nn.Module, *data: Sequence[Any]) -> str:
    """A hash of what determines a run: ``facts`` (JSON: its params sections, method, precision,
    ...), the model's starting state (θ0 with any diff applied, the seeded head) and its data."""
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    for examples in data:
        digest.update(f"{len(examples)} examples".encode())
        for example in examples:  # readers return strings and plain dataclasses: a stable repr
            digest.update(repr(example).encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- RNG states
def capture_rng(prefix: str, cuda: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The global RNG states (python, numpy, torch CPU and, with ``cuda``, CUDA) as tensors + JSON."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, gauss_next = random.getstate()
    tensors = {f"{prefix}torch": torch.random.get_rng_state()}
    if cuda and torch.cuda.is_available():
        for i, state_i in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{prefix}cuda.{i}"] = state_i
    return tensors, {"python": [version, list(state), gauss_next],
                     "numpy": [kind, keys.tolist(), pos, has_gauss, gauss]}


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str) -> None:
    version, state, gauss_next = meta["python"]
    random.setstate((version, tuple(state), gauss_next))
    kind, keys, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.random.set_rng_state(tensors[f"{prefix}torch"])
    cuda = [tensors[key] for key in sorted(k for k in tensors if k.startswith(f"{prefix}cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------- files
def _write(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
           model: dict[str, torch.Tensor] | None = None, trainer_state: Any = None) -> None:
    """One checkpoint directory, atomically (a kill mid-write leaves only a temporary sibling)."""
    with atomic_dir(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS))
        if model is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in model.items()}, str(tmp / MODEL))
        if trainer_state is not None:
            trainer_state.save_to_json(str(tmp / TRAINER_STATE))
        # default=str: a log value JSON cannot hold must not crash a run over its checkpoint.
        (tmp / META).write_text(json.dumps({"format": FORMAT, **meta}, sort_keys=True, default=str), encoding="utf-8")


def _write_step(directory: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                model: dict[str, torch.Tensor], trainer_state: Any = None) -> None:
    """A phase's step checkpoint ``step-<s>``, then the older ones removed: one is all a resume needs."""
    path = directory / f"step-{step:09d}"
    _write(path, tensors, meta, model=model, trainer_state=trainer_state)
    for older in directory.glob("step-*"):
        if older != path:
            shutil.rmtree(older, ignore_errors=True)


def _optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """SparseAdamW's state as tensors + JSON (another optimizer: nothing; it has no such export)."""
    return optimizer.checkpoint_state() if hasattr(optimizer, "checkpoint_state") else ({}, {})


def _restore_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                             meta: dict[str, Any]) -> None:
    """Put back what :func:`_optimizer_state` exported (after the parameters themselves)."""
    if hasattr(optimizer, "restore_checkpoint_state"):
        optimizer.restore_checkpoint_state(tensors, meta)


def _latest_step(directory: Path) -> Path | None:
    steps = sorted(directory.glob("step-*")) if directory.is_dir() else []
    return steps[-1] if steps else None


def _read(path: Path, key: str, description: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A checkpoint's tensors and JSON; ValueError (with a short reason) if it is not ours or not this run's."""
    meta = json.loads((path / META).read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError("not an ltsft checkpoint")
    if meta.get("key") != key:
        raise ValueError("written for other params or inputs")
    if meta.get("description") != description:
        raise ValueError(f"of phase {meta.get('description')!r}, not {description!r}")
    tensors = load_file(str(path / TENSORS))
    if (path / MODEL).exists():
        tensors |= {f"model.{k}": v for k, v in load_file(str(path / MODEL)).items()}
    return tensors, meta


def _sub(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _check_shapes(model: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    trainable = _trainable(model)
    if set(saved) != set(trainable) or any(saved[n].shape != trainable[n].shape for n in saved):
        raise ValueError("its trainable tensors are not this model's")


# ----------------------------------------------------------------------------- a run
class Session:
    """The checkpoints of one component's run (every phase it trains, in order)."""

    def __init__(self, root: str | Path, identity: str, key: str, every: int):
        self.root, self.key, self.every = Path(root), key, every
        self.dir = self.root / f"{identity}-{key[:16]}"
        self.phases = 0
        for other in sorted(self.root.glob(f"{identity}-*")) if self.root.is_dir() else []:
            if other != self.dir and other.is_dir():
                warn(f"ignoring checkpoint {other}: written for other params or inputs (key {other.name[-16:]}, "
                     f"this run's {key[:16]})")

    def phase(self, description: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              best: Sequence[Any]) -> Phase:
        index = self.phases
        self.phases += 1
        return Phase(self, index, description, model, optimizer, list(best))

    def loop(self, description: str, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
             max_steps: int) -> LoopCheckpoints:
        index = self.phases
        self.phases += 1
        return LoopCheckpoints(self, index, description, module, optimizer, max_steps)

    def remove(self) -> None:
        """The run finished and its outputs are saved: its checkpoints are of no further use."""
        shutil.rmtree(self.dir, ignore_errors=True)


class Phase:
    """One training phase under checkpointing: skipped if it finished before, resumed from its
    last step checkpoint if it has one, else trained from its start."""

    def __init__(self, session: Session | None, index: int, description: str, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, best: list[Any]):
        self.session, self.description, self.model, self.optimizer, self.best = (
            session, description, model, optimizer, best)
        self.finished: list[dict[str, Any]] | None = None
        self.resume_dir: Path | None = None
        self.saved: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
        if session is None:
            return
        self.dir = session.dir / f"phase-{index:02d}"
        self.name = f"{session.dir.name}: {description}"
        if self._load_done() or self._load_step():
            return
        # A fresh start invalidates whatever later phases may have left (they followed another start).
        for later in sorted(session.dir.glob("phase-*")) if session.dir.is_dir() else []:
            if later.name >= self.dir.name:
                shutil.rmtree(later, ignore_errors=True)

    # -- finding what a killed run left
    def _load_done(self) -> bool:
        done = self.dir / "done"
        if not done.is_dir():
            return False
        try:
            tensors, meta = _read(done, self.session.key, self.description)
            params = _sub(tensors, "model.")
            _check_shapes(self.model, params)
        except Exception as err:  # noqa: BLE001  (a damaged file of any kind: never a crash)
            warn(f"ignoring checkpoint {done}: {_reason(err)}; training {self.description} afresh")
            return False
        with torch.no_grad():
            for name, param in _trainable(self.model).items():
                param.copy_(params[name])
        self.finished = meta["history"]
        print(f"resuming {self.name} finished before: restored its result", flush=True)
        return True

    def _load_step(self) -> bool:
        latest = _latest_step(self.dir)
        if latest is None:
            return False
        try:
            tensors, meta = _read(latest, self.session.key, self.description)
            _check_shapes(self.model, _sub(tensors, "model."))
            if hasattr(self.optimizer, "same_selection") and not self.optimizer.same_selection(_sub(tensors, "optim.")):
                raise ValueError("its selection differs from this run's")
            if len(meta["best"]) != len(self.best):
                raise ValueError("its dev checks differ from this run's")
            json.loads((latest / TRAINER_STATE).read_text(encoding="utf-8"))["global_step"]
        except Exception as err:  # noqa: BLE001
            warn(f"ignoring checkpoint {latest}: {_reason(err)}; training {self.description} from its start")
            return False
        self.saved, self.resume_dir = (tensors, meta), latest
        print(f"resuming {self.name} from step {meta['step']} of {meta['max_steps']}", flush=True)
        return True

    # -- during training
    def collator(self, collate: Callable) -> Callable:
        self.recorder = RecordingCollator(collate) if self.session is not None else None
        return self.recorder or collate

    def callbacks(self) -> list[TrainerCallback]:
        return [Checkpointer(self)] if self.session is not None else []

    def train(self, trainer: Any) -> None:
        self.trainer = trainer
        if self.resume_dir is None:
            trainer.train()
            return
        from transformers.utils import logging as hf_logging

        # The checkpoint's model file holds only the trainable tensors (the frozen ones are θ0, rebuilt
        # by the stage): the Trainer's warning that the others are "missing" is expected, not news.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            trainer.train(resume_from_checkpoint=str(self.resume_dir))
        finally:
            hf_logging.set_verbosity(verbosity)

    def finish(self, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Record the finished phase (its tensors and log) and drop its step checkpoints."""
        if self.session is not None:
            _write(self.dir / "done", {f"model.{n}": p for n, p in _trainable(self.model).items()},
                   {"key": self.session.key, "description": self.description, "history": history})
            for step in self.dir.glob("step-*"):
                shutil.rmtree(step, ignore_errors=True)
        return history

    def save(self, state: Any, pending: dict[str, Any]) -> None:
        """A step checkpoint: what ``Checkpointer`` captured at the step's end, plus the
        tensors that stay unchanged until the next step begins (written then)."""
        tensors = dict(pending["tensors"])
        optim_tensors, optim_meta = _optimizer_state(self.optimizer)
        tensors |= {f"optim.{k}": v for k, v in optim_tensors.items()}
        best_meta = []
        for i, best in enumerate(self.best):
            best_tensors, meta = best.checkpoint_state()
            tensors |= {f"best.{i}.{k}": v for k, v in best_tensors.items()}
            best_meta.append(meta)
        scaler = getattr(getattr(self.trainer, "accelerator", None), "scaler", None)
        meta = {"key": self.session.key, "description": self.description, "step": state.global_step,
                "max_steps": state.max_steps, "optimizer": optim_meta, "best": best_meta,
                "scheduler": self.trainer.lr_scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, **pending["meta"]}
        _write_step(self.dir, state.global_step, tensors, meta, _trainable(self.model), trainer_state=state)


class LoopCheckpoints:
    """Step checkpoints of a plain PyTorch loop with no Trainer (MAD-G's generator): every
    ``checkpoint_every`` steps, the trained module's tensors, SparseAdamW's state, the schedule,
    the fp16 scaler, the global RNG states (dropout) and the log so far, in the files and
    directory layout of a Trainer phase's (``step-<s>/``, written atomically, the older removed).

    The loop's batches must come from a seeded stream that draws from no global RNG (MAD-G's
    sampler, shuffles and masking collator each have their own): a resumed loop draws again,
    without training, the batches it trained before, then restores the RNG states
    (:meth:`restore_rng`), so it continues exactly as the uninterrupted run did. Without a
    session (no ``checkpoint_every``) every method is a no-op."""

    def __init__(self, session: Session | None, index: int, description: str, module: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, max_steps: int):
        self.session, self.description, self.module, self.optimizer, self.max_steps = (
            session, description, module, optimizer, max_steps)
        self.saved: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
        if session is not None:
            self.dir = session.dir / f"phase-{index:02d}"
            self.name = f"{session.dir.name}: {description}"

    def resume(self, schedule: Any, scaler: Any = None) -> tuple[int, list[dict[str, Any]]]:
        """(steps already trained, their log): 0 and [] for a fresh start; else the module,
        optimizer, ``schedule`` and ``scaler`` are put back as the last checkpoint left them."""
        latest = _latest_step(self.dir) if self.session is not None else None
        if latest is None:
            return 0, []
        try:
            tensors, meta = _read(latest, self.session.key, self.description)
            _check_shapes(self.module, _sub(tensors, "model."))
            if meta.get("max_steps") != self.max_steps:
                raise ValueError(f"written for {meta.get('max_steps')} steps, not {self.max_steps}")
        except Exception as err:  # noqa: BLE001  (a damaged file of any kind: never a crash)
            warn(f"ignoring checkpoint {latest}: {_reason(err)}; training {self.description} from its start")
            return 0, []
        with torch.no_grad():
            for name, param in _trainable(self.module).items():
                param.copy_(tensors[f"model.{name}"])
        _restore_optimizer_state(self.optimizer, _sub(tensors, "optim."), meta["optimizer"])
        schedule.load_state_dict(meta["scheduler"])
        if scaler is not None and meta["scaler"] is not None:
            scaler.load_state_dict(meta["scaler"])
        self.saved = (tensors, meta)
        print(f"resuming {self.name} from step {meta['step']} of {self.max_steps}", flush=True)
        return int(meta["step"]), list(meta["log"])

    def restore_rng(self) -> None:
        """The global RNG states of the checkpoint resumed from (call once its batches are re-drawn)."""
        if self.saved is not None:
            tensors, meta = self.saved
            restore_rng(_sub(tensors, "rng."), meta["rng"], prefix="")
            self.saved = None

    def save(self, step: int, schedule: Any, scaler: Any, log: list[dict[str, Any]]) -> None:
        """A step checkpoint after ``step`` optimizer steps, if one is due (never at the last step:
        the run's own output follows it)."""
        if self.session is None or step % self.session.every or step >= self.max_steps:
            return
        rng_tensors, rng_meta = capture_rng("rng.")
        optim_tensors, optim_meta = _optimizer_state(self.optimizer)
        meta = {"key": self.session.key, "description": self.description, "step": step, "max_steps": self.max_steps,
                "optimizer": optim_meta, "scheduler": schedule.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_meta, "log": log}
        _write_step(self.dir, step, rng_tensors | {f"optim.{k}": v for k, v in optim_tensors.items()}, meta,
                    _trainable(self.module))


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{text[0]}" if text else type(err).__name__


class RecordingCollator:
    """The phase's collator, recording the RNG state before each call of the current epoch (a
    masked-LM collator draws its masks from the global RNG), and replaying recorded states on
    resume so that the prefetched batches get the masks they got in the uninterrupted run."""

    def __init__(self, collate: Callable):
        self.collate = collate
        self.calls = 0
        self.recent: deque[tuple[int, tuple[dict[str, torch.Tensor], dict[str, Any]]]] = deque(maxlen=64)
        self.replay: list[tuple[dict[str, torch.Tensor], dict[str, Any]]] = []
        self.after: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None

    def new_epoch(self) -> None:
        self.calls = 0
        self.recent.clear()

    def __call__(self, features: Any) -> Any:
        if self.replay:
            restore_rng(*self.replay.pop(0), prefix="")
        self.recent.append((self.calls, capture_rng("", cuda=False)))  # collators draw on the CPU
        self.calls += 1
        batch = self.collate(features)
        if not self.replay and self.after is not None:
            restore_rng(*self.after, prefix="")  # the state the uninterrupted run was in after its prefetch
            self.after = None
        return batch

    def prefetched(self, consumed: int) -> list[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
        """The states before the calls of this epoch past the first ``consumed`` (fetched, not yet trained)."""
        return [state for call, state in self.recent if call >= consumed]


class Checkpointer(TrainerCallback):
    """Writes the phase's step checkpoints, and on resume puts back what the Trainer does not."""

    def __init__(self, phase: Phase):
        self.phase = phase
        self.consumed = 0  # micro-batches trained in the current epoch
        self.pending: dict[str, Any] | None = None
        self.resumed_epoch = phase.saved is not None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.phase.saved is None:
            return
        tensors, meta = self.phase.saved
        # The Trainer has loaded the trainable tensors (model.safetensors) and its own state.
        _restore_optimizer_state(self.phase.optimizer, _sub(tensors, "optim."), meta["optimizer"])
        self.phase.trainer.lr_scheduler.load_state_dict(meta["scheduler"])
        scaler = getattr(self.phase.trainer.accelerator, "scaler", None)
        if scaler is not None and meta["scaler"] is not None:
            scaler.load_state_dict(meta["scaler"])
        for i, best in enumerate(self.phase.best):
            best.restore_checkpoint_state(_sub(tensors, f"best.{i}."), meta["best"][i])

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        recorder = self.phase.recorder
        recorder.new_epoch()
        self.consumed = 0
        if self.resumed_epoch:
            self.resumed_epoch = False
            tensors, meta = self.phase.saved
            after = (_sub(tensors, "rng.now."), meta["rng"]["now"])
            replay = [(_sub(tensors, f"rng.prefetched.{j}."), m) for j, m in enumerate(meta["rng"]["prefetched"])]
            if replay:
                recorder.replay, recorder.after = replay, after
            else:
                restore_rng(*after, prefix="")  # at an epoch's end: nothing was prefetched
            self.phase.saved = None

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.consumed += 1

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.pending is not None:  # nothing trainable has changed since the last step ended
            self.phase.save(state, self.pending)
            self.pending = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.consumed += 1
        every = self.phase.session.every
        if state.global_step % every or state.global_step >= state.max_steps:
            return
        # What changes before the next step begins (its batches are drawn): capture it now.
        tensors, now = capture_rng("rng.now.")
        prefetched = []
        for j, (rng_tensors, rng_meta) in enumerate(self.phase.recorder.prefetched(self.consumed)):
            tensors |= {f"rng.prefetched.{j}.{k}": v for k, v in rng_tensors.items()}
            prefetched.append(rng_meta)
        self.pending = {"tensors": tensors, "meta": {"rng": {"now": now, "prefetched": prefetched}}}
