"""Stage `train`: GPT pretraining with Ray Train V2 on the tokenize stage's Arrow shards.

Outputs: `checkpoints` (primary; the final checkpoint: state.pt + meta.json, loadable with
torch.load(weights_only=True)) and `export` (a Hugging Face LlamaForCausalLM folder with the tokenizer).
Resume state (Ray Train's storage_path/name) lives in `.partial/`; re-running the same config resumes from the
latest checkpoint, even with another worker count or micro-batch split.

Run: `zhgpt run configs/quickstart.yaml` (the `train:` section), or in tests through tests/helpers.run_stage.
Import is cheap: torch, Ray and MLflow are imported inside the driver; pydantic only when SPEC / TrainConfig is
used (PEP 562 lazy attributes), so `stages.train.model` and `.step` need nothing but torch.
"""
from __future__ import annotations

_LAZY = ("SPEC", "TrainConfig", "DEFAULT_PROMPTS")


def __getattr__(name: str):
    if name in _LAZY:
        from stages.train import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'stages.train' has no attribute {name!r}")
