"""Decode a fetched page to text: the classic Chinese-web failure, handled in one pure function.

Order: a BOM wins (unambiguous, as in the WHATWG spec). Valid UTF-8 with enough multi-byte sequences is taken at
once (the common case: one strict decode). Otherwise every declared codec (HTTP header, <meta>, <?xml?>) and
UTF-8, GB18030 and Big5-HKSCS are decoded strictly and each text is scored by how likely it is as Chinese web
text (hanzi.py's frequencies; rare hanzi, kana, C1 controls, private-use characters and Latin mojibake runs cost
more); the cheapest wins, a declared codec with a head start. "No errors" proves little: Big5 bytes decode as
GB18030 without one, and GBK bytes as mac-latin2 or cp1250.

charset-normalizer is asked only when none of those candidates gives plausible text (Japanese, Korean, Cyrillic
or European pages), and its answer is scored like the others. It is not asked first because on Chinese pages its
first guess was wrong for 15% of the undeclared GB pages of bench/crawl.py's test site and 20% of the Big5 ones
(all of them now right): it judges how chaotic a text looks, not whether it is Chinese, so a mostly-ASCII page
with a few hanzi came back as cp1250, cp949 or mac-latin2 (Big5 `提示` -> `´ŁĄÜ`, GBK `部分` -> `˛ż·Ö`).

A page is refused (`refused` says why; the crawl logs it as `undecodable` and keeps its bytes in the WARC) when
more than 0.1% of its characters are U+FFFD after the best decoding, or when even the best text is garbage.

    .venv/bin/python -c "from stages.crawl.encoding import decode; print(decode(b'\\xcc\\xe1\\xca\\xbe'))"
"""
from __future__ import annotations

import codecs
import functools
import re
from dataclasses import dataclass

