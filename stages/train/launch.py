"""Ray Train: the driver's TorchTrainer (`fit`) and the worker entry point (`train_loop_per_worker`).

Every worker receives the train config as `cfg.model_dump(mode="json")` and the driver's RunInputs. Every rank
calls ray.train.report at the same steps (it is a barrier); rank 0 writes the checkpoint (with FSDP every rank
first joins the gather of the full state) and logs per-step metrics to MLflow from a background thread.

The stage's final figures come from the final checkpoint (its metrics.json), never from the workers' return value:
a worker group restarted after the final checkpoint was registered resumes there, trains no step and has nothing
to return, while result.checkpoint still names that checkpoint.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipelines.faults import adopt, armed, fault_point
from stages.train.sections import CheckpointConfig
from stages.train.trainer import RunInputs, Trainer

RAY_NAME = "ray"
WARM_STEPS = 3  # steps left out of the median step time (start-up, allocator warm-up)


def fit(ctx, inputs: RunInputs) -> Path:
    """Run TorchTrainer to the end (resuming from .partial/ray when it holds checkpoints); the final checkpoint's
    local directory."""
    from ray.train import CheckpointConfig as RayCheckpoints, FailureConfig, RunConfig, ScalingConfig, WorkerGroupError
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipelines.stage import task_error
    from pipelines.storage import ray_storage

    par, keep = ctx.cfg.parallel, ctx.cfg.checkpoint.keep
    storage_path, storage_fs = ray_storage(ctx)  # the stage's .partial/ in the store of record (S3 or local)
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config={"cfg": ctx.cfg.model_dump(mode="json"), "inputs": asdict(inputs)},
        scaling_config=ScalingConfig(num_workers=par.num_workers, use_gpu=par.use_gpu,
                                     resources_per_worker=None if par.use_gpu else {"CPU": inputs.torch_threads}),
        # a dead gloo peer must fail the step in minutes, not torch's 30-minute default (ray #22349)
        torch_config=TorchConfig(backend="nccl" if par.use_gpu else "gloo", timeout_s=300),
        run_config=RunConfig(name=RAY_NAME, storage_path=storage_path, storage_filesystem=storage_fs,
                             failure_config=FailureConfig(max_failures=par.max_failures),
                             checkpoint_config=RayCheckpoints(num_to_keep=keep)))
    try:
        result = trainer.fit()
    except WorkerGroupError as exc:  # the lowest rank's own error, not Ray's multi-line report of every rank's
        raise task_error(exc.worker_failures[min(exc.worker_failures)]) from exc
    if result.checkpoint is None:
        raise RuntimeError("Ray Train finished without a checkpoint")
    if storage_fs is None:
        return Path(result.checkpoint.path)
    local = ctx.partial_dir / "final-checkpoint"
    shutil.rmtree(local, ignore_errors=True)
    return Path(result.checkpoint.to_directory(str(local)))


def report(t: Trainer, metrics: dict[str, float], final: bool) -> None:
    """Every rank calls this at the same steps (ray.train.report is a barrier); rank 0 brings the checkpoint."""
    import ray.train

    ckpt = None
    state = t.full_state() if t.sharded or t.rank == 0 else None  # a collective when sharded
    if t.rank == 0:
        d = tempfile.mkdtemp(prefix="zhgpt-ckpt-")
        t.save(d, state)
        ckpt = ray.train.Checkpoint.from_directory(d)
    keep = {k: v for k, v in metrics.items() if k in ("loss", "val/loss", "val/bpb")}
    ray.train.report({**keep, "step": t.step, "final": final}, checkpoint=ckpt,
                     checkpoint_dir_name=f"step_{t.step:08d}")


def fault_after_report(t: Trainer) -> None:
    """ZHGPT_FAULT=train.rank<R>.reported@<step> SIGKILLs rank R (once) when Ray Train has taken its report of that
    step, so the checkpoint reported there is registered: a worker lost after the final checkpoint."""
    site = f"train.rank{t.rank}.reported"
    if armed(site, t.step):
        from ray.train.v2._internal.execution.context import get_train_context

        get_train_context().get_result_queue().join()  # the controller polled this rank's report
        fault_point(site, t.step, f"{t.inputs.fault_marker or 'fault-marker'}.reported")


def train_loop_per_worker(config: dict) -> None:
    """Ray Train V2 entry point: resume from the run's latest checkpoint (or init_from), train, report."""
    import ray.train
    import ray.train.torch
    import torch

    from pipelines.progress import channel
    from stages.train.metrics import MetricLog

    cfg, inputs = config["cfg"], RunInputs(**config["inputs"])
    adopt(inputs.fault)  # Ray Train V2 passes workers no environment
    ctx = ray.train.get_context()
    device = ray.train.torch.get_device() if torch.cuda.is_available() else "cpu"
    t = Trainer(cfg, inputs, ctx.get_world_rank(), ctx.get_world_size(), device)
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            t.load(d)
    elif inputs.init_from:
        t.load(inputs.init_from, weights_only_init=True)
    log = MetricLog(inputs.tracking_uri, t.run_id, cfg["log_every"]) if t.rank == 0 else MetricLog("", None, 1)
    every = CheckpointConfig(**cfg["checkpoint"]).every
    times: list[float] = []  # wall time from one step's end to the next's: logging and reporting included
    progress = channel(inputs.progress_dir) if t.rank == 0 and inputs.progress_dir else None
    clock = time.perf_counter()

    def on_step(tr: Trainer, m: dict[str, float]) -> None:
        nonlocal clock
        log.add(tr.step, m)
        last = tr.step == tr.max_steps
        if progress is not None:
            progress.put(force=last, step=tr.step, total=tr.max_steps, loss=m["loss"], tokens_per_s=m["tokens_per_s"])
        if last or (every and tr.step % every == 0):
            log.flush()
            if last:  # the median step time after warm-up: what bench/train.py compares with a plain loop
                tr.last["median_step_s"] = float(np.median(times[WARM_STEPS:] or times or [np.nan]))
            report(tr, m, last)
            fault_after_report(tr)
        times.append(time.perf_counter() - clock)
        clock = time.perf_counter()

    t.run(on_step=on_step)
    log.close()
