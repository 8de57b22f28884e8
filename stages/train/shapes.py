"""The model's shape without torch: `GPTConfig`, the presets, and FLOPs per token. The config validates presets
with it, the planner counts with it, and model.py builds the network from it.

    cfg = load_preset("124m", vocab_size=64000)       # presets/<name>.yaml plus overrides
    flops_per_token(cfg, 1024)                         # PaLM formula, as training logs MFU and `zhgpt plan` plans
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

PRESETS = Path(__file__).resolve().parent / "presets"
VOCAB_MULTIPLE = 64  # padding the vocab to a multiple of 64 keeps matmuls tensor-core friendly (~25% faster)


@dataclass
class GPTConfig:
    vocab_size: int | None = None  # tokenizer ids; None = take it from the tokenizer
    n_layer: int = 2
    n_head: int = 4
    n_kv_head: int | None = None  # grouped-query attention: heads per K/V; None = n_head (plain MHA)
    d_model: int = 128
    ffn_hidden: int | None = None  # None = 8/3 * d_model rounded up to a multiple of 64 (LLaMA's rule)
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    tie_embeddings: bool = True  # with a 32k-150k Chinese vocab, untying adds tens of millions of params
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.ffn_hidden is None:
            self.ffn_hidden = -(-int(8 * self.d_model / 3) // 64) * 64
        if self.d_model % self.n_head or self.n_head % self.n_kv_head:
            raise ValueError(f"d_model {self.d_model} must divide by n_head {self.n_head}, "
                             f"and n_head by n_kv_head {self.n_kv_head}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def padded_vocab(self) -> int:
        if self.vocab_size is None:
            raise ValueError("GPTConfig.vocab_size is not set (it comes from the tokenizer)")
        return -(-self.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE

    def to_dict(self) -> dict:
        return asdict(self)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def preset_data(name: str, **overrides) -> dict:
    """The named preset's fields (presets/<name>.yaml) with keyword overrides; unknown names and keys are errors."""
    import yaml

    path = PRESETS / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(preset_names())}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    allowed = {f.name for f in fields(GPTConfig)}
    bad = sorted(set(data) - allowed)
    if bad:
        raise ValueError(f"unknown model field(s) {bad}; allowed: {sorted(allowed)}")
    return data


def load_preset(name: str, **overrides) -> GPTConfig:
    """The named preset with keyword overrides, as a GPTConfig."""
    return GPTConfig(**preset_data(name, **overrides))


def palm_flops(matmul_params: float, n_layer: int, n_head: int, head_dim: int, seq_len: int) -> float:
    """Training FLOPs per token by the PaLM formula: 6N + 12 * L * H * Q * T, no causal discount (N = matmul
    weights, the output layer included)."""
    return 6.0 * matmul_params + 12.0 * n_layer * n_head * head_dim * seq_len


def flops_per_token(cfg: GPTConfig, seq_len: int) -> float:
    """PaLM FLOPs per token of the GPT. N counts every matmul weight, the output layer included (with a 64k Chinese
    vocab it is ~37% of a 124M model's matmuls); the embedding lookup is not a matmul, so an untied input embedding
    is left out."""
    d, hd, L = cfg.d_model, cfg.head_dim, cfg.n_layer
    attn = d * hd * (cfg.n_head * 2 + cfg.n_kv_head * 2)
    mlp = 3 * d * cfg.ffn_hidden
    return palm_flops(L * (attn + mlp) + d * cfg.padded_vocab, L, cfg.n_head, hd, seq_len)
