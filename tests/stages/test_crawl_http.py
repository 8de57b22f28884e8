"""The crawler against real HTTP servers on 127.0.0.1: every bad input of issue 3 gets the right fate in the
log and the crawl goes on; determinism across worker counts; resume after a failure without re-fetching.

    .venv/bin/python -m pytest -q tests/stages/test_crawl_http.py     (~30 s on an idle 2-core machine)
"""
from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow.compute as pc
import pytest

from pipelines.testing.helpers import run_stage
from pipelines.testing.httpsite import SiteServer
from pipelines.testing.realtext import html_files
from stages.crawl.config import CrawlConfig

ZH = "机器学习是人工智能的一个分支。朱镕基在北京工作。𠮷野家的牛肉饭很好吃。中文语料需要仔细清洗。" * 6
TW = "內容目錄：Debian 參考手冊，這是一份關於系統管理的說明文件，繁體中文。" * 6
ROBOTS = "User-agent: *\nDisallow: /private/\nAllow: /private/ok.html\nCrawl-delay: 0.05\n"


def page(body: str, links: list[str] = (), head: str = "", title: str = "页面") -> str:
    a = "".join(f'<a href="{h}">链接</a> ' for h in links)
    return f"<html><head>{head}<title>{title}</title></head><body><article><p>{body}</p>{a}</article></body></html>"


def html_route(text: str, ctype: str = "text/html; charset=utf-8", codec: str = "utf-8"):
    return 200, {"Content-Type": ctype}, text.encode(codec)


def bad_input_routes(base: str) -> dict:
    chain = {f"/chain/{i}": html_route(page(f"第{i}页。" + ZH[:40], [f"/chain/{i + 1}"])) for i in range(100)}
    flaky = {"n": 0}

    def flaky_route(server):
        flaky["n"] += 1
        return (503, {"Retry-After": "1"}, b"busy") if flaky["n"] == 1 else html_route(page("恢复正常。" + ZH))

    def stall(server):
        server.release.wait(30)  # held until the test ends; the crawler's read timeout fires first
        return html_route(page("太慢了"))

    index = ["/gbk-header.html", "/gbk-meta.html", "/gb18030-none.html", "/big5-wrong.html", "/malformed.html",
             "/binary.html", "/big.html", "/bomb.html", "/loop-a", "/chain/0", "/stall.html", "/flaky.html",
             "/gone.html", "/busy-long.html", "/private/secret.html", "/private/ok.html", "/logo.png",
             "/noindex.html", "/nofollow.html", "/x-robots.html", "/x-robots-other.html",
             "javascript:alert(1)", "ftp://ftp.example.cn/x", "file:///etc/passwd", "http://10.0.0.1/",
             "http://169.254.169.254/latest/meta-data/", base.replace("127.0.0.1", "127.0.0.2") + "/"]
    return {
        "/robots.txt": (200, {"Content-Type": "text/plain"}, ROBOTS.encode()),
        "/": html_route(page("首页。" + ZH, index)),
        "/gbk-header.html": html_route(page("国标码页面。" + ZH), "text/html; charset=GBK", "gb18030"),
        "/gbk-meta.html": html_route(page("只在元标签。" + ZH, head='<meta charset="gb2312">'), "text/html", "gb18030"),
        "/gb18030-none.html": html_route(page("没有声明。" + ZH), "text/html", "gb18030"),
        "/big5-wrong.html": html_route(page("錯誤的聲明。" + TW, title="繁體"), "text/html; charset=gbk", "big5hkscs"),
        "/malformed.html": (200, {"Content-Type": "text/html; charset=utf-8"},
                            ("<html><body><div><p>残缺的标签" + ZH + "<table><tr><td>格子</p></div>\x00").encode()),
        "/binary.html": (200, {"Content-Type": "text/html"}, b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8),
        "/big.html": html_route(page("很大的页面。" + ZH * 200)),
        "/bomb.html": (200, {"Content-Type": "text/html", "Content-Encoding": "gzip"}, gzip.compress(b" " * (8 << 20))),
        "/loop-a": (302, {"Location": "/loop-b"}, b""), "/loop-b": (302, {"Location": "/loop-a"}, b""),
        "/stall.html": stall, "/flaky.html": flaky_route,
        "/gone.html": (404, {}, b"gone"),
        "/busy-long.html": (503, {"Retry-After": "3600"}, b"come back tomorrow"),
        "/private/secret.html": html_route(page("机密")), "/private/ok.html": html_route(page("允许的页面。" + ZH)),
        # a page's own robots rules: noindex pages are not documents (their links are followed), nofollow pages'
        # links are not; X-Robots-Tag for another crawler does not apply
        "/noindex.html": html_route(page("不要收录。" + ZH, ["/from-noindex.html"],
                                         head='<meta name="ROBOTS" content="noindex">')),
        "/from-noindex.html": html_route(page("从不收录的页面链接过来。" + ZH)),
        "/nofollow.html": html_route(page("不要跟踪链接。" + ZH, ["/from-nofollow.html"],
                                          head='<meta name="robots" content="index, nofollow">')),
        "/from-nofollow.html": html_route(page("不应抓取。" + ZH)),
        "/x-robots.html": (200, {"Content-Type": "text/html; charset=utf-8", "X-Robots-Tag": "noindex, nofollow"},
                           page("响应头不要收录。" + ZH, ["/from-x-robots.html"]).encode()),
        "/from-x-robots.html": html_route(page("不应抓取。" + ZH)),
        "/x-robots-other.html": (200, {"Content-Type": "text/html; charset=utf-8", "X-Robots-Tag": "otherbot: noindex"},
                                 page("别的爬虫不要收录。" + ZH).encode()),
        **chain,
    }


