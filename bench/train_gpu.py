"""GPU benchmark of one training step of the 124M preset: plain torch, synthetic tokens, bf16 autocast and
torch.compile; prints tokens/s and MFU (PaLM FLOPs per token against the device's dense bf16 peak) beside an
8192^3 bf16 matmul measured in the same run, then the stage's own Trainer on the same shape against that step.

    python bench/train_gpu.py                       # on a GPU machine (bench/train_gpu.sh wraps it)
    ZHGPT_BENCH_SMOKE=1 python bench/train_gpu.py   # tiny shape on CPU, 3 steps: checks the script runs
    BENCH_BATCH=32 BENCH_SDPA=flash BENCH_FUSED=1 BENCH_PROFILE=1 BENCH_LOOP=0 ...   # variants, a kernel table

Needs torch, numpy and pyarrow only (no Ray, MLflow, pydantic or network): the stages.train package builds its
stage spec (pydantic) lazily, and the Trainer takes the train config as the plain dict a worker receives.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict

import torch

from stages.train import gpus, model as model_mod, shapes, step as step_mod


def matmul_rate(device: str) -> float:
    """bf16 FLOP/s of a large square matmul on random data, measured now: the chip's practical ceiling."""
    n = 8192
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 2 * n ** 3 * 10 / (time.perf_counter() - t0)


def sdpa_context():
    """BENCH_SDPA=flash|cudnn|efficient pins the attention kernel; unset lets torch choose."""
    import contextlib

    name = os.environ.get("BENCH_SDPA")
    if not name:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kinds = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION}
    if name not in kinds:
        raise SystemExit(f"BENCH_SDPA={name!r}: expected one of {sorted(kinds)} (or unset)")
    return sdpa_kernel(kinds[name])


def fuse_projections() -> None:
    """BENCH_FUSED=1: q/k/v and gate/up as one matmul each (weights concatenated per call), to measure
    whether fusing them in the model would pay; parameters and their names are unchanged."""
    import torch.nn.functional as F

    def attn(self, x, cos, sin):
        B, T, _ = x.shape
        w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        q, k, v = F.linear(x, w).split([self.n_head * self.hd, self.n_kv * self.hd, self.n_kv * self.hd], -1)
        q = q.view(B, T, self.n_head, self.hd).transpose(1, 2)
        k = k.view(B, T, self.n_kv, self.hd).transpose(1, 2)
        v = v.view(B, T, self.n_kv, self.hd).transpose(1, 2)
        q, k = model_mod.apply_rope(q, cos, sin), model_mod.apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_kv != self.n_head)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))

    def mlp(self, x):
        gate, up = F.linear(x, torch.cat([self.gate_proj.weight, self.up_proj.weight])).chunk(2, -1)
        return self.down_proj(F.silu(gate) * up)

    model_mod.Attention.forward, model_mod.SwiGLU.forward = attn, mlp


def profile(step_fn, n: int = 3) -> None:
    """BENCH_PROFILE=1: the GPU kernels of n steps, largest total time first."""
    from torch.profiler import ProfilerActivity, profile as prof

    with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        for _ in range(n):
            step_fn()
        torch.cuda.synchronize()
    print(p.key_averages().table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=70))


def loop_rate(model: dict, batch: int, seq: int, warm: int, steps: int, compile_: bool, device: str) -> dict:
    """The stage's own Trainer on the same shape: synthetic token shards on disk (memory-mapped, as the stage
    reads them), per-step metrics, one evaluation and one checkpoint. Median step time after warm-up."""
    import statistics
    import tempfile
    from dataclasses import asdict

    import numpy as np
    import pyarrow as pa

    from stages.train.sections import OptimConfig, ParallelConfig
    from stages.train.trainer import RunInputs, Trainer

    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for split, rows in (("train", (warm + steps) * batch), ("val", 64)):
            ids = np.random.default_rng(1).integers(0, model["vocab_size"], rows * (seq + 1), dtype=np.uint16)
            tokens = pa.FixedSizeListArray.from_arrays(pa.array(ids), seq + 1)
            table = pa.table({"tokens": tokens, "source_name": pa.array(["synthetic"] * rows)})
            paths[split] = f"{d}/{split}.arrow"
            with pa.ipc.new_file(paths[split], table.schema) as w:
                w.write_table(table, max_chunksize=256)
        # the train config as a worker receives it (TrainConfig.model_dump(); no pydantic on this machine): the
        # fields the Trainer reads, its sections with their own defaults
        cfg = {"seed": 1337, "max_steps": warm + steps, "global_batch": batch, "mix": {}, "eval_every": None,
               "eval_tokens": 64 * seq, "optim": asdict(OptimConfig(lr=6e-4, warmup_steps=warm)),
               "parallel": asdict(ParallelConfig(compile=compile_))}
        inputs = RunInputs(model=model, train=[paths["train"]], val=[paths["val"]], tokenizer_digest="synthetic")
        t = Trainer(cfg, inputs, device=device)
        t.run(until=warm)
        times, mfu = [], []
        for _ in range(steps):
            m = t.train_one()
            times.append(m["step_seconds"])
            mfu.append(m.get("mfu", float("nan")))
        t0 = time.perf_counter()
        val = t.evaluate()["val/loss"]
        t_eval = time.perf_counter() - t0
        t0 = time.perf_counter()
        t.save(f"{d}/ckpt")
        t_save = time.perf_counter() - t0
    return {"step": statistics.median(times), "mfu": statistics.median(mfu), "val_loss": val,
            "eval_s": t_eval, "save_s": t_save}


