"""The dedupe stage on real Chinese documents, on the session's real Ray: exact, near and short duplicates, a
planted chain (chain drift), every removal explained, 1 vs 2 workers identical, `against:` earlier outputs and
evaluation corpora, bad input.

Run: `.venv/bin/python -m pytest -q tests/stages/test_dedupe_stage.py` (~40 s on 2 idle cores).
"""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.dataset import DOC_SCHEMA, ContractError, doc_id
from pipelines.testing.helpers import make_stage_data, run_stage
from pipelines.testing.realtext import sample_docs
from stages.dedupe import DedupeConfig
from stages.dedupe.canonical import canonical
from stages.dedupe.minhash import shingles


def jac(a: str, b: str) -> float:
    x, y = set(shingles(canonical(a), 5)), set(shingles(canonical(b), 5))
    return len(x & y) / len(x | y)


def _doc(key: str, text: str) -> dict:
    url = f"test://{key}"
    return {"id": doc_id(url, text), "source_name": "t", "url": url, "source": "test", "fetched_at": "",
            "title": key, "text": text}


@pytest.fixture(scope="module")
def corpus():
    """60 real documents plus planted duplicates; returns (two shards + an empty one, named docs)."""
    real = sample_docs().to_pylist()
    base = [dict(r) for r in real[:60]]
    longest = max(real[60:], key=lambda r: len(canonical(r["text"])))
    s = canonical(longest["text"])
    named = {
        "exact": _doc("exact", base[0]["text"].replace("。", "。 ") + "！！"),  # same canonical text, longer
        "near": _doc("near", base[1]["text"][: int(len(base[1]["text"]) * 0.97)]),
        "short_a": _doc("short_a", "短文"), "short_b": _doc("short_b", "短 文！"), "short_c": _doc("short_c", "别的"),
        # A ≈ B ≈ C with J(A, C) < 0.8: A is longest, so C is removed against A and drifts
        "A": _doc("A", s[0:1010]), "B": _doc("B", s[100:1100]), "C": _doc("C", s[200:1200]),
    }
    assert jac(named["A"]["text"], named["B"]["text"]) >= 0.8 > jac(named["A"]["text"], named["C"]["text"])
    rows = base + list(named.values())
    t = pa.Table.from_pylist(rows, schema=DOC_SCHEMA)
    return [t.slice(0, 40), t.slice(40, 0), t.slice(40)], {k: v["id"] for k, v in named.items()}, base


def _run(tmp_path, shards, name="dedupe", workers=2, **cfg):
    up = make_stage_data(tmp_path / f"clean-{name}", "clean", {"docs": shards})
    return run_stage("dedupe", DedupeConfig(**cfg), {"clean": up}, tmp_path / name, workers=workers)


def test_dedupe_removes_and_explains(corpus, tmp_path, ray_session):
    shards, ids, base = corpus
    result, out = _run(tmp_path, shards, partitions=3)
    dups = {d["id"]: d for d in out.read_table("duplicates").to_pylist()}
    kept = out.read_table("docs")
    assert kept.schema == DOC_SCHEMA and kept.num_rows + len(dups) == sum(s.num_rows for s in shards)
    assert not set(dups) & set(kept.column("id").to_pylist())
    assert dups[base[0]["id"]]["kind"] == "exact" and dups[base[0]["id"]]["kept_id"] == ids["exact"]
    near = dups[ids["near"]]
    assert near["kind"] == "near" and near["kept_id"] == base[1]["id"] and near["edge_from"] == base[1]["id"]
    expected = pytest.approx(jac(base[1]["text"], near_text(shards, ids)))
    assert near["edge_jaccard"] == near["jaccard_to_kept"] == expected
    short = dups[ids["short_a"]]  # under 5 characters: no shingles, found by exact dedupe; the longer one stays
    assert short["kind"] == "exact" and short["kept_id"] == ids["short_b"] and short["jaccard_to_kept"] == 1.0
    assert ids["short_c"] not in dups
    c = dups[ids["C"]]  # the planted chain: C reached A only through B
    assert c["kept_id"] == ids["A"] and c["edge_from"] == ids["B"] and c["edge_jaccard"] >= 0.8 > c["jaccard_to_kept"]
    assert c["cluster_id"] == dups[ids["B"]]["cluster_id"] == ids["A"]
    st = result.stats
    assert st["chain_drift"] > 0 and st["exact_dups"] >= 2 and st["near_dups"] >= 3 and st["short_docs"] == 3
    assert st["kept_fraction"] == pytest.approx(kept.num_rows / st["docs_in"])
    assert st["largest_cluster"] >= 3 and st["clusters"] >= 4
    page = (out.dir / result.artifacts[0]).read_text(encoding="utf-8")
    assert ids["A"] in page and "J=" in page


def near_text(shards, ids) -> str:
    t = pa.concat_tables(shards)
    return t.filter(pa.compute.equal(t.column("id"), ids["near"])).column("text")[0].as_py()


