"""tokenizer stage: train a SentencePiece model on the deduped documents, or pin an existing `.model` file.

Output `model` (files, primary): `model/tokenizer.model` (the SentencePiece model proto) and
`model/tokenizer.vocab` (one line per piece: `id<TAB>piece as a JSON string<TAB>score<TAB>type`; JSON because
the newline piece would break a plain TSV). The digest of `model` is the tokenizer's identity downstream.
Manifest extra: vocab_size, unk/bos/eos/pad ids, reserved_ids, newline_id, dtype (the token dtype a packed
shard needs: uint16 when every id fits, else uint32), model_type, byte_fallback, pinned.

Training is lossless: identity normalisation, whitespace kept, no dummy prefix, "\\n" a piece of its own and
byte fallback on, so `decode(encode(text)) == text` for any text without U+2581 (SentencePiece's own whitespace
marker, which decodes to a space). Documents are split into lines; a line longer than `max_sentence_bytes` is cut
at character boundaries instead of being skipped (SentencePiece skips long lines with only a warning).

Run with the pipeline (`zhgpt run configs/quickstart.yaml`) or alone: `zhgpt run CONFIG --only tokenizer`.
"""
from __future__ import annotations

import hashlib
from typing import Any, Literal, Optional

from pydantic import Field, FilePath, field_validator

from pipelines.stage import OutputSpec, StageConfig, StageSpec


class TokenizerConfig(StageConfig):
    """SentencePiece training options; defaults suit a Chinese web corpus (LLaMA/Baichuan-style BPE)."""

    model_path: Optional[FilePath] = Field(
        None, description="pin this existing SentencePiece .model and train nothing (its bytes form the cache key)")
    model_type: Literal["bpe", "unigram"] = Field("bpe", description="BPE (default) or unigram")
    vocab_size: int = Field(64000, ge=400, le=1_000_000,
                            description="pieces incl. 256 byte pieces and specials; >65,536 makes uint32 shards")
    character_coverage: float = Field(
        0.9995, ge=0.98, le=1.0, description="share of character occurrences covered by pieces (0.9995 for CJK); "
                                             "the rest become byte pieces")
    byte_fallback: bool = Field(True, description="rare characters become <0x..> byte pieces instead of <unk>")
    split_digits: bool = Field(True, description="every digit a piece of its own")
    reserved_tokens: int = Field(16, ge=0, le=4096, description="control tokens <reserved_i> kept for later use")
    sample_fraction: float = Field(1.0, gt=0.0, le=1.0,
                                   description="share of documents read for training, chosen by a seeded id hash")
    input_sentence_size: Optional[int] = Field(
        5_000_000, ge=1, description="at most this many lines, reservoir-sampled by SentencePiece; None = all lines")
    max_sentence_bytes: int = Field(16384, ge=256, le=1 << 20,
                                    description="longer lines are cut at character boundaries (UTF-8 bytes)")
    seed: int = Field(0, ge=0, description="seed of the document sample")
    num_threads: int = Field(4, ge=1, le=256, description="trainer threads; SentencePiece stores it in the model, "
                                                          "so it is part of the cache key (fix it, never auto)")

    @field_validator("model_path")
    @classmethod
    def _is_model(cls, v: Optional[Any]) -> Optional[Any]:
        if v is not None:
            from stages.tokenizer.train import load_processor

            load_processor(v.read_bytes(), str(v))  # raises ValueError with the reason
        return v

    def key_dict(self) -> dict[str, Any]:
        # A pinned model is identified by its bytes (the fingerprint), not by its path or the training options.
        if self.model_path is not None:
            return {"model_path": "pinned"}
        return super().key_dict()


def fingerprint(cfg: TokenizerConfig) -> str:
    if cfg.model_path is None:
        return ""
    return hashlib.sha256(cfg.model_path.read_bytes()).hexdigest()


def run(ctx):
    from stages.tokenizer.train import run_stage

    return run_stage(ctx)


SPEC = StageSpec(
    name="tokenizer",
    inputs=["dedupe"],
    config_model=TokenizerConfig,
    outputs=[OutputSpec("model", "file", primary=True)],
    run=run,
    code_modules=["stages.tokenizer"],
    libraries=["sentencepiece"],
    fingerprint=fingerprint,
    headline=["vocab_size", "train_lines"],
)