def crawl_cfg(seeds, **kw) -> CrawlConfig:
    src = {"name": "t", "type": "seeds", "seeds": seeds, "allow_private": ["127.0.0.1"],
           **{k: kw.pop(k) for k in list(kw) if k in ("max_depth", "max_pages", "allow_domains", "include")}}
    # read_timeout 2 s: the stalling route needs a short one, but under a loaded CI box (load average 15 seen)
    # an honest page can take ~1 s to arrive.
    base = dict(min_delay=0, concurrency=8, per_host_concurrency=4, read_timeout=2, connect_timeout=5,
                total_timeout=20, max_bytes=64 << 10, max_retries=1, backoff=0.05, max_retry_after=5,
                fetched_at="2026-01-01T00:00:00Z")
    return CrawlConfig(sources=[src], **{**base, **kw})


@pytest.fixture(scope="module")
def bad_site():
    server = SiteServer({})
    server.routes.update(bad_input_routes(server.base))
    yield server
    server.close()


@pytest.fixture(scope="module")
def bad_crawl(bad_site, ray_session, tmp_path_factory):
    cfg = crawl_cfg([bad_site.base + "/"], max_depth=4, allow_domains=["10.0.0.1", "169.254.169.254", "127.0.0.2"])
    result, out = run_stage("crawl", cfg, {}, tmp_path_factory.mktemp("bad") / "crawl", workers=2)
    log = {r["url"].replace(bad_site.base, ""): r for r in out.read_table("log").to_pylist()}
    docs = {r["url"].replace(bad_site.base, ""): r for r in out.read_table("docs").to_pylist()}
    return result, out, log, docs


@pytest.mark.parametrize("path,codec,source,declared", [
    ("/gbk-header.html", "gb18030", "header", None), ("/gbk-meta.html", "gb18030", "meta", None),
    ("/gb18030-none.html", "gb18030", "detected", None), ("/big5-wrong.html", "big5hkscs", "detected", "gb18030")])
