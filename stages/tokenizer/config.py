"""The tokenizer stage's config: SentencePiece training options, or a pinned model file."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator

from pipelines.stage import ExternalFile, StageConfig


class TokenizerConfig(StageConfig):
    """SentencePiece training options; defaults suit a Chinese web corpus (LLaMA/Baichuan-style BPE)."""

    model_path: Optional[ExternalFile] = Field(
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
    # SentencePiece's training memory follows its input: ~0.25 GB + 1.55 GB per million lines of web-length
    # Chinese (bench/tokenizer_budget.py: 1.0 / 1.8 / 3.3 GB peak at 0.5 / 1 / 2M lines; 7.7 GB at the old 5M), and
    # ~37 s per million lines. Above the budget the stage feeds a seeded sample, so 2M lines bound the stage at
    # ~3.3 GB and ~75 s of training whatever the corpus (flat past ~135k documents of 15 lines).
    input_sentence_size: Optional[int] = Field(
        2_000_000, ge=1, description="at most this many lines, a seeded sample by line hash when the corpus has "
                                     "more (stages/tokenizer/sample.py); None = all lines (memory grows with the "
                                     "corpus: ~1.55 GB per million lines)")
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
