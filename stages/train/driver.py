"""The train stage's driver side: check inputs, start Ray Train's TorchTrainer, collect outputs.

Called by stages.train.run(ctx). Ray Train keeps its run under `<stage dir>/.partial/ray` (storage_path +
name), so re-running the stage after a kill resumes from the latest checkpoint there.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from pipelines.dataset import PARTIAL, ShardInfo, write_arrow, write_file
from pipelines.stage import StageContext, StageResult
from pipelines.storage import ray_storage, stage_store
from stages.train.data import TokenRows, bytes_per_id
from stages.train.upstream import TokenInfo, token_info

RAY_NAME = "ray"
CKPT_FILES = ["state.pt", "meta.json", "tokenizer.model"]


class TrainInputError(ValueError):
    """Bad input to the train stage: one line that says what is wrong and how to fix it."""


def model_config(cfg, info: TokenInfo) -> dict:
    from stages.train.model import load_preset

    try:
        m = load_preset(cfg.preset, **cfg.model)
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


def spm_facts(model_path: Path) -> tuple[list[float], int | None]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    n = sp.get_piece_size()
    kinds = ["byte" if sp.is_byte(i) else "control" if sp.is_control(i) or sp.is_unknown(i) else "normal"
             for i in range(n)]
    bos = sp.bos_id() if sp.bos_id() >= 0 else None
    return bytes_per_id([sp.id_to_piece(i) for i in range(n)], kinds).tolist(), bos


def eval_corpora(ctx: StageContext, info: TokenInfo) -> dict[str, list[str]]:
    """Tokenize each eval_sets corpus with the run's tokenizer into seq_len+1 rows (Arrow, under .partial)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(info.tokenizer_model))
    out = {}
    for name, path in sorted(ctx.cfg.eval_sets.items()):
        path = Path(path)
        texts = (pq.read_table(path, columns=["text"]).column("text").to_pylist() if path.suffix == ".parquet"
                 else [t for t in path.read_text(encoding="utf-8").split("\n\n") if t.strip()])
        ids = np.concatenate([np.array(sp.encode(t) + [info.eos_id], dtype=np.uint32) for t in texts] or [[]])
        w = info.seq_len + 1
        n = len(ids) // w
        if n == 0:
            raise TrainInputError(f"train.eval_sets.{name}: {path} has {len(ids)} tokens, fewer than one "
                                  f"{w}-token row")
        toks = pa.FixedSizeListArray.from_arrays(pa.array(ids[:n * w]), w)
        t = pa.table({"tokens": toks, "source_name": pa.array([name] * n)})
        info_ = write_arrow(t, ctx.partial_dir, f"eval/{name}.arrow")
        out[name] = [str(ctx.partial_dir / info_.path)]
        _log_eval_input(ctx, name, path, info_.sha256)
    return out


def _log_eval_input(ctx: StageContext, name: str, path: Path, digest: str) -> None:
    if not (ctx.tracking_uri and ctx.mlflow_run_id):
        return
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.tracking import MlflowClient

    ds = Dataset(name=f"eval.{name}", digest=digest[:32], source_type="local",
                 source=json.dumps({"uri": str(Path(path).resolve())}))
    MlflowClient(ctx.tracking_uri).log_inputs(ctx.mlflow_run_id, datasets=[
        DatasetInput(ds, tags=[InputTag("mlflow.data.context", "eval")])])


def unigram_bpb(val: TokenRows, bpi: list[float], rows: int) -> float:
    """Bits per byte of the validation rows under their own unigram distribution: the yardstick to beat."""
    toks = val.take(np.arange(min(len(val), rows)))[:, 1:].ravel()
    counts = np.bincount(toks)
    p = counts[counts > 0] / counts.sum()
    bits = -(counts[counts > 0] * np.log2(p)).sum()
    return float(bits / np.asarray(bpi)[toks].sum())


