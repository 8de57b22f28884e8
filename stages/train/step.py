"""One training step, the optimizer and the learning-rate schedule (the `optim` config section); torch only.

    opt = make_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    stats = train_step(model, opt, micro_batches, lr=lr_at(step, OptimConfig(), total=400), grad_clip=1.0)

`micro_batches` is a list of (B_micro, T+1) int64 token tensors; the loss is the mean over every target token
of the global batch whatever the micro-batch split, so a run can change its accumulation at an equal batch.
"""
from __future__ import annotations

import contextlib
import math

import torch

from stages.train.sections import OptimConfig

WSD_DECAY_FRAC = 0.2  # "wsd": warmup, stable, then a linear decay over the last 20% of the run


def lr_at(step: int, o: OptimConfig, total: int) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total`: linear warmup, then cosine or WSD to min_lr."""
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    lo = o.lr * o.min_lr_frac
    if o.schedule == "wsd":
        start = max(o.warmup_steps, int(total * (1 - WSD_DECAY_FRAC)))
        if step < start:
            return o.lr
        frac = min(1.0, (step - start) / max(1, total - start))
        return o.lr - (o.lr - lo) * frac
    frac = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
    return lo + 0.5 * (o.lr - lo) * (1 + math.cos(math.pi * frac))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                   fused: bool = False) -> torch.optim.AdamW:
    """AdamW with two groups: matrices decay, vectors (norm weights) do not. Tied weights appear once."""
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() de-duplicates the tied embedding / lm_head
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, micro: list[torch.Tensor], lr: float,
               grad_clip: float | None, autocast: torch.autocast | None = None, world: int = 1) -> dict[str, float]:
    """Forward/backward over the micro-batches (gradient accumulation), clip, step. Returns loss and grad norm.

    Each micro loss is scaled by its share of this rank's tokens, and DDP averages over `world` ranks, so the
    gradient is that of the global mean loss. The returned loss is this rank's mean (the caller all-reduces).
    """
    for g in opt.param_groups:
        g["lr"] = lr
    total = sum(m.shape[0] for m in micro)
    # sums stay on the device: one host sync per step, after the optimizer step is queued, not one per micro-batch
    loss_sum = torch.zeros((), dtype=torch.float64, device=micro[0].device)
    for i, batch in enumerate(micro):
        sync = i == len(micro) - 1  # DDP all-reduces (FSDP2 reduce-scatters) once, on the last micro-batch
        ctx = model.no_sync() if (not sync and hasattr(model, "no_sync")) else contextlib.nullcontext()
        if hasattr(model, "set_requires_gradient_sync"):
            model.set_requires_gradient_sync(sync)
        with ctx, (autocast or contextlib.nullcontext()):
            loss = model(batch[:, :-1], batch[:, 1:])  # the model computes the loss: compiled with it
        (loss * (batch.shape[0] / total)).backward()
        loss_sum += loss.detach().double() * batch.shape[0]
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip else float("inf"))
    if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor
        norm = norm.full_tensor()
    opt.step()
    opt.zero_grad(set_to_none=True)
    loss, grad_norm = torch.stack([loss_sum / total, norm.double()]).tolist()
    return {"loss": loss, "grad_norm": grad_norm}


@torch.no_grad()
def eval_sums(model: torch.nn.Module, rows: torch.Tensor, batch: int,
              autocast: torch.autocast | None = None) -> tuple[torch.Tensor, int]:
    """Per-row summed cross-entropy (nats) over `rows` (N, T+1) and the number of target tokens."""
    out = []
    for i in range(0, rows.shape[0], batch):
        b = rows[i:i + batch]
        with autocast or contextlib.nullcontext():
            nats = model(b[:, :-1], b[:, 1:], reduction="none")
        out.append(nats.view(b.shape[0], -1).double().sum(1).cpu())
    sums = torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
    return sums, rows.shape[0] * (rows.shape[1] - 1)
