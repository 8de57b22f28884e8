"""Unit tests of the crawl stage's pure parts: URLs and rounds, encodings, robots, body caps, WARC, config.

    .venv/bin/python -m pytest -q tests/stages/test_crawl_units.py     (~3 s, no Ray, no network)
"""
from __future__ import annotations

import gzip
import io

import pytest
from pydantic import ValidationError

from pipelines.testing.realtext import html_files
from stages.crawl.config import CrawlConfig, SeedsSource
from stages.crawl.encoding import decode, looks_binary, normalize_label
from stages.crawl.extract import process_html
from stages.crawl.fetch import Refused, address_refusal, parse_retry_after, read_capped
from stages.crawl.frontier import CrawlState, Scope, advance, normalize_url, partition_of, plan_round
from stages.crawl.robots import Robots
from stages.crawl.warc import WarcShard, exchange, iter_records

ZH = "机器学习是人工智能的一个分支。朱镕基在北京。𠮷野家的牛肉饭很好吃。" * 8
TW = "內容目錄：Debian 參考手冊，這是一份關於系統管理的說明文件。" * 8
XCFG = CrawlConfig.model_fields["extract"].default  # the extractor settings a crawl uses by default


def html(body: str, meta: str = "") -> str:
    title = "測試" if body is TW else "测试"  # 测 is not in Big5
    return f"<html><head>{meta}<title>{title}</title></head><body><p>{body}</p></body></html>"


# -- URLs and rounds ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,want", [
    ("HTTP://Example.COM:80/a/./b/../c?q=1#frag", "http://example.com/a/c?q=1"),
    ("https://例子.中国/路径 x", "https://xn--fsqu00a.xn--fiqs8s/%E8%B7%AF%E5%BE%84%20x"),
    ("http://user:pw@host:8080", "http://host:8080/"),
])
def test_normalize_url(raw, want):
    assert normalize_url(raw) == (want, "")


@pytest.mark.parametrize("raw,reason", [("javascript:void(0)", "javascript"), ("ftp://h/x", "ftp"),
                                        ("file:///etc/passwd", "file"), ("mailto:a@b", "mailto"),
                                        ("http://[::1", "malformed"), ("http:///nohost", "no host")])
def test_normalize_refuses(raw, reason):
    url, why = normalize_url(raw)
    assert url is None and reason in why


def _scope(**kw) -> Scope:
    src = SeedsSource(name="s", type="seeds", seeds=["http://a.cn/"], **kw)
    return Scope.of(src, src.seeds)


def test_plan_round_is_sorted_scoped_and_limited():
    state = CrawlState(round=1, candidates=[["http://a.cn/b", "r"], ["http://a.cn/a", "r"], ["http://a.cn/a", "q"],
                                            ["http://other.cn/", "r"], ["http://a.cn/x.png", "r"],
                                            ["javascript:x()", "r"], ["http://a.cn/c", "r"]])
    plan, logs = plan_round(state, _scope(max_pages=2), partitions=3)
    planned = [u for urls in plan.values() for u in urls]
    assert planned == [["http://a.cn/a", "q"], ["http://a.cn/b", "r"]]  # sorted; smallest referrer wins
    fates = {r["url"]: (r["fate"], r["reason"]) for r in logs}
    assert fates["http://a.cn/c"][0] == "max_pages"
    assert fates["http://other.cn/"][0] == "out_of_scope" and "seed host" in fates["http://other.cn/"][1]
    assert "exclude" in fates["http://a.cn/x.png"][1]
    assert fates["javascript:x()"][0] == "invalid"
    again, logs2 = plan_round(state, _scope(max_pages=2), partitions=3)  # everything is now seen
    assert again == {} and logs2 == []


def test_depth_limit_and_advance():
    state = CrawlState(round=0, candidates=[["http://a.cn/", ""]])
    scope = _scope(max_depth=1)
    plan, _ = plan_round(state, scope, 2)
    advance(state, [{"links": [["http://a.cn/1", "http://a.cn/"], ["http://a.cn/", "http://a.cn/"]],
                     "final_urls": [], "counts": {"fetched": 1}}])
    assert state.round == 1 and state.candidates == [["http://a.cn/1", "http://a.cn/"]]  # seen URL dropped
    plan_round(state, scope, 2)
    advance(state, [{"links": [["http://a.cn/2", "http://a.cn/1"]], "final_urls": [], "counts": {"fetched": 1}}])
    _, logs = plan_round(state, scope, 2)
    assert logs[0]["fate"] == "out_of_scope" and logs[0]["reason"] == "depth 2 > max_depth 1"
    assert state.counts == {"fetched": 2}


