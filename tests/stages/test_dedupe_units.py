"""Unit tests of dedupe's pure parts: the canonical form, signatures equal to datasketch, banding, buckets, components.

Run: `.venv/bin/python -m pytest -q tests/stages/test_dedupe_units.py` (~10 s, most of it numba's first compile).
"""
from __future__ import annotations

import numpy as np
import pytest
import xxhash
from datasketch import MinHash
from pydantic import ValidationError

from pipelines.testing.realtext import sample_docs
from stages.dedupe import DedupeConfig
from stages.dedupe.banding import candidate_probability, choose_banding
from stages.dedupe.canonical import canonical, canonical_batch, exact_key
from stages.dedupe.components import connected_components
from stages.dedupe.lsh import bucket_pairs
from stages.dedupe.minhash import shingles, sign_batch


def test_canonical_folds_width_case_space_and_punctuation():
    assert canonical("Ｄｅｂｉａｎ 是一个\u3000自由的\n操作系统！\u200b《书》") == "debian是一个自由的操作系统书"
    assert canonical("，。、；：？！…—·「」『』（）") == ""
    assert exact_key(canonical("你好，世界")) == exact_key(canonical("你好 世界！"))


def test_dropped_code_points_all_lie_in_the_scanned_planes():
    import sys

    from stages.dedupe.canonical import DROP_PLANES, _drop_table, _drops

    everywhere = {cp for cp in range(sys.maxunicode + 1) if _drops(cp)}
    assert set(_drop_table()) == everywhere and {cp >> 16 for cp in everywhere} <= set(DROP_PLANES)
    assert 0x3000 in everywhere and 0xE0001 in everywhere  # ideographic space, language tag (Cf, plane 14)


def test_batch_canonical_form_equals_the_reference_on_real_text():
    texts = sample_docs().column("text").to_pylist()[:80] + ["", "  ", "𠀀𠀁\u200b𠀂", "Ｆｕｌｌ－ｗｉｄｔｈ，全角！"]
    assert canonical_batch(texts).to_pylist() == [canonical(t) for t in texts]


@pytest.mark.parametrize("hashfunc,ds_hash", [("xxh32", xxhash.xxh32_intdigest), ("sha1", None)])
def test_signatures_equal_datasketch_on_real_chinese(hashfunc, ds_hash):
    texts = [canonical(t)[:3000] for t in sample_docs().column("text").to_pylist()[:40]]
    texts += ["", "短", "四个字符", "刚好五个字", "𠀀𠀁𠀂𠀃𠀄𠀅 (outside the BMP: 4-byte UTF-8)"]
    for n, perms, seed in [(5, 128, 1), (3, 64, 7)]:
        sigs, hashes, starts = sign_batch(texts, n, perms, seed, hashfunc)
        for i, t in enumerate(texts):
            m = MinHash(num_perm=perms, seed=seed, hashfunc=ds_hash)
            m.update_batch([g.encode("utf-8") for g in shingles(t, n)])
            assert np.array_equal(sigs[i], m.hashvalues), (hashfunc, n, i)
            assert starts[i + 1] - starts[i] == len(set(shingles(t, n)))  # shingle sets are sets


def test_unknown_hashfunc_is_refused():
    with pytest.raises(ValueError, match="hashfunc 'md5'"):
        sign_batch(["文本"], hashfunc="md5")


