"""Real Chinese documents for tests, benchmarks and measurement scripts: Debian's Chinese documentation (the
quickstart's sample site), extracted with trafilatura into the documents schema. Fetched into the checkout's
data/sample-site by scripts/fetch_sample_site.sh when missing.

Also the committed definition of the sample site's "content pages" (`content_ids`): the pages the clean stage's
default preset must mostly keep (tests/stages/test_clean_stage.py asserts >= 90%). A page is a content page when
its extracted text has at least 200 CJK ideographs (every ideograph block) in lines of running text, i.e. lines of
at least 10 characters. The line condition leaves out pages whose Chinese is mostly a navigation menu (LilyPond's
community/glossary pages: 60 one-word menu lines, ~150 ideographs).
"""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.dataset import DOC_SCHEMA, doc_id
from pipelines.io import atomic_path
from pipelines.text import CJK, char_classes

ROOT = Path(__file__).resolve().parents[2]  # the checkout: this package is used from it (an editable install)
SITE = ROOT / "data" / "sample-site"
# LibreOffice's help pages are fetched for the quickstart's corpus only: tests keep to the Debian pages (218 documents)
QUICKSTART_ONLY = ("usr/share/libreoffice/",)


def site_root() -> Path:
    if not (SITE / "packages.tsv").exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch_sample_site.sh"), str(SITE)], check=True)
    return SITE / "root"


def html_files(pattern: str = "**/*.html") -> list[Path]:
    root = site_root()
    return sorted(p for p in root.glob(pattern)
                  if p.is_file() and not p.relative_to(root).as_posix().startswith(QUICKSTART_ONLY))


def html_bodies(max_bytes: int = 64 << 10) -> list[bytes]:
    """The bytes of the sample-site pages (html_files, in its order) smaller than max_bytes: the pages the crawl's
    tests and benchmarks serve."""
    return [p.read_bytes() for p in html_files() if p.stat().st_size < max_bytes]


@functools.lru_cache(maxsize=4)
def sample_docs(pattern: str = "**/*.html", limit: int | None = None) -> pa.Table:
    """One document per sample-site HTML page with extractable text, sorted by path (deterministic).

    Cached on disk beside the site (keyed by the package list, the pattern and the limit): extraction takes
    10-40 s, and every test session needs it."""
    import hashlib

    import pyarrow.parquet as pq

    site_root()
    packages = (SITE / "packages.tsv").read_text()
    key = hashlib.sha256(f"{packages}|{pattern}|{limit}|{QUICKSTART_ONLY}|v2".encode()).hexdigest()[:16]
    cache = SITE / "cache" / f"docs-{key}.parquet"
    if cache.exists():
        return pq.read_table(cache)
    table = _extract(pattern, limit)
    with atomic_path(cache) as tmp:
        pq.write_table(table, tmp)
    return table


def _extract(pattern: str, limit: int | None) -> pa.Table:
    import trafilatura

    rows = []
    for p in html_files(pattern)[:limit]:
        html = p.read_bytes().decode("utf-8", errors="replace")
        text = trafilatura.extract(html, fast=True) or ""
        if not text.strip():
            continue
        rel = p.relative_to(site_root()).as_posix()
        url = f"http://127.0.0.1/{rel}"
        rows.append({"id": doc_id(url, text), "source_name": "debian-zh", "url": url, "source": f"file:{rel}:0",
                     "fetched_at": "2026-01-01T00:00:00Z", "title": p.stem, "text": text})
    return pa.Table.from_pylist(rows, schema=DOC_SCHEMA)


MIN_CJK = 200
MIN_LINE_CHARS = 10


def running_text_cjk(text: str) -> int:
    """Ideographs in lines of at least MIN_LINE_CHARS characters."""
    lines = [line.strip() for line in text.split("\n")]
    return int(sum(np.count_nonzero(char_classes(line) == CJK) for line in lines if len(line) >= MIN_LINE_CHARS))


def is_content(text: str) -> bool:
    return running_text_cjk(text or "") >= MIN_CJK


def content_ids(table: pa.Table) -> list[str]:
    """Ids of the content pages in a documents table (DOC_SCHEMA), in table order."""
    return [i for i, t in zip(table.column("id").to_pylist(), table.column("text").to_pylist()) if is_content(t)]
