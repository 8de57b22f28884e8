"""A decoder-only LLaMA-style GPT: RoPE (half-split, as Hugging Face Llama), RMSNorm, SwiGLU, no biases,
optional grouped-query attention and tied embeddings. torch only, so it runs wherever torch does.

    cfg = load_preset("tiny", vocab_size=8000)   # stages.train.shapes
    model = GPT(cfg)                       # or on the meta device: with torch.device("meta"): GPT(cfg)
    logits = model(idx)                    # (B, T) int64 -> (B, T, padded_vocab)
    loss = model(idx, targets)             # the mean fp32 cross-entropy (reduction="none": per token)

GPTConfig, the presets (presets/<name>.yaml) and FLOPs per token live in shapes.py (no torch there). Training
flags are not the model's: parallel.py applies activation checkpointing and torch.compile.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stages.train.shapes import GPTConfig


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
