"""Text facts more than one stage must agree on: one character-class table over all of Unicode (what "CJK" means
everywhere: the clean stage's script rules, its line filter, the train stage's CJK share of samples).

    from pipelines.text import CJK, char_classes, cjk_fraction
    cjk_fraction("中文 text")          # -> 0.333: 2 of 6 non-space characters
    char_classes("中a1")               # -> array([CJK, LETTER, DIGIT])

The class table holds one byte per code point (1.1 MB, built once per process in ~0.2 s), so every per-character
statistic is one numpy gather over the document's code points. numpy and the standard library only: the train
stage's sampler imports it on machines without the rest of the pipeline.
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


CJK_FORMS = [(0x3000, 0x303F), (0xFF00, 0xFFEF)]  # CJK symbols and punctuation; half-width and full-width forms


@functools.lru_cache(maxsize=1)
def cjk_table() -> np.ndarray:
    """Boolean per code point: an ideograph (every block above) or a CJK punctuation / full-width form."""
    table = class_table() == CJK
    for lo, hi in CJK_FORMS:
        table[lo:hi + 1] = True
    return table


def cjk_fraction(text: str) -> float:
    """Share of the non-space characters that are CJK (ideographs, CJK punctuation, full-width forms)."""
    cps = codepoints(text)
    visible = cps[class_table()[cps] != SPACE]
    return float(np.count_nonzero(cjk_table()[visible]) / len(visible)) if len(visible) else 0.0
