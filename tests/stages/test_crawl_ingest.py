"""Bringing your own corpus (issue 16): bad records logged and skipped, paths checked at config load, big files
split, compressed and damaged files read, the user's ids and fields carried to the token rows.

    .venv/bin/python -m pytest -q tests/stages/test_crawl_ingest.py     (~40 s on 2 cores)
"""
from __future__ import annotations

import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.testing.helpers import run_stage
from pipelines.testing.realtext import sample_docs
from stages.crawl.config import CrawlConfig
from stages.crawl.sources import SourceError
from tests.conftest import write_config


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return sample_docs().column("text").to_pylist()


def jsonl(path, records: list, raw: dict[int, bytes] | None = None) -> str:
    """Records as JSONL; raw[i] replaces line i (1-based) with bytes as they are."""
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in records]
    for i, b in (raw or {}).items():
        lines.insert(i - 1, b)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


def crawl(tmp_path, workers=2, **source):
    cfg = CrawlConfig(sources=[{"name": "mine", "type": "files", **source}])
    return run_stage("crawl", cfg, {}, tmp_path / f"crawl-{workers}", workers=workers)


def docs_of(out) -> list[dict]:
    return out.read_table("docs").to_pylist()


def log_of(out) -> list[dict]:
    return [r for r in out.read_table("log").to_pylist() if r.get("line") is not None or r["fate"] == "corrupt_record"]


def one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_a_malformed_line_is_logged_and_the_good_lines_kept(tmp_path, texts, ray_session):
    path = jsonl(tmp_path / "a.jsonl", [{"text": t} for t in texts[:40]], {21: b'{"text": "first half" "second"}'})
    result, out = crawl(tmp_path, paths=[path], max_bad_fraction=0.05)
    docs = docs_of(out)
    assert [d["text"] for d in docs] == texts[:40]
    assert [int(d["source"].rsplit(":", 1)[1]) for d in docs] == list(range(1, 21)) + list(range(22, 42))
    (bad,) = log_of(out)
    assert (bad["file"], bad["line"], bad["fate"]) == (path, 21, "invalid_json") and "column" in bad["reason"]
    assert result.stats["records_read"] == 41 and result.stats["records_invalid_json"] == 1
    with pytest.raises(SourceError) as err:  # 1 in 41 is over the default max_bad_fraction (1%)
        crawl(tmp_path / "strict", paths=[path])
    assert one_line(err).startswith("source mine: 1 of 41 records are bad (2.4% > max_bad_fraction 0.01); "
                                    f"first: {path}:21: not valid JSON (")


def test_records_without_text_or_not_objects_fail_with_the_counts(tmp_path, ray_session):
    path = jsonl(tmp_path / "a.jsonl", [[i, "数组"] for i in range(20)] + [{"content": "没有 text 字段"}] * 20)
    with pytest.raises(SourceError) as err:
        crawl(tmp_path, paths=[path])
    assert one_line(err) == (f"source mine: 0 documents from 1 file (40 lines: 20 not a JSON object, 20 without "
                             f"field 'text'); first bad: {path}:1: not a JSON object (a JSON array)")


def test_an_empty_jsonl_fails_at_the_crawl(tmp_path, ray_session):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(SourceError) as err:
        crawl(tmp_path, paths=[str(tmp_path / "empty.jsonl")])
    assert one_line(err) == "source mine: 0 documents from 1 file"


def test_a_binary_file_named_jsonl_is_named_and_skipped(tmp_path, texts, ray_session):
    good = jsonl(tmp_path / "good.jsonl", [{"text": t} for t in texts])
    pq.write_table(pa.table({"text": texts[:20]}), tmp_path / "real.parquet", compression="zstd")
    blob = tmp_path / "blob.jsonl"
    blob.write_bytes((tmp_path / "real.parquet").read_bytes())
    with pytest.raises(SourceError) as err:
        crawl(tmp_path, paths=[good, str(blob)])
    assert f"first: {blob}:1: not valid UTF-8 (byte 0x" in one_line(err)
    result, out = crawl(tmp_path / "lenient", paths=[good, str(blob)], max_bad_fraction=0.9)
    assert [d["text"] for d in docs_of(out)] == texts
    bad = log_of(out)
    assert bad and {r["file"] for r in bad} == {str(blob)}
    assert "invalid_utf8" in {r["fate"] for r in bad} <= {"invalid_utf8", "invalid_json", "not_object"}
    assert [r["line"] for r in bad] == sorted({r["line"] for r in bad})


