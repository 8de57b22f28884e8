"""The tokenize stage's config: packing options (execution-only fields stay out of the cache key)."""
from __future__ import annotations

from pydantic import Field

from pipelines.stage import StageConfig


class TokenizeConfig(StageConfig):
    """Packing options; execution-only fields (threads, batch size) stay out of the cache key."""

    EXEC_FIELDS = frozenset({"encode_threads", "batch_docs"})

    seq_len: int = Field(2048, ge=8, le=1 << 20, description="tokens a model sees per sample; rows hold seq_len + 1")
    val_fraction: float = Field(0.005, ge=0.0, lt=1.0, description="share of documents (by id hash) in `val`; "
                              "at least one document when > 0")
    tokens_per_shard: int = Field(1 << 25, ge=1024, description="target tokens per output shard (about 64 MiB uint16)")
    seed: int = Field(0, ge=0, description="shuffle seed: document order and shard assignment")
    encode_threads: int = Field(1, ge=1, le=64, description="SentencePiece threads (and Ray CPUs) per encode task")
    batch_docs: int = Field(512, ge=1, description="documents per SentencePiece batch call")
