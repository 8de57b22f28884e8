"""Stage `train`: GPT pretraining with Ray Train V2 on the tokenize stage's Arrow shards.

Outputs: `checkpoints` (primary; the final checkpoint: state.pt + meta.json + tokenizer.model, loadable with
torch.load(weights_only=True)) and `export` (a Hugging Face LlamaForCausalLM folder with the tokenizer).
Resume state (Ray Train's storage_path/name) lives in `.partial/`; re-running the same config resumes from the
latest checkpoint, even with another worker count or micro-batch split.

Layout: config.py the config (sections.py its sections), stage.py `run(ctx)` (validate -> fit -> collect ->
sample), launch.py Ray Train (the TorchTrainer and the worker entry point), trainer.py the step loop, step.py one
step, checkpoint.py, metrics.py (MLflow), evalsets.py, parallel.py (DDP/FSDP2, activation checkpointing, compile),
model.py + shapes.py the model, generate.py + export.py, upstream.py what the tokenize stage hands over; cli.py
adds `zhgpt generate` and `zhgpt plan` (plan.py, gpus.py).

SPEC is built on first use (PEP 562 `__getattr__`): importing `stages.train.model`, `.step` or `.trainer` must
not import pydantic (the GPU machine has torch, numpy, pyarrow and sentencepiece only).
"""
from __future__ import annotations


def __getattr__(name: str):
    if name != "SPEC":
        raise AttributeError(f"module 'stages.train' has no attribute {name!r}")
    from pipelines.stage import OutputSpec, StageSpec
    from stages.train.config import TrainConfig

    spec = StageSpec(
        name="train",
        inputs=["tokenize"],
        config_model=TrainConfig,
        outputs=[OutputSpec("checkpoints", "file", primary=True), OutputSpec("export", "file")],
        run="stages.train.stage:run",
        libraries=["torch", "numpy", "sentencepiece"],
        headline=["final_loss", "val_bpb", "unigram_bpb", "bpb_ratio", "cjk_fraction", "tokens_per_s"],
        commands="stages.train.cli:register",
    )
    globals()["SPEC"] = spec
    return spec