def test_non_string_and_empty_text(tmp_path, texts, ray_session):
    recs = [{"text": t} for t in texts[:100]] + [{"text": None}, {"text": 5}, {"text": ""}, {"text": " \n"}]
    result, out = crawl(tmp_path, paths=[jsonl(tmp_path / "a.jsonl", recs)], max_bad_fraction=0.02)
    assert len(docs_of(out)) == 100
    assert [(r["line"], r["fate"]) for r in log_of(out)] == [(101, "text_not_string"), (102, "text_not_string"),
                                                             (103, "empty_text"), (104, "empty_text")]
    assert result.stats["records_empty_text"] == 2  # logged, but not bad: 2 bad of 104 is under 2%


def test_paths_are_checked_when_the_config_loads(tmp_path, monkeypatch):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.jsonl").write_text('{"text": "中文"}\n', encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cfg = write_config(tmp_path / "c.yaml", {"work_dir": str(tmp_path / "w"), "crawl": {"sources": [
        {"name": "mine", "type": "files", "paths": ["corpus/*.jsonl"]}]}})
    monkeypatch.chdir(elsewhere)
    res = CliRunner().invoke(app, ["run", str(cfg)])
    assert res.exit_code == 2 and res.output.strip() == (
        f"config error: source mine: paths entry 'corpus/*.jsonl' matches no file (resolved against {elsewhere}: "
        f"{elsewhere}/corpus/*.jsonl)")
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["status", str(cfg)]).exit_code == 0
    for paths, want in [(["corpus/a.txt.bz3"], "unknown file type"), (["nosuch://bucket/x"], "nosuch")]:
        cfg = write_config(tmp_path / "c.yaml", {"work_dir": str(tmp_path / "w"), "crawl": {"sources": [
            {"name": "mine", "type": "files", "paths": paths}]}})
        (tmp_path / "corpus" / "a.txt.bz3").write_bytes(b"x")
        res = CliRunner().invoke(app, ["run", str(cfg)])
        assert res.exit_code == 2 and want in res.output and len(res.output.strip().splitlines()) == 1


def test_split_compressed_and_any_worker_count_give_the_same_documents(tmp_path, texts, ray_session):
    recs = [{"text": t, "n": i} for i, t in enumerate(texts)]
    plain = jsonl(tmp_path / "a.jsonl", recs, {150: b"not json"})  # 2.1 MB: 33 byte ranges of 64 KiB
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress((tmp_path / "a.jsonl").read_bytes(), mtime=0))
    import zstandard

    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress((tmp_path / "a.jsonl").read_bytes()))

    def seen(out):
        return [(d["source"].rsplit(":", 1)[1], d["text"]) for d in docs_of(out)], \
            [(r["line"], r["fate"]) for r in log_of(out)]

    split1, out1 = crawl(tmp_path, workers=1, paths=[plain], task_bytes=65536, max_bad_fraction=0.01)
    split2, out2 = crawl(tmp_path, workers=2, paths=[plain], task_bytes=65536, max_bad_fraction=0.01)
    assert len(out2.manifest.outputs["docs"].shards) == -(-(tmp_path / "a.jsonl").stat().st_size // 65536)
    assert out1.manifest.outputs["docs"].digest == out2.manifest.outputs["docs"].digest
    assert seen(out2)[1] == [(150, "invalid_json")]
    for comp in ("a.jsonl.gz", "a.jsonl.zst"):
        _, out = crawl(tmp_path / f"out-{comp}", paths=[str(tmp_path / comp)], task_bytes=65536)
        assert len(out.manifest.outputs["docs"].shards) == 1 and seen(out) == seen(out2)


def test_parquet_row_groups_ids_and_bad_rows(tmp_path, texts, ray_session):
    rows = [{"text": t, "doc_id": 1000 + i, "license": "CC-BY", "date": "2026-01-01"} for i, t in enumerate(texts)]
    rows[44]["text"] = None
    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=20)
    result, out = crawl(tmp_path, paths=[str(path)], task_bytes=65536, id_field="doc_id", keep_fields=["license"],
                        max_bad_fraction=0.01)
    docs = docs_of(out)
    assert len(out.manifest.outputs["docs"].shards) > 2 and len(docs) == len(texts) - 1
    assert [d["source_id"] for d in docs[43:45]] == ["1043", "1045"]
    assert docs[0]["meta"] == '{"license":"CC-BY"}' and docs[0]["source"] == f"file:{path}:1"
    (bad,) = log_of(out)
    assert (bad["line"], bad["fate"], bad["reason"]) == (45, "text_not_string", "row group 2: text is null")


