"""Legacy Chinese encodings, end to end (issue 15, section 1): sample-site pages re-encoded in GB18030, GBK and Big5,
each declared in the HTTP header, in <meta>, nowhere, or wrongly as `charset=utf-8` in the header, served over real
HTTP on 127.0.0.1 and crawled by the crawl stage: each must give exactly the title and text of its UTF-8 original.
Then the decoder alone on real bytes: the issue's mojibake, BOM, declared pages, undecodable bytes.

    .venv/bin/python -m pytest -q tests/stages/test_crawl_encodings.py     (~15 s on an idle 2-core machine)

The site (encoding_site) is shared with bench/crawl.py, which prints the same per-cell table over every page.
Four kinds of page per language, so that the hard case (a few hanzi among ASCII) is well represented: `doc`
(a Debian Reference section, hanzi throughout), `listing` (a section's title over its command listings: 1-12
hanzi), `nav` (zh-CN: LilyPond pages, English with a Chinese menu; zh-TW: sections over 92% ASCII) and `words`
(English paragraphs with 1-3 Chinese words in bold). Big5 cannot encode most simplified hanzi, so the big5 cells
are built from the zh-TW pages and the GB ones from zh-CN; characters a codec lacks become numeric character
references, as a server's converter writes them.
"""
from __future__ import annotations

import functools
import random
import re

import pytest

from tests.helpers import run_stage
from tests.realtext import html_files
from tests.stages.test_crawl_http import SiteServer, crawl_cfg

CODECS = {"gb18030": "zh-cn", "gbk": "zh-cn", "big5": "zh-tw"}  # Python codec -> the pages it encodes
DECLARATIONS = ("header", "meta", "none", "wrong-utf8")
HEADER_LABEL = {"gb18030": "GB18030", "gbk": "GBK", "big5": "Big5"}
META_LABEL = {"gb18030": "gb18030", "gbk": "gb2312", "big5": "big5"}  # gb2312 is how most GBK pages say it
# Debian Reference chapters the tests may use: hanzi.py's table was built from ch01, ch02 and ch09.
CHAPTERS = ("ch03", "ch04", "ch05", "ch06", "ch07", "ch08", "ch10", "ch11", "ch12", "apa")
# UTF-8 with 8 bad bytes where {} is: 2% of its characters become U+FFFD.
BROKEN = "<html><head><title>坏页</title></head><body><p>" + "中文语料需要仔细清洗。" * 30 + "{}</p></body></html>"
_DECL = re.compile(r"<\?xml[^>]*\?>\s*|<meta[^>]*charset[^>]*>\s*", re.IGNORECASE)


def _page(title: str, body: str) -> str:
    return f"<html><head><title>{title}</title></head><body>{body}</body></html>"


def _sections(lang: str) -> list:
    import lxml.html

    out = []
    for ch in CHAPTERS:
        path = html_files(f"usr/share/debian-reference/{ch}.{lang}.html")[0]
        out += lxml.html.fromstring(path.read_bytes()).xpath('//div[@class="section"]')
    return out