def loop_config(ctx: StageContext, info: TokenInfo, model: dict, bpi: list[float], workers: int) -> dict:
    import os

    from pipelines.faults import ENV as FAULT_ENV
    from stages.train.model import GPTConfig
    from stages.train.parallel import default_parallel

    c = ctx.cfg
    if c.global_batch % workers:
        raise TrainInputError(f"train.global_batch {c.global_batch} does not divide by num_workers {workers}")
    threads = c.torch_threads or max(1, ctx_cpus() // workers)
    return dict(model=model, train_paths=[str(p) for p in info.train], val_paths=[str(p) for p in info.val],
                tokenizer_digest=info.tokenizer_digest, seed=c.seed, max_steps=c.max_steps,
                global_batch=c.global_batch, micro_batch=c.micro_batch, lr=c.lr, min_lr_frac=c.min_lr_frac,
                warmup_steps=c.warmup_steps, schedule=c.schedule, weight_decay=c.weight_decay, betas=tuple(c.betas),
                grad_clip=c.grad_clip, mix=dict(c.mix), eval_every=c.eval_every,
                eval_rows=max(1, math.ceil(c.eval_tokens / info.seq_len)), eval_sets=eval_corpora(ctx, info),
                bytes_per_id=bpi, checkpoint_every=c.checkpoint_every, log_every=c.log_every,
                tracking_uri=ctx.tracking_uri, mlflow_run_id=ctx.mlflow_run_id, init_from=_init_dir(c.init_from),
                compile=c.compile, activation_checkpointing=c.activation_checkpointing, torch_threads=threads,
                parallel=c.parallel or default_parallel(GPTConfig(**model)),
                fault=os.environ.get(FAULT_ENV), fault_marker=str(ctx.partial_dir / "fault-marker"))


def ctx_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else 1


def _init_dir(path) -> str | None:
    if path is None:
        return None
    from stages.train.generate import find_checkpoint

    return str(find_checkpoint(Path(path)))


def fit(ctx: StageContext, loop_cfg: dict) -> tuple[Path, dict]:
    """Run TorchTrainer to the end (resuming from .partial/ray when it holds checkpoints)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from stages.train.loop import train_loop_per_worker

    c = ctx.cfg
    storage_path, storage_fs = ray_storage(ctx)  # the stage's .partial/ in the store of record (S3 or local)
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_cfg,
        scaling_config=ScalingConfig(num_workers=c.num_workers, use_gpu=c.use_gpu,
                                     resources_per_worker={"CPU": loop_cfg["torch_threads"]} if not c.use_gpu else None),
        # a dead gloo peer must fail the step in minutes, not torch's 30-minute default (ray #22349)
        torch_config=TorchConfig(backend="nccl" if c.use_gpu else "gloo", timeout_s=300),
        run_config=RunConfig(name=RAY_NAME, storage_path=storage_path, storage_filesystem=storage_fs,
                             failure_config=FailureConfig(max_failures=c.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=c.keep_checkpoints)))
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError("Ray Train finished without a checkpoint")
    if storage_fs is None:
        return Path(result.checkpoint.path), (result.return_value or {})
    local = ctx.partial_dir / "final-checkpoint"
    shutil.rmtree(local, ignore_errors=True)
    return Path(result.checkpoint.to_directory(str(local))), (result.return_value or {})


def collect(ctx: StageContext, ckpt: Path, info: TokenInfo) -> tuple[list[ShardInfo], list[ShardInfo], dict]:
    """Copy the final checkpoint into `checkpoints/` and export the HF folder into `export/`."""
    import torch

    from stages.train.export import export_hf
    from stages.train.model import GPTConfig

    meta = json.loads((ckpt / "meta.json").read_text())
    meta["eos_id"] = info.eos_id
    ckpts = [write_file((ckpt / "state.pt").read_bytes(), ctx.out_dir, "checkpoints/state.pt"),
             write_file(json.dumps(meta, ensure_ascii=False, indent=1).encode(), ctx.out_dir, "checkpoints/meta.json"),
             write_file(info.tokenizer_model.read_bytes(), ctx.out_dir, "checkpoints/tokenizer.model")]
    state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)["model"]
    _, bos = spm_facts(info.tokenizer_model)
    names = export_hf(state, GPTConfig(**meta["model"]), info.tokenizer_model, ctx.out_dir / "export",
                      bos_id=bos, eos_id=info.eos_id)
    export = [ShardInfo.of(ctx.out_dir, f"export/{n}", 0) for n in names]
    return ckpts, export, meta


def samples(ctx: StageContext, info: TokenInfo) -> tuple[str, float]:
    """Generate from the configured prompts (seeded) and measure the CJK share of what was generated."""
    import sentencepiece as spm

    from stages.train.generate import cjk_fraction, generate_texts, load_model

    model, _ = load_model(ctx.out_dir / "checkpoints")
    sp = spm.SentencePieceProcessor(model_file=str(info.tokenizer_model))
    draws = ctx.cfg.sample_draws
    outs, parts = [], []
    for i, p in enumerate(ctx.cfg.prompts):  # the draws of one prompt are one batch, seeded by its index
        got = generate_texts(model, sp, p, draws, ctx.cfg.sample_tokens, ctx.cfg.sample_temperature, seed=i,
                             eos_id=info.eos_id)
        for j, o in enumerate(got):
            outs.append(o)
            parts.append(f"## {p}" + (f" ({j + 1}/{draws})" if draws > 1 else "") + f"\n{p}{o}")
    return "\n\n".join(parts) + "\n", cjk_fraction("".join(outs))


def run_train(ctx: StageContext) -> StageResult:
    info = token_info(ctx.upstream["tokenize"])
    model = model_config(ctx.cfg, info)
    val = check_shards(info)
    guard_resume(ctx)
    bpi, _ = spm_facts(info.tokenizer_model)
    loop_cfg = loop_config(ctx, info, model, bpi, ctx.cfg.num_workers)
    ctx.log(f"preset {ctx.cfg.preset}: {ctx.cfg.max_steps} steps x {ctx.cfg.global_batch} x {info.seq_len} tokens, "
            f"{ctx.cfg.num_workers} worker(s)")
    ckpt, final = fit(ctx, loop_cfg)
    ckpts, export, meta = collect(ctx, ckpt, info)
    text, cjk = samples(ctx, info)
    (ctx.out_dir / "samples.txt").write_text(text, encoding="utf-8")
    uni = unigram_bpb(val, bpi, loop_cfg["eval_rows"])
    stats = {"steps": float(meta["step"]), "tokens": float(meta["samples_seen"] * info.seq_len),
             "final_loss": final.get("loss", float("nan")), "val_loss": final.get("val/loss", float("nan")),
             "val_bpb": final.get("val/bpb", float("nan")), "unigram_bpb": uni, "cjk_fraction": cjk,
             "tokens_per_s": final.get("tokens_per_s", float("nan"))}
    stats["bpb_ratio"] = stats["val_bpb"] / uni if uni else float("nan")
    extra = {"model": meta["model"], "tokenizer_digest": info.tokenizer_digest, "sources": meta["sources"],
             "mix": dict(ctx.cfg.mix), "seen_per_source": meta["seen_per_source"],
             "mlflow_metrics_run_id": final.get("mlflow_run_id") or ctx.mlflow_run_id}
    return StageResult(outputs={"checkpoints": ckpts, "export": export}, stats=stats, extra=extra,
                       artifacts=["samples.txt"])