def write_wet(path, n: int) -> list[int]:
    """A WET file of n conversion records; the offset of each record, and the file's end."""
    from warcio.warcwriter import WARCWriter

    offsets = []
    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=True, warc_version="1.1")
        for i in range(n):
            offsets.append(fh.tell())
            w.write_record(w.create_warc_record(f"http://wet.example.cn/{i}", "conversion",
                                                payload=io.BytesIO(f"第{i}篇：中文预训练语料。".encode() * 20),
                                                warc_content_type="text/plain"))
        offsets.append(fh.tell())
    return offsets


def test_warc_reading_goes_on_after_a_corrupt_or_truncated_record(tmp_path, ray_session):
    off = write_wet(tmp_path / "ok.warc.wet.gz", 6)
    data = bytearray((tmp_path / "ok.warc.wet.gz").read_bytes())
    data[off[1] + 30:off[1] + 50] = bytes(20)  # record 1: a damaged gzip member
    bad = bytes(data[:off[3] + 40] + data[off[4]:off[5] + 40])  # record 3 cut short; record 5 truncated at the end
    (tmp_path / "bad.warc.wet.gz").write_bytes(bad)
    cfg = CrawlConfig(sources=[{"name": "cc", "type": "warc", "paths": [str(tmp_path / "bad.warc.wet.gz")],
                                "max_bad_fraction": 0.5}])
    result, out = run_stage("crawl", cfg, {}, tmp_path / "crawl")
    assert [d["url"].rsplit("/", 1)[1] for d in docs_of(out)] == ["0", "2", "4"]
    corrupt = [(r["warc_offset"], r["fate"]) for r in log_of(out)]
    assert corrupt == [(off[1], "corrupt_record"), (off[3], "corrupt_record"),
                       (off[3] + 40 + off[5] - off[4], "corrupt_record")]
    assert result.stats["records_corrupt_record"] == 3
    cfg.sources[0].max_bad_fraction = 0.01
    with pytest.raises(SourceError) as err:
        run_stage("crawl", cfg, {}, tmp_path / "strict")
    assert f"first: {tmp_path / 'bad.warc.wet.gz'}@{off[1]}: corrupt WARC record (" in one_line(err)


def test_parquet_without_the_text_column_is_one_line(tmp_path, texts, ray_session):
    pq.write_table(pa.table({"body": texts[:20]}), tmp_path / "a.parquet")
    with pytest.raises(SourceError) as err:
        crawl(tmp_path, paths=[str(tmp_path / "a.parquet")])
    assert one_line(err) == (f"source mine: 0 documents from 1 file (20 records: 20 without field 'text'); first "
                             f"bad: {tmp_path / 'a.parquet'}:1: without field 'text' (no column 'text' (columns: "
                             f"body))")
