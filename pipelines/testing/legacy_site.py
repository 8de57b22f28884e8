"""A test site of legacy Chinese encodings (issue 15), built from the quickstart sample site's real pages and shared
by tests/stages/test_crawl_encodings.py and bench/crawl.py: every page in UTF-8 and re-encoded in GB18030, GBK and
Big5, each declared in the HTTP header, in <meta>, nowhere, or wrongly as `charset=utf-8` in the header.

Four kinds of page per language, so that the hard case (a few hanzi among ASCII) is well represented: `doc`
(a Debian Reference section, hanzi throughout), `listing` (a section's title over its command listings: 1-12
hanzi), `nav` (zh-CN: LilyPond pages, English with a Chinese menu; zh-TW: sections over 92% ASCII) and `words`
(English paragraphs with 1-3 Chinese words in bold). Big5 cannot encode most simplified hanzi, so the big5 cells
are built from the zh-TW pages and the GB ones from zh-CN; characters a codec lacks become numeric character
references, as a server's converter writes them.

    routes = encoding_site(per_kind=10)      # for pipelines.testing.httpsite.SiteServer
    cell_table({path: (title, text)})        # {(codec, declaration): (pages, pages equal to the UTF-8 original)}
"""
from __future__ import annotations

import functools
import re

from pipelines.testing.realtext import html_files

CODECS = {"gb18030": "zh-cn", "gbk": "zh-cn", "big5": "zh-tw"}  # Python codec -> the pages it encodes
DECLARATIONS = ("header", "meta", "none", "wrong-utf8")
HEADER_LABEL = {"gb18030": "GB18030", "gbk": "GBK", "big5": "Big5"}
META_LABEL = {"gb18030": "gb18030", "gbk": "gb2312", "big5": "big5"}  # gb2312 is how most GBK pages say it
# Debian Reference chapters the tests may use: hanzi.py's table was built from ch01, ch02 and ch09.
CHAPTERS = ("ch03", "ch04", "ch05", "ch06", "ch07", "ch08", "ch10", "ch11", "ch12", "apa")
CHARSET_DECL = re.compile(r"<\?xml[^>]*\?>\s*|<meta[^>]*charset[^>]*>\s*", re.IGNORECASE)


def html_page(title: str, body: str) -> str:
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
            mostly_ascii.append((f"ascii-{i:03d}", html_page(title, html)))
        elif 1500 < len(html.encode()) < 8000:
            docs.append((f"doc-{i:03d}", html_page(title, html)))
        listing = "".join(lxml.html.tostring(p, encoding="unicode") for p in sec.xpath("./pre | ./div/pre"))
        if len(listing) > 500 and not title.isascii():
            listings.append((f"listing-{i:03d}", html_page(title, f"<p><b>{title}</b></p>{listing[:3000]}")))
    if lang == "zh-cn":
        mostly_ascii = [(f"nav-{p.stem}", html) for p in html_files("usr/share/doc/lilypond/**/*.zh.html")
                        if len(html := _lilypond(p)) < 16000]
    return {"doc": docs, "listing": listings, "nav": mostly_ascii, "words": _word_pages(docs)}


@functools.lru_cache(maxsize=1)
def english_paragraphs() -> list[str]:
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
    english = english_paragraphs()
    words = sorted({w for _, html in docs for w in re.findall(r"[\u4e00-\u9fff]{2,4}", html)})
    pages = []
    for i in range(n):
        picked = [words[(i * 7919 + j * 104729) % len(words)] for j in range(1 + i % 3)]
        body = "".join(f"<p><b>{w}</b> {english[(i + j) % len(english)]}</p>" for j, w in enumerate(picked))
        pages.append((f"words-{i:03d}", html_page(f"LilyPond notes {i}", body)))
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
        pages.update(_spread([(n, CHARSET_DECL.sub("", h)) for n, h in items], per_kind))
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
    """{(codec, declaration): (pages, pages whose (title, text) equal the UTF-8 original's)} from
    {path: (title, text)}."""
    out = {}
    for codec, lang in CODECS.items():
        for decl in DECLARATIONS:
            names = [p.rsplit("/", 1)[1] for p in docs if p.startswith(f"/{lang}/utf-8/")]
            same = sum(docs.get(f"/{codec}/{decl}/{n}") == docs[f"/{lang}/utf-8/{n}"] for n in names)
            out[codec, decl] = (len(names), same)
    return out
