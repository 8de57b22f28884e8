"""Script and language: character classes (every CJK ideograph block), Traditional-script detection,
OpenCC conversion and the optional fastText language-ID model.

    from stages.clean.script import char_classes, CJK, traditional_fraction, Converter
    traditional_fraction("這是一個測試")   # -> 1.0 of its ideographs are Traditional-only
    Converter("tw2sp").convert("預設的檔案")  # -> "默认的文件"

The class table covers all of Unicode (one byte per code point, 1.1 MB, built once per process in ~0.2 s), so
every per-character statistic is one numpy gather over the document's code points.
"""
from __future__ import annotations

import functools
import unicodedata

import numpy as np

OTHER, SPACE, CJK, KANA, HANGUL, LETTER, DIGIT, PUNCT, SYMBOL = range(9)

# Every block of unified ideographs (URO, Extensions A-I), both compatibility blocks, and 〇 (U+3007, used in
# Chinese dates: 二〇二四). The common [\u4e00-\u9fa5] test misses Ext A/B, where many names and rare
# characters live.
IDEOGRAPH_RANGES = [
    (0x3007, 0x3007), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0x2CEB0, 0x2EBEF), (0x2EBF0, 0x2EE5F),
    (0x2F800, 0x2FA1F), (0x30000, 0x3134F), (0x31350, 0x323AF),
]
# Hiragana, Katakana (without U+30FB ・, a middle dot Chinese uses in foreign names), phonetic extensions,
# half-width katakana.
KANA_RANGES = [(0x3040, 0x309F), (0x30A0, 0x30FA), (0x30FC, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9D)]
HANGUL_RANGES = [(0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7AF), (0xD7B0, 0xD7FF)]
_CATEGORY_CLASS = {"Z": SPACE, "L": LETTER, "N": DIGIT, "P": PUNCT, "S": SYMBOL}


@functools.lru_cache(maxsize=1)
def class_table() -> np.ndarray:
    """uint8 class per code point (0..0x10FFFF). Categories come from unicodedata for planes 0-1."""
    table = np.zeros(0x110000, dtype=np.uint8)
    for cp in range(0x20000):
        cat = unicodedata.category(chr(cp))
        if cat == "Nd":
            table[cp] = DIGIT
        else:
            table[cp] = _CATEGORY_CLASS.get(cat[0], OTHER)
    for cp in (9, 10, 11, 12, 13):
        table[cp] = SPACE
    for ranges, cls in ((IDEOGRAPH_RANGES, CJK), (KANA_RANGES, KANA), (HANGUL_RANGES, HANGUL)):
        for lo, hi in ranges:
            table[lo:hi + 1] = cls
    return table


def codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def char_classes(text: str) -> np.ndarray:
    return class_table()[codepoints(text)]


def script_share(text: str, cls: int) -> float:
    """Share of `cls` among the script characters (ideographs + kana + hangul); 0 when there are none."""
    c = np.bincount(char_classes(text), minlength=9)
    total = c[CJK] + c[KANA] + c[HANGUL]
    return float(c[cls] / total) if total else 0.0


@functools.lru_cache(maxsize=1)
def traditional_chars() -> frozenset[str]:
    """Ideographs that OpenCC's character-level t2s changes: the Traditional forms (4 221 with OpenCC 1.4.2).

    Built by converting every BMP ideograph on its own line, so phrase rules cannot apply.
    """
    import opencc

    chars = [chr(cp) for lo, hi in IDEOGRAPH_RANGES if hi < 0x10000 for cp in range(lo, hi + 1)]
    out = opencc.OpenCC("t2s").convert("\n".join(chars)).split("\n")
    return frozenset(c for c, s in zip(chars, out) if c != s)


@functools.lru_cache(maxsize=1)
def _trad_table() -> np.ndarray:
    """Boolean per BMP code point (every Traditional form OpenCC knows is in the BMP)."""
    table = np.zeros(0x10000, dtype=bool)
    table[[ord(c) for c in traditional_chars()]] = True
    return table


def traditional_fraction(text: str) -> float:
    """Fraction of the document's ideographs that are Traditional-only forms (0.0 for Simplified text).

    Measured on the Debian Reference (OpenCC 1.4.2): every zh-CN page 0.000, zh-TW pages 0.26-0.36.
    """
    cps = codepoints(text)
    n_cjk = int(np.count_nonzero(class_table()[cps] == CJK))
    if not n_cjk:
        return 0.0
    n_trad = int(np.count_nonzero(_trad_table()[cps[cps < 0x10000]]))
    return n_trad / n_cjk


class Converter:
    """One OpenCC converter per configuration, built lazily (loading a config reads its dictionaries)."""

    def __init__(self) -> None:
        self._cache: dict[str, object] = {}

    def convert(self, text: str, config: str) -> str:
        if config not in self._cache:
            import opencc

            self._cache[config] = opencc.OpenCC(config)
        return self._cache[config].convert(text)  # type: ignore[attr-defined]


class LangId:
    """A fastText language-ID model (lid.176, GlotLID or one you trained). Loaded once per task."""

    def __init__(self, path: str, labels: list[str]):
        import fasttext

        fasttext.FastText.eprint = lambda *a, **k: None  # silence the load-time deprecation banner
        self.model = fasttext.load_model(str(path))
        self.labels = set(labels)

    def score(self, text: str) -> float:
        """Probability mass the model puts on the accepted labels (fastText wants one line of text)."""
        labels, probs = self.model.predict(" ".join(text.split())[:20000], k=5)
        return float(sum(p for lab, p in zip(labels, probs) if lab in self.labels))
