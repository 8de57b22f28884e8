"""A decoder-only LLaMA-style GPT: RoPE (half-split, as Hugging Face Llama), RMSNorm, SwiGLU, no biases,
optional grouped-query attention and tied embeddings. torch only, so it runs wherever torch does.

    cfg = load_preset("tiny", vocab_size=8000)
    model = GPT(cfg)                       # or on the meta device: with torch.device("meta"): GPT(cfg)
    logits = model(idx)                    # (B, T) int64 -> (B, T, padded_vocab)
    loss = model(idx, targets)             # the mean fp32 cross-entropy (reduction="none": per token)

Presets live in presets/<name>.yaml; `GPTConfig(**yaml.safe_load(...))` builds the same config.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

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


def load_preset(name: str, **overrides) -> GPTConfig:
    """The named preset (presets/<name>.yaml) with keyword overrides; unknown names and keys are errors."""
    import yaml

    path = PRESETS / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        raise ValueError(f"unknown model preset {name!r}; known presets: {known}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    allowed = {f.name for f in fields(GPTConfig)}
    bad = sorted(set(data) - allowed)
    if bad:
        raise ValueError(f"unknown model field(s) {bad}; allowed: {sorted(allowed)}")
    return GPTConfig(**data)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # computed in fp32 like HF LlamaRMSNorm, so bf16 activations do not lose the variance
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_tables(head_dim: int, seq_len: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (T, head_dim), halves repeated: the HF `rotate_half` layout."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    ang = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv)
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, D). Rotates pairs (i, i + D/2), the half-split convention."""
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rot * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv, self.hd = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_head * self.hd, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, self.n_kv * self.hd, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, self.n_kv * self.hd, bias=False)
        self.o_proj = nn.Linear(cfg.n_head * self.hd, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_kv != self.n_head)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class SwiGLU(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class GPT(nn.Module):
    """Module names follow HF Llama (`layers.{i}.self_attn.q_proj`, ...) so export is a prefix rename."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.padded_vocab, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.padded_vocab, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.activation_checkpointing = False
        # RoPE tables as buffers (not saved): computed inline, torch.compile re-derived cos/sin in every layer's
        # kernel, which made RoPE 4x slower than its memory traffic on an H100
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self.reset_parameters()
        self.init_rope()

    def init_rope(self) -> None:
        """(Re)compute the RoPE tables for max_seq_len, on the buffers' device (after to_empty, say)."""
        self.rope_cos, self.rope_sin = rope_tables(self.cfg.head_dim, self.cfg.max_seq_len, self.cfg.rope_theta,
                                                   self.rope_cos.device)

    def reset_parameters(self) -> None:
        """Every parameter through init_param, in named_parameters() order. Works on meta too."""
        for name, p in self.named_parameters():
            init_param(self.cfg, name, p)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                reduction: str = "mean") -> torch.Tensor:
        """Logits (B, T, padded_vocab); with `targets` (B, T) the fp32 cross-entropy instead (mean over tokens,
        or per token with reduction="none"): inside forward, so torch.compile fuses the loss with the output
        layer rather than materialising fp32 logits (a quarter of a 124M step on an H100 otherwise)."""
        T = idx.shape[1]
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {T} tokens is longer than max_seq_len {self.cfg.max_seq_len}")
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.embed_tokens(idx)
        for block in self.layers:
            if self.activation_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, use_reentrant=False)
            else:
                x = block(x, cos, sin)
        logits = self.lm_head(self.norm(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1), reduction=reduction)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights count once


def init_param(cfg: GPTConfig, name: str, p: torch.Tensor) -> torch.Tensor:
    """Vectors (norm weights) 1; matrices Normal(0, init_std), output projections scaled by 1/sqrt(2 * n_layer)
    (GPT-2). Draws from the global generator, so the same seed and order give the same weights sharded or not."""
    if p.dim() == 1:
        return nn.init.ones_(p)
    out = name.endswith(("o_proj.weight", "down_proj.weight"))
    return nn.init.normal_(p, 0.0, cfg.init_std / math.sqrt(2 * cfg.n_layer) if out else cfg.init_std)


def flops_per_token(cfg: GPTConfig, seq_len: int) -> float:
    """Training FLOPs per token by the PaLM formula: 6N + 12 * L * H * Q * T, no causal discount.

    N = every matmul weight, the output layer included (with a 64k Chinese vocab it is ~37% of a 124M
    model's matmuls); the embedding lookup is not a matmul, so an untied input embedding is left out.
    """
    d, hd, L = cfg.d_model, cfg.head_dim, cfg.n_layer
    attn = d * hd * (cfg.n_head * 2 + cfg.n_kv_head * 2)
    mlp = 3 * d * cfg.ffn_hidden
    n = L * (attn + mlp) + d * cfg.padded_vocab
    return 6.0 * n + 12.0 * L * cfg.n_head * hd * seq_len
