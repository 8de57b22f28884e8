"""Real Chinese documents for tests: Debian's Chinese documentation (the quickstart's sample site), extracted
with trafilatura into the documents schema. Fetched by scripts/fetch_sample_site.sh when missing.
"""
from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

import pyarrow as pa

from pipelines.dataset import DOC_SCHEMA, doc_id

ROOT = Path(__file__).resolve().parents[1]
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
    cache.parent.mkdir(exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, cache)
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
