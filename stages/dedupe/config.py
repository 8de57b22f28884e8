"""The dedupe stage's config: Chinese-first defaults (character 5-grams of the canonical text, threshold 0.8).

Importing it is cheap (pydantic only); the banding maths is imported when a config asks for it.
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, Optional

from pydantic import Field, field_validator, model_validator

from pipelines.stage import ExternalPath, StageConfig


class DedupeConfig(StageConfig):
    """Chinese-first defaults: character 5-grams of the canonical text (no word splitting), threshold 0.8."""

    EXEC_FIELDS: ClassVar[frozenset[str]] = frozenset({"partitions", "max_cc_rounds"})

    exact: bool = Field(True, description="remove documents whose canonical text (stages/dedupe/canonical.py) is "
                        "identical")
    threshold: Optional[float] = Field(0.8, gt=0, le=1, description="Jaccard a verified near-duplicate pair must "
                                       "reach; None switches near-duplicate removal off (exact only)")
    ngram: int = Field(5, ge=1, le=13, description="shingle = n consecutive characters of the canonical text")
    num_perm: int = Field(128, ge=8, le=1024, description="MinHash permutations")
    seed: int = Field(1, ge=0, description="permutation seed (datasketch's default is 1)")
    hashfunc: Literal["xxh32", "sha1"] = Field("xxh32", description="shingle hash: xxh32 equals datasketch "
                                               "MinHash(hashfunc=xxhash.xxh32_intdigest); sha1 its default, ~4x slower")
    bands: Optional[int] = Field(None, ge=1, description="LSH bands; None = chosen with rows from candidate_prob")
    rows: Optional[int] = Field(None, ge=1, description="rows per band; None = chosen with bands")
    candidate_prob: float = Field(0.98, gt=0, lt=1, description="when bands/rows are None: the smallest chance "
                                  "that a pair at the threshold becomes a candidate (0.98 -> 18x7 at 0.8/128)")
    verify: Literal["exact", "signature"] = Field("exact", description="exact: Jaccard of the shingle-hash sets; "
                                                  "signature: estimated from MinHash (sd 0.035 near 0.8 at 128)")
    max_bucket_pairs: int = Field(64, ge=2, description="buckets up to this size yield all pairs, larger ones a "
                                  "star plus a chain (2k pairs instead of k^2/2)")
    against: list[ExternalPath] = Field(default_factory=list, description="earlier dedupe outputs (directories with "
                                "manifest.json) or evaluation corpora (.jsonl/.parquet with a text column)")
    against_text_column: str = Field("text", min_length=1, description="text column of against files")
    sample_clusters: int = Field(20, ge=0, description="clusters shown side by side in the MLflow artifact")
    partitions: int = Field(8, ge=1, le=4096, description="shuffle partitions for buckets, at least (more when "
                            "the corpus needs them: stage.band_partitions); the most for components, which use "
                            "one per worker unless the candidate pairs need more (execution only: output does not "
                            "depend on it)")
    max_cc_rounds: int = Field(60, ge=2, description="connected-component rounds before giving up")

    @field_validator("against")
    @classmethod
    def _against_exists(cls, paths: list[Path]) -> list[Path]:
        for p in paths:
            if p.is_dir() and not (p / "manifest.json").exists():
                raise ValueError(f"{p} has no manifest.json: give a complete dedupe output directory")
            if not p.is_dir() and not (p.is_file() and p.suffix in (".jsonl", ".parquet")):
                raise ValueError(f"{p} is neither a dedupe output directory nor a .jsonl/.parquet file")
        return [p.expanduser().resolve() for p in paths]

    @model_validator(mode="after")
    def _banding_fits(self) -> "DedupeConfig":
        b, r = self.banding()
        if b * r > self.num_perm:
            raise ValueError(f"bands x rows = {b}x{r} = {b * r} exceeds num_perm {self.num_perm}")
        return self

    def banding(self) -> tuple[int, int]:
        """(bands, rows) as configured, the missing one derived, or both chosen from candidate_prob."""
        if self.bands and self.rows:
            return self.bands, self.rows
        if self.rows:
            return self.num_perm // self.rows, self.rows
        if self.bands:
            return self.bands, self.num_perm // self.bands
        from stages.dedupe.banding import choose_banding

        return choose_banding(self.threshold or 0.8, self.num_perm, self.candidate_prob)
