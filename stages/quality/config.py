"""The quality stage's config. Everything knowable from it is checked when the config loads, before any work:
positives that match no file or are too few to train on, a pinned model that is not a usable export or whose
tokenizer does not match it. Importing this module is cheap (pydantic only).
"""
from __future__ import annotations

import glob
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.stage import ExternalPath, StageConfig


class FastTextConfig(BaseModel):
    """fastText supervised training; `chars` vs `raw` is measured in stages/quality/classifier.py."""

    model_config = ConfigDict(extra="forbid")
    tokens: Literal["chars", "raw"] = Field("chars", description="chars: characters separated by spaces; raw: "
                                            "the text as is (then give minn/maxn for subword n-grams)")
    word_ngrams: int = Field(2, ge=1, le=5, description="token n-grams (chars: 2 = character unigrams + bigrams)")
    minn: int = Field(0, ge=0, le=10, description="subword character n-grams, shortest (0 = none)")
    maxn: int = Field(0, ge=0, le=10, description="subword character n-grams, longest (0 = none)")
    example_chars: int = Field(300, ge=1, description="training documents are cut at line ends into examples of "
                               "about this many characters (scoring reads whole documents)")
    dim: int = Field(32, ge=2, le=300)
    epoch: int = Field(20, ge=1)
    lr: float = Field(0.2, gt=0, description="0.5 diverged (NaN) on 500-character raw-text examples")
    bucket: int = Field(100_000, ge=1000, description="hashed n-gram rows: the model is (vocab + bucket) x dim "
                        "floats, 13 MB with the defaults (fastText's default 2M x 100 would be 800 MB)")
    seed: int = Field(1, ge=0, description="fastText's seed; training uses one thread, so the model is fixed")
    holdout_fraction: float = Field(0.2, gt=0, lt=1, description="documents of each class held out for the "
                                    "precision / recall / ROC AUC figures (not trained on)")

    @model_validator(mode="after")
    def _raw_needs_subwords(self) -> "FastTextConfig":
        if self.tokens == "raw" and self.maxn == 0:
            raise ValueError("tokens 'raw' sees each run of Chinese text as one word: set minn/maxn (e.g. 1 and 3)")
        if self.maxn < self.minn:
            raise ValueError(f"maxn {self.maxn} is below minn {self.minn}")
        return self


class PerplexityConfig(BaseModel):
    """Bits per byte under a pinned model: the HF export of an earlier train stage."""

    model_config = ConfigDict(extra="forbid")
    model: ExternalPath = Field(..., description="a train stage directory, or its export/ folder")
    window: Optional[int] = Field(None, ge=2, description="tokens per forward pass; None = the model's context")
    batch: int = Field(8, ge=1, description="windows per forward pass")
    percentiles: tuple[float, float] = Field((1 / 3, 2 / 3), description="per-source bits-per-byte percentiles "
                                             "between head | middle | tail (CCNet: terciles)")

    @field_validator("model")
    @classmethod
    def _usable(cls, v: Path) -> Path:
        from stages.quality.perplexity import check_export

        why = check_export(v)
        if why:
            raise ValueError(why)
        return v

    @field_validator("percentiles")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] < v[1] < 1:
            raise ValueError(f"percentiles {list(v)} must rise within (0, 1)")
        return v


def _expand(patterns: list) -> list[str]:
    """Each glob pattern becomes the files it matches (sorted); a pattern or path matching nothing is an error."""
    out = []
    for p in patterns or []:
        p = str(Path(str(p)).expanduser())
        hits = sorted(glob.glob(p)) if glob.has_magic(p) else [p] if Path(p).exists() else []
        if not hits:
            raise ValueError(f"{p!r} matches no file")
        out += hits
    return out


class QualityConfig(StageConfig):
    """Model-based quality scoring between dedupe and the tokenizer: a fastText classifier and/or bits per byte
    under a pinned model, a keep rule per source."""

    positives: list[ExternalPath] = Field([], description="reference documents the kept text should resemble: "
                                          ".txt/.jsonl/.parquet files or globs, or stage directories")
    negatives: list[ExternalPath] = Field([], description="like positives; empty = a seeded sample of the input")
    negatives_per_positive: float = Field(1.0, gt=0, description="sampled negatives per positive document "
                                          "(balanced classes, as DCLM trained its fastText filter)")
    sample_seed: int = Field(0, ge=0, description="seed of the negative sample and of the held-out split")
    text_column: str = Field("text", min_length=1, description="text column / JSON field of reference files")
    classifier: FastTextConfig = FastTextConfig()
    perplexity: Optional[PerplexityConfig] = None
    keep_by: Literal["fasttext", "perplexity"] = Field("fasttext", description="the scorer the keep rule reads")
    keep_fraction: Optional[float] = Field(None, gt=0, le=1, description="keep the best fraction of each source")
    threshold: Optional[float] = Field(None, description="keep documents at least this good (P(keep) >= t for "
                                       "fasttext, bits per byte <= t for perplexity); with keep_fraction null")

    @field_validator("positives", "negatives", mode="before")
    @classmethod
    def _globs(cls, v: list) -> list[str]:
        return _expand(v if isinstance(v, list) else [] if v is None else [v])

    @field_validator("positives", "negatives")
    @classmethod
    def _enough(cls, v: list[Path]) -> list[Path]:
        from stages.quality.corpus import MIN_DOCS, read_examples

        if v:
            n = len(read_examples(v))
            if n < MIN_DOCS:
                raise ValueError(f"{n} non-empty document(s); at least {MIN_DOCS} are needed, so that the held-out "
                                 f"split keeps 2 or more to measure precision, recall and ROC AUC on")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> "QualityConfig":
        if not self.positives and self.perplexity is None:
            raise ValueError("no scorer: give positives (the fastText classifier) and/or perplexity.model")
        if self.keep_by == "fasttext" and not self.positives and (self.keep_fraction or self.threshold) is not None:
            raise ValueError("keep_by fasttext needs positives to train the classifier on")
        if self.keep_by == "perplexity" and self.perplexity is None:
            raise ValueError("keep_by perplexity needs perplexity.model")
        if self.keep_fraction is not None and self.threshold is not None:
            raise ValueError("give keep_fraction or threshold, not both")
        return self

    def scorers(self) -> list[str]:
        return (["fasttext"] if self.positives else []) + (["perplexity"] if self.perplexity else [])

    def keep_scorer(self) -> str | None:
        """The scorer the keep rule reads; None when every document is kept (scores only)."""
        return None if self.keep_fraction is None and self.threshold is None else self.keep_by
