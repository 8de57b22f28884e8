"""The shared layer's pieces on their own (no Ray): atomic writes and a dead writer's leftovers, the documents
reader's one-line errors, and Stats merging.

Run: .venv/bin/python -m pytest -q tests/test_io.py   (~1 s)
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.dataset import write_parquet
from pipelines.io import ContractError, atomic_path, iter_docs, read_docs, read_json, remove_temps, write_json
from pipelines.stats import Stats
from pipelines.testing.helpers import docs_table


def test_atomic_write_is_all_or_nothing(tmp_path):
    target = tmp_path / "state" / "round.json"
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("killed")
    assert list(target.parent.iterdir()) == []  # neither the file nor its temporary
    write_json(target, {"中文": [1, 2]})
    assert read_json(target) == {"中文": [1, 2]} and [p.name for p in target.parent.iterdir()] == ["round.json"]


def test_remove_temps_takes_only_writers_leftovers(tmp_path):
    dead = [tmp_path / "docs" / ".part-00000.parquet.tmp-4242", tmp_path / ".partial" / "enc" / ".part.json.tmp-7"]
    kept = [tmp_path / "docs" / "part-00000.parquet", tmp_path / ".partial" / "enc" / "part.json"]
    for p in dead + kept:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert remove_temps(tmp_path) == 2
    assert not any(p.exists() for p in dead) and all(p.exists() for p in kept)


def test_documents_reader_checks_the_columns_it_reads(tmp_path):
    docs = docs_table(["机器学习是人工智能的一个分支。", "北京是首都。"])
    write_parquet(docs, tmp_path, "ok.parquet")
    assert read_docs(tmp_path / "ok.parquet", ["id", "text"]).column_names == ["id", "text"]
    assert read_docs(tmp_path / "ok.parquet").schema.equals(docs.schema)
    bad = docs.set_column(docs.schema.get_field_index("text"), "text", pa.array([1, 2]))
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(ContractError, match=r"bad.parquet: documents shard column 'text' is int64, expected string$"):
        read_docs(tmp_path / "bad.parquet")
    assert read_docs(tmp_path / "bad.parquet", ["id", "url"]).num_rows == 2  # what it reads is as the contract says
    with pytest.raises(ContractError, match=r"ok.parquet: documents shard lacks column\(s\) \['lang'\]$"):
        iter_docs(tmp_path / "ok.parquet", ["id", "lang"])  # at the call, before any batch is asked for
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ContractError, match="junk.parquet: not a readable Parquet documents shard"):
        read_docs(tmp_path / "junk.parquet")


def test_stats_add_nested_counts_in_any_order():
    parts = [Stats(docs=3, rejected={"min_chars": 1}), {"docs": 2, "rejected": {"min_chars": 2, "langid": 1}}]
    total = Stats.total(parts, pii={"email": 0})
    assert total.flat() == {"docs": 5.0, "pii.email": 0.0, "rejected.langid": 1.0, "rejected.min_chars": 3.0}
    assert Stats.total(reversed(parts), pii={"email": 0}) == total
    assert parts[0] == {"docs": 3, "rejected": {"min_chars": 1}}  # the parts are left as they were
