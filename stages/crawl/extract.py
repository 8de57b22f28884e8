"""From response bytes to a document: decode (encoding.py), parse once with lxml, take the links, then
trafilatura's main text on the same tree. Pure functions; the fetcher and the `warc`/`files` sources share them.

trafilatura is given a decoded tree because it ignores HTTP and <meta> charsets. Its metadata pass
(with_metadata=True) doubles the cost (0.14 s vs 0.07 s on Debian Reference ch03), so the title is
read from <title> (or the first <h1>) instead.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from stages.crawl.encoding import decode, looks_binary
from stages.crawl.frontier import normalize_url

HTML_TYPES = ("text/html", "application/xhtml+xml", "")  # "" = no Content-Type: sniff it


@dataclass
class Page:
    fate: str  # fetched | not_text | no_text | undecodable | robots_meta
    reason: str = ""
    title: str = ""
    text: str = ""
    encoding: str = ""
    charset_source: str = ""
    charset_confidence: float | None = None
    charset_declared: str | None = None
    undecodable: int = 0
    links: list[str] = field(default_factory=list)

    def charset_columns(self) -> dict:
        """How the page was decoded, as the docs and log tables name it (None where unknown)."""
        return {"encoding": self.encoding or None, "charset_source": self.charset_source or None,
                "charset_confidence": self.charset_confidence, "charset_declared": self.charset_declared}


def is_html_type(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() in HTML_TYPES


def process_html(url: str, body: bytes, content_type: str | None, xcfg, want_links: bool = True,
                 robots_agent: str | None = None, robots_header: list[str] = ()) -> Page:
    """Decode, parse, extract. Never raises on bad input: the page's fate says what went wrong.

    With `robots_agent` (the crawler's product token), the page's own robots rules are honoured: X-Robots-Tag
    values (`robots_header`) and <meta name="robots"> (or name=<agent>). `noindex`: fate `robots_meta`, no text
    extracted; `nofollow`: no links returned."""
    if looks_binary(body):
        return Page("not_text", "binary content (NUL or control bytes in the first 1 KiB)")
    dec = decode(body, content_type)
    meta = _decoding(dec)
    if dec.refused:
        return Page("undecodable", dec.refused, **meta)
    tree = _parse(dec.text)
    if tree is None:
        return Page("no_text", "no HTML tree could be parsed", **meta)
    rules = _robots_rules(tree, robots_agent, robots_header) if robots_agent is not None else {}
    links = _links(tree, url) if want_links and "nofollow" not in rules else []
    if "noindex" in rules:
        return Page("robots_meta", f"noindex ({rules['noindex']})", links=links, **meta)
    title = _title(tree)
    text = _main_text(tree, xcfg)
    if len(text) < xcfg.min_chars:
        return Page("no_text", f"extracted {len(text)} chars < min_chars {xcfg.min_chars}", title, text,
                    links=links, **meta)
    note = "; ".join(filter(None, [_kept_errors(dec), _nofollow(rules)]))
    return Page("fetched", note, title, text, links=links, **meta)


def _robots_rules(tree, agent: str, header: list[str]) -> dict[str, str]:
    """{"noindex" / "nofollow": where it was said}: the X-Robots-Tag header first, then <meta name="robots">."""
    from stages.crawl.robots import page_directives

    metas = [m.get("content") or "" for m in tree.iter("meta")
             if (m.get("name") or "").strip().lower() in ("robots", agent)]
    rules = dict.fromkeys(page_directives(metas, agent), "<meta name=robots>")
    rules.update(dict.fromkeys(page_directives(list(header), agent), "X-Robots-Tag"))
    return rules


def _nofollow(rules: dict[str, str]) -> str:
    return f"nofollow ({rules['nofollow']}): links not followed" if "nofollow" in rules else ""


def _decoding(dec) -> dict:
    return {"encoding": dec.encoding, "charset_source": dec.source, "charset_confidence": dec.confidence,
            "charset_declared": dec.declared, "undecodable": dec.errors}


def _kept_errors(dec) -> str:
    """The log's note on a page kept with a few U+FFFD (at most encoding.MAX_REPLACED of its characters)."""
    return f"{dec.errors} U+FFFD in {len(dec.text)} characters kept ({dec.encoding})" if dec.errors else ""


def _parse(text: str):
    from trafilatura.utils import load_html

    try:
        return load_html(text)
    except Exception:  # lxml raises several types on hostile input; the fate records it
        return None


# A relative href that joins by concatenation: no scheme, not protocol-relative, no dot segments, and only
# characters normalize_url would leave alone. ~95% of the sample site's hrefs; joining them this way instead of
# urljoin + urlsplit cuts link handling from ~4.5 to ~1 ms per page (bench/crawl.py).
_SIMPLE_REL = re.compile(r"^(?![A-Za-z][A-Za-z0-9+.-]*:)(?!//)"  # no scheme, not protocol-relative
                         r"[A-Za-z0-9_~!$&'()*+,;=@%/-][A-Za-z0-9._~!$&'()*+,;=:@%/?-]*$")


def _links(tree, base: str) -> list[str]:
    """Absolute, normalised http(s) links plus the raw form of refused ones (the frontier logs those).

    Fragments are cut first: the sample site's pages repeat one target under many #anchors."""
    base_href = tree.xpath("string(//base/@href)").strip()
    base = normalize_url(base_href, base)[0] or base if base_href else normalize_url(base)[0] or base
    origin = base[:base.index("/", base.index("//") + 2)] if base.count("/") >= 3 else base
    folder = base.split("?", 1)[0].rsplit("/", 1)[0] + "/"
    hrefs = {h.strip().split("#", 1)[0] for h in tree.xpath("//a/@href | //area/@href")}
    out = set()
    for href in hrefs:
        if not href:
            continue
        if _SIMPLE_REL.match(href) and "/." not in href:
            out.add((origin if href[0] == "/" else folder) + href)
            continue
        url, _ = normalize_url(href, base)
        out.add(url or href)
    return sorted(out)


def _title(tree) -> str:
    for path in ("//title", "//h1"):
        found = tree.xpath(f"string({path})")
        if found and found.strip():
            return " ".join(found.split())
    return ""


def _main_text(tree, xcfg) -> str:
    import trafilatura

    try:
        text = trafilatura.extract(tree, fast=xcfg.fast, favor_precision=xcfg.favor_precision,
                                   include_tables=xcfg.include_tables, include_comments=False)
    except Exception:  # trafilatura on malformed trees; counted as no_text, never a crash
        return ""
    return text or ""


def process_text(body: bytes, content_type: str | None) -> Page:
    """A plain-text payload (WET conversion records, .txt files)."""
    dec = decode(body, content_type)
    if dec.refused:
        return Page("undecodable", dec.refused, **_decoding(dec))
    text = dec.text.strip()
    return Page("fetched" if text else "no_text", _kept_errors(dec) if text else "empty text", "", text,
                **_decoding(dec))
