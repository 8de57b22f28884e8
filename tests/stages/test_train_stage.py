"""The train stage on real Ray Train (two fits in all): a 2-worker gloo fit that loses a worker at a known step and
still finishes, then a re-run that resumes the same run on 1 worker; plus bad input, one clear line each.

Run: `.venv/bin/python -m pytest -q tests/stages/test_train_stage.py`
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipelines.stage import StageContext, registry
from pipelines.testing.tokenrows import SEQ_LEN
from stages.train.config import TrainConfig
from stages.train.upstream import TrainInputError

SMALL = {"n_layer": 2, "n_head": 4, "d_model": 64}
SECTIONS = ("optim", "checkpoint", "parallel", "sample")


def cfg(**kw) -> TrainConfig:
    """The test config; a section given in kw is merged into the base's (the model overrides are replaced)."""
    base = dict(preset="tiny", model=SMALL, max_steps=6, global_batch=8, optim={"lr": 3e-3, "warmup_steps": 2},
                eval_every=3, eval_tokens=SEQ_LEN * 8, checkpoint={"every": 2, "keep": 2},
                parallel={"num_workers": 2, "torch_threads": 1}, log_every=1,
                sample={"tokens": 8, "draws": 2, "prompts": ["中华人民共和国的首都是"]})
    for k, v in kw.items():
        base[k] = {**base[k], **v} if k in SECTIONS else v
    return TrainConfig(**base)


def context(out: Path, tok, c: TrainConfig, uri: str = "", run_id: str | None = None, fresh: bool = False):
    out.mkdir(parents=True, exist_ok=True)
    return StageContext(name="train", cfg=c, out_dir=out, upstream={"tokenize": tok}, work_dir=out.parent.parent,
                        workers=2, tracking_uri=uri, mlflow_run_id=run_id, fresh=fresh)


@pytest.fixture
def mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    return uri, client, client.create_run(exp).info.run_id


@pytest.mark.slow
def test_fit_survives_a_killed_worker_and_resumes_on_fewer_workers(ray_session, tokenized, tmp_path, mlflow_run,
                                                                   monkeypatch):
    uri, client, run_id = mlflow_run
    out = tmp_path / "work" / "train" / "key1"
    # SIGKILL rank 1 before step 3 (after the step-2 checkpoint), and again once the final (step-6) checkpoint is
    # registered: Ray Train then restarts the group from the final checkpoint, with no step left to run
    monkeypatch.setenv("ZHGPT_FAULT", "train.rank1@3,train.rank1.reported@6")
    result = registry()["train"].run_fn()(context(out, tokenized, cfg(), uri, run_id))
    assert (out / ".partial" / "fault-marker").exists()  # the worker really died
    assert (out / ".partial" / "fault-marker.reported").exists()  # ... and again after the final checkpoint
    assert sorted(p.name for p in (out / ".partial" / "ray").glob("step_*")) == ["step_00000004", "step_00000006"]
    meta = json.loads((out / "checkpoints" / "meta.json").read_text())
    assert meta["step"] == 6 and meta["mlflow_run_id"] == run_id and sum(meta["seen_per_source"]) == 6 * 8
    assert result.stats["val_bpb"] > 0 and result.stats["unigram_bpb"] > 0
    assert {s.path for s in result.outputs["export"]} >= {"export/config.json", "export/model.safetensors"}
    samples = (out / "samples.txt").read_text()
    assert samples.startswith("## 中华人民共和国的首都是 (1/2)\n") and "\n## 中华人民共和国的首都是 (2/2)\n" in samples
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert sorted(set(steps)) == [1, 2, 3, 4, 5, 6]  # steps 3+ logged again by the restarted group: same run
    assert client.get_metric_history(run_id, "val/bpb") and client.get_metric_history(run_id, "tokens_seen/faq")
    eval_in = client.get_run(run_id).inputs.dataset_inputs
    assert eval_in == []  # no eval_sets configured here

    # re-running with more steps on 1 worker continues the same run from the step-6 checkpoint
    monkeypatch.delenv("ZHGPT_FAULT")
    before = torch.load(out / "checkpoints" / "state.pt", weights_only=True)["model"]["norm.weight"].clone()
    again = cfg(max_steps=8, parallel={"num_workers": 1})
    result2 = registry()["train"].run_fn()(context(out, tokenized, again, uri, "other-run"))
    meta2 = json.loads((out / "checkpoints" / "meta.json").read_text())
    assert meta2["step"] == 8 and sum(meta2["seen_per_source"]) == 8 * 8
    assert meta2["mlflow_run_id"] == run_id  # the run id kept in the checkpoint wins over the new child run
    assert result2.extra["mlflow_metrics_run_id"] == run_id
    after = torch.load(out / "checkpoints" / "state.pt", weights_only=True)["model"]["norm.weight"]
    assert not torch.equal(before, after)
    assert max(m.step for m in client.get_metric_history(run_id, "loss")) == 8


