"""``runtime.precision``: which numeric precision a training run uses, as the Trainer's own switches.

Mixed precision here is the Trainer's (accelerate's) autocast: the model's weights, and so
SparseAdamW's master copies and its K-sized state, stay fp32; only the forward and backward
matmuls run in bf16 / fp16. LT-SFT's guarantees therefore hold in every mode: SparseAdamW
writes only the selected entries (unselected ones stay bit-exactly θ0), and clips and adds
the L1 term over exactly the trainable entries. fp16 adds accelerate's GradScaler, whose
``step(optimizer)`` unscales every gradient in the optimizer's groups (our model parameters)
before calling ``SparseAdamW.step`` and skips that call on inf/NaN; tests/test_precision.py
checks both directly.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.errors import ConfigError

KEY = "runtime.precision"


def resolve(precision: str) -> str:
    """The mode a run uses on this machine: fp32, bf16 or fp16 (``auto``: bf16 where a CUDA
    GPU supports it, else fp32). A mode the machine cannot run → one line naming the key."""
    import torch  # here: the method registry imports this module, and it stays torch-free

    if precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError(f"{KEY}: fp16 needs a CUDA GPU (its gradient scaler and kernels); this machine has none "
                          "(use bf16, which runs on CPU, or fp32)")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"{KEY}: must be one of fp32, bf16, fp16, auto (got {precision!r})")
    return precision


def trainer_arguments(precision: str) -> dict[str, Any]:
    """TrainingArguments for ``precision`` (resolved first): the Trainer's bf16 / fp16 flags."""
    import torch

    mode = resolve(precision)
    arguments = {"bf16": mode == "bf16", "fp16": mode == "fp16"}
    if mode == "bf16" and not torch.cuda.is_available():
        arguments["use_cpu"] = True  # the Trainer runs bf16 autocast on a CPU only when told it is one
    return arguments


def autocast(mode: str, device_type: str) -> Any:
    """For a loop without the Trainer (MAD-G's generator): the autocast the Trainer would use
    for ``mode`` (resolved), a no-op for fp32. Weights and optimizer state stay fp32."""
    import torch

    if mode == "fp32":
        return torch.autocast(device_type, enabled=False)
    return torch.autocast(device_type, dtype=torch.bfloat16 if mode == "bf16" else torch.float16)


def grad_scaler(mode: str, device_type: str) -> Any:
    """The gradient scaler fp16 needs in a loop without the Trainer; None for fp32 and bf16."""
    import torch

    return torch.amp.GradScaler(device_type) if mode == "fp16" else None
