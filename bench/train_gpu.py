"""GPU benchmark of one training step of the 124M preset: plain torch, synthetic tokens, bf16 autocast and
torch.compile; prints tokens/s and MFU (PaLM FLOPs per token against the device's dense bf16 peak).

    python bench/train_gpu.py                       # on a GPU machine (bench/train_gpu.sh wraps it)
    ZHGPT_BENCH_SMOKE=1 python bench/train_gpu.py   # tiny shape on CPU, 3 steps: checks the script runs

Needs torch only (no Ray, MLflow, pydantic or network): the model and step modules are loaded by file path,
so the stages package (which imports pydantic) is never imported.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# `python bench/x.py` puts bench/ first on sys.path, where bench/tokenize.py would shadow the stdlib module
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import torch  # noqa: E402
TRAIN = HERE.parent / "stages" / "train"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"zhgpt_bench_{name}", TRAIN / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look the module up while the class is created
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    smoke = os.environ.get("ZHGPT_BENCH_SMOKE") == "1"
    model_mod, step_mod = load("model"), load("step")
    device = "cuda" if torch.cuda.is_available() and not smoke else "cpu"
    if smoke:  # tiny shape, CPU, no compile: proves the script end to end in seconds
        cfg = model_mod.GPTConfig(vocab_size=512, n_layer=2, n_head=2, d_model=64, max_seq_len=64)
        batch, seq, warm, steps, compile_ = 4, 64, 1, 3, False
    else:  # the 124m preset's shape (12 x 768) with a 32k Chinese vocab
        cfg = model_mod.GPTConfig(vocab_size=32000, n_layer=12, n_head=12, d_model=768, max_seq_len=1024)
        batch, seq, warm, steps, compile_ = int(os.environ.get("BENCH_BATCH", 32)), 1024, 8, 30, True
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    model = model_mod.GPT(cfg).to(device)
    opt = step_mod.make_optimizer(model, 6e-4, 0.1, (0.9, 0.95), fused=device == "cuda")
    fwd = torch.compile(model) if compile_ else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else None
    data = torch.randint(0, cfg.vocab_size, (warm + steps, batch, seq + 1), device=device)
    for i in range(warm):  # compile and allocator warm-up, excluded from the timing
        step_mod.train_step(fwd, opt, [data[i]], 6e-4, 1.0, autocast)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(warm, warm + steps):
        out = step_mod.train_step(fwd, opt, [data[i]], 6e-4, 1.0, autocast)
    if device == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    tok_s = batch * seq / dt
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = step_mod.peak_flops(name)
    fpt = model_mod.flops_per_token(cfg, seq)
    mfu = f"{tok_s * fpt / peak:.1%}" if peak else "n/a (no bf16 peak for this device)"
    print(f"device {name}; {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params; batch {batch}x{seq}; "
          f"compile {compile_}; loss {out['loss']:.3f}")
    print(f"step {dt * 1000:.1f} ms; {tok_s:,.0f} tokens/s; {fpt / 1e6:.0f} MFLOP/token; MFU {mfu} (goal >= 40%)")


if __name__ == "__main__":
    main()
