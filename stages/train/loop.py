"""The training loop: setup / step / evaluate / checkpoint helpers, and `train_loop_per_worker` for Ray Train V2.

The `Trainer` runs in-process too (world 1, no Ray), which is how the exact-resume tests drive it:

    t = Trainer(LoopConfig(**cfg)); t.run(until=10); t.save(d)
    t2 = Trainer(LoopConfig(**cfg)); t2.load(d); t2.run(until=20)   # losses equal an uninterrupted run bitwise

Under Ray: every rank calls ray.train.report at the same steps (it is a barrier); rank 0 writes the checkpoint
(with parallel="fsdp" every rank first joins the gather of the full state) and logs per-step metrics to MLflow
with an explicit client from a background thread (Ray Train V2 propagates no env vars).
"""
from __future__ import annotations

import json
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipelines.faults import ENV as FAULT_ENV
from pipelines.faults import armed, fault_point
from stages.train.data import GlobalOrder, TokenRows, rank_slice
from stages.train.model import GPTConfig, flops_per_token
from stages.train.parallel import build_model, full_state, load_full_state
from stages.train.step import Schedule, eval_sums, lr_at, make_optimizer, peak_flops, train_step

STATE, META = "state.pt", "meta.json"


class TokenizerMismatch(ValueError):
    """A checkpoint trained with another tokenizer than the shards'."""


@dataclass
class LoopConfig:
    model: dict
    train_paths: list[str]
    val_paths: list[str]
    tokenizer_digest: str
    seed: int = 1337
    max_steps: int = 100
    global_batch: int = 16
    micro_batch: int | None = None  # per rank; None = the rank's whole share in one pass
    lr: float = 1e-3
    min_lr_frac: float = 0.1
    warmup_steps: int = 10
    schedule: str = "cosine"
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    mix: dict[str, float] = field(default_factory=dict)
    eval_every: int | None = 50
    eval_rows: int = 64
    eval_sets: dict[str, list[str]] = field(default_factory=dict)
    bytes_per_id: list[float] | None = None
    checkpoint_every: int | None = 100
    log_every: int = 10
    tracking_uri: str = ""
    mlflow_run_id: str | None = None
    init_from: str | None = None
    compile: bool = False
    activation_checkpointing: bool = False
    parallel: str = "ddp"  # "ddp" | "fsdp" (FSDP2 fully_shard per block, then the root); only matters at world > 1
    torch_threads: int | None = None
    fault: str | None = None  # the driver's ZHGPT_FAULT (Ray Train V2 passes workers no environment)
    fault_marker: str | None = None


