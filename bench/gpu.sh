#!/usr/bin/env bash
# Paper-size ViTPain on one GPU (bench/gpu_bench.py): the platform's AMP training epoch
# against a DataLoader loop (images/s, GPU utilisation from CUDA-event timers) and Serve
# throughput on the GPU, written as JSON.
#
#   bench/gpu.sh [OUTPUT_JSON]        default: $OUT/gpu.json when $OUT is set, else bench/results/gpu.json
#
# Needs a CUDA build of torch that sees a GPU; stops with exit code 2 and says why otherwise.
# About 5-8 minutes on one H100/H200-class GPU (synthetic data, 3 epochs a side, 2 × 10 s of load).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-.venv/bin/python}"
if [ ! -x "$PY" ]; then
    PY="$(command -v python3)"
fi
OUTPUT="${1:-${OUT:+$OUT/gpu.json}}"
OUTPUT="${OUTPUT:-bench/results/gpu.json}"

if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "bench/gpu.sh: $PY cannot import torch; run 'make setup' (or set PYTHON=...) first" >&2
    exit 2
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "bench/gpu.sh: no CUDA device: torch.cuda.is_available() is False" \
         "(torch $("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)'));" \
         "run it on a GPU machine with a CUDA build of torch" >&2
    exit 2
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
exec "$PY" bench/gpu_bench.py --output "$OUTPUT"
