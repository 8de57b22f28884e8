"""What the train stage takes from the tokenize stage, read in one place: the shards, and the tokenizer facts the
tokenize manifest already records (seq_len, vocab_size, eos/bos ids, dtype, digest). The SentencePiece processor
is loaded once per run (`load_tokenizer`); only the bytes each id stands for are derived from it.

    info = token_info(ctx.upstream["tokenize"])
    sp = load_tokenizer(info)                    # the run's one processor: eval sets, bytes per id, export, samples
    info.train, info.val, info.seq_len, info.vocab_size, info.eos_id, info.bos_id, info.tokenizer_digest
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipelines.dataset import ContractError, StageData, sha256_file
from stages.train.data import bytes_per_id

DIGEST_KEYS = ("tokenizer_digest", "tokenizer_sha256", "tokenizer")


class TrainInputError(ValueError):
    """Bad input to the train stage: one line that says what is wrong and how to fix it."""


@dataclass
class TokenInfo:
    train: list[Path]
    val: list[Path]
    seq_len: int
    vocab_size: int
    eos_id: int
    bos_id: int | None  # None: no BOS id (or, before load_tokenizer, not in the manifest)
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
    bos = extra.get("bos_id")
    return TokenInfo(train=up.paths("train"), val=up.paths("val"), seq_len=int(extra["seq_len"]),
                     vocab_size=int(extra["vocab_size"]), eos_id=int(extra["eos_id"]),
                     bos_id=None if bos is None else int(bos), dtype=str(extra.get("dtype", "uint32")),
                     tokenizer_digest=digest, tokenizer_model=model)


def load_tokenizer(info: TokenInfo):
    """The run's SentencePiece processor; takes the BOS id from it when the manifest did not record one."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(info.tokenizer_model))
    bos = sp.bos_id() if info.bos_id is None else info.bos_id
    info.bos_id = bos if bos >= 0 else None
    return sp


def spm_bytes_per_id(sp) -> list[float]:
    """UTF-8 bytes each id of the processor stands for (bits per byte divide by them)."""
    n = sp.get_piece_size()
    kinds = ["byte" if sp.is_byte(i) else "control" if sp.is_control(i) or sp.is_unknown(i) else "normal"
             for i in range(n)]
    return bytes_per_id([sp.id_to_piece(i) for i in range(n)], kinds).tolist()
