"""Run one `ltsft` command (under torchrun) and record its peak GPU memory (scripts/gpu_check.sh).

``LTSFT_GPU_PEAK``: the JSON file this rank writes {"rank", "peak_gpu_memory_mib"} to at exit.
"""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path

import torch


def _write_peak() -> None:
    out = os.environ.get("LTSFT_GPU_PEAK")
    if out and torch.cuda.is_available():
        rank = int(os.environ.get("RANK", "0"))
        peak = torch.cuda.max_memory_allocated() / 2**20
        Path(f"{out}.rank{rank}").write_text(json.dumps({"rank": rank, "peak_gpu_memory_mib": peak}))


if __name__ == "__main__":
    atexit.register(_write_peak)
    from stages.cli import app

    app()
