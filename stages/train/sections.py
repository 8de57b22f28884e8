"""The train config's sections, one per concern, as plain dataclasses: neither torch nor pydantic, so config.py
validates them without importing torch (it would add 2-3 s to every `zhgpt` command) and the workers, and the GPU
machine where only torch is installed, rebuild them from `cfg.model_dump()` with their defaults. Each default is
written here once; each section is read by the module named in its docstring.

Bounds are annotated_types markers (`Annotated[float, Gt(0)]`) that pydantic enforces when config.py validates;
where pydantic is not installed nothing reads them and inert stand-ins take their place.

    OptimConfig(**cfg["optim"]).lr
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional

try:
    from annotated_types import Ge, Gt, Le
except ImportError:  # no pydantic here, hence no validation: the markers are inert
    def Ge(bound):  # noqa: N802 - the annotated_types names
        return None

    Gt = Le = Ge

FORBID = {"extra": "forbid"}  # pydantic's config for each section: an unknown key is an error


@dataclass
class OptimConfig:
    """`train.optim`: AdamW and its learning-rate schedule (step.py)."""

    __pydantic_config__ = FORBID
    # peak learning rate: 3e-3 measured best for tiny on the quickstart (2e-3, 4e-3, 6e-3 and 1e-2 did worse);
    # ~6e-4 for 124m
    lr: Annotated[float, Gt(0)] = 3e-3
    min_lr_frac: Annotated[float, Ge(0), Le(1)] = 0.1
    warmup_steps: Annotated[int, Ge(0)] = 20
    schedule: Literal["cosine", "wsd"] = "cosine"
    weight_decay: Annotated[float, Ge(0)] = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: Optional[Annotated[float, Gt(0)]] = 1.0  # max global grad norm; None = no clipping


@dataclass
class ParallelConfig:
    """`train.parallel`: workers and how the model runs on them (parallel.py, launch.py). Everything but `compile`
    and `activation_checkpointing` is execution only (TrainConfig.EXEC_FIELDS): a run resumes with another worker
    count or micro-batch split."""

    __pydantic_config__ = FORBID
    num_workers: Annotated[int, Ge(1)] = 1  # Ray Train workers
    # sequences per forward pass per worker; None = the worker's whole share (accumulation = share / micro_batch)
    micro_batch: Optional[Annotated[int, Ge(1)]] = None
    use_gpu: bool = False
    # ddp replicates the model; fsdp shards it with FSDP2 (fully_shard per block, bf16 on GPU); None = fsdp from
    # ~1B parameters (the 1.3b and 7b presets), else ddp. Checkpoints are full either way.
    strategy: Optional[Literal["ddp", "fsdp"]] = None
    max_failures: Annotated[int, Ge(-1)] = 2  # worker-death restarts (-1 = forever)
    torch_threads: Optional[Annotated[int, Ge(1)]] = None  # torch threads per worker; None = CPUs / workers
    compile: bool = False
    activation_checkpointing: bool = False


@dataclass
class CheckpointConfig:
    """`train.checkpoint`: how often the run checkpoints, and how many checkpoints Ray Train keeps (launch.py)."""

    __pydantic_config__ = FORBID
    every: Optional[Annotated[int, Ge(1)]] = 100  # checkpoint every N steps (and at the end)
    keep: Annotated[int, Ge(1)] = 2  # the newest checkpoints Ray Train keeps


# Openings of ordinary Chinese prose: prompts naming a program or the command line pull a small model towards
# the Latin-script text it saw beside them (measured: samples 65% CJK with such prompts, 71% with these).
DEFAULT_PROMPTS = ["中华人民共和国的首都是", "自由软件的意义在于", "这一章介绍", "使用电子表格时，", "如果你想",
                   "为了保护你的数据，"]


@dataclass
class SampleConfig:
    """`train.sample`: the samples the stage draws from the trained model (generate.py)."""

    __pydantic_config__ = FORBID
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    tokens: Annotated[int, Ge(1)] = 64  # new tokens per draw
    # samples per prompt, drawn as one batch seeded by the prompt's index; the CJK share is measured over all of
    # them (with one draw per prompt it swung by 0.1 between seeds); at most 256, as the batch holds
    # draws x context x vocab logits
    draws: Annotated[int, Ge(1), Le(256)] = 16
    temperature: Annotated[float, Gt(0)] = 0.8
