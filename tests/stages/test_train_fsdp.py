"""FSDP2 (`fully_shard`) on 2 CPU ranks over gloo, without Ray: the same losses as one process, full checkpoints
that a plain model loads, and resume across DDP/single-process <-> FSDP and worker counts.

Run: `.venv/bin/python -m pytest -q tests/stages/test_train_fsdp.py`
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from pipelines.testing.tokenrows import SEQ_LEN
from stages.train.config import TrainConfig
from stages.train.model import GPT
from stages.train.parallel import build_model, default_parallel
from stages.train.shapes import GPTConfig, load_preset
from stages.train.trainer import RunInputs, Trainer


def fsdp_cfg(tok) -> tuple[dict, dict]:
    """(the train config as a worker receives it, the run's inputs as a dict: both cross into mp.spawn)."""
    model = load_preset("tiny", vocab_size=tok.manifest.extra["vocab_size"]).to_dict()
    cfg = TrainConfig(max_steps=7, global_batch=8, optim={"warmup_steps": 2, "lr": 3e-3}, eval_every=None,
                      eval_tokens=13 * SEQ_LEN, checkpoint={"every": None},
                      parallel={"strategy": "fsdp"}).model_dump(mode="json")
    inputs = dict(model=model, train=[str(p) for p in tok.paths("train")], val=[str(p) for p in tok.paths("val")],
                  tokenizer_digest=tok.manifest.extra["tokenizer_digest"], torch_threads=1, strategy="fsdp")
    return cfg, inputs


def _rank(rank: int, world: int, port: int, cfg: tuple[dict, dict], out: str) -> None:
    """One FSDP2 rank: save its initial weights, resume the one-process checkpoint at step 2, train to 5, save."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        out = Path(out)
        t = Trainer(cfg[0], RunInputs(**cfg[1]), rank, world)
        w = t.raw.layers[0].mlp.up_proj.weight
        sharded = isinstance(w, DTensor) and w.to_local().shape[0] < w.shape[0]
        init = t.full_state()
        t.load(out / "one_2")
        losses = t.run(until=5)
        metrics = t.evaluate()  # 13 rows over 2 ranks: 7 and 6, padded so both run the same forward passes
        state = t.full_state()
        if rank == 0:
            torch.save(init["model"], out / "fsdp_init.pt")
            t.save(out / "fsdp_5", state)
            (out / "fsdp.json").write_text(json.dumps({"losses": losses, "eval": metrics, "sharded": sharded}))
        dist.barrier()  # rank 1 must not tear down gloo while rank 0 still writes (seen once: rank 1 SIGABRT)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_fsdp2_on_two_ranks_matches_one_process(tokenized, tmp_path):
    cfg = fsdp_cfg(tokenized)
    one = Trainer(cfg[0], RunInputs(**cfg[1]))  # world 1: the plain model, whatever `parallel` says
    init = {k: v.clone() for k, v in one.raw.state_dict().items()}
    straight = one.run(until=2)
    one.save(tmp_path / "one_2")
    straight += one.run(until=5)
    ref_eval, ref_weights = one.evaluate(), {k: v.clone() for k, v in one.raw.state_dict().items()}
    straight += one.run(until=7)

    mp.spawn(_rank, args=(2, free_port(), cfg, str(tmp_path)), nprocs=2, join=True)
    got = json.loads((tmp_path / "fsdp.json").read_text())
    assert got["sharded"]  # each rank holds part of the weights, so FSDP2 really ran
    fsdp_init = torch.load(tmp_path / "fsdp_init.pt", weights_only=True)
    assert fsdp_init.keys() == init.keys() and all(torch.equal(fsdp_init[k], init[k]) for k in init)
    assert got["losses"] == pytest.approx(straight[2:5], rel=1e-5)
    assert got["eval"] == pytest.approx(ref_eval, rel=1e-5)

    # the sharded run's checkpoint is the full state: a plain model loads it, and one process resumes from it
    state = torch.load(tmp_path / "fsdp_5" / "state.pt", weights_only=True)
    meta = json.loads((tmp_path / "fsdp_5" / "meta.json").read_text())
    plain = GPT(GPTConfig(**meta["model"]))
    plain.load_state_dict(state["model"])
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(v, ref_weights[k], rtol=1e-4, atol=1e-6)
    again = Trainer(cfg[0], RunInputs(**cfg[1]))
    again.load(tmp_path / "fsdp_5")
    assert again.step == 5 and again.run() == pytest.approx(straight[5:], rel=1e-5)


def test_parallel_default_and_bad_value():
    assert [default_parallel(load_preset(p, vocab_size=32000)) for p in ["tiny", "124m", "350m", "1.3b", "7b"]] == \
        ["ddp", "ddp", "ddp", "fsdp", "fsdp"]
    with pytest.raises(ValueError, match="parallel must be one of"):
        build_model(load_preset("tiny", vocab_size=100), 1, torch.device("cpu"), 2, "zero3")
