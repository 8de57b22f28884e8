"""How close does each OpenCC configuration bring the zh-TW Debian Reference to the zh-CN one?

The two are the same book translated for each locale, so after a perfect conversion they would differ only
where the translators did. For every chapter pair (15 pages) this converts the zh-TW text and compares it with
the zh-CN text on what dedupe and the model see:

- 5-gram Jaccard: |A & B| / |A | B| over the sets of character 5-grams (whitespace removed), summed over pairs;
  MinHash dedupe estimates exactly this quantity.
- lines matched: the fraction of converted zh-TW lines that occur verbatim among the zh-CN lines.

    .venv/bin/python scripts/measure_opencc.py        # ~15 s (text extraction ~10 s)
"""
from __future__ import annotations

import time

CONFIGS = ["none", "t2s", "tw2s", "tw2sp"]


def shingles(text: str, n: int = 5) -> set[str]:
    s = "".join(text.split())
    return {s[i:i + n] for i in range(len(s) - n + 1)}


def pairs() -> list[tuple[str, str, str]]:
    """(page, zh-TW text, zh-CN text) for every Debian Reference page published in both scripts."""
    from pipelines.testing.realtext import sample_docs

    table = sample_docs("usr/share/debian-reference/*.html")
    urls, texts = table.column("url").to_pylist(), table.column("text").to_pylist()
    by_name = {u.rsplit("/", 1)[1]: t for u, t in zip(urls, texts)}
    return [(n.replace(".zh-tw.html", ""), t, by_name[n.replace("zh-tw", "zh-cn")])
            for n, t in sorted(by_name.items()) if n.endswith(".zh-tw.html") and n.replace("zh-tw", "zh-cn") in by_name]


def measure(config: str, data: list[tuple[str, str, str]]) -> dict[str, float]:
    import opencc

    conv = (lambda t: t) if config == "none" else opencc.OpenCC(config).convert
    inter = union = matched = lines = 0
    t0 = time.perf_counter()
    for _, tw, cn in data:
        out = conv(tw)
        a, b = shingles(out), shingles(cn)
        inter, union = inter + len(a & b), union + len(a | b)
        cn_lines = {line.strip() for line in cn.split("\n") if line.strip()}
        tw_lines = [line.strip() for line in out.split("\n") if line.strip()]
        matched, lines = matched + sum(line in cn_lines for line in tw_lines), lines + len(tw_lines)
    return {"jaccard5": inter / union, "lines": matched / lines, "seconds": time.perf_counter() - t0}


def main() -> None:
    data = pairs()
    print(f"zh-TW -> zh-CN closeness over {len(data)} Debian Reference page pairs")
    print(f"{'config':8s} {'5-gram Jaccard':>15s} {'lines matched':>14s} {'measure s':>10s}")
    for config in CONFIGS:
        m = measure(config, data)
        print(f"{config:8s} {m['jaccard5']:15.3f} {m['lines']:14.3f} {m['seconds']:10.2f}")


if __name__ == "__main__":
    main()
