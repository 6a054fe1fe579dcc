"""The runtime a training run is in: its precision and, when checkpointing, its checkpoint session.

Precision and checkpoints are about the machine and the run, not about a method, so no
method carries them: the stage activates ``runtime`` params once (``configure``, before any
work, so that a mode this machine cannot run fails in a second), ``run_component`` opens a
checkpoint session for each component it trains (``component``), and ``run_trainer`` reads
``current()``. Outside both (library use, tests) a run is fp32 without checkpoints: today's
behaviour.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from pipeline.core import distributed
from pipeline.core import precision as precisions


@dataclass(frozen=True)
class Runtime:
    precision: str = "fp32"  # resolved for this machine: fp32, bf16 or fp16
    settings: Any = None  # pipeline.core.config.RuntimeSettings, where configured
    session: Any = None  # pipeline.core.resume.Session of the component being trained

    def phase(self, description: str, model: Any, optimizer: Any, best: Any) -> Any:
        """The checkpointing of one training phase (a pass-through without a session)."""
        from pipeline.core.resume import Phase

        if self.session is not None:
            return self.session.phase(description, model, optimizer, best)
        return Phase(None, 0, description, model, optimizer, list(best))

    def loop(self, description: str, module: Any, optimizer: Any, max_steps: int) -> Any:
        """The checkpointing of a plain training loop (no Trainer): no-ops without a session."""
        from pipeline.core.resume import LoopCheckpoints

        if self.session is not None:
            return self.session.loop(description, module, optimizer, max_steps)
        return LoopCheckpoints(None, 0, description, module, optimizer, max_steps)

    def trainer_arguments(self) -> dict[str, Any]:
        return precisions.trainer_arguments(self.precision)


_DEFAULT = Runtime()  # fp32, no checkpoints: a run outside any configured stage
_CURRENT: ContextVar[Runtime | None] = ContextVar("ltsft_runtime", default=None)


def current() -> Runtime:
    return _CURRENT.get() or _DEFAULT


def configure(settings: Any) -> Runtime:
    """Make ``settings`` (params' ``runtime`` section) this process's runtime; a precision this
    machine cannot run raises a ConfigError naming ``runtime.precision``."""
    runtime = Runtime(precisions.resolve(settings.precision), settings)
    _CURRENT.set(runtime)
    return runtime


@contextlib.contextmanager
def using(runtime: Runtime) -> Iterator[Runtime]:
    token = _CURRENT.set(runtime)
    try:
        yield runtime
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def component(settings: Any, identity: str, facts: dict[str, Any], model: Any, *data: Any) -> Iterator[Any]:
    """The runtime of one component's training under ``settings``: with ``checkpoint_every``, a
    checkpoint session keyed by ``facts``, the model's starting state and ``data``; yields the
    session (None without checkpoints), whose ``remove()`` the caller calls once outputs are saved."""
    from pipeline.core.resume import Session, run_key

    if settings is None:  # params without a runtime section (hand-built): the runtime as it is
        yield None
        return
    runtime = replace(current(), precision=precisions.resolve(settings.precision), settings=settings, session=None)
    processes = distributed.world_size()
    if settings.checkpoint_every and processes > 1:
        # Each process would need its own RNG states, and only one may write: not built yet.
        if distributed.is_main_process():
            print(f"ltsft: runtime.checkpoint_every: not supported with {processes} data-parallel processes yet; "
                  f"training {identity} without checkpoints", flush=True)
    elif settings.checkpoint_every:
        key = run_key({**facts, "precision": runtime.precision}, model, *data)
        runtime = replace(runtime, session=Session(settings.checkpoint_dir, identity, key, settings.checkpoint_every))
    with using(runtime):
        yield runtime.session
