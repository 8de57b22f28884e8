"""The train stage's `run(ctx)`: validate -> fit -> collect -> sample.

    validate  the tokenize stage's shards and tokenizer against the config; refuse to start beside an unfinished run
    fit       Ray Train (launch.py) to the final checkpoint, resuming from `.partial/ray` when it holds checkpoints
    collect   checkpoints/ and export/ from the final checkpoint; the final figures from its metrics.json
    sample    samples.txt from the configured prompts, and the CJK share of what was generated

The SentencePiece processor is loaded once here and handed to what needs it (eval sets, bytes per id, export,
samples).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipelines.dataset import PARTIAL, ShardInfo, write_file
from pipelines.faults import ENV as FAULT_ENV
from pipelines.io import atomic_path, read_json, write_bytes, write_json
from pipelines.stage import StageContext, StageResult
from pipelines.storage import stage_store
from stages.train.checkpoint import META, STATE, final_figures
from stages.train.data import TokenRows
from stages.train.evalsets import eval_rows, tokenize_eval_sets, unigram_bpb
from stages.train.launch import RAY_NAME, fit
from stages.train.trainer import RunInputs
from stages.train.upstream import TokenInfo, TrainInputError, load_tokenizer, spm_bytes_per_id, token_info

NAN = float("nan")


def model_config(cfg, info: TokenInfo) -> dict:
    """The preset with its overrides, checked against the shards and given the tokenizer's vocabulary."""
    try:
        m = cfg.model_shape()
    except (ValueError, TypeError) as exc:
        raise TrainInputError(f"train.model / train.preset: {exc}") from None
    if m.vocab_size is not None and m.vocab_size < info.vocab_size:
        raise TrainInputError(f"train: preset {cfg.preset!r} has vocab_size {m.vocab_size} but the tokenizer has "
                              f"{info.vocab_size} ids; drop vocab_size from the preset or use a smaller tokenizer")
    if m.max_seq_len < info.seq_len:
        raise TrainInputError(f"train: preset {cfg.preset!r} has max_seq_len {m.max_seq_len} but the shards hold "
                              f"{info.seq_len}-token sequences; set train.model.max_seq_len >= {info.seq_len}")
    m.vocab_size = info.vocab_size
    return m.to_dict()


def check_shards(info: TokenInfo) -> TokenRows:
    """The validation split exists, has the manifest's width, and its ids fit the tokenizer."""
    val = TokenRows(info.val, "val")
    if val.seq_len != info.seq_len:
        raise TrainInputError(f"tokenize: val rows hold {val.seq_len + 1} tokens, the manifest says seq_len "
                              f"{info.seq_len}")
    if (top := val.max_id()) >= info.vocab_size:
        raise TrainInputError(f"tokenize: val shards contain token id {top} >= vocab_size {info.vocab_size}: "
                              "they come from a different tokenizer; re-run tokenize")
    return val


def unfinished_siblings(ctx: StageContext) -> list[str]:
    """Other train runs (other cache keys) that hold checkpoints but no manifest, in the store of record."""
    fs, ours = stage_store(ctx)
    root = ours.rsplit("/", 1)[0]
    out = []
    for d in sorted(fs.ls(root, detail=False) if fs.exists(root) else []):
        d = d.rstrip("/")
        if d != ours and not fs.exists(f"{d}/manifest.json") and fs.glob(f"{d}/{PARTIAL}/{RAY_NAME}/step_*"):
            out.append(d)
    return out


def guard_resume(ctx: StageContext) -> None:
    """Refuse to start a fresh run beside an unfinished one (unless --fresh); --fresh also drops our own state."""
    fs, d = stage_store(ctx)
    ours = f"{d}/{PARTIAL}/{RAY_NAME}"
    if ctx.fresh:
        if fs.exists(ours):
            fs.rm(ours, recursive=True)
        return
    others = unfinished_siblings(ctx)
    if others and not fs.glob(f"{ours}/step_*"):
        raise TrainInputError(f"train: an unfinished run with another config is at {others[-1]}; re-run with that "
                              "config to resume it, or pass --fresh to start this one beside it")


def cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else 1