def test_chinese_encodings(bad_crawl, path, codec, source, declared):
    _, _, log, docs = bad_crawl
    d = docs[path]
    assert (d["encoding"], d["charset_source"], d["charset_declared"], d["undecodable"]) == (codec, source, declared, 0)
    assert (d["charset_confidence"] is not None) == (source == "detected")
    assert ("繁體中文" if "big5" in path else "朱镕基") in d["text"]
    assert log[path]["fate"] == "fetched" and log[path]["id"] == d["id"]


@pytest.mark.parametrize("path,fate,reason", [
    ("/binary.html", "not_text", "binary"), ("/big.html", "error", "max_bytes"), ("/bomb.html", "error", "max_bytes"),
    ("/loop-a", "error", "redirect loop"), ("/stall.html", "error", "Timeout"), ("/gone.html", "error", "404"),
    ("/busy-long.html", "error", "Retry-After 3600s"), ("/private/secret.html", "robots", "robots"),
    ("/logo.png", "out_of_scope", "exclude"), ("/chain/4", "out_of_scope", "depth 5 > max_depth 4"),
    ("javascript:alert(1)", "invalid", "javascript"), ("ftp://ftp.example.cn/x", "invalid", "ftp"),
    ("file:///etc/passwd", "invalid", "file"), ("http://10.0.0.1/", "blocked", "private"),
    ("http://169.254.169.254/latest/meta-data/", "blocked", "private")])
def test_bad_inputs_get_their_fate(bad_crawl, path, fate, reason):
    row = bad_crawl[2][path]
    assert row["fate"] == fate and reason in row["reason"], row


def test_crawl_goes_on_and_keeps_everything(bad_crawl, bad_site):
    result, out, log, docs = bad_crawl
    missing = {"/", "/private/ok.html", "/malformed.html", "/flaky.html", "/chain/0", "/chain/3"} - set(docs)
    assert not missing, [log.get(m) for m in missing]
    assert "恢复正常" in docs["/flaky.html"]["text"] and len(bad_site.hits["/flaky.html"]) == 2  # 503, then 200
    assert len(bad_site.hits["/gone.html"]) == 1  # no retry on 404
    assert "/chain/5" not in bad_site.hits  # depth limit: never fetched
    loopback2 = [u for u in log if u.startswith("http://127.0.0.2")]
    assert loopback2 and log[loopback2[0]]["fate"] == "blocked"  # loopback, but only 127.0.0.1 is allow-listed
    assert result.stats["urls_fetched"] == len(docs)
    assert len(log) == out.manifest.outputs["log"].rows  # one row per URL


def test_politeness_crawl_delay(bad_crawl, bad_site):
    """Requests to one host start >= Crawl-delay apart. Arrival times jitter with connection set-up, so the
    robust check is the span of the requests after the first round: >= (n - 1) x 0.05 s (no delay: ~0.1 s)."""
    starts = sorted(t for path, ts in bad_site.hits.items() if path not in ("/robots.txt", "/") for t in ts)
    assert len(starts) >= 15 and starts[-1] - starts[0] >= 0.8 * 0.05 * (len(starts) - 1)


def test_page_robots_rules(bad_crawl, bad_site):
    _, _, log, docs = bad_crawl
    for path, said in (("/noindex.html", "<meta name=robots>"), ("/x-robots.html", "X-Robots-Tag")):
        assert log[path]["fate"] == "robots_meta" and said in log[path]["reason"] and path not in docs
        assert log[path]["warc_offset"] is not None  # fetched, so archived
    assert "/from-noindex.html" in docs  # noindex alone: its links are still followed
    assert "/nofollow.html" in docs and "nofollow" in log["/nofollow.html"]["reason"]
    for never in ("/from-nofollow.html", "/from-x-robots.html"):
        assert never not in bad_site.hits and never not in log
    assert "/x-robots-other.html" in docs  # a rule for another crawler


