"""The crawl stage's config: a list of sources (`seeds`, `warc`, `files`), HTTP politeness and safety limits.

Defaults are set for Chinese sites: legacy CJK labels are decoded with supersets (see encoding.py), pages are
capped at 10 MiB (the largest Debian Reference chapter is 1.6 MB), and the crawl is breadth-first and polite.
"""
from __future__ import annotations

import ipaddress
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.stage import ExternalFile, StageConfig

_FORBID = ConfigDict(extra="forbid")
# Links to these are not pages: skipping them saves a fetch each (images, archives, packages, PDFs).
DEFAULT_EXCLUDE = [r"\.(?i:png|jpe?g|gif|svg|ico|webp|css|js|pdf|zip|gz|bz2|xz|tar|deb|rpm|exe|mp[34]|avi|woff2?)$"]


class ExtractConfig(BaseModel):
    model_config = _FORBID
    fast: bool = Field(True, description="trafilatura fast mode (no readability/justext fallback): ~2x faster")
    favor_precision: bool = False
    include_tables: bool = True
    min_chars: int = Field(1, ge=0, description="documents with fewer extracted characters are logged as no_text")


class _Source(BaseModel):
    model_config = _FORBID
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="carried by every doc as source_name")
    provenance: Optional[ExternalFile] = Field(None, description="a TSV (package, version, file, sha256) recorded in "
                                               "the manifest; its content joins the cache key")


class SeedsSource(_Source):
    """An HTTP(S) crawl: breadth-first from `seeds`, URLs in sorted order within a depth."""

    type: Literal["seeds"]
    seeds: list[str] = Field(..., min_length=1)
    max_depth: Optional[int] = Field(3, ge=0, description="links followed from a seed; None = unlimited")
    max_pages: Optional[int] = Field(1000, ge=1, description="pages fetched in total; None = unlimited")
    max_pages_per_host: Optional[int] = Field(None, ge=1)
    same_site: bool = Field(True, description="follow links only to the seeds' hosts (plus allow_domains)")
    allow_domains: list[str] = Field([], description="extra hosts (and their subdomains) links may go to")
    include: list[str] = Field([], description="regexes; when set, a URL must match one")
    exclude: list[str] = Field(DEFAULT_EXCLUDE, description="regexes; a matching URL is out of scope")
    allow_private: list[str] = Field([], description="IPs/CIDRs fetched although private or loopback, e.g. 127.0.0.1")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[str]) -> list[str]:
        from stages.crawl.frontier import normalize_url

        for seed in v:
            if normalize_url(seed)[0] is None:
                raise ValueError(f"seed {seed!r}: {normalize_url(seed)[1]} (a seed is an http(s) URL)")
        return v

    @field_validator("allow_private")
    @classmethod
    def _nets(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or CIDR (e.g. 127.0.0.1 or 10.0.0.0/8)") from exc
        return v


class WarcSource(_Source):
    """WARC/WET files (local paths, globs, fsspec URLs such as s3://commoncrawl/...)."""

    type: Literal["warc"]
    paths: list[str] = Field(..., min_length=1)
    max_records: Optional[int] = Field(None, ge=1, description="records read per file; None = all")
    max_bad_fraction: float = Field(0.01, ge=0, le=1, description="corrupt records (logged, skipped) above this "
                                    "share of the source's records fail the stage")


class FilesSource(_Source):
    """A corpus the user already has: JSONL, Parquet, plain text (one doc per file), HTML files or folders of them."""

    type: Literal["files"]
    paths: list[str] = Field(..., min_length=1, description="files, folders (searched recursively) or globs")
    text_field: str = "text"
    url_field: Optional[str] = "url"
    title_field: Optional[str] = "title"
    id_field: Optional[str] = Field(None, description="the records' own id, kept as the `source_id` column (to "
                                    "the token rows; `zhgpt trace --source-id`)")
    keep_fields: Union[list[str], Literal["all"], None] = Field(
        None, description="other record fields kept as the `meta` column (a JSON object); `all` = every field "
        "but the text, id, url and title fields")
    max_bad_fraction: float = Field(0.01, ge=0, le=1, description="bad records (logged, skipped) above this share "
                                    "of the source's records fail the stage")
    files_per_task: int = Field(64, ge=1, description="small files read per Ray task (shapes the shards)")
    task_bytes: int = Field(64 << 20, ge=1 << 16, description="bytes read per Ray task: smaller files are grouped "
                            "up to it, larger JSONL files split by byte range, Parquet files by row group")


Source = Annotated[Union[SeedsSource, WarcSource, FilesSource], Field(discriminator="type")]


class CrawlConfig(StageConfig):
    """`crawl:` section. `concurrency`, `per_host_concurrency` and the checkpoint interval do not change what is
    fetched: not in the key."""

    EXEC_FIELDS = frozenset({"concurrency", "per_host_concurrency", "checkpoint_pages", "checkpoint_seconds"})
    sources: list[Source] = Field(..., min_length=1)
    user_agent: str = "zhgpt-crawler/0.1 (+https://github.com/zhgpt)"
    partitions: int = Field(4, ge=1, description="host partitions: one Ray task per partition per round")
    concurrency: int = Field(32, ge=1, description="requests in flight per task")
    # A SIGKILLed task refetches the pages since its last checkpoint plus those in flight (partition.max_in_flight:
    # 4 for one host at the defaults, 12 with a helper task); a task that loses its driver (or fails) saves its
    # journal first and refetches only those in flight. 5 pages is 0.7% of a 700-page round, and a checkpoint costs
    # ~0.2 ms (a page's processing ~18 ms); 5 s bounds the loss of a slow, polite crawl.
    checkpoint_pages: int = Field(5, ge=1, description="a seeds task saves its progress every this many pages...")
    checkpoint_seconds: float = Field(5.0, gt=0, description="...or this often, whichever comes first")
    per_host_concurrency: int = Field(2, ge=1)
    min_delay: float = Field(0.25, ge=0, description="seconds between requests to one host (robots Crawl-delay wins)")
    max_crawl_delay: float = Field(30.0, ge=0, description="a longer robots Crawl-delay skips the host")
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(20.0, gt=0)
    total_timeout: float = Field(60.0, gt=0)
    max_bytes: int = Field(10 << 20, ge=1024, description="cap on a body, after decompression (gzip bombs)")
    max_redirects: int = Field(5, ge=0)
    max_retries: int = Field(3, ge=0, description="on connection errors, 5xx and 429")
    backoff: float = Field(0.5, ge=0, description="first retry delay, doubled each time")
    max_retry_after: float = Field(60.0, ge=0, description="a longer Retry-After gives up on the URL")
    fetched_at: Optional[str] = Field(None, description="pin the fetch time (ISO 8601) for reproducible test crawls")
    extract: ExtractConfig = ExtractConfig()

    @field_validator("sources")
    @classmethod
    def _unique(cls, v: list) -> list:
        names = [s.name for s in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dup)}")
        return v

    def check_root(self, root) -> None:
        """When the config loads, before Ray or MLflow start: every `paths` entry of a files/warc source names at
        least one file (relative paths: the current directory, as for every path in a config)."""
        from stages.crawl.sources import check_paths

        for src in self.sources:
            if src.type != "seeds":
                check_paths(src)