class Trainer:
    def __init__(self, cfg: LoopConfig, rank: int = 0, world: int = 1, device: str | torch.device = "cpu"):
        self.cfg, self.rank, self.world, self.device = cfg, rank, world, torch.device(device)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.mcfg = GPTConfig(**cfg.model)
        self.sharded = cfg.parallel == "fsdp" and world > 1
        cuda = self.device.type == "cuda"
        self.raw, model = build_model(self.mcfg, cfg.seed, self.device, world, cfg.parallel, bf16=cuda)
        self.raw.activation_checkpointing = cfg.activation_checkpointing
        self.model = torch.compile(model) if cfg.compile else model
        self.opt = make_optimizer(self.raw, cfg.lr, cfg.weight_decay, tuple(cfg.betas), fused=self.device.type == "cuda")
        self.sched = Schedule(cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_frac, cfg.schedule)
        self.rows = TokenRows(cfg.train_paths, "train")
        self.order = GlobalOrder(self.rows.codes, self.rows.sources, cfg.mix, cfg.seed)
        self.evals = self._eval_sets()
        self.step, self.run_id = 0, cfg.mlflow_run_id
        self.seen = np.zeros(len(self.rows.sources), dtype=np.int64)
        # bf16 on GPU: autocast, or FSDP2's mixed-precision policy when sharded
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and not self.sharded else None

    def _eval_sets(self) -> dict[str, tuple[torch.Tensor, np.ndarray, list[str]]]:
        """Fixed rows per eval set: the first eval_rows rows in file order, with per-row source names."""
        out = {}
        for name, paths in {"val": self.cfg.val_paths, **self.cfg.eval_sets}.items():
            r = TokenRows(paths, name)
            n = min(len(r), self.cfg.eval_rows)
            out[name] = (torch.from_numpy(r.take(np.arange(n))), r.codes[:n], r.sources)
        return out

    # -- one step ---------------------------------------------------------------------------------------
    def batch(self, step: int) -> list[torch.Tensor]:
        start, stop = rank_slice(step, self.cfg.global_batch, self.rank, self.world)
        rows = torch.from_numpy(self.rows.take(self.order.indices(start, stop))).to(self.device)
        mb = self.cfg.micro_batch or len(rows)
        return list(rows.split(mb))

    def train_one(self) -> dict[str, float]:
        t0 = time.perf_counter()
        lr = lr_at(self.step, self.sched)
        out = train_step(self.model, self.opt, self.batch(self.step), lr, self.cfg.grad_clip, self.autocast, self.world)
        out["loss"] = self._mean(out["loss"])
        lo = self.step * self.cfg.global_batch
        self.seen += self.order.source_counts(lo, lo + self.cfg.global_batch)
        self.step += 1
        dt = time.perf_counter() - t0
        tokens = self.cfg.global_batch * self.rows.seq_len
        out.update(lr=lr, step_seconds=dt, tokens_per_s=tokens / dt)
        peak = peak_flops(torch.cuda.get_device_name(self.device)) if self.device.type == "cuda" else None
        if peak:
            out["mfu"] = tokens / self.world / dt * flops_per_token(self.mcfg, self.rows.seq_len) / peak
        return out

    def _mean(self, x: float) -> float:
        if self.world == 1:
            return x
        import torch.distributed as dist

        t = torch.tensor([x], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    # -- evaluation -------------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Loss, perplexity and bits per byte per eval set, and per source for the validation split."""
        self.model.eval()
        keys, sums = [], []
        bpi = torch.tensor(self.cfg.bytes_per_id, dtype=torch.float64) if self.cfg.bytes_per_id else None
        for name, (rows, codes, sources) in self.evals.items():
            mine = torch.arange(self.rank, len(rows), self.world)
            idx = mine
            if self.sharded:  # every rank must run as many forward passes (each one all-gathers the weights)
                idx = torch.cat([mine, torch.zeros(-(-len(rows) // self.world) - len(mine), dtype=torch.long)])
            nats, _ = eval_sums(self.raw, rows[idx].to(self.device), 8, self.autocast)
            nats = nats[:len(mine)]
            nbytes = bpi[rows[mine][:, 1:]].sum(1) if bpi is not None else torch.zeros(len(mine), dtype=torch.float64)
            ntok = torch.full((len(mine),), rows.shape[1] - 1, dtype=torch.float64)
            groups = [(name, np.ones(len(rows), bool))]
            if name == "val" and len(sources) > 1:
                groups += [(f"val/{s}", codes == k) for k, s in enumerate(sources)]
            for g, sel in groups:
                m = torch.from_numpy(sel[mine.numpy()])
                keys.append(g)
                sums.append(torch.stack([nats[m].sum(), ntok[m].sum(), nbytes[m].sum()]))
        self.model.train()
        return self._eval_metrics(keys, self._sum(torch.stack(sums)))

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as dist

            t = t.to(self.device)
            dist.all_reduce(t)
        return t.cpu()

    @staticmethod
    def _eval_metrics(keys: list[str], sums: torch.Tensor) -> dict[str, float]:
        out = {}
        for k, (nats, ntok, nbytes) in zip(keys, sums.tolist()):
            pre = k if k.startswith("val") else f"eval/{k}"
            out[f"{pre}/loss"] = nats / max(ntok, 1)
            out[f"{pre}/ppl"] = math.exp(min(out[f"{pre}/loss"], 50))
            if nbytes:
                out[f"{pre}/bpb"] = nats / math.log(2) / nbytes
        return out

    # -- checkpoints ------------------------------------------------------------------------------------
    def full_state(self) -> dict:
        """The whole model + optimizer state (every rank calls it when sharded; rank 0 gets it)."""
        return full_state(self.raw, self.opt, self.sharded)

    def save(self, d: str | Path, state: dict | None = None) -> None:
        """Rank 0 only: the full model + optimizer state (torch.save, loadable with weights_only=True, keyed by
        parameter name whatever the parallelism) and a JSON meta. Sharded: pass the state every rank built."""
        d = Path(d)
        d.mkdir(parents=True, exist_ok=True)
        torch.save({**(state or self.full_state()), "step": self.step}, d / STATE)
        meta = {"step": self.step, "tokenizer_digest": self.cfg.tokenizer_digest, "mlflow_run_id": self.run_id,
                "model": self.mcfg.to_dict(), "seed": self.cfg.seed, "global_batch": self.cfg.global_batch,
                "samples_seen": self.step * self.cfg.global_batch, "sources": self.rows.sources,
                "seen_per_source": self.seen.tolist(), "max_steps": self.cfg.max_steps}
        (d / META).write_text(json.dumps(meta, ensure_ascii=False, indent=1))

    def load(self, d: str | Path, weights_only_init: bool = False) -> None:
        """Resume from a checkpoint dir (model, optimizer, step), or with weights_only_init take the weights only
        (train.init_from: a new run with a fresh schedule). Refuses another tokenizer's checkpoint."""
        d = Path(d)
        meta = json.loads((d / META).read_text())
        if meta["tokenizer_digest"] != self.cfg.tokenizer_digest:
            raise TokenizerMismatch(f"checkpoint {d} was trained with tokenizer {meta['tokenizer_digest'][:16]}, "
                                    f"but the shards come from {self.cfg.tokenizer_digest[:16]}; "
                                    "retokenize with that tokenizer or start a fresh run")
        # sharded: rank 0 reads the file and the state is broadcast, so a node holds one copy, not one per rank
        reads = not self.sharded or self.rank == 0
        state = torch.load(d / STATE, map_location="cpu", weights_only=True) if reads else {}
        load_full_state(self.raw, None if weights_only_init else self.opt, state, self.sharded)
        if weights_only_init:
            return
        self.step = int(meta["step"])
        self.run_id = meta.get("mlflow_run_id") or self.run_id
        self.seen = np.array(meta.get("seen_per_source") or self.seen, dtype=np.int64)

    def maybe_kill(self) -> None:
        """Fault injection at a known point: ZHGPT_FAULT=train.rank<R>@<step> SIGKILLs rank R before that step,
        once (the marker file records it, so the restarted worker carries on)."""
        if self.cfg.fault:
            os.environ[FAULT_ENV] = self.cfg.fault
            fault_point(f"train.rank{self.rank}", self.step, self.cfg.fault_marker or "fault-marker")

    def run(self, until: int | None = None, on_step=None) -> list[float]:
        """Train to step `until` (default max_steps); on_step(trainer, metrics) after each step."""
        losses = []
        while self.step < (until or self.cfg.max_steps):
            self.maybe_kill()
            m = self.train_one()
            if self.cfg.eval_every and (self.step % self.cfg.eval_every == 0 or self.step == self.cfg.max_steps):
                m.update(self.evaluate())
            losses.append(m["loss"])
            if on_step:
                on_step(self, m)
        return losses


class MetricLog:
    """Rank 0's per-step metrics for MLflow: buffered, and every `every` steps handed to a background thread that
    sends them with MlflowClient.log_batch, so no SQLite or HTTP write sits between two training steps.
    flush() sends the rest and waits until MLflow has it (before each checkpoint and at the end); a logging error
    surfaces there. The client is made here, before training: importing MLflow and opening its store is seconds
    of pure-Python work, and in a thread beside the training loop it would hold the GIL that every torch op
    dispatch needs (measured: 6x slower steps while it ran)."""

    def __init__(self, uri: str, run_id: str | None, every: int):
        self.uri, self.run_id, self.every, self.buf = uri, run_id, max(1, every), []
        self.queue: queue.Queue | None = None
        self.error: Exception | None = None
        self.client = None
        if uri and run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=uri)
            self.client.get_run(run_id)  # opens the store now; a wrong run id fails here, not mid-run

    def add(self, step: int, metrics: dict[str, float]) -> None:
        if self.client is None:
            return
        now = int(time.time() * 1000)
        self.buf += [(k, float(v), now, step) for k, v in sorted(metrics.items()) if math.isfinite(v)]
        if step % self.every == 0:
            self._send()

    def _send(self) -> None:
        if not self.buf:
            return
        if self.queue is None:
            self.queue = queue.Queue()
            threading.Thread(target=self._sender, name="mlflow-metrics", daemon=True).start()
        self.queue.put(self.buf)
        self.buf = []

    def _sender(self) -> None:
        from mlflow.entities import Metric

        client, q = self.client, self.queue
        while (batch := q.get()) is not None:
            try:
                metrics = [Metric(*m) for m in batch]
                for i in range(0, len(metrics), 1000):  # MLflow caps a batch at 1000 metrics
                    client.log_batch(self.run_id, metrics=metrics[i:i + 1000])
            except Exception as exc:  # noqa: BLE001 - raised again by flush(), on the training thread
                self.error = exc
            finally:
                q.task_done()

    def flush(self) -> None:
        self._send()
        if self.queue is not None:
            self.queue.join()
        if self.error is not None:
            err, self.error = self.error, None
            raise RuntimeError(f"logging metrics to MLflow failed: {err}") from err

    def close(self) -> None:
        self.flush()
        if self.queue is not None:
            self.queue.put(None)
            self.queue = None


def _report(t: Trainer, metrics: dict[str, float], final: bool) -> None:
    """Every rank calls this at the same steps (ray.train.report is a barrier); rank 0 brings the checkpoint."""
    import tempfile

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
    os.environ[FAULT_ENV] = t.cfg.fault or ""
    if armed(site, t.step):
        from ray.train.v2._internal.execution.context import get_train_context

        get_train_context().get_result_queue().join()  # the controller polled this rank's report
        fault_point(site, t.step, f"{t.cfg.fault_marker or 'fault-marker'}.reported")


def train_loop_per_worker(config: dict) -> dict | None:
    """Ray Train V2 entry point: resume from the run's latest checkpoint (or init_from), train, report."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    cfg = LoopConfig(**config)
    device = ray.train.torch.get_device() if torch.cuda.is_available() else "cpu"
    t = Trainer(cfg, ctx.get_world_rank(), ctx.get_world_size(), device)
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            t.load(d)
    elif cfg.init_from:
        t.load(cfg.init_from, weights_only_init=True)
    log = MetricLog(cfg.tracking_uri, t.run_id, cfg.log_every) if t.rank == 0 else MetricLog("", None, 1)
    final: dict[str, float] = {}
    times: list[float] = []  # wall time from one step's end to the next's: logging and reporting included
    clock = time.perf_counter()

    def on_step(tr: Trainer, m: dict[str, float]) -> None:
        nonlocal final, clock
        m.update({f"tokens_seen/{s}": float(n * tr.rows.seq_len) for s, n in zip(tr.rows.sources, tr.seen)})
        log.add(tr.step, m)
        final = {**final, **m}
        last = tr.step == cfg.max_steps
        if last or (cfg.checkpoint_every and tr.step % cfg.checkpoint_every == 0):
            log.flush()
            _report(tr, m, last)
            fault_after_report(tr)
        times.append(time.perf_counter() - clock)
        clock = time.perf_counter()

    t.run(on_step=on_step)
    log.close()
    # the median step time after 3 warm-up steps is what bench/train.py compares with a plain loop
    median = float(np.median(times[3:] or times)) if times else float("nan")
    return {**final, "step": t.step, "mlflow_run_id": t.run_id, "median_step_s": median} if t.rank == 0 else None