def test_partition_is_stable():
    assert [partition_of(h, 4) for h in ("a.cn", "b.cn", "127.0.0.2")] == \
           [partition_of(h, 4) for h in ("a.cn", "b.cn", "127.0.0.2")]
    assert {partition_of(f"h{i}.cn", 4) for i in range(50)} == {0, 1, 2, 3}


# -- encodings ------------------------------------------------------------------------------------------------

def test_labels_map_to_supersets():
    assert normalize_label("GB2312") == normalize_label("x-gbk") == "gb18030"
    assert normalize_label("Big5") == "big5hkscs"
    assert normalize_label("no-such-charset") is None


@pytest.mark.parametrize("ctype,meta,codec,want_source", [
    ("text/html; charset=GBK", "", "gb18030", "header"),
    ("text/html", '<meta http-equiv="Content-Type" content="text/html; charset=gb2312">', "gb18030", "meta"),
    ("text/html", "", "gb18030", "detected"),
    ("text/html; charset=big5", "", "big5hkscs", "header"),
])
def test_decode_declared_and_undeclared(ctype, meta, codec, want_source):
    text = ZH if codec == "gb18030" else TW
    d = decode(html(text, meta).encode(codec), ctype)
    assert (d.encoding, d.source, d.errors) == (codec, want_source, 0)
    assert text[:20] in d.text


def test_wrong_declaration_is_overruled():
    big5_said_gbk = decode(html(TW).encode("big5hkscs"), "text/html; charset=gbk")  # decodes as gbk error-free!
    assert big5_said_gbk.encoding == "big5hkscs" and big5_said_gbk.declared == "gb18030"
    assert TW[:10] in big5_said_gbk.text
    gbk_said_utf8 = decode(html(ZH).encode("gb18030"), "text/html; charset=utf-8")
    assert gbk_said_utf8.encoding == "gb18030" and ZH[:10] in gbk_said_utf8.text


def test_bom_wins_and_bad_bytes_are_counted():
    assert decode(b"\xef\xbb\xbf" + html(ZH).encode(), "text/html; charset=gbk").source == "bom"
    d = decode(html(ZH).encode() + b"\xff\xfe\xfd", "text/html; charset=utf-8")
    assert d.encoding == "utf-8" and d.errors >= 1


