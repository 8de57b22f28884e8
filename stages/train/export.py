"""Export a trained GPT as a Hugging Face `LlamaForCausalLM` folder: config.json, model.safetensors, tokenizer.

    files = export_hf(model_state, GPTConfig(...), Path("tokenizer.model"), out_dir, eos_id=2)
    # then: transformers.AutoModelForCausalLM.from_pretrained(out_dir)  (transformers is not needed here)

Module names already follow HF Llama, so the export is a prefix rename plus cropping the padded vocab back to
the tokenizer's size. Our RoPE is the half-split convention HF uses, so Q/K need no permutation.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from pipelines.io import atomic_path, write_bytes
from stages.train.shapes import GPTConfig


def hf_config(cfg: GPTConfig, bos_id: int | None, eos_id: int | None) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "intermediate_size": cfg.ffn_hidden,
        "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_kv_head,
        "head_dim": cfg.head_dim, "hidden_act": "silu", "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False,
        "tie_word_embeddings": cfg.tie_embeddings, "initializer_range": cfg.init_std,
        "bos_token_id": bos_id, "eos_token_id": eos_id, "torch_dtype": "float32", "use_cache": True,
    }


def hf_state_dict(state: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Our names -> HF names; vocab rows cropped to cfg.vocab_size; tied lm_head left for HF to tie."""
    out = {}
    for k, v in state.items():
        if k == "lm_head.weight":
            if cfg.tie_embeddings:
                continue
            out[k] = v[:cfg.vocab_size]
        elif k == "embed_tokens.weight":
            out["model.embed_tokens.weight"] = v[:cfg.vocab_size]
        else:
            out[f"model.{k}"] = v
    # safetensors refuses shared or strided storage: give every tensor its own contiguous fp32 copy
    return {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in out.items()}


def tokenizer_files(spm_model: Path, out: Path, bos_id: int | None, eos_id: int | None, sp=None) -> list[str]:
    """The SentencePiece model plus a LlamaTokenizer config that reproduces its ids (no BOS added). `sp`: the run's
    processor for that model (loaded here when not given)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    sp = sp or spm.SentencePieceProcessor(model_file=str(spm_model))
    model = Path(spm_model).read_bytes()
    proto = sentencepiece_model_pb2.ModelProto.FromString(model)
    write_bytes(out / "tokenizer.model", model)
    piece = lambda i: sp.id_to_piece(i) if i is not None and 0 <= i < sp.get_piece_size() else None  # noqa: E731
    conf = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": False, "add_eos_token": False,
            "legacy": False,
            # HF must prepend "▁" exactly when SentencePiece does, or every first piece differs
            "add_prefix_space": bool(proto.normalizer_spec.add_dummy_prefix), "clean_up_tokenization_spaces": False,
            "bos_token": piece(bos_id), "eos_token": piece(eos_id), "unk_token": piece(sp.unk_id()),
            "pad_token": None, "model_max_length": 1 << 30, "sp_model_kwargs": {}}
    write_bytes(out / "tokenizer_config.json", json.dumps(conf, ensure_ascii=False, indent=1).encode("utf-8"))
    return ["tokenizer.model", "tokenizer_config.json"]


def export_hf(state: dict[str, torch.Tensor], cfg: GPTConfig, spm_model: Path, out: Path,
              bos_id: int | None = None, eos_id: int | None = None, sp=None) -> list[str]:
    """Write the folder (each file atomically); returns the file names written (relative to `out`), in a fixed
    order."""
    from safetensors.torch import save_file

    out = Path(out)
    write_bytes(out / "config.json", json.dumps(hf_config(cfg, bos_id, eos_id), indent=1, sort_keys=True).encode())
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(hf_state_dict(state, cfg), str(tmp), metadata={"format": "pt"})
    gen = {"bos_token_id": bos_id, "eos_token_id": eos_id, "do_sample": True, "temperature": 0.8, "top_k": 50}
    write_bytes(out / "generation_config.json", json.dumps(gen, indent=1, sort_keys=True).encode())
    return ["config.json", "generation_config.json", "model.safetensors",
            *tokenizer_files(spm_model, out, bos_id, eos_id, sp)]