def test_same_output_with_one_or_two_workers(corpus, tmp_path, ray_session):
    shards, _, _ = corpus
    _, one = _run(tmp_path, shards, "w1", workers=1, partitions=2)
    _, two = _run(tmp_path, shards, "w2", workers=2, partitions=5)
    assert one.manifest.digests == two.manifest.digests


def test_against_earlier_output_and_eval_corpus(corpus, tmp_path, ray_session):
    shards, ids, base = corpus
    _, first = _run(tmp_path, [shards[0]], "first", partitions=2)
    evalset = tmp_path / "eval.jsonl"
    eval_text = base[50]["text"][: int(len(base[50]["text"]) * 0.95)]  # a benchmark item overlapping training data
    evalset.write_text(json.dumps({"question": "q", "text": eval_text}, ensure_ascii=False) + "\n", encoding="utf-8")
    result, out = _run(tmp_path, [shards[2]], "second", against=[first.dir, evalset], partitions=2)
    dups = {d["id"]: d for d in out.read_table("duplicates").to_pylist()}
    assert dups[base[50]["id"]]["kind"] == "against" and dups[base[50]["id"]]["kept_id"] != base[50]["id"]
    assert result.extra["against_removed"]["eval.jsonl"] == 1
    first_ids = set(first.read_table("docs").column("id").to_pylist())
    again = [d for d in dups.values() if d["kind"] == "against" and d["kept_id"] in first_ids]
    assert ids["A"] not in dups  # not in the first corpus: stays
    assert result.stats["against_dups"] == len([d for d in dups.values() if d["kind"] == "against"]) == len(again) + 1


def test_against_signatures_are_reused_until_the_corpus_changes(corpus, tmp_path, ray_session):
    """An against corpus is signed once per content and settings (the cache beside the stage's output dirs)."""
    shards, _, base = corpus
    evalset = tmp_path / "eval.jsonl"

    def eval_item(doc):  # a benchmark item overlapping a training document
        evalset.write_text(json.dumps({"text": doc["text"][: int(len(doc["text"]) * 0.95)]}, ensure_ascii=False)
                           + "\n", encoding="utf-8")

    def removed(out):
        return {d["id"] for d in out.read_table("duplicates").to_pylist() if d["kind"] == "against"}

    eval_item(base[50])
    first, out1 = _run(tmp_path, [shards[2]], "c1", against=[evalset], partitions=2)
    again, out2 = _run(tmp_path, [shards[2]], "c2", against=[evalset], partitions=3, workers=1)
    assert (first.extra["against_sigs_cached"], again.extra["against_sigs_cached"]) == (0, 1)
    assert out1.manifest.digests == out2.manifest.digests and removed(out2) == {base[50]["id"]}
    eval_item(base[51])  # a changed corpus is signed afresh
    changed, out3 = _run(tmp_path, [shards[2]], "c3", against=[evalset], partitions=2)
    assert changed.extra["against_sigs_cached"] == 0 and removed(out3) == {base[51]["id"]}


def test_against_file_without_text_column_is_one_clear_line(corpus, tmp_path, ray_session):
    shards, _, _ = corpus
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"body": ["文本"]}), bad)
    with pytest.raises(ContractError,
                       match=r"bad.parquet: no 'text' column \(has body\); set dedupe.against_text_column"):
        _run(tmp_path, [shards[0]], "bad", against=[bad])
    result, out = _run(tmp_path, [shards[0]], "bad2", against=[bad], against_text_column="body")
    assert result.stats["against_dups"] == 0


def test_exact_only_when_threshold_is_none(corpus, tmp_path, ray_session):
    shards, ids, base = corpus
    result, out = _run(tmp_path, shards, "exact", threshold=None, partitions=2)
    kinds = {d["id"]: d["kind"] for d in out.read_table("duplicates").to_pylist()}
    assert base[0]["id"] in kinds and ids["near"] not in kinds and ids["C"] not in kinds
    assert set(kinds.values()) == {"exact"} and result.stats["near_dups"] == 0


def test_rerun_after_a_lost_run_reuses_signatures(corpus, tmp_path, ray_session):
    """A run that died after signing (outputs and manifest gone, .partial kept) resumes without re-signing."""
    shards, _, _ = corpus
    _, out = _run(tmp_path, shards, "resume", partitions=2)
    digests = out.manifest.digests
    signed = sorted((out.dir / ".partial" / "p2" / "sig").glob("s-*.arrow"))
    mtimes = [p.stat().st_mtime_ns for p in signed]
    for name in ("docs", "duplicates", "manifest.json"):
        target = out.dir / name
        if target.is_dir():
            for f in target.iterdir():
                f.unlink()
        else:
            target.unlink()
    up = make_stage_data(tmp_path / "clean-resume", "clean", {"docs": shards})
    _, again = run_stage("dedupe", DedupeConfig(partitions=2), {"clean": up}, out.dir, workers=2)
    assert again.manifest.digests == digests
    assert [p.stat().st_mtime_ns for p in signed] == mtimes