def test_robots_txt_waits_its_turn(tmp_path):
    """robots.txt is paced like any request to its host: the first page waits the Crawl-delay after it (before
    the fix it followed at once). Load only stretches the gaps, so the lower bound cannot flake."""
    import asyncio

    from stages.crawl.fetch import Fetcher

    server = SiteServer({"/robots.txt": (200, {}, b"User-agent: *\nCrawl-delay: 0.5\n"),
                         "/a.html": html_route(page("第一页")), "/b.html": html_route(page("第二页"))})
    cfg = crawl_cfg([server.base + "/"], min_delay=0)

    async def crawl():
        fetcher = Fetcher(cfg, ["127.0.0.1"], tmp_path / "robots")
        try:
            return [await fetcher.fetch(server.base + p) for p in ("/a.html", "/b.html")]
        finally:
            await fetcher.aclose()

    try:
        assert [f.fate for f in asyncio.run(crawl())] == ["fetched", "fetched"]
        starts = [server.hits[p][0] for p in ("/robots.txt", "/a.html", "/b.html")]
    finally:
        server.close()
    assert min(b - a for a, b in zip(starts, starts[1:])) >= 0.8 * 0.5


def test_summary_counts_every_fate(bad_crawl):
    result, _, log, docs = bad_crawl
    summary = result.extra["summary"]
    fates = [r["fate"] for r in log.values()]
    assert summary.startswith(f"{len(docs)} documents from {len(log)} URLs: fetched {fates.count('fetched')}, ")
    for words, fate in (("robots", "robots"), ("robots meta", "robots_meta"), ("blocked private", "blocked"),
                        ("out of scope", "out_of_scope"), ("not text", "not_text"), ("invalid", "invalid")):
        assert f", {words} {fates.count(fate)}," in summary
    assert summary.endswith(f"errors {fates.count('error')} (http 4xx 1, timeout 1, too large 2, bad redirect 1, "
                            "retry-after too long 1)"), summary
    assert result.stats["urls_robots_meta"] == 2 and result.stats["urls_error_too_large"] == 2


def test_no_documents_says_why(ray_session, tmp_path):
    """A loopback seed without allow_private: the summary names the reason, not just `docs=0 rows`."""
    server = SiteServer({"/": html_route(page("首页"))})
    try:
        cfg = crawl_cfg([server.base + "/"])
        cfg.sources[0].allow_private = []
        result, out = run_stage("crawl", cfg, {}, tmp_path / "crawl", workers=1)
    finally:
        server.close()
    assert out.manifest.outputs["docs"].rows == 0 and "/" not in server.hits
    assert result.extra["summary"].endswith(f"No documents: blocked private 1, e.g. {server.base}/: address "
                                            "127.0.0.1 is private/loopback/link-local/reserved (allow it with "
                                            "allow_private)")


def test_warc_pairs_every_response_with_its_request(bad_crawl):
    """warcio's own checker and indexer over the crawl's WARC files: every response has its request."""
    from warcio.cli import main as warcio_main

    from tests.stages.test_crawl_units import warc_index

    _, out, log, _ = bad_crawl
    files = [out.dir / s.path for s in out.manifest.outputs["warc"].shards]
    with pytest.raises(SystemExit) as done:
        warcio_main(["check", *map(str, files)])
    assert done.value.code == 0
    index = [r for f in files for r in warc_index(f)]
    responses = {r["warc-record-id"]: r for r in index if r["warc-type"] == "response"}
    requests = [r for r in index if r["warc-type"] == "request"]
    assert len(responses) == len(requests) == sum(r["warc_offset"] is not None for r in log.values())
    assert all(responses[q["warc-concurrent-to"]]["warc-target-uri"] == q["warc-target-uri"] for q in requests)


def test_warc_offsets_point_at_the_page(bad_crawl):
    from stages.crawl.encoding import decode
    from stages.crawl.warc import iter_records

    _, out, _, docs = bad_crawl
    d = docs[[k for k in docs if k.endswith("gbk-header.html")][0]]
    recs = {r.offset: r for r in iter_records(str(out.dir / d["warc_file"]))}
    rec = recs[d["warc_offset"]]
    assert rec.url == d["url"] and "国标码页面" in decode(rec.payload, rec.content_type).text


