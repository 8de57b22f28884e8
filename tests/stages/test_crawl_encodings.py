"""Legacy Chinese encodings, end to end (issue 15, section 1): sample-site pages re-encoded in GB18030, GBK and Big5,
each declared in the HTTP header, in <meta>, nowhere, or wrongly as `charset=utf-8` in the header, served over real
HTTP on 127.0.0.1 and crawled by the crawl stage: each must give exactly the title and text of its UTF-8 original.
Then the decoder alone on real bytes: the issue's mojibake, BOM, declared pages, undecodable bytes.

    .venv/bin/python -m pytest -q tests/stages/test_crawl_encodings.py     (~15 s on an idle 2-core machine)

The site (pipelines/testing/legacy_site.py) is shared with bench/crawl.py, which prints the same per-cell table
over every page.
"""
from __future__ import annotations

import random

import pytest

from pipelines.testing.helpers import run_stage
from pipelines.testing.httpsite import SiteServer
from pipelines.testing.legacy_site import (
    CHARSET_DECL,
    CODECS,
    cell_table,
    encoded,
    encoding_site,
    english_paragraphs,
    html_page,
    source_pages,
)
from pipelines.testing.realtext import html_files
from tests.stages.test_crawl_http import crawl_cfg

# UTF-8 with 8 bad bytes where {} is: 2% of its characters become U+FFFD.
BROKEN = "<html><head><title>坏页</title></head><body><p>" + "中文语料需要仔细清洗。" * 30 + "{}</p></body></html>"


# -- the decoder on real bytes ----------------------------------------------------------------------------------

def _menu_page(word: str) -> str:
    """A real English LilyPond paragraph with one Chinese word, as a menu item would put it."""
    return html_page("LilyPond", f"<p><b>{word}</b> {english_paragraphs()[0]}</p>")


@pytest.mark.parametrize("word,codec,mojibake", [("提示", "big5", "´ŁĄÜ"), ("部分", "gbk", "˛ż·Ö")])
@pytest.mark.parametrize("ctype", ["text/html", "text/html; charset=utf-8"])
def test_few_hanzi_are_not_mojibake(word, codec, mojibake, ctype):
    from stages.crawl.encoding import decode

    html = _menu_page(word)
    assert mojibake == html.encode(codec).decode("cp1250")[html.index(word):][:4]  # the failure, for real
    d = decode(html.encode(codec), ctype)
    assert d.text == html and mojibake not in d.text and not d.refused
    assert (d.source, d.declared) == ("detected", "utf-8" if "utf-8" in ctype else None) and d.confidence > 0.9


def test_utf8_pages_take_the_fast_path():
    from stages.crawl.encoding import decode

    for path in html_files("usr/share/doc/debian/FAQ/zh-cn/*.html")[:5]:
        body = path.read_bytes()
        for ctype, source in (("text/html; charset=utf-8", "header"), ("text/html", "meta")):
            d = decode(body, ctype)
            assert (d.text, d.encoding, d.source, d.errors, d.confidence) == (body.decode(), "utf-8", source, 0, None)
        bare = CHARSET_DECL.sub("", body.decode()).encode()
        assert (decode(bare).source, decode(bare).confidence) == ("detected", 1.0)


def test_bom_wins_over_a_wrong_declaration():
    from stages.crawl.encoding import decode

    body = html_files("usr/share/doc/debian/FAQ/zh-cn/index.zh-cn.html")[0].read_bytes()
    d = decode(b"\xef\xbb\xbf" + body, "text/html; charset=gbk")
    assert (d.text, d.encoding, d.source) == (body.decode(), "utf-8", "bom")


def test_declared_legacy_page_keeps_its_declaration():
    from stages.crawl.encoding import decode

    html = source_pages("zh-cn", 2)["doc-003"]
    for ctype, body, source in (("text/html; charset=GBK", html.encode("gbk", "xmlcharrefreplace"), "header"),
                                ("text/html", encoded(html, "gbk", "meta")[1], "meta")):
        d = decode(body, ctype)
        assert (d.encoding, d.source, d.declared, d.confidence, d.errors) == ("gb18030", source, None, None, 0)
        assert body.decode("gbk") == d.text


def test_gbk_declared_utf8_is_redecoded_not_kept_with_replacements():
    from stages.crawl.encoding import decode

    body = source_pages("zh-cn", 2)["doc-003"].encode("gbk", "xmlcharrefreplace")
    d = decode(body, "text/html; charset=utf-8")
    assert (d.text, d.encoding, d.source, d.declared, d.errors) == \
        (body.decode("gbk"), "gb18030", "detected", "utf-8", 0)
    assert body.decode("utf-8", "replace").count("\ufffd") > 100  # what keeping the declaration gave


def _mixed() -> bytes:
    """A UTF-8 page with a paragraph pasted in GBK: 2% of its characters are undecodable as UTF-8."""
    html = source_pages("zh-cn", 2)["doc-003"].encode()
    return html[:2000] + "这是一段国标码的中文段落，混在统一码页面里。".encode("gbk") * 3 + html[2000:]


