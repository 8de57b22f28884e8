"""The quality stage's fastText classifier on real sample-site text: training, scoring on both sides of a
threshold, the keep rule per source, determinism with 1 and 2 workers, and bad input stopped at config load.

Positives: every other Debian Reference / FAQ page; input: all 218 Debian pages of the sample site, the
LilyPond manual (171 pages, another kind of text) under its own source name.
"""
from __future__ import annotations

import math
import re

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.config import ConfigError, load
from pipelines.testing.helpers import make_stage_data, run_stage
from pipelines.testing.realtext import sample_docs
from stages.quality.config import QualityConfig
from tests.conftest import write_config


def _corpus(tmp_path):
    """(input stage data in 4 shards, positives file, urls of the positives)."""
    t = sample_docs()
    urls = t.column("url").to_pylist()
    debian = [i for i, u in enumerate(urls) if "/debian" in u]
    pos = tmp_path / "positives.parquet"
    pq.write_table(t.take(debian[::2]), pos)
    t = t.set_column(1, "source_name", pa.array(["debian" if "/debian" in u else "lilypond" for u in urls]))
    quarter = math.ceil(t.num_rows / 4)
    up = make_stage_data(tmp_path / "dedupe", "dedupe", {"docs": [t.slice(i * quarter, quarter) for i in range(4)]})
    return up, pos, set(t.take(debian[::2]).column("url").to_pylist())


def test_classifier_keeps_text_like_the_positives_and_rejects_the_rest(ray_session, tmp_path):
    up, pos, pos_urls = _corpus(tmp_path)
    result, out = run_stage("quality", QualityConfig(positives=[pos], threshold=0.5), {"dedupe": up}, tmp_path / "q")
    st = result.stats
    assert st["classifier.roc_auc"] >= 0.9 and st["classifier.recall"] >= 0.8  # held out: never trained on
    assert st["classifier.heldout_pos"] >= 2 and st["classifier.train_neg"] >= 10
    scores = out.read_table("scores").to_pylist()
    assert len(scores) == 218 == st["docs_in"]
    lily = [r for r in scores if r["source_name"] == "lilypond"]
    debian = [r for r in scores if r["source_name"] == "debian" and r["url"] not in pos_urls]
    # both sides of the threshold: the other Debian pages score far above the LilyPond manual
    assert sum(r["kept"] for r in lily) / len(lily) < 0.1
    assert sum(r["quality_fasttext"] for r in debian) / len(debian) > 0.4 > sum(
        r["quality_fasttext"] for r in lily) / len(lily) + 0.2
    docs, rejects = out.read_table("docs"), out.read_table("rejects")
    assert docs.num_rows == st["docs_kept"] == sum(r["kept"] for r in scores)
    assert pc.min(docs.column("quality_fasttext")).as_py() >= 0.5
    assert set(docs.column_names) >= {"id", "url", "text", "quality_fasttext"}
    assert rejects.num_rows == 218 - docs.num_rows
    assert set(rejects.column("rule").to_pylist()) == {"fasttext"}
    assert all(r["value"] < r["threshold"] == 0.5 for r in rejects.to_pylist())
    assert out.paths("model")[0].name == "quality.bin"


def test_keep_fraction_per_source_and_same_digests_with_one_and_two_workers(ray_session, tmp_path):
    up, pos, _ = _corpus(tmp_path)
    cfg = QualityConfig(positives=[pos], keep_fraction=0.5)
    _, out1 = run_stage("quality", cfg, {"dedupe": up}, tmp_path / "w1", workers=1)
    two, out2 = run_stage("quality", cfg, {"dedupe": up}, tmp_path / "w2", workers=2)
    assert {n: o.digest for n, o in out1.manifest.outputs.items()} == \
        {n: o.digest for n, o in out2.manifest.outputs.items()}
    scores = out2.read_table("scores").to_pylist()
    for source in ("debian", "lilypond"):
        mine = [r for r in scores if r["source_name"] == source]
        kept = [r for r in mine if r["kept"]]
        threshold = two.stats[f"threshold.{source}"]
        assert len(kept) >= math.ceil(0.5 * len(mine))  # ties at the threshold are kept too
        assert min(r["quality_fasttext"] for r in kept) == threshold
        assert all(r["quality_fasttext"] < threshold for r in mine if not r["kept"])


def _config(tmp_path, quality: dict) -> dict:
    return {"pipeline": "qbad", "work_dir": str(tmp_path / "work"),
            "crawl": {"sources": [{"name": "x", "type": "seeds", "seeds": ["http://127.0.0.1:9/"],
                                   "allow_private": ["127.0.0.1"]}]},
            "clean": {}, "dedupe": {}, "quality": quality, "tokenizer": {}, "tokenize": {}}


def test_bad_positives_are_one_line_before_any_work(tmp_path):
    few = tmp_path / "few.jsonl"
    few.write_text("".join(f'{{"text": "第{i}篇参考文档。"}}\n' for i in range(3)), encoding="utf-8")
    cases = {str(tmp_path / "refs/*.parquet"): "matches no file",
             str(tmp_path / "missing.txt"): "matches no file",
             str(few): "3 non-empty document(s); at least 10 are needed"}
    for path, expect in cases.items():
        with pytest.raises(ConfigError, match=re.escape(expect)) as err:
            load(write_config(tmp_path / "bad.yaml", _config(tmp_path, {"positives": [path], "keep_fraction": 0.5})))
        assert "\n" not in str(err.value) and str(err.value).startswith("config error: quality.positives")
    res = CliRunner().invoke(app, ["run", str(tmp_path / "bad.yaml")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "work").exists()  # nothing was started


def test_a_keep_rule_needs_its_scorer(tmp_path):
    with pytest.raises(ConfigError, match="no scorer"):
        load(write_config(tmp_path / "c.yaml", _config(tmp_path, {"keep_fraction": 0.5})))


def test_tokenizer_and_tokenize_read_quality_only_when_it_is_configured(tmp_path):
    from pipelines.runner import plan_all

    pos = tmp_path / "pos.parquet"
    pq.write_table(sample_docs().slice(0, 12), pos)
    with_q = load(write_config(tmp_path / "q.yaml", _config(tmp_path, {"positives": [str(pos)]})))
    data = _config(tmp_path, {})
    del data["quality"]
    without = load(write_config(tmp_path / "n.yaml", data))
    assert plan_all(with_q)["tokenize"].inputs == {"dedupe": "quality", "tokenizer": "tokenizer"}
    assert plan_all(with_q)["quality"].inputs == {"dedupe": "dedupe"}
    assert plan_all(without)["tokenizer"].inputs == {"dedupe": "dedupe"}
