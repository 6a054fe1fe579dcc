#!/usr/bin/env bash
# GPU check: is this checkout ready for a GPU cluster? One JSON out; sized for < 8 minutes on one
# modern GPU (not yet timed on one).
#
#   bash scripts/gpu_check.sh [OUT.json]      (default: gpu_check.json in the current directory)
#
# 1. the throughput section of `ltsft bench` at mBERT's geometry (12 layers, vocabulary 119,547,
#    batch 8 x 256): plain Trainer fine-tuning against LT-SFT phase 1 and 2, tagging and masked
#    LM, in fp32 and in bf16, with peak GPU memory (torch.cuda.max_memory_allocated);
# 2. the GPU-only unit test (SparseAdamW built before the Trainer moves the model to the GPU);
# 3. a one-GPU `torchrun --nproc_per_node 1` of a smoke-preset training stage (LT-SFT language
#    diff) in a scratch copy, with its wall time and peak GPU memory.
# Works from a fresh checkout: it makes .venv and runs `pip install -e .` when `ltsft` is not
# importable (package registries only). Without a GPU it says so and exits 0.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(realpath -m "${1:-gpu_check.json}")"
say() { echo "[gpu_check] $*" >&2; }

# LTSFT_GPU_CHECK_ON_CPU=1: a rehearsal of every step on the CPU with a small geometry (to
# test this script where no GPU is; its figures say nothing about GPUs).
ON_CPU="${LTSFT_GPU_CHECK_ON_CPU:-}"
BENCH_ARGS=(--geometry mbert --rounds 3)
[ -n "$ON_CPU" ] && BENCH_ARGS=(--geometry small --rounds 1 --timed 2)
if [ -z "$ON_CPU" ] && { ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; }; then
    say "no GPU on this machine (nvidia-smi finds none): nothing to check"
    exit 0
fi

# ---------------------------------------------------------------- environment
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import pipeline, stages, transformers" >/dev/null 2>&1; then
    if [ ! -x "$REPO/.venv/bin/python" ]; then
        say "creating $REPO/.venv"
        python3 -m venv "$REPO/.venv"
    fi
    # shellcheck disable=SC1091
    . "$REPO/.venv/bin/activate"
    PYTHON=python
    if ! "$PYTHON" -c "import pipeline, stages, transformers" >/dev/null 2>&1; then
        say "installing the project (pip install -e .)"
        (cd "$REPO" && pip install -q -e .)
    fi
fi
if [ -z "$ON_CPU" ] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    say "a GPU is present but this torch cannot use it: $("$PYTHON" -c 'import torch; print(torch.__version__)')"
    say "install a CUDA build of torch into the environment, then run again"
    exit 1
fi
BIN="$(dirname "$(command -v "$PYTHON")")"
WORK="$(mktemp -d -t ltsft-gpu-check-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)

# ---------------------------------------------------------------- 1. throughput, fp32 and bf16
cd "$REPO"
for precision in fp32 bf16; do
    flag=(); [ "$precision" = bf16 ] && flag=(--bf16)
    say "throughput: ${BENCH_ARGS[*]}, $precision"
    "$PYTHON" -m stages.cli bench --only-throughput "${BENCH_ARGS[@]}" "${flag[@]}" \
        --json "$WORK/throughput_$precision.json" > "$WORK/throughput_$precision.txt"
done

# ---------------------------------------------------------------- 2. GPU-only unit tests
say "GPU-only unit tests"
if "$PYTHON" -m pytest --version >/dev/null 2>&1; then
    if "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_sparse_adamw.py -k cuda > "$WORK/pytest.txt" 2>&1; then
        tail -1 "$WORK/pytest.txt" | tr -d '=' | sed 's/^ *//' > "$WORK/pytest_status"  # "1 passed, 15 deselected in 2s"
    else
        echo failed > "$WORK/pytest_status"; tail -20 "$WORK/pytest.txt" >&2
    fi
else
    echo "not run (pytest not installed: pip install -e '.[dev]')" > "$WORK/pytest_status"
fi

# ---------------------------------------------------------------- 3. torchrun, one GPU, smoke stage
say "torchrun --nproc_per_node 1: smoke preset, train-lang en --method lt-sft"
SMOKE="$WORK/smoke"
mkdir -p "$SMOKE"
git -C "$REPO" ls-files -z | (cd "$REPO" && xargs -0 cp --parents -t "$SMOKE")
cd "$SMOKE"
"$PYTHON" -m stages.cli preset smoke > /dev/null
"$PYTHON" -m stages.cli download > "$WORK/smoke_prepare.txt" 2>&1
"$PYTHON" -m stages.cli prepare-model >> "$WORK/smoke_prepare.txt" 2>&1
stage_start=$(date +%s.%N)
if LTSFT_GPU_PEAK="$WORK/stage_peak.json" "$BIN/torchrun" --standalone --nproc_per_node 1 \
        "$SMOKE/scripts/gpu_stage.py" train-lang en --method lt-sft > "$WORK/torchrun.txt" 2>&1; then
    echo passed > "$WORK/torchrun_status"
else
    echo failed > "$WORK/torchrun_status"; tail -30 "$WORK/torchrun.txt" >&2
fi
stage_end=$(date +%s.%N)
cd "$REPO"

# ---------------------------------------------------------------- one JSON
"$PYTHON" - "$WORK" "$OUT" "$stage_start" "$stage_end" "$START" "$SMOKE" <<'EOF'
import json, subprocess, sys, time
from pathlib import Path

work, out, stage_start, stage_end, start, smoke = sys.argv[1:]
work = Path(work)
import torch

gpu = torch.cuda.is_available()  # false only in the CPU rehearsal (LTSFT_GPU_CHECK_ON_CPU)
result = {
    "gpu": torch.cuda.get_device_name(0) if gpu else None,
    "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if gpu else None,
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "bf16_supported": torch.cuda.is_bf16_supported() if gpu else None,
}
for precision in ("fp32", "bf16"):
    path = work / f"throughput_{precision}.json"
    result[f"throughput_{precision}"] = json.loads(path.read_text()) if path.is_file() else None
result["gpu_unit_tests"] = (work / "pytest_status").read_text().strip()
peaks = [json.loads(p.read_text())["peak_gpu_memory_mib"] for p in sorted(work.glob("stage_peak.json.rank*"))]
diffs = sorted(str(p.relative_to(smoke)) for p in Path(smoke).glob("diffs/**/*") if p.is_file())
result["torchrun_smoke_stage"] = {
    "command": "torchrun --standalone --nproc_per_node 1 scripts/gpu_stage.py train-lang en --method lt-sft",
    "status": (work / "torchrun_status").read_text().strip(),
    "wall_seconds": float(stage_end) - float(stage_start),
    "peak_gpu_memory_mib": max(peaks) if peaks else None,
    "outputs": diffs[:20],
}
result["wall_seconds"] = time.time() - float(start)
Path(out).write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps({k: v for k, v in result.items() if not k.startswith("throughput")}, indent=2))
for precision in ("fp32", "bf16"):
    t = result[f"throughput_{precision}"] or {}
    print(precision, {k: round(v, 3) for k, v in t.items() if k.endswith("over_plain") and v is not None})
EOF
say "wrote $OUT"
if [ "$(cat "$WORK/torchrun_status")" != passed ] || grep -q "^failed" "$WORK/pytest_status"; then
    exit 1
fi