# -- determinism and resume on several virtual hosts -----------------------------------------------------------

@pytest.fixture(scope="module")
def faq_hosts():
    """The Debian FAQ (real Chinese, 17 pages) served on 127.0.0.1, .2 and .3."""
    files = html_files("usr/share/doc/debian/FAQ/zh-cn/*.html")
    routes = {f"/{p.name}": (200, {"Content-Type": "text/html; charset=utf-8"}, p.read_bytes()) for p in files}
    servers = [SiteServer(routes, f"127.0.0.{i}") for i in (1, 2, 3)]
    yield servers
    for s in servers:
        s.close()


def faq_cfg(servers) -> CrawlConfig:
    return crawl_cfg([s.base + "/index.zh-cn.html" for s in servers], max_depth=2, partitions=4,
                     include=[r"\.zh-cn\.html$"], read_timeout=30, total_timeout=60)


def _digests(out) -> dict:
    return {k: o.digest for k, o in out.manifest.outputs.items()}


def test_same_digests_with_1_and_2_workers(faq_hosts, ray_session, tmp_path):
    cfg = faq_cfg(faq_hosts).model_copy(update={"sources": [faq_cfg(faq_hosts).sources[0].model_copy(
        update={"allow_private": ["127.0.0.0/8"]})]})
    _, one = run_stage("crawl", cfg, {}, tmp_path / "w1", workers=1)
    _, two = run_stage("crawl", cfg, {}, tmp_path / "w2", workers=2)
    assert _digests(one) == _digests(two)
    docs = one.read_table("docs")
    assert docs.num_rows == 3 * 17 and len(set(pc.unique(docs["warc_file"]).to_pylist())) > 1
    pytest.faq_digests = _digests(one)


def test_resume_after_failure_refetches_nothing(faq_hosts, ray_session, tmp_path, monkeypatch):
    cfg = faq_cfg(faq_hosts)
    cfg.sources[0].allow_private = ["127.0.0.0/8"]
    for s in faq_hosts:
        s.hits.clear()
    monkeypatch.setenv("ZHGPT_FAULT", "crawl.round@0:raise")
    with pytest.raises(RuntimeError, match="crawl.round@0"):
        run_stage("crawl", cfg, {}, tmp_path / "c", workers=2)
    assert (tmp_path / "c/.partial/t/state.json").exists()
    monkeypatch.delenv("ZHGPT_FAULT")
    _, out = run_stage("crawl", cfg, {}, tmp_path / "c", workers=2)
    pages = [ts for s in faq_hosts for p, ts in s.hits.items() if p != "/robots.txt"]
    assert len(pages) == 3 * 17 and all(len(ts) == 1 for ts in pages)  # nothing fetched twice
    if hasattr(pytest, "faq_digests"):
        assert _digests(out) == pytest.faq_digests  # and the output equals an uninterrupted crawl


def test_partition_reuses_its_finished_result(faq_hosts, tmp_path):
    from stages.crawl.partition import crawl_partition

    cfg = faq_cfg(faq_hosts[:1])
    cfg.sources[0].allow_private = ["127.0.0.1"]
    url = faq_hosts[0].base + "/index.zh-cn.html"
    faq_hosts[0].hits.clear()
    a = crawl_partition(cfg.sources[0], cfg, 0, 0, [[url, ""]], str(tmp_path), str(tmp_path / ".partial"))
    b = crawl_partition(cfg.sources[0], cfg, 0, 0, [[url, ""]], str(tmp_path), str(tmp_path / ".partial"))
    assert a == b and len(faq_hosts[0].hits["/index.zh-cn.html"]) == 1
    assert Path(tmp_path / a["shards"]["warc"][0]["path"]).exists()
