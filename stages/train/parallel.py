"""How the model runs on the workers (the config's `train.parallel` section): DDP, or FSDP2 (`fully_shard`) for
models too big to replicate, plus activation checkpointing and torch.compile, so the model holds no training flags.
torch only.

    raw, model = build_model(cfg, seed=1337, device="cpu", world=2, parallel="fsdp")
    state = full_state(raw, opt, sharded=True)   # every rank calls it; the whole state lands on rank 0, on the CPU
    load_full_state(raw, opt, state, sharded=True)  # rank 0 passes the state, the others {}: it is broadcast

A sharded model starts from exactly the weights an unsharded one draws from the same seed (each parameter is
drawn whole on the CPU, in the same order, and each rank keeps its slice), and checkpoints are always the full,
unsharded state dicts (`torch.load(weights_only=True)`), so a run can switch DDP <-> FSDP or its worker count.
"""
from __future__ import annotations

import torch
from torch import nn

from stages.train.model import GPT, GPTConfig, init_param

PARALLEL = ("ddp", "fsdp")
FSDP_FROM_PARAMS = 1_000_000_000  # the default: shard from the 1.3b preset up, replicate below


def default_parallel(cfg: GPTConfig) -> str:
    with torch.device("meta"):
        n = GPT(cfg).num_params()
    return "fsdp" if n >= FSDP_FROM_PARAMS else "ddp"


def build_model(cfg: GPTConfig, seed: int, device: torch.device, world: int, parallel: str = "ddp",
                bf16: bool = False, compile: bool = False,
                activation_checkpointing: bool = False) -> tuple[nn.Module, nn.Module]:
    """(raw, model): the GPT and what the step calls (DDP-wrapped, or the same FSDP2-sharded module; compiled with
    `compile`). With `activation_checkpointing` each block keeps only its input for backward and recomputes the rest.
    """
    if parallel not in PARALLEL:
        raise ValueError(f"parallel must be one of {PARALLEL}, not {parallel!r}")
    raw, model = _wrap(cfg, seed, torch.device(device), world, parallel, bf16, activation_checkpointing)
    return raw, torch.compile(model) if compile else model


def checkpoint_blocks(raw: GPT) -> None:
    """Activation checkpointing: in training, each block's forward runs under torch.utils.checkpoint (non-reentrant),
    so backward recomputes its activations instead of keeping them. Parameters and their names are unchanged."""
    from torch.utils.checkpoint import checkpoint

    for block in raw.layers:
        def forward(x, cos, sin, _block=block, _fwd=block.forward):
            if _block.training:
                return checkpoint(_fwd, x, cos, sin, use_reentrant=False)
            return _fwd(x, cos, sin)

        block.forward = forward


def _wrap(cfg: GPTConfig, seed: int, device: torch.device, world: int, parallel: str, bf16: bool,
          activation_checkpointing: bool) -> tuple[nn.Module, nn.Module]:
    """FSDP2 shards each block, then the root (embeddings, final norm, output layer); with `bf16` it computes in
    bf16 and reduces gradients in fp32. At world 1 there is nothing to shard or synchronise: the plain model."""
    if parallel == "ddp" or world == 1:
        raw = GPT(cfg)
        torch.manual_seed(seed)  # seeded here, after construction's own draws: the sharded path draws the same
        raw.reset_parameters()
        raw = raw.to(device)
        if activation_checkpointing:
            checkpoint_blocks(raw)
        if world == 1:
            return raw, raw
        from torch.nn.parallel import DistributedDataParallel as DDP

        return raw, DDP(raw, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.tensor import distribute_tensor

    with torch.device("meta"):
        raw = GPT(cfg)
    if activation_checkpointing:
        checkpoint_blocks(raw)  # before sharding, so FSDP2's hooks wrap the checkpointed forward
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else \
        MixedPrecisionPolicy()
    for block in raw.layers:
        fully_shard(block, mp_policy=mp)
    fully_shard(raw, mp_policy=mp)
    raw.to_empty(device=device)
    raw.init_rope()  # to_empty left the (unsharded) RoPE buffers uninitialised
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in raw.named_parameters():  # the unsharded model's draws, in its order; keep our slice
            full = init_param(cfg, name, torch.empty(p.shape))
            p.to_local().copy_(distribute_tensor(full.to(device), p.device_mesh, p.placements,
                                                 src_data_rank=None).to_local())
    return raw, raw


def full_state(raw: nn.Module, opt: torch.optim.Optimizer, sharded: bool) -> dict:
    """Model and optimizer as full state dicts keyed by parameter name (collective when sharded: every rank
    calls it; rank 0 gets everything on the CPU, the others an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=sharded)
    return {"model": get_model_state_dict(raw, options=opts), "optim": get_optimizer_state_dict(raw, opt, options=opts)}


def load_full_state(raw: nn.Module, opt: torch.optim.Optimizer | None, state: dict, sharded: bool) -> None:
    """The inverse of full_state (opt None: weights only). Sharded: rank 0's state is broadcast and sliced."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=sharded)
    set_model_state_dict(raw, state.get("model", {}), options=opts)
    if opt is not None:
        set_optimizer_state_dict(raw, opt, state.get("optim", {}), options=opts)
