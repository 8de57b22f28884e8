"""The reference texts of configs/ablation.yaml, cut from the sample site exactly as the pipeline would see them
(the crawl's extractor, then the clean stage with the config's clean settings):

    positives.parquet  the quality classifier's positives: the Debian FAQ and chapters 1-6 of Debian Reference
                       (zh-CN): explanatory prose written for readers, the Chinese we want the model to write
    eval-prose.parquet a fixed eval set of the same kind that no variant trains on: Debian Reference chapters
                       7-12 and appendix A (the config's crawl excludes them, in both scripts)
    eval-help.parquet  a fixed eval set of the corpus's other kind of text: LibreOffice's Impress and Draw
                       guides (also excluded from the crawl)

Written to data/sample-site/reference/ (deterministic: same site, same clean settings, same bytes).
    .venv/bin/python scripts/reference_sets.py [configs/ablation.yaml]
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config import load_dict
from pipelines.dataset import DOC_SCHEMA, doc_id
from stages.clean.config import CleanConfig
from stages.clean.core import clean_table
from stages.crawl.config import ExtractConfig
from stages.crawl.extract import process_html

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "data" / "sample-site"
BASE = "http://127.0.0.1:8765/"  # the URLs the crawl gives these pages (positives are left out of negatives)
SETS = {
    "positives": r"^usr/share/(doc/debian/FAQ/zh-cn/.*\.html|debian-reference/(ch0[1-6]|pr01)\.zh-cn\.html)$",
    "eval-prose": r"^usr/share/debian-reference/(ch0[7-9]|ch1[0-2]|apa)\.zh-cn\.html$",
    "eval-help": r"^usr/share/libreoffice/help/zh-CN/text/(simpress|sdraw)/guide/[^/]+\.html$",
}


def documents(pattern: str, source: str) -> pa.Table:
    root = SITE / "root"
    rows = []
    for p in sorted(root.rglob("*.html")):
        rel = p.relative_to(root).as_posix()
        if re.search(pattern, rel):
            url = BASE + rel
            page = process_html(url, p.read_bytes(), "text/html", ExtractConfig(), want_links=False)
            if page.fate == "fetched":
                rows.append({"id": doc_id(url, page.text), "source_name": source, "url": url, "source": f"file:{rel}",
                             "fetched_at": "2026-01-01T00:00:00Z", "title": page.title, "text": page.text})
    return pa.Table.from_pylist(rows, schema=DOC_SCHEMA)


def main(config: str = "configs/ablation.yaml") -> None:
    clean = CleanConfig(**(load_dict(ROOT / config).get("clean") or {}))
    out = SITE / "reference"
    out.mkdir(exist_ok=True)
    for name, pattern in SETS.items():
        docs, _, _ = clean_table(documents(pattern, "reference"), clean)
        docs = docs.select(DOC_SCHEMA.names)
        tmp = out / f".{name}.parquet.tmp"
        pq.write_table(docs, tmp)
        tmp.replace(out / f"{name}.parquet")
        print(f"{name}: {docs.num_rows} documents, {sum(map(len, docs.column('text').to_pylist()))} characters")


if __name__ == "__main__":
    main(*sys.argv[1:])
