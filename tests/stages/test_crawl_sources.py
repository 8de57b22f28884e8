"""The `warc` and `files` sources on real Chinese text, provenance in the manifest, and bad-input messages.

    .venv/bin/python -m pytest -q tests/stages/test_crawl_sources.py     (~10 s on 2 cores)
"""
from __future__ import annotations

import io
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.config import ConfigError, load
from pipelines.testing.helpers import run_stage
from pipelines.testing.realtext import SITE, html_files, sample_docs
from stages.crawl.config import CrawlConfig
from stages.crawl.sources import SourceError
from tests.conftest import write_config

FAQ = "usr/share/doc/debian/FAQ/zh-cn/*.html"


def write_warc(path, faq_pages) -> None:
    """A crawl-style WARC (GBK HTML, an image) and a WET-style file (conversion records of plain text)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path / "crawl.warc.gz", "wb") as fh:
        w = WARCWriter(fh, gzip=True, warc_version="1.1")
        for p in faq_pages:
            body = p.read_text(encoding="utf-8").replace('charset="UTF-8"', "").encode("gb18030", "replace")
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=gbk")], protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(f"http://faq.example.cn/{p.name}", "response",
                                                payload=io.BytesIO(body), http_headers=http))
        http = StatusAndHeaders("200 OK", [("Content-Type", "image/png")], protocol="HTTP/1.1")
        w.write_record(w.create_warc_record("http://faq.example.cn/logo.png", "response",
                                            payload=io.BytesIO(b"\x89PNG\r\n"), http_headers=http))
    with open(path / "crawl.warc.wet.gz", "wb") as fh:
        w = WARCWriter(fh, gzip=True, warc_version="1.1")
        for i, text in enumerate(["第一篇：中文预训练语料。", "第二篇：数据清洗和去重。"]):
            w.write_record(w.create_warc_record(f"http://wet.example.cn/{i}", "conversion",
                                                payload=io.BytesIO(text.encode()), warc_content_type="text/plain"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    faq = html_files(FAQ)
    write_warc(d, faq[:3])
    (d / "html").mkdir()
    for p in faq[:4]:
        shutil.copy(p, d / "html" / p.name)
    docs = sample_docs(FAQ)
    rows = docs.select(["url", "title", "text"]).slice(0, 5).to_pylist()
    (d / "a.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n",
                               encoding="utf-8")
    pq.write_table(pa.Table.from_pylist([{"text": "繁體中文的段落。", "url": "http://tw.example/1"}]), d / "b.parquet")
    (d / "c.txt").write_text("纯文本文件：一行中文。\n", encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def ingest(corpus, ray_session, tmp_path_factory):
    cfg = CrawlConfig(sources=[
        {"name": "cc", "type": "warc", "paths": [str(corpus / "*.gz")]},
        {"name": "mine", "type": "files", "paths": [str(corpus / "html"), str(corpus / "a.jsonl"),
                                                    str(corpus / "b.parquet"), str(corpus / "c.txt")],
         "files_per_task": 2, "provenance": str(SITE / "packages.tsv")}])
    return run_stage("crawl", cfg, {}, tmp_path_factory.mktemp("ingest") / "crawl", workers=2)


def test_warc_and_wet_records_become_documents(ingest, corpus):
    _, out = ingest
    docs = [d for d in out.read_table("docs").to_pylist() if d["source_name"] == "cc"]
    html_docs = [d for d in docs if d["url"].startswith("http://faq")]
    assert len(html_docs) == 3 and all(d["encoding"] == "gb18030" and d["undecodable"] == 0 for d in html_docs)
    assert any("Debian" in d["text"] for d in html_docs)
    assert [d["text"] for d in docs if "wet" in d["url"]] == ["第一篇：中文预训练语料。", "第二篇：数据清洗和去重。"]
    assert all(d["source"] == f"warc:{d['warc_file']}@{d['warc_offset']}" for d in docs)
    log = {r["url"]: r for r in out.read_table("log").to_pylist()}
    assert log["http://faq.example.cn/logo.png"]["fate"] == "not_html"
    fetched = sum(r["fate"] == "fetched" for r in log.values())  # JSONL/Parquet rows are documents, not URLs: no log
    assert ingest[0].stats["urls_not_html"] == 1 and ingest[0].stats["urls_fetched"] == fetched == 10


def test_files_source_reads_html_jsonl_parquet_text(ingest, corpus):
    result, out = ingest
    docs = [d for d in out.read_table("docs").to_pylist() if d["source_name"] == "mine"]
    by_kind = {k: [d for d in docs if k in d["source"]] for k in ("html/", "a.jsonl", "b.parquet", "c.txt")}
    assert [len(v) for v in by_kind.values()] == [4, 5, 1, 1]
    assert by_kind["a.jsonl"][0]["source"].endswith("a.jsonl:1") and by_kind["a.jsonl"][0]["url"].startswith("http")
    assert by_kind["b.parquet"][0]["text"] == "繁體中文的段落。"
    assert len({d["id"] for d in docs}) == len(docs)
    assert [s.path for s in out.manifest.outputs["docs"].shards][-4:] == [  # sorted paths, 2 files a task
        "docs/mine-f00000.parquet", "docs/mine-f00001.parquet", "docs/mine-f00002.parquet",
        "docs/mine-f00003.parquet"]


def test_provenance_lands_in_the_manifest(ingest):
    result, _ = ingest
    pkgs = {r["package"]: r for r in result.extra["provenance"]["mine"]}
    assert "debian-reference-zh-cn" in pkgs and len(pkgs["debian-faq-zh-cn"]["sha256"]) == 64


def test_missing_input_is_one_clear_error(ray_session, tmp_path):
    cfg = CrawlConfig(sources=[{"name": "cc", "type": "warc", "paths": [str(tmp_path / "nothing-*.warc.gz")]}])
    with pytest.raises(SourceError, match=r"source cc: paths entry '.*nothing-\*\.warc\.gz' matches no file"):
        run_stage("crawl", cfg, {}, tmp_path / "crawl")


def test_config_errors_are_one_line_with_the_key(tmp_path):
    base = {"pipeline": "t", "work_dir": str(tmp_path / "w")}
    bad = [({"sources": [{"name": "s", "type": "seeds", "seeds": ["http://a.cn"], "max_depth": -1}]},
            "crawl.sources.0.seeds.max_depth"),
           ({"sources": [{"name": "s", "type": "files", "paths": ["x"], "provenance": str(tmp_path / "no.tsv")}]},
            "crawl.sources.0.files.provenance"),
           ({"sources": [], "user_agent": "x"}, "crawl.sources"),
           ({"sources": [{"name": "s", "type": "warc", "paths": ["x"]}], "max_bytes": "big"}, "crawl.max_bytes")]
    for section, key in bad:
        path = write_config(tmp_path / "c.yaml", {**base, "crawl": section})
        with pytest.raises(ConfigError) as err:
            load(path)
        assert str(err.value).startswith(f"config error: {key}:") and "\n" not in str(err.value)