@pytest.mark.parametrize("body,why", [
    (bytes(random.Random(0).choice([*range(0x80, 0x100), 0x20]) for _ in range(3000)), "no codec gives plausible"),
    (_mixed(), "U+FFFD"),
    (BROKEN.encode().replace(b"{}", b"\xff\xfe" * 4), "U+FFFD"),
])
def test_undecodable_bytes_are_refused(body, why):
    from stages.crawl.config import CrawlConfig
    from stages.crawl.encoding import decode
    from stages.crawl.extract import process_html

    d = decode(body, "text/html")
    assert why in d.refused, d
    page = process_html("http://a.cn/", body, "text/html", CrawlConfig.model_fields["extract"].default)
    assert (page.fate, page.reason, page.text) == ("undecodable", d.refused, "")


# -- the crawl ------------------------------------------------------------------------------------------------

PER_KIND = 10  # pages of each kind per language: 40 per cell, 560 pages in all
HOSTS = {"zh-cn": "127.0.0.1", "zh-tw": "127.0.0.1", "gb18030": "127.0.0.2", "gbk": "127.0.0.3", "big5": "127.0.0.4"}


def extra_routes() -> dict:
    """A page no codec decodes, and one with a single bad byte in 3,300 characters (kept, with a note)."""
    ok = "<html><head><title>好页</title></head><body><p>" + "中文语料需要仔细清洗。" * 300 + "</p></body></html>"
    return {"/broken/undecodable.html": (200, {"Content-Type": "text/html; charset=utf-8"},
                                         BROKEN.encode().replace(b"{}", b"\xff\xfe" * 4)),
            "/broken/one-bad-byte.html": (200, {"Content-Type": "text/html; charset=utf-8"},
                                          ok.encode().replace("。".encode(), b"\xff", 1))}


@pytest.fixture(scope="module")
def encoding_crawl(ray_session, tmp_path_factory):
    routes = {**encoding_site(PER_KIND), **extra_routes()}
    servers = {host: SiteServer(routes, host) for host in sorted(set(HOSTS.values()))}
    base = {key: servers[host].base for key, host in HOSTS.items()}
    seeds = [base[path.split("/")[1]] + path if path.split("/")[1] in base else base["zh-cn"] + path
             for path in sorted(routes)]
    cfg = crawl_cfg(seeds, max_depth=0, max_pages=None, partitions=4, read_timeout=30, total_timeout=60,
                    max_bytes=1 << 20, concurrency=16)
    cfg.sources[0].allow_private = ["127.0.0.0/8"]
    try:
        result, out = run_stage("crawl", cfg, {}, tmp_path_factory.mktemp("enc") / "crawl", workers=2)
    finally:
        for s in servers.values():
            s.close()
    path_of = {seed: seed.split("/", 3)[3] for seed in seeds}
    log = {"/" + path_of[r["url"]]: r for r in out.read_table("log").to_pylist() if r["url"] in path_of}
    docs = {"/" + path_of[r["url"]]: r for r in out.read_table("docs").to_pylist()}
    return result, log, docs


def test_every_cell_gives_the_utf8_text(encoding_crawl):
    _, _, docs = encoding_crawl
    table = cell_table({p: (d["title"], d["text"]) for p, d in docs.items()})
    assert all(n == 4 * PER_KIND for n, _ in table.values()), table
    failed = {cell: f"{same}/{n}" for cell, (n, same) in table.items() if same < 0.99 * n}
    assert not failed, failed
    ref = [p for p in docs if "/utf-8/" in p]
    with_hanzi = sum(not docs[p]["text"].isascii() for p in ref)
    assert with_hanzi >= 0.95 * len(ref), with_hanzi  # not a vacuous comparison


@pytest.mark.parametrize("decl,source,declared", [("header", "header", None), ("meta", "meta", None),
                                                  ("none", "detected", None), ("wrong-utf8", "detected", "utf-8")])
def test_where_each_encoding_came_from(encoding_crawl, decl, source, declared):
    _, _, docs = encoding_crawl
    for codec in CODECS:
        rows = [d for p, d in docs.items() if p.startswith(f"/{codec}/{decl}/")]
        want = "big5hkscs" if codec == "big5" else "gb18030"
        assert {(d["encoding"], d["charset_source"], d["charset_declared"]) for d in rows} == {(want, source, declared)}
        conf = [d["charset_confidence"] for d in rows]
        assert all(c is None for c in conf) if source != "detected" else min(conf) > 0.5, (codec, decl, conf)
    originals = [d for p, d in docs.items() if "/utf-8/" in p]
    assert {(d["encoding"], d["charset_source"]) for d in originals} == {("utf-8", "header")}


def test_undecodable_page_is_logged_not_saved(encoding_crawl):
    result, log, docs = encoding_crawl
    row = log["/broken/undecodable.html"]
    assert row["fate"] == "undecodable" and "U+FFFD" in row["reason"] and row["id"] is None, row
    assert "/broken/undecodable.html" not in docs and result.stats["urls_undecodable"] == 1
    assert row["warc_file"] and row["warc_offset"] is not None  # the raw bytes stay in the WARC
    kept = log["/broken/one-bad-byte.html"]  # 1 U+FFFD in ~3,300 characters: kept, and the log says so
    assert kept["fate"] == "fetched" and kept["reason"].startswith("1 U+FFFD")
    assert docs["/broken/one-bad-byte.html"]["undecodable"] == 1
