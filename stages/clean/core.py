"""The clean stage's core: one document through normalisation, Traditional->Simplified, script/language and
quality rules, the optional line filter and PII masking; then a whole Arrow table. No Ray here.

    from stages.clean.config import CleanConfig
    from stages.clean.core import Cleaner, clean_table
    docs, rejects, stats = clean_table(table, CleanConfig())

A `Cleaner` holds what is expensive to build (OpenCC dictionaries, a fastText model, the sensitive-word
pattern); build it once per Ray task.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Callable
from urllib.parse import urlsplit

import pyarrow as pa

from stages.clean import rules
from stages.clean.config import PII_TYPES, CleanConfig
from stages.clean.lines import filter_lines
from stages.clean.normalise import normalise
from stages.clean.pii import mask_pii
from stages.clean.script import Converter, LangId, traditional_fraction
from stages.clean.tables import REJECT_SCHEMA

Rule = Callable[[rules.Doc], rules.Result]


@dataclass
class Outcome:
    text: str | None  # None: rejected
    rule: str = ""
    value: float = 0.0
    threshold: float = 0.0
    converted: str | None = None
    pii: dict[str, int] = field(default_factory=dict)
    traditional: bool = False  # detected as Traditional script (whatever the mode did with it)
    lines: Counter = field(default_factory=Counter)  # lines the line filter removed, per rule
    line_chars: int = 0  # non-space characters in those lines


class SensitiveWords:
    """A word list compiled into one alternation (longest first, so 法轮功 wins over 法轮)."""

    def __init__(self, path: str):
        words = {w.strip() for w in open(path, encoding="utf-8") if w.strip() and not w.startswith("#")}
        longest_first = sorted(words, key=lambda w: (-len(w), w))
        self.pattern = re.compile("|".join(map(re.escape, longest_first))) if words else None

    def per_line(self, doc: rules.Doc, threshold: float) -> rules.Result:
        """CWT's measure: distinct words found in the document over its number of lines."""
        found = set(self.pattern.findall(doc.text)) if self.pattern else set()
        v = len(found) / len(doc.lines) if doc.lines else 0.0
        return v <= threshold, "max_sensitive_per_line", v

    def per_doc(self, doc: rules.Doc, threshold: float) -> rules.Result:
        v = len(self.pattern.findall(doc.text)) if self.pattern else 0
        return v <= threshold, "max_sensitive_per_doc", float(v)


def _simple_rules(cfg: CleanConfig) -> list[tuple[Rule, float]]:
    """Cheap rules first (counts, lines), then the n-gram and distribution rules."""
    names = ["min_chars", "max_chars", "min_avg_line_chars", "min_cjk_ratio", "max_kana_share", "max_hangul_share",
             "min_terminal_punct_lines", "max_dup_line_frac", "max_dup_para_frac", "max_digit_ratio",
             "max_symbol_ratio"]
    out = [(getattr(rules, n), getattr(cfg, n)) for n in names if getattr(cfg, n) is not None]
    for n, thr in sorted((cfg.max_top_ngram_frac or {}).items()):
        out.append((partial(rules.max_top_ngram_frac, n=n), thr))
    for n, thr in sorted((cfg.max_dup_ngram_frac or {}).items()):
        out.append((partial(rules.max_dup_ngram_frac, n=n), thr))
    for n in ("min_unique_char_ratio", "min_char_entropy"):
        if getattr(cfg, n) is not None:
            out.append((getattr(rules, n), getattr(cfg, n)))
    return out


def rule_names(cfg: CleanConfig) -> list[str]:
    """Every rule the config switches on (so the MLflow run shows 0 for a rule that dropped nothing)."""
    names = [n for n in ("min_chars", "max_chars", "min_avg_line_chars", "min_cjk_ratio", "max_kana_share",
                         "max_hangul_share", "min_terminal_punct_lines", "max_dup_line_frac", "max_dup_para_frac",
                         "max_digit_ratio", "max_symbol_ratio", "min_unique_char_ratio", "min_char_entropy")
             if getattr(cfg, n) is not None]
    names += [f"max_top_{n}gram_frac" for n in sorted(cfg.max_top_ngram_frac or {})]
    names += [f"max_dup_{n}gram_frac" for n in sorted(cfg.max_dup_ngram_frac or {})]
    names += ["traditional"] if cfg.traditional == "drop" else []
    names += ["langid"] if cfg.langid_model else []
    names += ["min_chars_after_lines"] if line_filter_on(cfg) else []
    if cfg.sensitive_words:
        names += [n for n in ("max_sensitive_per_line", "max_sensitive_per_doc") if getattr(cfg, n) is not None]
    return names


def line_filter_on(cfg: CleanConfig) -> bool:
    return cfg.line_min_cjk_ratio is not None or cfg.line_drop_table_rows