@pytest.mark.slow
def test_a_worker_error_reaches_the_stage_as_itself(ray_session, tmp_path, tokenized):
    """An error raised in the training function is the stage's error, not Ray Train's report of every rank's."""
    from stages.train.data import DataError

    with pytest.raises(DataError, match=r"mix names source\(s\) \['wiki'\]"):
        run_bad(tmp_path, tokenized, cfg(mix={"wiki": 2.0}, parallel={"num_workers": 1, "max_failures": 0}))


def run_bad(tmp_path, tok, c, fresh=False):
    return registry()["train"].run_fn()(context(tmp_path / "work" / "train" / "bad", tok, c, fresh=fresh))


def test_preset_that_does_not_fit_is_one_line(tmp_path, tokenized):
    with pytest.raises(TrainInputError, match="vocab_size 1000 but the tokenizer has 2000 ids") as exc:
        run_bad(tmp_path, tokenized, cfg(model={**SMALL, "vocab_size": 1000}))
    assert "\n" not in str(exc.value)
    with pytest.raises(TrainInputError, match="max_seq_len 32 but the shards hold 64-token"):
        run_bad(tmp_path, tokenized, cfg(model={**SMALL, "max_seq_len": 32}))
    with pytest.raises(ValueError, match="unknown model preset 'giant'"):  # now at config load (issue 17)
        run_bad(tmp_path, tokenized, cfg(preset="giant"))
    with pytest.raises(TrainInputError, match="does not divide by num_workers 2"):
        run_bad(tmp_path, tokenized, cfg(global_batch=7, max_steps=1))


def with_val(tmp_path: Path, tok, val_table, extra=None):
    """A copy of the tokenize manifest whose val split is `val_table` (and extra overridden)."""
    import copy

    from pipelines.dataset import Output, StageData, write_arrow

    m = copy.deepcopy(tok.manifest)
    d = tmp_path / "tok-variant"
    m.outputs = {**m.outputs, "val": Output("arrow", [write_arrow(val_table, d, "val/part-00000.arrow")])}
    m.outputs["train"] = Output("arrow", [s.__class__(**{**s.__dict__, "path": str(tok.dir / s.path)})
                                          for s in m.outputs["train"].shards], primary=True)
    m.outputs["tokenizer"] = Output("file", [s.__class__(**{**s.__dict__, "path": str(tok.dir / s.path)})
                                             for s in m.outputs["tokenizer"].shards])
    m.extra = {**m.extra, **(extra or {})}
    return StageData(d, m)


def test_shards_from_another_tokenizer_and_empty_split(tmp_path, tokenized):
    import pyarrow as pa

    from stages.train.data import DataError, TokenRows

    val = TokenRows(tokenized.paths("val")).take([0, 1]).astype("uint16")
    val[0, 5] = 4000  # an id the 2000-piece tokenizer cannot produce: another tokenizer's shard
    table = pa.table({"tokens": pa.FixedSizeListArray.from_arrays(pa.array(val.ravel()), SEQ_LEN + 1),
                      "source_name": ["faq", "faq"]})
    with pytest.raises(TrainInputError, match="token id 4000 >= vocab_size 2000: they come from a different"):
        run_bad(tmp_path, with_val(tmp_path, tokenized, table), cfg())
    empty = table.slice(0, 0)
    with pytest.raises(DataError, match="the val split has no token rows") as exc:
        run_bad(tmp_path, with_val(tmp_path, tokenized, empty), cfg())
    assert "\n" not in str(exc.value)


def test_config_change_beside_unfinished_run_is_refused(tmp_path, tokenized):
    unfinished = tmp_path / "work" / "train" / "oldkey" / ".partial" / "ray" / "step_00000002"
    unfinished.mkdir(parents=True)
    with pytest.raises(TrainInputError, match="unfinished run with another config.*--fresh"):
        run_bad(tmp_path, tokenized, cfg())
    with pytest.raises(ValueError, match="does not divide"):  # --fresh passes the guard (then fails later here)
        run_bad(tmp_path, tokenized, cfg(global_batch=7), fresh=True)