def _spread(items: list, n: int) -> list:
    """n items evenly spread over the list (deterministic), all of them when there are fewer."""
    return items if len(items) <= n else [items[i * len(items) // n] for i in range(n)]


@functools.lru_cache(maxsize=2)
def _kinds(lang: str) -> dict[str, list[tuple[str, str]]]:
    """(name, UTF-8 HTML) per kind, in a fixed order (parsed once per language: ~1 s)."""
    import lxml.html

    docs, listings, mostly_ascii = [], [], []
    for i, sec in enumerate(_sections(lang)):
        html = lxml.html.tostring(sec, encoding="unicode")
        title = " ".join(sec.xpath("string(.//h2 | .//h3 | .//h4)").split())
        text = sec.text_content()
        share = len(re.findall(r"[^\x00-\x7f]", text)) / max(1, len(text))
        if 1500 < len(html.encode()) < 8000 and share < 0.08:
            mostly_ascii.append((f"ascii-{i:03d}", _page(title, html)))
        elif 1500 < len(html.encode()) < 8000:
            docs.append((f"doc-{i:03d}", _page(title, html)))
        listing = "".join(lxml.html.tostring(p, encoding="unicode") for p in sec.xpath("./pre | ./div/pre"))
        if len(listing) > 500 and not title.isascii():
            listings.append((f"listing-{i:03d}", _page(title, f"<p><b>{title}</b></p>{listing[:3000]}")))
    if lang == "zh-cn":
        mostly_ascii = [(f"nav-{p.stem}", html) for p in html_files("usr/share/doc/lilypond/**/*.zh.html")
                        if len(html := _lilypond(p)) < 16000]
    return {"doc": docs, "listing": listings, "nav": mostly_ascii, "words": _word_pages(docs)}


@functools.lru_cache(maxsize=1)
def _english() -> list[str]:
    """English paragraphs (over 200 ASCII characters) of LilyPond's learning manual, escaped for HTML."""
    import lxml.html

    out = []
    for path in html_files("usr/share/doc/lilypond/html/Documentation/learning/*.zh.html")[:40]:
        for p in lxml.html.fromstring(path.read_bytes()).xpath("//p"):
            text = " ".join(p.text_content().split())
            if text.isascii() and len(text) > 200:
                out.append(text.replace("&", "&amp;").replace("<", "&lt;"))
    return out


def _word_pages(docs: list[tuple[str, str]], n: int = 60) -> list[tuple[str, str]]:
    """English pages with 1-3 short Chinese words (2-4 hanzi from the doc pages) in bold: the hardest case, as the
    codec is decided by 2-12 bytes."""
    english = _english()
    words = sorted({w for _, html in docs for w in re.findall(r"[\u4e00-\u9fff]{2,4}", html)})
    pages = []
    for i in range(n):
        picked = [words[(i * 7919 + j * 104729) % len(words)] for j in range(1 + i % 3)]
        body = "".join(f"<p><b>{w}</b> {english[(i + j) % len(english)]}</p>" for j, w in enumerate(picked))
        pages.append((f"words-{i:03d}", _page(f"LilyPond notes {i}", body)))
    return pages


def _lilypond(path) -> str:
    """A LilyPond manual page (English text, Chinese menu and title) without its 30 KB table of contents, and without
    the Chinese licence in its leading comment, which would hand the detector 100 hanzi a menu page lacks."""
    html = re.sub(r"<!--.*?-->", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    return re.sub(r'<div id="tocframe">.*?</div>\s*(?=<div id="footer">|</body>)', "", html, flags=re.DOTALL)


def source_pages(lang: str, per_kind: int) -> dict[str, str]:
    """name -> UTF-8 HTML (no charset declaration anywhere): per_kind pages of each kind."""
    pages = {}
    for items in _kinds(lang).values():
        pages.update(_spread([(n, _DECL.sub("", h)) for n, h in items], per_kind))
    return pages


def encoded(html: str, codec: str, decl: str) -> tuple[str, bytes]:
    """(Content-Type, body) of one page of one cell."""
    if decl == "meta":  # both forms real pages use, alternately
        tag = (f'<meta charset="{META_LABEL[codec]}">' if len(html) % 2 else
               f'<meta http-equiv="Content-Type" content="text/html; charset={META_LABEL[codec]}">')
        html = html.replace("<head>", "<head>" + tag, 1)
    ctype = {"header": f"text/html; charset={HEADER_LABEL[codec]}", "wrong-utf8": "text/html; charset=utf-8"}
    return ctype.get(decl, "text/html"), html.encode(codec, "xmlcharrefreplace")


def encoding_site(per_kind: int) -> dict[str, tuple[int, dict, bytes]]:
    """Routes: /<lang>/utf-8/<name> (the originals, declared in the header) and /<codec>/<declaration>/<name>."""
    routes = {}
    for lang in sorted(set(CODECS.values())):
        pages = source_pages(lang, per_kind)
        for name, html in pages.items():
            routes[f"/{lang}/utf-8/{name}"] = (200, {"Content-Type": "text/html; charset=utf-8"}, html.encode())
        for codec in (c for c, lg in CODECS.items() if lg == lang):
            for decl in DECLARATIONS:
                for name, html in pages.items():
                    ctype, body = encoded(html, codec, decl)
                    routes[f"/{codec}/{decl}/{name}"] = (200, {"Content-Type": ctype}, body)
    return routes


def cell_table(docs: dict[str, tuple[str, str]]) -> dict[tuple[str, str], tuple[int, int]]:
    """{(codec, declaration): (pages, pages whose (title, text) equal the UTF-8 original's)} from {path: (title, text)}."""
    out = {}
    for codec, lang in CODECS.items():
        for decl in DECLARATIONS:
            names = [p.rsplit("/", 1)[1] for p in docs if p.startswith(f"/{lang}/utf-8/")]
            same = sum(docs.get(f"/{codec}/{decl}/{n}") == docs[f"/{lang}/utf-8/{n}"] for n in names)
            out[codec, decl] = (len(names), same)
    return out


# -- the decoder on real bytes ----------------------------------------------------------------------------------

def _menu_page(word: str) -> str:
    """A real English LilyPond paragraph with one Chinese word, as a menu item would put it."""
    return _page("LilyPond", f"<p><b>{word}</b> {_english()[0]}</p>")


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
        bare = _DECL.sub("", body.decode()).encode()
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
    assert (d.text, d.encoding, d.source, d.declared, d.errors) == (body.decode("gbk"), "gb18030", "detected", "utf-8", 0)
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