def main() -> None:
    smoke = os.environ.get("ZHGPT_BENCH_SMOKE") == "1"
    attention = sdpa_context()  # an unknown BENCH_SDPA stops here, before any work
    device = "cuda" if torch.cuda.is_available() and not smoke else "cpu"
    mode = os.environ.get("BENCH_MODE") or None  # torch.compile mode, e.g. max-autotune-no-cudagraphs
    if smoke:  # tiny shape, CPU, no compile: proves the script end to end in seconds
        cfg = shapes.GPTConfig(vocab_size=512, n_layer=2, n_head=2, d_model=64, max_seq_len=64)
        batch, seq, warm, steps, compile_ = 4, 64, 1, 3, False
    else:  # the 124m preset's shape (12 x 768) with a 32k Chinese vocab
        cfg = shapes.GPTConfig(vocab_size=32000, n_layer=12, n_head=12, d_model=768, max_seq_len=1024)
        batch, seq, warm, steps, compile_ = int(os.environ.get("BENCH_BATCH", 64)), 1024, 8, 30, True
    micro = int(os.environ.get("BENCH_MICRO", batch))  # gradient accumulation when smaller than the batch
    if os.environ.get("BENCH_FUSED") == "1":
        fuse_projections()
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    ceiling = matmul_rate(device) if device == "cuda" else None
    model = model_mod.GPT(cfg).to(device)
    opt = step_mod.make_optimizer(model, 6e-4, 0.1, (0.9, 0.95), fused=device == "cuda")
    fwd = torch.compile(model, mode=mode) if compile_ else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else None
    # random tokens, a fresh batch per step (never zeros: they can run faster than real data)
    data = torch.randint(0, cfg.vocab_size, (warm + steps, batch, seq + 1), device=device)
    t_start = time.perf_counter()
    with attention:
        for i in range(warm):  # compile and allocator warm-up, excluded from the timing
            step_mod.train_step(fwd, opt, list(data[i].split(micro)), 6e-4, 1.0, autocast)
        if device == "cuda":
            torch.cuda.synchronize()
        t_warm = time.perf_counter() - t_start
        t0 = time.perf_counter()
        for i in range(warm, warm + steps):
            out = step_mod.train_step(fwd, opt, list(data[i].split(micro)), 6e-4, 1.0, autocast)
        if device == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / steps
        if os.environ.get("BENCH_PROFILE") == "1" and device == "cuda":
            profile(lambda: step_mod.train_step(fwd, opt, list(data[0].split(micro)), 6e-4, 1.0, autocast))
    tok_s = batch * seq / dt
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = gpus.peak_flops(name)
    fpt = shapes.flops_per_token(cfg, seq)
    mfu = f"{tok_s * fpt / peak:.1%}" if peak else "n/a (no bf16 peak for this device)"
    mem = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB peak" if device == "cuda" else "-"
    print(f"device {name}; torch {torch.__version__}; {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
          f"params; batch {batch}x{seq} (micro {micro}); compile {compile_} mode {mode}; "
          f"sdpa {os.environ.get('BENCH_SDPA', 'auto')}; fused {os.environ.get('BENCH_FUSED', '0')}; "
          f"warm-up {t_warm:.0f} s; {mem}; loss {out['loss']:.3f}")
    achieved = tok_s * fpt
    vs = f"; {achieved / ceiling:.1%} of an 8192^3 bf16 matmul measured now ({ceiling / 1e12:.0f} TFLOP/s)" \
        if ceiling else ""
    print(f"step {dt * 1000:.1f} ms; {tok_s:,.0f} tokens/s; {fpt / 1e6:.0f} MFLOP/token; "
          f"{achieved / 1e12:.0f} TFLOP/s; MFU {mfu} (goal >= 40%){vs}")
    if os.environ.get("BENCH_LOOP", "1") == "1":
        del model, opt, fwd, data
        if device == "cuda":
            torch.cuda.empty_cache()
        r = loop_rate(asdict(cfg), batch, seq, warm, steps, compile_, device)
        loop_mfu = f"{r['mfu']:.1%}" if r["mfu"] == r["mfu"] else "n/a"
        print(f"stage loop (Trainer, shards on disk): step {r['step'] * 1000:.1f} ms median, "
              f"{dt / r['step']:.3f}x the plain step's speed; MFU {loop_mfu}; "
              f"val loss {r['val_loss']:.3f}; eval {r['eval_s']:.1f} s; checkpoint {r['save_s']:.1f} s")


if __name__ == "__main__":
    main()