def test_eval_sets_are_tokenized_and_logged_as_eval_inputs(tmp_path, tokenized, mlflow_run):
    from pipelines.testing.tokenrows import corpus
    from stages.train.data import TokenRows
    from stages.train.evalsets import tokenize_eval_sets
    from stages.train.upstream import load_tokenizer, token_info

    uri, client, run_id = mlflow_run
    text = tmp_path / "faq.txt"
    text.write_text("\n\n".join(t for s, t in corpus() if s == "faq"), encoding="utf-8")
    c = cfg(eval_sets={"faq": str(text)})
    ctx = context(tmp_path / "work" / "train" / "k", tokenized, c, uri, run_id)
    info = token_info(tokenized)
    sets = tokenize_eval_sets(ctx, info, load_tokenizer(info))
    rows = TokenRows(sets["faq"], "faq")
    assert rows.seq_len == SEQ_LEN and len(rows) > 10 and rows.sources == ["faq"]
    (inp,) = client.get_run(run_id).inputs.dataset_inputs
    assert inp.dataset.name == "eval.faq" and [t.value for t in inp.tags] == ["eval"]
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("你好", encoding="utf-8")
    with pytest.raises(TrainInputError, match="train.eval_sets.tiny: .* fewer than one 65-token row"):
        tokenize_eval_sets(context(tmp_path / "w2" / "train" / "k", tokenized, cfg(eval_sets={"tiny": str(tiny)})),
                           info, load_tokenizer(info))


def test_config_is_typed_and_exec_fields_stay_out_of_the_key():
    a = cfg(parallel={"num_workers": 1, "micro_batch": None})
    b = cfg(parallel={"num_workers": 2, "micro_batch": 2, "use_gpu": True, "torch_threads": 2, "strategy": "fsdp",
                      "max_failures": 0}, log_every=5)
    assert a.key_dict() == b.key_dict()
    assert cfg(max_steps=7).key_dict() != a.key_dict()
    assert a.external_digest() == b.external_digest()
    with pytest.raises(ValueError, match="no checkpoint at"):
        cfg(init_from="/nonexistent/ckpt")
    # sections: a key a section lacks, and a value out of its bounds, are errors naming the dotted key
    assert cfg(optim={"lr": 1e-3}).key_dict() != a.key_dict()
    assert cfg(parallel={"compile": True}).key_dict() != a.key_dict()  # compiled kernels round differently
    with pytest.raises(ValueError, match=r"parallel\.threads"):
        cfg(parallel={"threads": 2})
    with pytest.raises(ValueError, match=r"sample\.draws"):
        cfg(sample={"draws": 257})


def test_init_from_hashes_the_checkpoint_meta_not_its_weights(tmp_path):
    """init_from may name a checkpoint's state.pt (GBs for a large model): the config keeps the checkpoint
    directory, and the cache key hashes its meta.json."""
    d = tmp_path / "checkpoints"
    d.mkdir()
    (d / "state.pt").write_bytes(b"weights")
    (d / "meta.json").write_text('{"step": 3}')
    a, b = cfg(init_from=str(d / "state.pt")), cfg(init_from=str(tmp_path))  # the file, the stage directory
    before = a.external_digest()
    assert a.init_from == b.init_from == d and b.external_digest() == before
    (d / "state.pt").write_bytes(b"other weights")
    assert a.external_digest() == before
    (d / "meta.json").write_text('{"step": 4}')
    assert a.external_digest() != before


def test_bad_train_config_is_rejected_at_load_in_one_line(tmp_path):
    """An unknown preset or model field, and defaults that do not fit together (the tiny preset holds 256
    positions, tokenize packs 2048 by default), stop `zhgpt run` at config load: exit 2, one line naming the keys."""
    from typer.testing import CliRunner

    from pipelines.cli import app
    from tests.conftest import write_config

    base = {"work_dir": str(tmp_path / "work"),
            "crawl": {"sources": [{"name": "s", "type": "seeds", "seeds": ["http://127.0.0.1:9/"]}]},
            "clean": {}, "dedupe": {}, "tokenizer": {}}
    cases = [({"tokenize": {}, "train": {}}, "train.model.max_seq_len: preset 'tiny' holds 256 positions but "
              "tokenize.seq_len is 2048"),
             ({"tokenize": {"seq_len": 256}, "train": {"preset": "giant"}}, "train.preset: Value error, unknown "
              "model preset 'giant'"),
             ({"tokenize": {"seq_len": 256}, "train": {"model": {"layers": 3}}}, "train.model: Value error, unknown "
              "model field(s) ['layers']"),
             ({"tokenize": {"seq_len": 256}, "train": {"lr": 0.1}}, "train.lr: unknown key")]
    for sections, needle in cases:
        res = CliRunner().invoke(app, ["status", str(write_config(tmp_path / "c.yaml", {**base, **sections}))])
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and needle in lines[0], res.output

