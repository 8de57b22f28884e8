"""Decode a fetched page to text: the classic Chinese-web failure, handled in one pure function.

Order: BOM (unambiguous, so it wins as in the WHATWG spec), then the HTTP header charset, then `<meta charset>`,
then detection (charset-normalizer). A legacy declaration (gbk, big5, ...) is cross-checked: Big5 bytes decode as
gb18030 without a single error, so "no errors" proves nothing; charset-normalizer rejects the declared codec
when its text is implausible, and a confident, clean detection then wins. Undecodable bytes are counted.

    .venv/bin/python -c "from stages.crawl.encoding import decode; print(decode(b'\\xc4\\xe3\\xba\\xc3', 'text/html; charset=gbk'))"
"""
from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

# Python's gb2312/gbk codecs fail on characters real pages contain (镕 is outside GB2312, 𠮷 needs 4-byte
# GB18030), so every GB label decodes as gb18030, its superset; Big5 labels as big5hkscs (the WHATWG mapping).
ALIASES = {
    **dict.fromkeys(["gb2312", "gbk", "x-gbk", "chinese", "csgb2312", "iso-ir-58", "gb_2312-80", "gb_2312", "cp936",
                     "ms936", "windows-936", "gb18030", "euc-cn", "hz-gb-2312"], "gb18030"),
    **dict.fromkeys(["big5", "big5-hkscs", "big5hkscs", "cn-big5", "x-x-big5", "csbig5", "cp950", "x-big5"], "big5hkscs"),
    **dict.fromkeys(["utf-8", "utf8", "unicode-1-1-utf-8", "unicode20utf8", "x-unicode20utf8"], "utf-8"),
    # WHATWG: latin1 and ascii labels mean windows-1252.
    **dict.fromkeys(["iso-8859-1", "latin1", "latin-1", "ascii", "us-ascii", "l1", "cp1252", "windows-1252"], "cp1252"),
}
BOMS = [(codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")]
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.I)
_META = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([\w.:-]+)", re.I)
# WHATWG prescans 1024 bytes; Chinese portals often put <meta> after long inline scripts, so look further.
META_WINDOW = 4096


@dataclass(frozen=True)
class Decoded:
    text: str
    encoding: str  # the Python codec used
    source: str  # bom | header | meta | detected | default
    errors: int  # undecodable byte sequences (each became U+FFFD)
    declared: str | None = None  # what the page claimed, when detection overruled it


def normalize_label(label: str | None) -> str | None:
    """A charset label as a Python codec name (None when unknown)."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    if label in ALIASES:
        return ALIASES[label]
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    return ALIASES.get(name, name)


def header_charset(content_type: str | None) -> str | None:
    m = _HEADER_CHARSET.search(content_type or "")
    return normalize_label(m.group(1)) if m else None


def meta_charset(body: bytes) -> str | None:
    m = _META.search(body[:META_WINDOW])
    return normalize_label(m.group(1).decode("ascii", "replace")) if m else None


def _decode(body: bytes, enc: str) -> tuple[str, int]:
    text = body.decode(enc, "replace")
    return text, text.count("\ufffd")


def _plausible(body: bytes, enc: str) -> bool:
    """charset-normalizer's judgement of the declared codec (it returns nothing for gibberish)."""
    from charset_normalizer import from_bytes

    return from_bytes(body, cp_isolation=[enc]).best() is not None


def detect(body: bytes) -> str | None:
    from charset_normalizer import from_bytes

    best = from_bytes(body).best()
    return normalize_label(best.encoding) if best else None


def decode(body: bytes, content_type: str | None = None) -> Decoded:
    for bom, enc in BOMS:
        if body.startswith(bom):
            text, bad = _decode(body[len(bom):], enc)
            return Decoded(text, enc, "bom", bad)
    declared, source = header_charset(content_type), "header"
    if declared is None:
        declared, source = meta_charset(body), "meta"
    if declared is None:
        return _undeclared(body)
    text, bad = _decode(body, declared)
    if declared == "utf-8" and bad == 0:
        return Decoded(text, declared, source, 0)  # the common case: no detection cost
    if bad == 0 and body.isascii():
        return Decoded(text, declared, source, 0)
    if bad == 0 and _plausible(body, declared):
        return Decoded(text, declared, source, 0)
    if 0 < bad * 200 < len(text):  # under 0.5% broken: a damaged page in the right codec, not a wrong label
        return Decoded(text, declared, source, bad)
    found = _utf8_or_detect(body)
    if found and found != declared:
        alt, alt_bad = _decode(body, found)
        if alt_bad < bad or (alt_bad == 0 and bad == 0):
            return Decoded(alt, found, "detected", alt_bad, declared)
    return Decoded(text, declared, source, bad)


def _utf8_or_detect(body: bytes) -> str | None:
    # Valid non-ASCII UTF-8 is almost never meant as a legacy CJK codec, and checking it is ~100x cheaper.
    try:
        body.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        return detect(body)


def _undeclared(body: bytes) -> Decoded:
    found = _utf8_or_detect(body)
    if found is None:
        text, bad = _decode(body, "utf-8")
        return Decoded(text, "utf-8", "default", bad)
    text, bad = _decode(body, found)
    return Decoded(text, found, "detected", bad)


def looks_binary(body: bytes) -> bool:
    """Many NUL/control bytes in the first 1 KiB: not text, whatever the Content-Type says.

    Random or compressed bytes are ~10% control bytes (27 of 256 values); HTML has almost none, and a stray
    NUL in a broken page must not make it binary, hence a 5% threshold rather than "any NUL"."""
    head = body[:1024]
    if not head or head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    ctrl = sum(1 for b in head if b < 9 or 13 < b < 32)
    return ctrl * 20 > len(head)
