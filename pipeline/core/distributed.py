"""Which process this is when a stage runs data-parallel (``torchrun`` / ``accelerate launch``).

Launched with N processes, every process runs the whole stage: each builds the same θ0 from
the same seed, and transformers' Trainer gives each its shard of every batch and averages
the gradients (DDP) before our optimizer steps, so all of them hold the same weights at every
step. Everything that is not training happens once: rank 0 decides (LT-SFT's selection,
broadcast to the others: :func:`shared_from_main`), writes and prints
(:func:`is_main_process`); the others wait at a :func:`barrier` so that the stage ends when
its outputs are complete.

With one process (no ``WORLD_SIZE`` > 1 in the environment) every function here is a no-op
that touches no process group: single-process runs are exactly what they were.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pipeline.core.errors import ConfigError, LtsftError

T = TypeVar("T")


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """How many processes train together (1 without a launcher)."""
    if _env_int("WORLD_SIZE", 1) > 1 and _initialized():
        import torch.distributed as dist

        return dist.get_world_size()
    return max(_env_int("WORLD_SIZE", 1), 1)


def rank() -> int:
    """This process's global rank (0 without a launcher)."""
    if world_size() > 1 and _initialized():
        import torch.distributed as dist

        return dist.get_rank()
    return _env_int("RANK", 0)


def is_main_process() -> bool:
    """Whether this process writes outputs and prints (rank 0, or the only process)."""
    return rank() == 0


def _uses_cpu() -> bool:
    """No CUDA device: DDP then runs over gloo on CPU (how it is tested on a CPU machine)."""
    import torch

    return not torch.cuda.is_available()


def ensure_process_group() -> None:
    """Join the launcher's process group if nothing has yet (the Trainer does on its first run;
    a barrier before any training needs it earlier). accelerate's ``PartialState`` does it the
    way the Trainer will: gloo on CPU, NCCL with the local rank's GPU on CUDA machines."""
    if world_size() <= 1 or _initialized():
        return
    from accelerate import PartialState

    cpu = _uses_cpu()
    PartialState(cpu=cpu, backend="gloo" if cpu else None)


def barrier() -> None:
    """Wait until every process gets here (no-op in a single process)."""
    if world_size() <= 1:
        return
    import torch.distributed as dist

    ensure_process_group()
    dist.barrier()


def shared_from_main(compute: Callable[[], T]) -> T:
    """``compute()`` on rank 0 only, its result sent to every process (picklable objects;
    tensors travel on the CPU). One process: just ``compute()``."""
    if world_size() <= 1:
        return compute()
    import torch.distributed as dist

    ensure_process_group()
    box: list[Any] = [compute() if is_main_process() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def trainer_arguments(batch_size: int, description: str) -> dict[str, Any]:
    """The TrainingArguments that make N launched processes shard each batch.

    ``batch_size`` stays the GLOBAL batch (one optimizer step sees the same examples as with
    one process), so each process takes ``batch_size / N``. On a machine without CUDA,
    transformers 5 only runs DDP when told to use the CPU: ``use_cpu=True`` makes accelerate's
    state ``MULTI_CPU`` (else the Trainer reports ``NOT_PARALLEL`` and every rank trains on
    everything), and ``ddp_backend="gloo"`` keeps it from picking MPI where torch has it.
    """
    size = world_size()
    if size == 1:
        return {"per_device_train_batch_size": _one_process_batch(batch_size, description)}
    if batch_size % size:
        raise LtsftError(f"{description}: batch_size {batch_size} is not divisible by the {size} processes")
    arguments: dict[str, Any] = {"per_device_train_batch_size": batch_size // size}
    if _uses_cpu():
        arguments |= {"use_cpu": True, "ddp_backend": "gloo"}
    return arguments


def _one_process_batch(batch_size: int, description: str) -> int:
    """One process that sees G > 1 GPUs: the Trainer wraps the model in ``nn.DataParallel``
    and takes ``per_device_train_batch_size × G`` examples per step, so the per-device batch
    is ``batch_size / G`` to keep params.yaml's batch the step's batch."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus <= 1:
        return batch_size
    if batch_size % gpus:
        raise LtsftError(f"{description}: batch_size {batch_size} is not divisible by the {gpus} visible GPUs "
                         "(set CUDA_VISIBLE_DEVICES to one GPU, or launch with torchrun)")
    return batch_size // gpus


def check_batch_sizes(tree: Mapping[str, Any], size: int | None = None, prefix: str = "") -> None:
    """Fail before any work, naming the first training ``batch_size`` key of a params tree that
    ``size`` processes (default: this launch's) cannot split evenly. ``eval`` batches are not
    split (every process scores the whole dev set), so they are not checked."""
    size = world_size() if size is None else size
    if size <= 1:
        return
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if dotted == "eval":
            continue
        if isinstance(value, Mapping):
            check_batch_sizes(value, size, dotted)
        elif key == "batch_size" and isinstance(value, int) and value % size:
            raise ConfigError(f"{dotted}: {value} is not divisible by the {size} data-parallel processes "
                              f"(it is the global batch; each process takes batch_size / {size})")
