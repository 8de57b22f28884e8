"""tokenize stage: shuffled, packed, memory-mappable shards with per-row lineage, on real Chinese text.

Run: `.venv/bin/python -m pytest -q tests/stages/test_tokenize.py` (about 30 s plus extracting the sample).
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines.testing.helpers import docs_table, make_stage_data, run_stage
from pipelines.testing.realtext import sample_docs
from stages.tokenize import TokenizeConfig
from stages.tokenize.encode import split_of
from stages.tokenize.pack import bucket_bounds, pack, pack_sources
from stages.tokenize.reader import open_split, shard_metadata
from stages.tokenizer import TokenizerConfig

SEQ = 128
CFG = dict(seq_len=SEQ, val_fraction=0.1, tokens_per_shard=60_000)
EXTRA = ["混合 mixed 中英文，数字 2026。", "表情 😀👍🏽 与罕见字 𠀀𪚥", "def f(x):\n\treturn x  # 注释\n", "短"]



@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The sample site in three shards plus a second source (2,000 short documents, so it fills rows)."""
    d = sample_docs()
    n = d.num_rows // 3
    other = docs_table([f"第{i}条：{EXTRA[i % len(EXTRA)]}" for i in range(2000)], "other")
    return make_stage_data(tmp_path_factory.mktemp("dedupe"), "dedupe",
                           {"docs": [d.slice(0, n), d.slice(n, n), pa.concat_tables([d.slice(2 * n), other])]})


@pytest.fixture(scope="module")
def tokenizer(corpus, tmp_path_factory, ray_session):
    cfg = TokenizerConfig(vocab_size=4000, num_threads=2)
    return run_stage("tokenizer", cfg, {"dedupe": corpus}, tmp_path_factory.mktemp("tokenizer"), workers=2)[1]


@pytest.fixture(scope="module")
def packed(corpus, tokenizer, tmp_path_factory):
    ups = {"dedupe": corpus, "tokenizer": tokenizer}
    return run_stage("tokenize", TokenizeConfig(**CFG), ups, tmp_path_factory.mktemp("tokenize"), workers=2)


def processor(tokenizer):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(tokenizer.paths("model")[0]))


def test_pack_cuts_rows_and_segments():
    rows, seg = pack(np.array([5, 3, 9]), 4)  # 17 tokens -> 4 rows of 4, 1 tail token
    assert rows == 4
    assert seg["doc"].tolist() == [0, 0, 1, 2, 2]
    assert seg["row"].tolist() == [0, 1, 1, 2, 3]
    assert seg["start"].tolist() == [0, 0, 1, 0, 0]
    assert seg["length"].tolist() == [4, 1, 3, 4, 4]
    assert seg["doc_offset"].tolist() == [0, 4, 0, 0, 4]
    assert pack(np.array([3]), 4)[0] == 0