def test_binary_is_not_text():
    assert looks_binary(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert not looks_binary(html(ZH).encode("gb18030"))
    page = process_html("http://a.cn/", b"\x89PNG\r\n\x1a\n\x00\x00" * 50, "text/html", XCFG)
    assert page.fate == "not_text"


def test_real_page_extracts_text_title_links():
    p = html_files("usr/share/doc/debian/FAQ/zh-cn/index.zh-cn.html")[0]
    page = process_html("http://h/faq/index.html", p.read_bytes(), "text/html", XCFG)
    assert page.fate == "fetched" and "Debian" in page.title and "常见问题" in page.text + page.title
    assert "http://h/faq/basic-defs.zh-cn.html" in page.links


# -- fetch helpers ---------------------------------------------------------------------------------------------

def test_gzip_bomb_stops_at_cap():
    bomb = gzip.compress(b"\0" * (20 << 20))  # 20 MiB -> ~20 KiB
    state: dict = {}
    with pytest.raises(Refused, match="max_bytes"):
        for i in range(0, len(bomb), 4096):
            read_capped([bomb[i:i + 4096]], "gzip", 1 << 20, state)
    assert len(state["out"]) <= (1 << 20) + 1
    ok: dict = {}
    read_capped([gzip.compress(ZH.encode())], "gzip", 1 << 20, ok)
    assert read_capped(None, "gzip", 1 << 20, ok).decode() == ZH


def test_retry_after_and_addresses():
    assert parse_retry_after("3", 0) == 3.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:00 GMT", 30.0) == 30.0
    assert parse_retry_after("soon", 0) is None
    import ipaddress
    assert "private" in address_refusal(["10.0.0.1"], [])
    assert "private" in address_refusal(["169.254.169.254"], [])
    assert address_refusal(["127.0.0.1"], [ipaddress.ip_network("127.0.0.1")]) == ""
    assert "127.0.0.2" in address_refusal(["127.0.0.2"], [ipaddress.ip_network("127.0.0.1")])
    assert address_refusal(["8.8.8.8"], []) == ""


def test_robots_rfc9309():
    r = Robots.from_response(200, "User-agent: *\nDisallow: /\nAllow: /public\nCrawl-delay: 2\n")
    assert r.allowed("http://a.cn/public/x", "zhgpt") and not r.allowed("http://a.cn/private", "zhgpt")
    assert r.crawl_delay("zhgpt") == 2.0
    assert Robots.from_response(404, "").allowed("http://a.cn/x", "zhgpt")
    assert not Robots.from_response(503, "").allowed("http://a.cn/x", "zhgpt")
    assert not Robots.from_response(None, "", "refused").allowed("http://a.cn/x", "zhgpt")


# -- WARC and config ------------------------------------------------------------------------------------------

def test_warc_round_trip_is_deterministic(tmp_path):
    def write(d):
        w = WarcShard(d, "warc/x.warc.gz", {"date": "2026-01-01T00:00:00Z"})
        offs = [w.append(exchange(f"http://a.cn/{i}?q=1", "2026-01-01T00:00:00Z", 200, "OK",
                                  [("Content-Type", "text/html; charset=gbk"), ("Content-Encoding", "gzip")],
                                  html(ZH).encode("gb18030"), [("Host", "a.cn"), ("User-Agent", "zhgpt")]))
                for i in range(3)]
        w.close()
        return offs, (d / "warc/x.warc.gz").read_bytes()

    offs, data = write(tmp_path / "a")
    assert write(tmp_path / "b")[1] == data
    recs = list(iter_records(str(tmp_path / "a/warc/x.warc.gz")))
    assert [r.offset for r in recs] == offs and recs[1].url == "http://a.cn/1?q=1"
    assert decode(recs[0].payload, recs[0].content_type).text.count("机器学习") == 8
    assert b"WARC/1.1" in gzip.GzipFile(fileobj=io.BytesIO(data)).read(200)


def warc_index(path) -> list[dict]:
    """`warcio index` of a file (warcio's own indexer), one dict per record."""
    import json

    from warcio.indexer import Indexer

    out = io.StringIO()
    with open(path, "rb") as fh:
        Indexer("offset,warc-type,warc-target-uri,warc-record-id,warc-concurrent-to,http:status", [], None) \
            .process_one(fh, out, str(path))
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_warc_request_records_pair_with_responses(tmp_path):
    from warcio.cli import main as warcio_main

    w = WarcShard(tmp_path, "x.warc.gz", {"date": "2026-01-01T00:00:00Z"})
    sent = [("Host", "a.cn"), ("User-Agent", "zhgpt-crawler/0.1"), ("Accept-Encoding", "gzip, deflate")]
    offs = [w.append(exchange(f"http://a.cn/{p}", "2026-01-01T00:00:00Z", 200, "OK", [], b"", sent))
            for p in ("a", "b")]  # empty bodies: the request's id must still differ from the response's
    w.close()
    with pytest.raises(SystemExit) as done:
        warcio_main(["check", str(tmp_path / "x.warc.gz")])  # every record's digests verified
    assert done.value.code == 0
    index = warc_index(tmp_path / "x.warc.gz")
    assert [r["warc-type"] for r in index] == ["warcinfo", "response", "request", "response", "request"]
    assert [int(r["offset"]) for r in index if r["warc-type"] == "response"] == offs
    for resp, req in (index[1:3], index[3:5]):
        assert req["warc-concurrent-to"] == resp["warc-record-id"] != req["warc-record-id"]
        assert req["warc-target-uri"] == resp["warc-target-uri"]
    from warcio.archiveiterator import ArchiveIterator

    with open(tmp_path / "x.warc.gz", "rb") as fh:
        req = [r for r in ArchiveIterator(fh) if r.rec_type == "request"][0]
        assert req.http_headers.protocol == "GET" and req.http_headers.get_header("User-Agent") == "zhgpt-crawler/0.1"


def test_journal_keeps_what_was_checkpointed(tmp_path):
    """A killed task's journal: entries after the last checkpoint are dropped; a checkpoint ahead of the data (a
    machine crash) keeps the whole entries and drops a torn one; another URL list starts afresh."""
    from pipelines.io import read_json, write_json
    from stages.crawl.journal import Journal, encode
    from stages.crawl.pages import Result

    urls = [[f"http://a.cn/{i}", ""] for i in range(4)]
    j = Journal(tmp_path / "w", urls)
    for i in (2, 0):
        j.append(i, encode(Result(i, {"url": urls[i][0]}, links=[f"http://a.cn/x{i}"], warc=b"w" * i)))
    j.checkpoint({"a.cn": 1.5})
    j.append(1, encode(Result(1, {"url": urls[1][0]})))  # not checkpointed: lost to the kill
    j.close()
    again = Journal(tmp_path / "w", urls)
    assert again.done == {0, 2} and again.ready == {"a.cn": 1.5}
    assert again.read(2) == (b"ww", {"log": {"url": urls[2][0]}, "doc": None, "links": ["http://a.cn/x2"], "kind": ""})
    again.append(1, encode(Result(1, {"url": urls[1][0]})))
    again.fh.write(b"\x03\x00\x00")  # a torn entry
    again.close()
    ckpt = read_json(tmp_path / "w/checkpoint.json")
    write_json(tmp_path / "w/checkpoint.json", {**ckpt, "bytes": ckpt["bytes"] + 10_000})
    assert Journal(tmp_path / "w", urls).done == {0, 1, 2}
    assert Journal(tmp_path / "w", urls[:3]).done == set()


def test_helpers_share_out_the_idle_workers():
    from stages.crawl.seeds import helpers_for

    assert helpers_for(workers=2, cpus=2, partitions=1) == [1]
    assert helpers_for(workers=8, cpus=8, partitions=3) == [2, 2, 1]
    assert helpers_for(workers=4, cpus=2, partitions=1) == [1]  # never more than the cluster's CPUs
    assert helpers_for(workers=2, cpus=2, partitions=4) == [0, 0, 0, 0]


@pytest.mark.parametrize("values,want", [
    (["noindex"], {"noindex"}), (["NoIndex, NOFOLLOW"], {"noindex", "nofollow"}), (["none"], {"noindex", "nofollow"}),
    (["otherbot: noindex"], set()), (["zhgpt-crawler: nofollow"], {"nofollow"}),
    (["unavailable_after: 25 Jun 2010 15:00:00 PST"], set()), (["index, follow", "max-snippet:-1"], set())])
def test_page_directives(values, want):
    from stages.crawl.robots import agent_token, page_directives

    assert page_directives(values, agent_token(CrawlConfig.model_fields["user_agent"].default)) == want


def test_config_errors_name_the_key():
    with pytest.raises(ValidationError, match="not an IP address"):
        CrawlConfig(sources=[{"name": "a", "type": "seeds", "seeds": ["http://a.cn"], "allow_private": ["local"]}])
    with pytest.raises(ValidationError, match="repeated: a"):
        CrawlConfig(sources=[{"name": "a", "type": "warc", "paths": ["x"]},
                             {"name": "a", "type": "warc", "paths": ["y"]}])
    with pytest.raises(ValidationError, match="seed 'ftp://a.cn/': scheme 'ftp'"):
        CrawlConfig(sources=[{"name": "a", "type": "seeds", "seeds": ["ftp://a.cn/"]}])
    with pytest.raises(ValidationError, match="type"):
        CrawlConfig(sources=[{"name": "a", "type": "ftp", "paths": ["x"]}])


def test_link_fast_path_agrees_with_normalize_url():
    from stages.crawl.extract import _links, _parse

    hrefs = ["a.html", "/root.html", "sub/b.html?x=1&y=2", "c.html#frag", "../up.html", "./same.html", "//cdn.cn/x",
             "d%20e.html", "中文.html", "?q=1", "HTTP://Other.CN:80/Z", "x/./y.html", "mailto:a@b", "f:g.html", "/"]
    tree = _parse("<html><body>" + "".join(f'<a href="{h}">x</a>' for h in hrefs) + "</body></html>")
    base = "http://Site.cn:8080/dir/page.html?p=1"
    want = sorted({normalize_url(h.split("#")[0], base)[0] or h for h in hrefs})
    assert _links(tree, base) == want


def test_provenance_file_is_part_of_the_cache_key(tmp_path):
    from stages.crawl.stage import provenance

    tsv = tmp_path / "packages.tsv"
    tsv.write_text("debian-faq-zh-cn\t11.1\tdebian-faq-zh-cn_11.1_all.deb\t" + "a" * 64 + "\n")
    cfg = CrawlConfig(sources=[{"name": "s", "type": "warc", "paths": ["x"], "provenance": str(tsv)}])
    before = cfg.external_digest()
    assert provenance(tsv) == [{"package": "debian-faq-zh-cn", "version": "11.1",
                                "file": "debian-faq-zh-cn_11.1_all.deb", "sha256": "a" * 64}]
    tsv.write_text(tsv.read_text().replace("11.1", "11.2"))
    assert cfg.external_digest() != before
