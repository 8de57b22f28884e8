"""The train stage's config (pydantic, no torch): the run's shape and data at the top level, one section per
concern (sections.py: optim, parallel, checkpoint, sample). Bad values are one line naming the dotted key, at
config load, before any stage runs.

    train:
      preset: tiny
      max_steps: 650
      optim: {lr: 3.0e-3, warmup_steps: 20}
      checkpoint: {every: 100, keep: 2}
      parallel: {num_workers: 1, torch_threads: 2}     # execution only
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import Field, TypeAdapter, ValidationError, field_validator

from pipelines.stage import ExternalFile, ExternalPath, HashedPath, StageConfig
from stages.train.checkpoint import find_checkpoint
from stages.train.sections import CheckpointConfig, OptimConfig, ParallelConfig, SampleConfig
from stages.train.shapes import GPTConfig, load_preset, preset_data, preset_names

GPT_FIELDS = TypeAdapter(GPTConfig)  # checks the model overrides' types (and GPTConfig's own shape rules)


class TrainConfig(StageConfig):
    """Chinese-first defaults sized for the tiny preset on 2 CPU cores (the quickstart)."""

    EXEC_FIELDS = frozenset({"log_every", "parallel.num_workers", "parallel.micro_batch", "parallel.use_gpu",
                             "parallel.strategy", "parallel.max_failures", "parallel.torch_threads"})

    preset: str = Field("tiny", description="model preset: a name in stages/train/presets (tiny, 30m, 124m, ...)")
    model: dict[str, Any] = Field(default_factory=dict, description="overrides of GPTConfig fields, e.g. {n_layer: 6}")
    seed: int = 1337
    max_steps: int = Field(400, ge=1)
    global_batch: int = Field(8, ge=1, description="sequences per optimizer step, over all workers")
    mix: dict[str, float] = Field(default_factory=dict, description="epochs per source_name per mix epoch "
                                  "(2.0 = twice as often, 0.5 = a seeded half); unlisted sources weigh 1.0")
    eval_every: Optional[int] = Field(100, ge=1, description="validation every N steps (and at the end)")
    eval_tokens: int = Field(32768, ge=1, description="fixed number of validation tokens per eval set")
    eval_sets: dict[str, ExternalFile] = Field(default_factory=dict, description="fixed corpora (UTF-8 .txt, or "
                                               ".parquet with a text column) tokenized with the run's tokenizer")
    init_from: Optional[ExternalPath] = Field(None, description="a checkpoint (its directory, the train stage "
                                              "directory or its state.pt) to start from with a new schedule")
    log_every: int = Field(10, ge=1, description="MLflow flush interval in steps (execution only)")
    optim: OptimConfig = Field(default_factory=OptimConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in preset_names():
            raise ValueError(f"unknown model preset {v!r}; known presets: {', '.join(preset_names())}")
        return v

    @field_validator("model")
    @classmethod
    def _model_fits(cls, v: dict, info) -> dict:
        """Overrides name GPTConfig fields, with values of their types, that make a valid shape with the preset."""
        if "preset" not in info.data:
            return v
        try:
            shape = GPT_FIELDS.validate_python(preset_data(info.data["preset"], **v))
        except ValidationError as exc:
            e = exc.errors()[0]
            where = ".".join(map(str, e["loc"]))
            raise ValueError(f"{where}: " * bool(where) + e["msg"].removeprefix("Value error, ")) from None
        return {k: None if x is None else getattr(shape, k) for k, x in v.items()}  # "6" -> 6

    @field_validator("init_from")
    @classmethod
    def _init_checkpoint(cls, v):
        """The checkpoint directory, whatever was named: its meta.json is what the cache key hashes (a state.pt may
        be GBs)."""
        if v is None:
            return v
        try:
            return HashedPath(find_checkpoint(v))
        except FileNotFoundError:
            raise ValueError(f"no checkpoint at {v}") from None

    def model_shape(self) -> GPTConfig:
        """The preset with the train.model overrides (vocab_size None unless overridden: it is the tokenizer's)."""
        return load_preset(self.preset, **self.model)

    def check_root(self, root) -> None:
        """The checks that need another stage's section (pipelines.config calls this with the whole config): the
        model must hold the sequences tokenize packs."""
        seq_len = getattr(getattr(root, "tokenize", None), "seq_len", None)
        max_len = self.model_shape().max_seq_len
        if seq_len is not None and max_len < seq_len:
            raise ValueError(f"train.model.max_seq_len: preset {self.preset!r} holds {max_len} positions but "
                             f"tokenize.seq_len is {seq_len}; set train.model.max_seq_len >= {seq_len} or "
                             f"tokenize.seq_len <= {max_len}")