def test_bucket_bounds_slice_the_shards_of_the_top_32_bits():
    """The key range of each output shard holds exactly the keys whose top 32 bits times n, over 2**32, are that
    shard: the definition the pack tasks used to compute over every key of every file."""
    rng = np.random.default_rng(0)
    edges = [0, 1, (1 << 32) - 1, 1 << 32, (1 << 64) - 1]
    keys = np.sort(np.concatenate([rng.integers(0, 2**64 - 1, 20_000, dtype=np.uint64, endpoint=True),
                                   np.array(edges, np.uint64)]))
    for n in (1, 2, 3, 7, 1000, 2**20 + 1):
        want = ((keys >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32)
        sliced = np.full(keys.size, -1)
        for b in sorted(set(want.tolist()) | {0, n - 1}):
            lo, hi = bucket_bounds(b, n)
            a = np.searchsorted(keys, np.uint64(lo), "left")
            z = keys.size if hi is None else np.searchsorted(keys, np.uint64(hi), "left")
            sliced[a:z] = b
        assert (sliced == want.astype(np.int64)).all(), n


def test_pack_sources_keeps_rows_single_source_and_handles_empty():
    # In key order, as gather() hands them over.
    t = pa.table({"key": pa.array([1, 3, 5], pa.uint64()), "id": ["b", "c", "a"], "url": ["ub", "uc", "ua"],
                  "source_name": ["y", "x", "x"],
                  "tokens": pa.array([[7, 7, 7, 2], [3, 3, 2], [1, 1, 1, 1, 1, 2]], pa.large_list(pa.uint16()))})
    tokens, sid, seg, counts = pack_sources(t, ["x", "y"], 3)
    assert counts == {"x": 3, "y": 1}  # x: 9 tokens -> 3 rows; y: 4 tokens -> 1 row + 1 dropped
    assert tokens.tolist() == [[7, 7, 7], [3, 3, 2], [1, 1, 1], [1, 1, 2]]  # by the key of the doc a row begins in
    assert sid.tolist() == [1, 0, 0, 0]
    assert seg.column("id").to_pylist() == ["b", "c", "a", "a"] and seg.column("row").to_pylist() == [0, 1, 2, 3]
    assert seg.column("doc_offset").to_pylist() == [0, 0, 0, 3]
    empty_tokens, empty_sid, empty_seg, _ = pack_sources(t.slice(0, 0), ["x"], 3)
    assert empty_tokens.shape == (0, 3) and empty_sid.size == 0 and empty_seg.num_rows == 0


def test_no_token_lost_and_manifest_facts(packed, corpus, tokenizer):
    result, out = packed
    sp = processor(tokenizer)
    texts = corpus.read_table(columns=["text"]).column("text").to_pylist()
    expected = sum(len(ids) + 1 for ids in sp.encode(texts))  # + the EOS after each document
    st = result.stats
    assert st["tokens"] == expected and st["docs"] == len(texts)
    assert st["train_tokens"] + st["val_tokens"] + st["tail_tokens_dropped"] == expected
    assert sum(v.size for v in open_split(out.dir, "train") + open_split(out.dir, "val")) == expected - \
        st["tail_tokens_dropped"]
    ex = result.extra
    assert ex["seq_len"] == SEQ and ex["dtype"] == "uint16" and ex["eos_id"] == 2 and ex["vocab_size"] == 4000
    assert ex["tokenizer_digest"] == tokenizer.manifest.outputs["model"].digest
    assert out.paths("tokenizer")[0].read_bytes() == tokenizer.paths("model")[0].read_bytes()
    assert ex["sources"] == ["debian-zh", "other"] and sum(ex["tokens_per_source"].values()) == expected
    assert st["train_shards"] >= 5 and st["val_shards"] >= 1 and 2.0 < st["chars_per_token"] < 4.0
    assert 0 < st["byte_fallback_rate"] < 0.05


def test_rows_trace_back_to_documents(packed, corpus, tokenizer):
    result, out = packed
    sp = processor(tokenizer)
    docs = corpus.read_table(columns=["id", "url", "source_name", "text"]).to_pylist()
    by_id = {d["id"]: d for d in docs}
    lineage = out.read_table("rows")
    views = open_split(out.dir, "train")
    source_ids = open_split(out.dir, "train", column="source_name")
    sources = result.extra["sources"]
    first = lineage.filter(pc.equal(lineage.column("shard"), 0)).to_pylist()
    first = [s for s in first if s["split"] == "train"]
    seen = np.zeros(views[0].shape[0], np.int64)
    for s in first:
        doc = by_id[s["id"]]
        ids = sp.encode(doc["text"]) + [2]
        got = views[0][s["row"], s["start"]:s["start"] + s["length"]].tolist()
        assert got == ids[s["doc_offset"]:s["doc_offset"] + s["length"]]
        assert s["url"] == doc["url"] and sources[source_ids[0][s["row"]]] == s["source_name"] == doc["source_name"]
        seen[s["row"]] += s["length"]
    assert (seen == SEQ + 1).all()  # every token of every row is accounted for


def test_shuffled_and_split_by_id_hash(packed, corpus):
    result, out = packed
    lineage = out.read_table("rows")
    val_ids = set(lineage.filter(pc.equal(lineage.column("split"), "val")).column("id").to_pylist())
    train_ids = set(lineage.filter(pc.equal(lineage.column("split"), "train")).column("id").to_pylist())
    assert val_ids and not val_ids & train_ids
    all_ids = corpus.read_table(columns=["id"]).column("id").to_pylist()
    want_val = {i for i, s in zip(all_ids, split_of(all_ids, 0.1)) if s == 1}
    assert val_ids <= want_val and train_ids <= set(all_ids) - want_val
    order = list(dict.fromkeys(lineage.column("id").to_pylist()))  # documents in the order training meets them
    position = {i: n for n, i in enumerate(all_ids)}
    crawl = [position[i] for i in order if i in position]
    assert crawl != sorted(crawl)  # not in input (crawl) order
    md = shard_metadata(out.paths("train")[0])
    assert md["zhgpt.seq_len"] == str(SEQ) and json.loads(md["zhgpt.sources"]) == result.extra["sources"]


def test_same_digests_with_one_worker(packed, corpus, tokenizer, tmp_path):
    _, one = run_stage("tokenize", TokenizeConfig(**CFG), {"dedupe": corpus, "tokenizer": tokenizer}, tmp_path / "t",
                       workers=1)
    assert one.manifest.digests == packed[1].manifest.digests


def test_reader_views_are_zero_copy(packed):
    _, out = packed
    views = open_split([str(p) for p in out.paths("train")])
    assert all(v.ndim == 2 and v.shape[1] == SEQ + 1 and v.dtype == np.uint16 for v in views)
    assert not views[0].flags.owndata and not views[0].flags.writeable


def test_missing_text_column_is_one_line(tokenizer, tmp_path):
    bad = make_stage_data(tmp_path / "dedupe", "dedupe", {"docs": [pa.table({"id": ["a"], "url": ["u"]})]})
    with pytest.raises(ValueError,
                       match=r"^\S+part-00000.parquet: documents shard lacks column\(s\) \['source_name', 'text'\]$"):
        run_stage("tokenize", TokenizeConfig(**CFG), {"dedupe": bad, "tokenizer": tokenizer}, tmp_path / "t")


def big_vocab_model(small: bytes, pieces: int = 70_000) -> bytes:
    """A real model grown past 65,536 pieces: unused fillers, then a user-defined word that the sample contains."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.ParseFromString(small)
    while len(m.pieces) < pieces:
        m.pieces.add(piece=f"<filler_{len(m.pieces)}>", score=0.0, type=pb.ModelProto.SentencePiece.UNUSED)
    known = {p.piece for p in m.pieces}
    word = next(w for w in ("安装程序", "的安装程序", "安装程序的") if w not in known)  # 12 times in the sample
    m.pieces.add(piece=word, score=0.0, type=pb.ModelProto.SentencePiece.USER_DEFINED)
    return m.SerializeToString()


def test_big_vocab_gives_uint32_shards(corpus, tokenizer, tmp_path):
    model = tmp_path / "big.model"
    model.write_bytes(big_vocab_model(tokenizer.paths("model")[0].read_bytes()))
    _, pinned = run_stage("tokenizer", TokenizerConfig(model_path=model), {"dedupe": corpus}, tmp_path / "tok")
    result, out = run_stage("tokenize", TokenizeConfig(**CFG), {"dedupe": corpus, "tokenizer": pinned},
                            tmp_path / "t", workers=2)
    assert result.extra["dtype"] == "uint32" and result.extra["vocab_size"] == 70_001
    views = open_split(out.dir, "train")
    assert all(v.dtype == np.uint32 and v.shape[1] == SEQ + 1 for v in views)
    assert max(int(v.max()) for v in views) == 70_000  # the user-defined word: an id no uint16 can hold


def test_resume_reuses_encoded_shards(corpus, tokenizer, tmp_path, monkeypatch):
    """Fail after the encode phase; the rerun must take the encoded shards from .partial/ instead of redoing them."""
    import stages.tokenize.stage as stage

    def broken_pack(*args):
        raise RuntimeError("injected: pack phase failed")

    ups = {"dedupe": corpus, "tokenizer": tokenizer}
    monkeypatch.setattr(stage, "pack_shard", broken_pack)
    with pytest.raises(RuntimeError, match="^injected: pack phase failed$"):
        run_stage("tokenize", TokenizeConfig(**CFG), ups, tmp_path / "t", workers=2)
    monkeypatch.undo()
    done = tmp_path / "t" / ".partial" / "enc" / "part-00001.json"
    stats = json.loads(done.read_text())
    done.write_text(json.dumps({**stats, "docs": stats["docs"] + 1000}))  # a mark only a reused shard carries
    result, _ = run_stage("tokenize", TokenizeConfig(**CFG), ups, tmp_path / "t", workers=2)
    assert result.stats["docs"] == corpus.manifest.outputs["docs"].rows + 1000
    assert not (tmp_path / "t" / ".partial" / "enc").exists()  # cleaned up once complete


def test_encoder_threads_do_not_change_tokens(tokenizer):
    from stages.tokenize.encode import Encoder

    model = tokenizer.paths("model")[0].read_bytes()
    texts = sample_docs().column("text").to_pylist()[:40] + EXTRA
    one, two = Encoder(model, "uint16", 1).encode(texts), Encoder(model, "uint16", 2).encode(texts, batch=7)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])
    assert one[0][one[1].cumsum() - 1].tolist() == [2] * len(texts)  # every document ends with EOS


def test_largest_first_runs_big_jobs_first_and_keeps_job_order(corpus):
    from stages.tokenize.stage import largest_first, text_bytes

    class Ctx:  # ctx.map's contract: results in the order of the items it was given
        def map(self, fn, items, **kw):
            self.seen = [i[0] for i in items]
            return [fn(*i) for i in items]

    ctx = Ctx()
    assert largest_first(ctx, lambda name: name.upper(), [("a",), ("b",), ("c",), ("d",)], [5, 9, 5, 7]) == \
        ["A", "B", "C", "D"]
    assert ctx.seen == ["b", "d", "a", "c"]  # ties keep job order
    import pyarrow.parquet as pq

    sizes = [text_bytes(str(p)) for p in corpus.paths("docs")]
    text = [pc.sum(pc.binary_length(pq.read_table(p).column("text"))).as_py() for p in corpus.paths("docs")]
    assert np.argsort(sizes).tolist() == np.argsort(text).tolist() and min(sizes) > 0  # footer size follows the text


def test_small_corpus_gets_one_val_document(tokenizer, tmp_path):
    """12 documents at val_fraction=0.001: no id draws val, so the one with the smallest draw moves there (as a
    train/test split keeps at least one test item); the same with 1 or 2 workers; val_fraction=0 keeps val empty."""
    from stages.tokenize.encode import val_draw

    docs = sample_docs().slice(0, 12)
    ids = docs.column("id").to_pylist()
    assert not split_of(ids, 0.001).any()  # the hash split alone would leave val empty
    shards = [docs.slice(0, 5), docs.slice(5, 4), docs.slice(9)]
    small = make_stage_data(tmp_path / "dedupe", "dedupe", {"docs": shards})
    ups = {"dedupe": small, "tokenizer": tokenizer}
    cfg = TokenizeConfig(**{**CFG, "val_fraction": 0.001})
    runs = [run_stage("tokenize", cfg, ups, tmp_path / f"t{w}", workers=w) for w in (1, 2)]
    (result, out), (_, out2) = runs
    first = min(ids, key=lambda i: (val_draw(i), i))
    lineage = out.read_table("rows")
    assert set(lineage.filter(pc.equal(lineage.column("split"), "val")).column("id").to_pylist()) == {first}
    assert result.extra["val_moved"] == first and result.stats["val_rows"] > 0
    assert out.manifest.digests == out2.manifest.digests
    none, _ = run_stage("tokenize", TokenizeConfig(**{**CFG, "val_fraction": 0.0}), ups, tmp_path / "t0")
    assert none.stats["val_rows"] == 0 and none.extra["val_moved"] is None


def test_merge_sums_counts_and_keeps_the_smallest_draw():
    """Encode tasks' counts add up in any order; the first draw is a minimum over shards (ties: the smaller id)."""
    from stages.tokenize.stage import merge

    def part(tokens: dict, draw):
        return {"docs": 2, "tokens": sum(tokens.values()), "chars": 9, "bytes": 20, "byte_tokens": 1,
                "split_tokens": {"train": tokens, "val": {}}, "first_draw": draw}

    parts = [part({"a": 5}, [9, "x", 5, "a"]), part({"a": 3, "b": 4}, [7, "y", 3, "a"]), part({"b": 1}, None),
             part({"b": 2}, [7, "w", 2, "b"])]
    m = merge(parts)
    assert (m["docs"], m["tokens"], m["byte_tokens"]) == (8, 15, 4)
    assert m["split_tokens"] == {"train": {"a": 8, "b": 7}, "val": {}}
    assert m["first_draw"] == [7, "w", 2, "b", 3]  # the draw, id, tokens, source, and the shard it is in
    assert merge(parts[::-1])["split_tokens"] == m["split_tokens"]
    assert merge([])["first_draw"] is None and merge([])["split_tokens"] == {"train": {}, "val": {}}