def run_inputs(ctx: StageContext, info: TokenInfo, model: dict, sp) -> RunInputs:
    """What every worker needs beside the config: shards, tokenizer facts, eval sets, resolved defaults."""
    from stages.train.parallel import default_parallel
    from stages.train.shapes import GPTConfig

    c, par = ctx.cfg, ctx.cfg.parallel
    if c.global_batch % par.num_workers:
        raise TrainInputError(f"train.global_batch {c.global_batch} does not divide by num_workers "
                              f"{par.num_workers} (train.parallel.num_workers)")
    return RunInputs(model=model, train=[str(p) for p in info.train], val=[str(p) for p in info.val],
                     tokenizer_digest=info.tokenizer_digest, bytes_per_id=spm_bytes_per_id(sp),
                     eval_sets=tokenize_eval_sets(ctx, info, sp),
                     strategy=par.strategy or default_parallel(GPTConfig(**model)),
                     torch_threads=par.torch_threads or max(1, cluster_cpus() // par.num_workers),
                     tracking_uri=ctx.tracking_uri, mlflow_run_id=ctx.mlflow_run_id,
                     init_from=str(c.init_from) if c.init_from else None,
                     fault=os.environ.get(FAULT_ENV), fault_marker=str(ctx.partial_dir / "fault-marker"),
                     progress_dir=str(ctx.out_dir))


def copy_shard(src: Path, stage_dir: Path, rel: str) -> ShardInfo:
    with atomic_path(stage_dir / rel) as tmp:
        shutil.copyfile(src, tmp)
    return ShardInfo.of(stage_dir, rel, 0)


def collect(ctx: StageContext, ckpt: Path, info: TokenInfo, sp) -> tuple[list[ShardInfo], list[ShardInfo], dict]:
    """Copy the final checkpoint into `checkpoints/` and export the HF folder into `export/`."""
    import torch

    from stages.train.export import export_hf
    from stages.train.shapes import GPTConfig

    meta = {**read_json(ckpt / META), "eos_id": info.eos_id}
    write_json(ctx.out_dir / "checkpoints" / META, meta, indent=1)
    ckpts = [copy_shard(ckpt / STATE, ctx.out_dir, f"checkpoints/{STATE}"),
             ShardInfo.of(ctx.out_dir, f"checkpoints/{META}", 0),
             write_file(info.tokenizer_model.read_bytes(), ctx.out_dir, "checkpoints/tokenizer.model")]
    state = torch.load(ckpt / STATE, map_location="cpu", weights_only=True)["model"]
    names = export_hf(state, GPTConfig(**meta["model"]), info.tokenizer_model, ctx.out_dir / "export",
                      bos_id=info.bos_id, eos_id=info.eos_id, sp=sp)
    return ckpts, [ShardInfo.of(ctx.out_dir, f"export/{n}", 0) for n in names], meta


def samples(ctx: StageContext, info: TokenInfo, sp) -> float:
    """samples.txt from the configured prompts (seeded); returns the CJK share of what was generated."""
    from stages.train.generate import load_model, sample_prompts

    model, _ = load_model(ctx.out_dir / "checkpoints")
    text, cjk = sample_prompts(model, sp, ctx.cfg.sample, info.eos_id)
    write_bytes(ctx.out_dir / "samples.txt", text.encode("utf-8"))
    return cjk


def run(ctx: StageContext) -> StageResult:
    c = ctx.cfg
    info = token_info(ctx.upstream["tokenize"])
    model = model_config(c, info)
    val = check_shards(info)
    guard_resume(ctx)
    sp = load_tokenizer(info)
    inputs = run_inputs(ctx, info, model, sp)
    ctx.log(f"preset {c.preset}: {c.max_steps} steps x {c.global_batch} x {info.seq_len} tokens, "
            f"{c.parallel.num_workers} worker(s)")
    ckpt = fit(ctx, inputs)
    ckpts, export, meta = collect(ctx, ckpt, info, sp)
    cjk = samples(ctx, info, sp)
    fig = final_figures(ckpt)  # the final checkpoint's figures: there whichever worker group finished the run
    uni = unigram_bpb(val, inputs.bytes_per_id, eval_rows(c.eval_tokens, info.seq_len))
    stats = {"steps": float(meta["step"]), "tokens": float(meta["samples_seen"] * info.seq_len),
             "final_loss": fig.get("loss", NAN), "val_loss": fig.get("val/loss", NAN),
             "val_bpb": fig.get("val/bpb", NAN), "unigram_bpb": uni, "cjk_fraction": cjk,
             "tokens_per_s": fig.get("tokens_per_s", NAN)}
    stats["bpb_ratio"] = stats["val_bpb"] / uni if uni else NAN
    extra = {"model": meta["model"], "tokenizer_digest": info.tokenizer_digest, "sources": meta["sources"],
             "mix": dict(c.mix), "seen_per_source": meta["seen_per_source"],
             "mlflow_metrics_run_id": meta.get("mlflow_run_id") or ctx.mlflow_run_id}
    said = (f"{stats['steps']:,.0f} steps, {stats['tokens']:,.0f} tokens; val {stats['val_bpb']:.3f} bits per byte "
            f"({stats['bpb_ratio']:.3f} of unigram); samples {cjk:.0%} CJK")
    return StageResult(outputs={"checkpoints": ckpts, "export": export}, stats=stats, extra=extra,
                       artifacts=["samples.txt"], summary=said)