# Python's gb2312/gbk codecs fail on characters real pages contain (镕 is outside GB2312, 𠮷 needs 4-byte
# GB18030), so every GB label decodes as gb18030, its superset; Big5 labels as big5hkscs (the WHATWG mapping).
ALIASES = {
    **dict.fromkeys(["gb2312", "gbk", "x-gbk", "chinese", "csgb2312", "iso-ir-58", "gb_2312-80", "gb_2312", "cp936",
                     "ms936", "windows-936", "gb18030", "euc-cn", "hz-gb-2312"], "gb18030"),
    **dict.fromkeys(["big5", "big5-hkscs", "big5hkscs", "cn-big5", "x-x-big5", "csbig5", "cp950", "x-big5"],
                    "big5hkscs"),
    **dict.fromkeys(["utf-8", "utf8", "utf_8", "unicode-1-1-utf-8", "unicode20utf8", "x-unicode20utf8"], "utf-8"),
    # WHATWG: latin1 and ascii labels mean windows-1252.
    **dict.fromkeys(["iso-8859-1", "latin1", "latin-1", "ascii", "us-ascii", "l1", "cp1252", "windows-1252"], "cp1252"),
}
BOMS = [(codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")]
CHINESE = ("utf-8", "gb18030", "big5hkscs")
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)
_META = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([\w.:-]+)", re.IGNORECASE)
_XML = re.compile(rb"<\?xml[^>]+encoding\s*=\s*[\"']([\w.:-]+)", re.IGNORECASE)
# WHATWG prescans 1024 bytes; Chinese portals often put <meta> after long inline scripts, so look further.
META_WINDOW = 4096
# Valid UTF-8 with this many continuation bytes is taken without scoring: a GBK or Big5 text is valid UTF-8 only by
# chance, about 1 in 7 per hanzi, so 200 bytes (~100 hanzi) of luck do not happen; fewer are scored like the rest.
UTF8_SURE = 200
DECLARED_BITS = 8.0  # a declared codec's head start: it must lose by 8 bits (256x less likely text) to be overruled
# UTF-8's head start when undeclared: ~98% of web pages are UTF-8, and the table knows nothing of European text,
# so `Größe` (4 Latin letters) would otherwise lose to 3 rare hanzi.
UTF8_BITS = 6.0
MAX_REPLACED = 0.001  # above this share of U+FFFD the page is refused
GARBAGE_BITS = 19.0  # mean bits per non-ASCII character above which even the best decoding is garbage...
GARBAGE_MIN = 8  # ...when it has at least this many non-ASCII characters (2 rare words are not proof)
SAMPLE_CHARS = 16384  # a lone strict candidate is judged on this many characters: 0.2 ms, not 2.8 for 200 KB
PLAUSIBLE_BITS = 14.0  # a best Chinese candidate above this mean lets charset-normalizer propose one more codec


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    encoding: str  # the Python codec used
    source: str  # bom | header | meta | detected
    errors: int  # U+FFFD characters in the text (undecodable byte sequences, or ones the page already had)
    confidence: float | None = None  # when detected: the chosen codec's share of the candidates' likelihood
    declared: str | None = None  # what the page claimed, when detection overruled it
    refused: str = ""  # why the text is not usable ("" = usable)


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
    """<meta charset>, <meta http-equiv content="...; charset=">, or failing those <?xml encoding=?>."""
    m = _META.search(body[:META_WINDOW]) or _XML.match(body)
    enc = normalize_label(m.group(1).decode("ascii", "replace")) if m else None
    return "utf-8" if enc and enc.startswith("utf-16") else enc  # WHATWG: bytes that hold <meta> are not UTF-16


def decode(body: bytes, content_type: str | None = None) -> Decoded:
    for bom, enc in BOMS:
        if body.startswith(bom):
            text = body[len(bom):].decode(enc, "replace")
            return _checked(Decoded(text, enc, "bom", text.count("\ufffd")))
    header = header_charset(content_type)
    meta = None if header else meta_charset(body)
    source = "header" if header else "meta" if meta else "detected"
    if (header or meta) in (None, "utf-8"):  # the fast path: one strict decode
        text = _strict(body, "utf-8")
        if text is not None and (len(body) == len(text) or len(body) - len(text) >= UTF8_SURE):
            conf = 1.0 if source == "detected" else None
            return _checked(Decoded(text, "utf-8", source, text.count("\ufffd"), conf))
    return _choose(body, header, meta_charset(body) if header else meta)


def _strict(body: bytes, enc: str) -> str | None:
    try:
        return body.decode(enc)
    except UnicodeDecodeError:
        return None


def _choose(body: bytes, header: str | None, meta: str | None) -> Decoded:
    """The cheapest text (fewest bits) among the strict decodings of the declared codecs and the Chinese ones."""
    declared = [e for e in (header, meta) if e]

    def head_start(enc: str) -> float:
        return DECLARED_BITS if enc in declared else UTF8_BITS if enc == "utf-8" else 0.0

    texts = {e: t for e in dict.fromkeys(declared + list(CHINESE)) if (t := _strict(body, e)) is not None}
    # One strict candidate needs no comparison, only a plausibility check: its first characters are enough.
    scored = {e: _scored(t, head_start(e), SAMPLE_CHARS if len(texts) == 1 else None) for e, t in texts.items()}
    if not scored or min(scored.values())[2] > PLAUSIBLE_BITS:  # not Chinese: charset-normalizer's guess and
        more = {e: t for e in (_normalizer_guess(body), "cp1252")  # cp1252 (WHATWG's default) join the candidates
                if e and e not in texts and (t := _strict(body, e)) is not None}
        if more:
            texts.update(more)
            scored = {e: _scored(t, head_start(e)) for e, t in texts.items()}
    if not scored:  # nothing decodes strictly: the least damaged text, whose U+FFFD are counted
        scored = {e: _scored(body.decode(e, "replace"), head_start(e)) for e in dict.fromkeys(declared + list(CHINESE))}
    best = min(scored, key=lambda e: scored[e][0])
    bits, text, mean, nonascii = scored[best]
    if best in declared:
        dec = Decoded(text, best, "header" if best == header else "meta", text.count("\ufffd"))
    else:
        conf = 1 / sum(2 ** (bits - s[0]) for s in scored.values())
        dec = Decoded(text, best, "detected", text.count("\ufffd"), round(conf, 4), header or meta)
    if nonascii >= GARBAGE_MIN and mean > GARBAGE_BITS:
        return _refuse(dec, f"no codec gives plausible text (best {best}: {mean:.1f} bits per non-ASCII "
                            f"character > {GARBAGE_BITS:g})")
    return _checked(dec)


# The legacy encodings of the WHATWG Encoding Standard, i.e. the ones a browser can show: a page in cp037, cp1125,
# hp-roman8 or mac-latin2 cannot exist on the web, yet charset-normalizer proposes them for GBK menus and garbage.
WEB_CODECS = ["cp866", "iso8859_2", "iso8859_3", "iso8859_4", "iso8859_5", "iso8859_6", "iso8859_7", "iso8859_8",
              "iso8859_10", "iso8859_13", "iso8859_14", "iso8859_15", "iso8859_16", "koi8_r", "koi8_u", "mac_roman",
              "mac_cyrillic", "cp874", "cp1250", "cp1251", "cp1252", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257",
              "cp1258", "euc_jp", "iso2022_jp", "shift_jis", "euc_kr"]


def _normalizer_guess(body: bytes) -> str | None:
    from charset_normalizer import from_bytes

    best = from_bytes(body, cp_isolation=WEB_CODECS).best()
    return normalize_label(best.encoding) if best else None


def _checked(dec: Decoded) -> Decoded:
    share = dec.errors / max(1, len(dec.text)) if dec.errors else 0.0
    if share > MAX_REPLACED:
        return _refuse(dec, f"{dec.errors} U+FFFD in {len(dec.text)} characters ({share:.2%} > {MAX_REPLACED:.1%}) "
                            f"decoding as {dec.encoding}")
    return dec


def _refuse(dec: Decoded, why: str) -> Decoded:
    return Decoded(dec.text, dec.encoding, dec.source, dec.errors, dec.confidence, dec.declared, why)


# -- how likely a text is as Chinese web text ------------------------------------------------------------------

_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
ASCII_BITS = 6.0  # every candidate pays for its ASCII too: a codec that swallows ASCII bytes into hanzi gains little
# Surcharge on a Latin-1/Latin-extended character in a run of 3+ non-ASCII characters: 2 hanzi of GBK read as cp1250
# are 4 (`ĚáĘľ`), while European words rarely have 3 accented letters in a row (`Größe` has 2).
LATIN_RUN_BITS = 8.0


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, float]:
    from stages.crawl.hanzi import TABLE

    return {ch: float(b) for b, chars in TABLE.items() for ch in chars}


