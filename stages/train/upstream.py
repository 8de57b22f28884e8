"""What the train stage needs from the tokenize stage's manifest, read in one place so it is easy to align.

    info = token_info(ctx.upstream["tokenize"])
    info.train, info.val            # Arrow IPC shard paths
    info.seq_len, info.vocab_size, info.eos_id, info.tokenizer_digest, info.tokenizer_model
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipelines.dataset import ContractError, StageData, sha256_file

DIGEST_KEYS = ("tokenizer_digest", "tokenizer_sha256", "tokenizer")


@dataclass
class TokenInfo:
    train: list[Path]
    val: list[Path]
    seq_len: int
    vocab_size: int
    eos_id: int
    dtype: str
    tokenizer_digest: str
    tokenizer_model: Path


def _tokenizer_model(up: StageData) -> Path:
    """The SentencePiece model: a `tokenizer` output of the tokenize stage, or a path in its manifest extra."""
    if "tokenizer" in up.manifest.outputs:
        paths = [p for p in up.paths("tokenizer") if p.suffix == ".model"]
        if paths:
            return paths[0]
    path = up.manifest.extra.get("tokenizer_model")
    if path and Path(path).is_file():
        return Path(path)
    raise ContractError(f"{up.dir}: the tokenize manifest names no SentencePiece model "
                        "(expected an output 'tokenizer' or extra.tokenizer_model)")


def token_info(up: StageData) -> TokenInfo:
    extra = up.manifest.extra
    missing = [k for k in ("seq_len", "vocab_size", "eos_id") if k not in extra]
    if missing:
        raise ContractError(f"{up.dir}: tokenize manifest extra lacks {missing}")
    for name in ("train", "val"):
        if name not in up.manifest.outputs:
            raise ContractError(f"{up.dir}: tokenize has no output {name!r}")
    model = _tokenizer_model(up)
    digest = next((extra[k] for k in DIGEST_KEYS if isinstance(extra.get(k), str)), None) or sha256_file(model)
    return TokenInfo(train=up.paths("train"), val=up.paths("val"), seq_len=int(extra["seq_len"]),
                     vocab_size=int(extra["vocab_size"]), eos_id=int(extra["eos_id"]),
                     dtype=str(extra.get("dtype", "uint32")), tokenizer_digest=digest, tokenizer_model=model)
