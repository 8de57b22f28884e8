"""Real Chinese documents for tests: Debian's Chinese documentation (the quickstart's sample site), extracted
with trafilatura into the documents schema. Fetched by scripts/fetch_sample_site.sh when missing.
"""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pyarrow as pa

from pipelines.dataset import DOC_SCHEMA, doc_id

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "data" / "sample-site"


def site_root() -> Path:
    if not (SITE / "packages.tsv").exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch_sample_site.sh"), str(SITE)], check=True)
    return SITE / "root"


def html_files(pattern: str = "**/*.html") -> list[Path]:
    return sorted(p for p in site_root().glob(pattern) if p.is_file())


@functools.lru_cache(maxsize=4)
def sample_docs(pattern: str = "**/*.html", limit: int | None = None) -> pa.Table:
    """One document per sample-site HTML page with extractable text, sorted by path (deterministic)."""
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
