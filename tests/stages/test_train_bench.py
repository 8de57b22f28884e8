"""bench/train_gpu.sh is ready for a GPU machine: its CPU smoke mode (tiny shape, 3 steps, then the stage Trainer)
runs end to end.

Run: `.venv/bin/python -m pytest -q tests/stages/test_train_bench.py`
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_bench_script_runs_in_cpu_smoke_mode():
    env = {**os.environ, "ZHGPT_BENCH_SMOKE": "1", "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(ROOT / "bench" / "train_gpu.sh")], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "tokens/s" in out.stdout and "MFU n/a" in out.stdout  # no bf16 peak for a CPU
    # the stage's Trainer ran the same shape from shards on disk, evaluated (near ln 512 on random ids) and saved
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("stage loop"))
    assert "x the plain step's speed" in line and 5.5 < float(line.split("val loss ")[1].split(";")[0]) < 7.0
