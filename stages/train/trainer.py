"""The step loop: one Trainer per rank, driven by Ray Train (launch.py) or in-process (world 1, no Ray), which is how
the exact-resume tests and the GPU benchmark drive it. torch, numpy and pyarrow only (no Ray, MLflow or pydantic).

    cfg = TrainConfig(max_steps=20).model_dump(mode="json")     # the train config, as the worker receives it
    inputs = RunInputs(model=..., train=[...], val=[...], tokenizer_digest=...)
    t = Trainer(cfg, inputs)
    t.run(until=10); t.save(d)
    t2 = Trainer(cfg, inputs); t2.load(d); t2.run()     # losses equal an uninterrupted run's, bitwise
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipelines.faults import fault_point
from stages.train import checkpoint
from stages.train.data import GlobalOrder, TokenRows, rank_slice
from stages.train.evalsets import eval_rows, fixed_rows
from stages.train.gpus import peak_flops
from stages.train.parallel import build_model, full_state
from stages.train.sections import OptimConfig, ParallelConfig
from stages.train.shapes import GPTConfig, flops_per_token
from stages.train.step import eval_sums, lr_at, make_optimizer, train_step


@dataclass
class RunInputs:
    """What the driver resolved for a run, sent to every worker beside the config (Ray Train V2 passes no env)."""

    model: dict  # the GPTConfig: the preset, train.model overrides and the tokenizer's vocab
    train: list[str]  # token shards (Arrow IPC)
    val: list[str]
    tokenizer_digest: str
    bytes_per_id: list[float] | None = None  # UTF-8 bytes per token id, for bits per byte
    eval_sets: dict[str, list[str]] = field(default_factory=dict)  # the eval_sets corpora, tokenized
    strategy: str = "ddp"  # train.parallel.strategy, or the default for the model's size
    torch_threads: int | None = None  # train.parallel.torch_threads, or CPUs / workers
    tracking_uri: str = ""
    mlflow_run_id: str | None = None
    init_from: str | None = None  # a checkpoint directory
    fault: str | None = None  # the driver's ZHGPT_FAULT
    fault_marker: str | None = None  # makes each injected fault fire once
    progress_dir: str | None = None  # the stage directory: rank 0 writes `step N/M` to its progress channel


class Trainer:
    def __init__(self, cfg: dict, inputs: RunInputs, rank: int = 0, world: int = 1, device: str | torch.device = "cpu"):
        self.cfg, self.inputs, self.rank, self.world, self.device = cfg, inputs, rank, world, torch.device(device)
        if inputs.torch_threads:
            torch.set_num_threads(inputs.torch_threads)
        self.max_steps, self.global_batch = cfg["max_steps"], cfg["global_batch"]
        self.optim, par = OptimConfig(**cfg["optim"]), ParallelConfig(**cfg["parallel"])
        self.micro_batch = par.micro_batch
        self.mcfg = GPTConfig(**inputs.model)
        self.sharded = inputs.strategy == "fsdp" and world > 1
        cuda = self.device.type == "cuda"
        self.raw, self.model = build_model(self.mcfg, cfg["seed"], self.device, world, inputs.strategy, bf16=cuda,
                                           compile=par.compile, activation_checkpointing=par.activation_checkpointing)
        o = self.optim
        self.opt = make_optimizer(self.raw, o.lr, o.weight_decay, tuple(o.betas), fused=cuda)
        self.rows = TokenRows(inputs.train, "train")
        self.order = GlobalOrder(self.rows.codes, self.rows.sources, cfg["mix"], cfg["seed"])
        fixed = fixed_rows({"val": inputs.val, **inputs.eval_sets}, eval_rows(cfg["eval_tokens"], self.rows.seq_len))
        self.evals = {name: (torch.from_numpy(t), codes, sources) for name, (t, codes, sources) in fixed.items()}
        self.step, self.run_id = 0, inputs.mlflow_run_id
        self.seen = np.zeros(len(self.rows.sources), dtype=np.int64)
        self.last: dict[str, float] = {}  # every metric's latest value: what a checkpoint records as its figures
        # bf16 on GPU: autocast, or FSDP2's mixed-precision policy when sharded
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and not self.sharded else None

    # -- one step ---------------------------------------------------------------------------------------
    def batch(self, step: int) -> list[torch.Tensor]:
        start, stop = rank_slice(step, self.global_batch, self.rank, self.world)
        rows = torch.from_numpy(self.rows.take(self.order.indices(start, stop))).to(self.device)
        return list(rows.split(self.micro_batch or len(rows)))

    def train_one(self) -> dict[str, float]:
        t0 = time.perf_counter()
        lr = lr_at(self.step, self.optim, self.max_steps)
        out = train_step(self.model, self.opt, self.batch(self.step), lr, self.optim.grad_clip, self.autocast,
                         self.world)
        out["loss"] = self._mean(out["loss"])
        lo = self.step * self.global_batch
        self.seen += self.order.source_counts(lo, lo + self.global_batch)
        self.step += 1
        dt = time.perf_counter() - t0
        tokens = self.global_batch * self.rows.seq_len
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
        bpi = torch.tensor(self.inputs.bytes_per_id, dtype=torch.float64) if self.inputs.bytes_per_id else None
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

    # -- checkpoints (checkpoint.py) --------------------------------------------------------------------
    def full_state(self) -> dict:
        """The whole model + optimizer state (every rank calls it when sharded; rank 0 gets it)."""
        return full_state(self.raw, self.opt, self.sharded)

    def save(self, d: str | Path, state: dict | None = None) -> None:
        checkpoint.save(self, d, state)

    def load(self, d: str | Path, weights_only_init: bool = False) -> None:
        checkpoint.load(self, d, weights_only_init)

    # -- the loop ---------------------------------------------------------------------------------------
    def run(self, until: int | None = None, on_step=None) -> list[float]:
        """Train to step `until` (default max_steps); on_step(trainer, metrics) after each step. A fault point
        before each step: ZHGPT_FAULT=train.rank<R>@<step> SIGKILLs rank R there (once, with a marker)."""
        losses = []
        every = self.cfg["eval_every"]
        while self.step < (until or self.max_steps):
            fault_point(f"train.rank{self.rank}", self.step, self.inputs.fault_marker)
            m = self.train_one()
            if every and (self.step % every == 0 or self.step == self.max_steps):
                m.update(self.evaluate())
            m.update({f"tokens_seen/{s}": float(n * self.rows.seq_len) for s, n in zip(self.rows.sources, self.seen)})
            self.last.update(m)
            losses.append(m["loss"])
            if on_step:
                on_step(self, m)
        return losses