@functools.lru_cache(maxsize=1 << 16)
def _char_bits(c: str) -> float:
    """hanzi.py's cost, or one by character class (pipelines.text) for characters the table does not hold."""
    from pipelines.text import CJK, HANGUL, KANA, LETTER, OTHER, class_table

    if c in _table():
        return _table()[c]
    o, cls = ord(c), class_table()[ord(c)]
    if o <= 0x36F and not 0x80 <= o <= 0x9F:
        return 14.0  # an accented Latin letter or a symbol: plausible alone between ASCII letters
    if cls == OTHER or o == 0xFFFD:
        return 30.0  # replacement, C1 control, private use, unassigned: almost never meant
    if cls == CJK:  # a hanzi seen fewer than ~3 times in the table's 600k characters, or one from a rare block
        return 20.0 if 0x4E00 <= o <= 0x9FFF else 24.0
    if cls in (LETTER, KANA, HANGUL):
        return 16.0  # another script (Greek, Cyrillic, kana, Hangul, ...): a real page, but not a Chinese one
    return 18.0  # other symbols and punctuation


def _scored(text: str, head_start: float, limit: int | None = None) -> tuple[float, str, float, int]:
    """(total bits less the codec's head start, text, mean bits per non-ASCII character, non-ASCII characters),
    over the first `limit` characters when given."""
    from collections import Counter

    runs = _NON_ASCII.findall(text, 0, limit or len(text))
    joined = "".join(runs)
    bits = sum(_char_bits(c) * k for c, k in Counter(joined).items())
    runs3 = Counter("".join(r for r in runs if len(r) > 2))
    bits += LATIN_RUN_BITS * sum(k for c, k in runs3.items() if c <= "\u036f" and c not in _table())
    mean = bits / len(joined) if joined else 0.0
    return bits + ASCII_BITS * (min(len(text), limit or len(text)) - len(joined)) - head_start, text, mean, len(joined)


def looks_binary(body: bytes) -> bool:
    """Many NUL/control bytes in the first 1 KiB: not text, whatever the Content-Type says.

    Random or compressed bytes are ~10% control bytes (27 of 256 values); HTML has almost none, and a stray
    NUL in a broken page must not make it binary, hence a 5% threshold rather than "any NUL"."""
    head = body[:1024]
    if not head or head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    ctrl = sum(1 for b in head if b < 9 or 13 < b < 32)
    return ctrl * 20 > len(head)