class Cleaner:
    def __init__(self, cfg: CleanConfig):
        self.cfg = cfg
        self.boilerplate = frozenset(cfg.boilerplate or ())
        self.converter = Converter()
        self.langid = LangId(str(cfg.langid_model), cfg.langid_labels) if cfg.langid_model else None
        self.rules = _simple_rules(cfg)
        self.top_ns = tuple(sorted(cfg.max_top_ngram_frac or {}))
        self.dup_ns = tuple(sorted(cfg.max_dup_ngram_frac or {}))
        if cfg.sensitive_words:
            words = SensitiveWords(str(cfg.sensitive_words))
            for fn, thr in ((words.per_line, cfg.max_sensitive_per_line), (words.per_doc, cfg.max_sensitive_per_doc)):
                if thr is not None:
                    self.rules.append((fn, thr))

    def opencc_for(self, source_name: str | None, url: str | None) -> str:
        cfg = self.cfg
        if source_name in cfg.opencc_by_source:
            return cfg.opencc_by_source[source_name]
        host = (urlsplit(url).hostname or "") if url else ""
        for suffix, name in cfg.opencc_by_host_suffix.items():
            if host.endswith(suffix):
                return name
        return cfg.opencc_config

    def normalise(self, text: str) -> str:
        c = self.cfg
        return normalise(text, nfkc=c.nfkc, keep_punct=c.keep_punct, halfwidth=c.halfwidth,
                         invisible=c.remove_invisible, whitespace=c.fold_whitespace, boilerplate=self.boilerplate)

    def clean(self, text: str, source_name: str | None = None, url: str | None = None) -> Outcome:
        """One document: the first failing rule rejects it, with the measured value and the threshold."""
        cfg, converted = self.cfg, None
        text = self.normalise(text or "")
        trad = traditional_fraction(text)
        is_trad = trad > 0 and trad >= cfg.traditional_min_fraction
        if is_trad and cfg.traditional == "drop":
            return Outcome(None, "traditional", trad, cfg.traditional_min_fraction, traditional=True)
        if is_trad and cfg.traditional == "convert":
            converted = self.opencc_for(source_name, url)
            text = self.converter.convert(text, converted)
        doc = rules.Doc(text, self.top_ns, self.dup_ns)
        for fn, thr in self.rules:
            ok, name, value = fn(doc, thr)
            if not ok:
                return Outcome(None, name, value, float(thr), converted, traditional=is_trad)
        if self.langid is not None:
            score = self.langid.score(text)
            if score < cfg.langid_min_score:
                return Outcome(None, "langid", score, cfg.langid_min_score, converted, traditional=is_trad)
        lines, line_chars = Counter(), 0
        if line_filter_on(cfg):  # the document is judged whole first; then its non-Chinese lines go
            before = doc.chars
            text, lines = filter_lines(text, cfg.line_min_cjk_ratio, cfg.line_drop_table_rows)
            left = rules.Doc(text).chars if lines else before
            line_chars = before - left
            if left < (cfg.min_chars or 1):
                return Outcome(None, "min_chars_after_lines", float(left), float(cfg.min_chars or 1), converted,
                               traditional=is_trad, lines=lines, line_chars=line_chars)
        pii: dict[str, int] = {}
        if cfg.pii:
            text, pii = mask_pii(text, tuple(cfg.pii))
        return Outcome(text, converted=converted, pii=pii, traditional=is_trad, lines=lines, line_chars=line_chars)


def clean_table(table: pa.Table, cfg: CleanConfig, cleaner: Cleaner | None = None
                ) -> tuple[pa.Table, pa.Table, dict[str, float]]:
    """(kept documents with `converted`, pii_* and `lines_removed` columns, rejects, stats). Row order is kept."""
    cleaner = cleaner or Cleaner(cfg)
    cols = {n: table.column(n).to_pylist() for n in ("id", "url", "source_name", "text")}
    outcomes = [cleaner.clean(t, s, u) for t, s, u in zip(cols["text"], cols["source_name"], cols["url"])]
    keep = [o.text is not None for o in outcomes]
    kept = [o for o in outcomes if o.text is not None]
    docs = table.filter(pa.array(keep, pa.bool_())) if table.num_rows else table
    docs = _set_column(docs, "text", pa.array([o.text for o in kept], pa.string()))
    docs = _set_column(docs, "converted", pa.array([o.converted for o in kept], pa.string()))
    for k in PII_TYPES:
        docs = _set_column(docs, f"pii_{k}", pa.array([o.pii.get(k, 0) for o in kept], pa.int32()))
    docs = _set_column(docs, "lines_removed", pa.array([sum(o.lines.values()) for o in kept], pa.int32()))
    rej = [(i, o) for i, o in enumerate(outcomes) if o.text is None]
    rejects = pa.Table.from_pylist([{"id": cols["id"][i], "url": cols["url"][i], "source_name": cols["source_name"][i],
                                     "rule": o.rule, "value": o.value, "threshold": o.threshold} for i, o in rej],
                                   schema=REJECT_SCHEMA)
    return docs, rejects, _stats(table, outcomes)


def _set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, name, values) if i >= 0 else table.append_column(name, values)


def _stats(table: pa.Table, outcomes: list[Outcome]) -> dict[str, float]:
    stats: Counter = Counter()
    stats["docs_in"] = len(outcomes)
    stats["bytes_in"] = sum(len(t.encode()) for t in table.column("text").to_pylist() if t) if len(outcomes) else 0
    for o in outcomes:
        if o.traditional:
            stats["traditional_docs"] += 1
        if o.text is None:
            stats[f"rejected.{o.rule}"] += 1
            continue
        stats["docs_kept"] += 1
        stats["bytes_out"] += len(o.text.encode())
        if o.converted:
            stats[f"converted.{o.converted}"] += 1
        for rule, n in o.lines.items():
            stats[f"lines_removed.{rule}"] += n
        if o.line_chars:
            stats["line_chars_removed"] += o.line_chars
        for k, n in o.pii.items():
            stats[f"pii.{k}"] += n
    return dict(stats)
