"""The train stage's spec and typed config (kept out of __init__ so `stages.train.model` / `.step` import with
torch alone: `stages/train/__init__.py` loads this module only when SPEC or TrainConfig is asked for).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from pipelines.stage import ExternalFile, ExternalPath, OutputSpec, StageConfig, StageSpec

# Openings of ordinary Chinese prose: prompts naming a program or the command line pull a small model towards
# the Latin-script text it saw beside them (measured: samples 65% CJK with such prompts, 71% with these).
DEFAULT_PROMPTS = ["中华人民共和国的首都是", "自由软件的意义在于", "这一章介绍", "使用电子表格时，", "如果你想",
                   "为了保护你的数据，"]


class TrainConfig(StageConfig):
    """Chinese-first defaults sized for the tiny preset on 2 CPU cores (the quickstart)."""

    EXEC_FIELDS = frozenset({"num_workers", "micro_batch", "use_gpu", "max_failures", "torch_threads", "log_every",
                             "parallel"})

    preset: str = Field("tiny", description="model preset: tiny, 30m, 124m, 350m, 1.3b, 7b (stages/train/presets)")
    model: dict = Field(default_factory=dict, description="overrides of GPTConfig fields, e.g. {n_layer: 6}")
    seed: int = 1337
    max_steps: int = Field(400, ge=1)
    global_batch: int = Field(8, ge=1, description="sequences per optimizer step, over all workers")
    lr: float = Field(3e-3, gt=0, description="peak learning rate (3e-3 measured best for tiny on the quickstart: "
                      "2e-3, 4e-3, 6e-3 and 1e-2 did worse; ~6e-4 for 124m)")
    min_lr_frac: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(20, ge=0)
    schedule: Literal["cosine", "wsd"] = "cosine"
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: Optional[float] = Field(1.0, gt=0, description="max global grad norm; None = no clipping")
    mix: dict[str, float] = Field(default_factory=dict, description="epochs per source_name per mix epoch "
                                  "(2.0 = twice as often, 0.5 = a seeded half); unlisted sources weigh 1.0")
    eval_every: Optional[int] = Field(100, ge=1, description="validation every N steps (and at the end)")
    eval_tokens: int = Field(32768, ge=1, description="fixed number of validation tokens per eval set")
    eval_sets: dict[str, ExternalFile] = Field(default_factory=dict, description="fixed corpora (UTF-8 .txt, or "
                                           ".parquet with a text column) tokenized with the run's tokenizer")
    checkpoint_every: Optional[int] = Field(100, ge=1, description="checkpoint every N steps (and at the end)")
    keep_checkpoints: int = Field(2, ge=1)
    init_from: Optional[ExternalPath] = Field(None, description="a checkpoint dir (or its state.pt) to "
                                                     "start from with a new schedule")
    prompts: list[str] = Field(default_factory=lambda: list(DEFAULT_PROMPTS))
    sample_tokens: int = Field(64, ge=1)
    sample_draws: int = Field(16, ge=1, le=256, description="samples per prompt, drawn as one batch seeded by the "
                              "prompt's index; the CJK share is measured over all of them (with one draw per "
                              "prompt it swung by 0.1 between seeds); at most 256, as the batch holds "
                              "draws x context x vocab logits")
    sample_temperature: float = Field(0.8, gt=0)
    compile: bool = False
    activation_checkpointing: bool = False
    # execution only (not in the cache key):
    num_workers: int = Field(1, ge=1, description="Ray Train workers")
    micro_batch: Optional[int] = Field(None, ge=1, description="sequences per forward pass per worker; "
                                       "None = the worker's whole share (accumulation = share / micro_batch)")
    use_gpu: bool = False
    parallel: Optional[Literal["ddp", "fsdp"]] = Field(
        None, description="ddp replicates the model; fsdp shards it with FSDP2 (fully_shard per block, bf16 on "
        "GPU); None = fsdp from ~1B parameters (the 1.3b and 7b presets), else ddp. Checkpoints are full either way")
    max_failures: int = Field(2, ge=-1, description="worker-death restarts (-1 = forever)")
    torch_threads: Optional[int] = Field(None, ge=1, description="torch threads per worker; None = CPUs / workers")
    log_every: int = Field(10, ge=1, description="MLflow flush interval in steps")

    @field_validator("init_from")
    @classmethod
    def _init_exists(cls, v):
        if v is not None and not v.exists():
            raise ValueError(f"no checkpoint at {v}")
        return v


SPEC = StageSpec(
    name="train",
    inputs=["tokenize"],
    config_model=TrainConfig,
    outputs=[OutputSpec("checkpoints", "file", primary=True), OutputSpec("export", "file")],
    run="stages.train.driver:run_train",
    libraries=["torch", "numpy", "sentencepiece"],
    headline=["final_loss", "val_bpb", "unigram_bpb", "bpb_ratio", "cjk_fraction", "tokens_per_s"],
)