def test_banding_reaches_the_candidate_probability():
    b, r = choose_banding(0.8, 128, 0.98)
    assert (b, r) == (18, 7) and b * r <= 128
    assert candidate_probability(0.8, b, r) >= 0.98 > candidate_probability(0.8, 128 // (r + 1), r + 1)
    assert DedupeConfig().banding() == (18, 7)
    assert DedupeConfig(bands=16, rows=8).banding() == (16, 8)


def test_bucket_pairs_all_pairs_then_star_and_chain_for_big_buckets():
    keys = np.array([5, 5, 5, 7, 7, 9], np.uint64)
    lo, hi = bucket_pairs(keys, np.array([3, 1, 2, 9, 8, 4], np.int64), cap=64)
    assert list(zip(lo, hi)) == [(1, 2), (1, 3), (2, 3), (8, 9)]
    lo, hi = bucket_pairs(np.full(6, 1, np.uint64), np.arange(6, dtype=np.int64), cap=3)
    assert len(lo) == 9 and set(zip(lo, hi)) >= {(0, k) for k in range(1, 6)} | {(k, k + 1) for k in range(5)}


def _union_find(lo, hi) -> dict[int, int]:
    parent: dict[int, int] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(lo.tolist(), hi.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


def test_components_match_union_find_for_any_partitioning():
    rng = np.random.default_rng(3)
    for trial in range(25):
        n, m = int(rng.integers(2, 300)), int(rng.integers(1, 400))
        lo, hi = rng.integers(0, n, m), rng.integers(0, n, m)
        lo, hi = lo[lo != hi], hi[lo != hi]
        assert connected_components(lo, hi, partitions=int(rng.integers(1, 7))) == _union_find(lo, hi), trial
    chain = rng.permutation(3000)  # a long chain: the worst case for label propagation
    assert set(connected_components(chain[:-1], chain[1:], partitions=4).values()) == {0}


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ValidationError, match="exceeds num_perm 128"):
        DedupeConfig(bands=20, rows=7)
    with pytest.raises(ValidationError, match="neither a dedupe output directory nor"):
        DedupeConfig(against=[tmp_path / "missing.jsonl"])
    (tmp_path / "half").mkdir()
    with pytest.raises(ValidationError, match="no manifest.json"):
        DedupeConfig(against=[tmp_path / "half"])
    with pytest.raises(ValidationError, match="ngram"):
        DedupeConfig(ngram=0)
    assert DedupeConfig(partitions=3).key_dict() == DedupeConfig(partitions=5).key_dict()  # execution only


def test_arrow_helpers_equal_pyarrow_and_refuse_nulls(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.io import read_table
    from stages.dedupe.arrow import col, nd, strings

    for a in (np.arange(10, dtype=np.int64)[3:9], np.array([1, 0, 1, 1, 0, 0, 1, 1, 1], bool)[2:], np.zeros(0, bool),
              np.arange(6, dtype=np.uint32)[::2], np.array([0.5, 0.8])):
        assert col(a).equals(pa.array(a))
        assert nd(pa.array(a)[1:]).tolist() == a[1:].tolist() and nd(pa.array(a)).dtype == a.dtype
    assert nd(pa.chunked_array([pa.array([1, 2]), pa.array([3])])).tolist() == [1, 2, 3]
    texts = sample_docs().column("text").to_pylist()[:20] + ["", "短"]
    assert strings(texts).equals(pa.array(texts, pa.string()))
    assert strings(texts, large=True).equals(pa.array(texts, pa.large_string()))
    with pytest.raises(ValueError, match="1 nulls"):
        nd(pa.array([1, None, 3]))
    t = pa.table({"id": ["a", "b"], "text": texts[:2]})
    pq.write_table(t, tmp_path / "s.parquet")
    assert read_table(str(tmp_path / "s.parquet")).equals(pq.read_table(tmp_path / "s.parquet"))


def test_band_partitions_follow_the_corpus():
    """Bucket tasks sort at most ~KEYS_PER_PARTITION keys whatever the corpus size; the config's count is a floor."""
    from stages.dedupe.stage import KEYS_PER_PARTITION, band_partitions

    cfg = DedupeConfig()
    assert band_partitions(cfg, 10**5) == cfg.partitions == 8
    for docs in (10**7, 10**8):
        parts = band_partitions(cfg, docs)
        assert parts > 8 and docs * (cfg.banding()[0] + 1) / parts <= KEYS_PER_PARTITION
    assert band_partitions(DedupeConfig(threshold=None), 10**8) < band_partitions(cfg, 10**8)  # exact keys only
    assert band_partitions(DedupeConfig(partitions=64), 10**5) == 64
