"""The model, one step and the training loop, in-process (no Ray): exact resume, accumulation, schedule, presets.

Run: `.venv/bin/python -m pytest -q tests/stages/test_train_loop.py`
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from pipelines.testing.tokenrows import SEQ_LEN
from stages.train.checkpoint import TokenizerMismatch
from stages.train.config import TrainConfig
from stages.train.gpus import peak_flops
from stages.train.model import GPT
from stages.train.sections import OptimConfig
from stages.train.shapes import GPTConfig, flops_per_token, load_preset
from stages.train.step import lr_at
from stages.train.trainer import RunInputs, Trainer

TINY = dict(n_layer=2, n_head=4, n_kv_head=2, d_model=64, max_seq_len=64, tie_embeddings=True)


def loop_cfg(tok, inputs: dict | None = None, **kw) -> tuple[dict, RunInputs]:
    """(the train config as a worker receives it, the run's inputs) for an in-process Trainer."""
    base = dict(model=TINY, max_steps=12, global_batch=8, optim={"warmup_steps": 3, "lr": 3e-3}, eval_every=None,
                checkpoint={"every": None}, mix={"faq": 2.0})
    cfg = TrainConfig(**{**base, **kw}).model_dump(mode="json")
    run = RunInputs(model={**TINY, "vocab_size": tok.manifest.extra["vocab_size"]},
                    train=[str(p) for p in tok.paths("train")], val=[str(p) for p in tok.paths("val")],
                    tokenizer_digest=tok.manifest.extra["tokenizer_digest"], torch_threads=1)
    for k, v in (inputs or {}).items():
        setattr(run, k, v)
    return cfg, run


def test_presets_build_on_meta_and_count_flops():
    for name in ["tiny", "30m", "124m", "350m", "1.3b", "7b"]:
        cfg = load_preset(name, vocab_size=32000)
        with torch.device("meta"):
            model = GPT(cfg)
        assert cfg.padded_vocab % 64 == 0 and model.lm_head.weight.is_meta
    c124 = load_preset("124m", vocab_size=50257)
    assert (c124.n_layer, c124.d_model) == (12, 768) and c124.padded_vocab == 50304
    # PaLM formula: 6N + 12 L H Q T; for GPT-2-small shapes with SwiGLU this is ~0.77-0.86 GFLOP/token
    assert 7e8 < flops_per_token(c124, 1024) < 9e8
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("Intel CPU") is None
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        load_preset("huge")
    with pytest.raises(ValueError, match="unknown model field"):
        load_preset("tiny", n_layers=3)


def test_schedule_warms_up_then_decays():
    s = OptimConfig(lr=1e-3, warmup_steps=10, min_lr_frac=0.1)
    assert lr_at(0, s, 100) == pytest.approx(1e-4) and lr_at(9, s, 100) == pytest.approx(1e-3)
    assert lr_at(99, s, 100) == pytest.approx(1e-4, rel=0.01) and lr_at(55, s, 100) < lr_at(20, s, 100)
    w = OptimConfig(lr=1e-3, warmup_steps=10, schedule="wsd")  # decays over the last 20% of the run
    assert lr_at(50, w, 100) == 1e-3 and lr_at(90, w, 100) == pytest.approx(5.5e-4)
    assert lr_at(100, w, 100) == pytest.approx(1e-4)


def test_exact_resume_is_bitwise(tokenized, tmp_path):
    straight = Trainer(*loop_cfg(tokenized)).run()
    first = Trainer(*loop_cfg(tokenized))
    head = first.run(until=5)
    first.save(tmp_path / "ckpt")
    again = Trainer(*loop_cfg(tokenized))
    again.load(tmp_path / "ckpt")
    assert again.step == 5
    tail = again.run()
    assert head + tail == straight  # bitwise: float equality, not approx
    assert straight[-1] < straight[0] - 0.3  # and it learns


def test_init_from_takes_weights_with_a_fresh_schedule(tokenized, tmp_path):
    donor = Trainer(*loop_cfg(tokenized, max_steps=3))
    donor.run()
    donor.save(tmp_path / "donor")
    t = Trainer(*loop_cfg(tokenized, seed=5))
    t.load(tmp_path / "donor", weights_only_init=True)
    assert t.step == 0 and not t.opt.state  # new schedule, new optimizer state
    assert torch.equal(t.raw.norm.weight, donor.raw.norm.weight)


def test_micro_batch_split_keeps_the_run(tokenized):
    whole = Trainer(*loop_cfg(tokenized, max_steps=4)).run()
    split = Trainer(*loop_cfg(tokenized, max_steps=4, parallel={"micro_batch": 2})).run()  # 4 accumulation steps
    assert split == pytest.approx(whole, rel=1e-4)


def test_activation_checkpointing_is_applied_outside_the_model_and_keeps_the_run(tokenized):
    plain = Trainer(*loop_cfg(tokenized, max_steps=3))
    ac = Trainer(*loop_cfg(tokenized, max_steps=3, parallel={"activation_checkpointing": True}))
    assert not hasattr(ac.raw, "activation_checkpointing")  # the model holds no training flag
    batch = plain.batch(0)[0]

    def saved_for_backward(model) -> int:
        n = 0

        def pack(t):
            nonlocal n
            n += 1
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(batch[:, :-1], batch[:, 1:])
        return n

    assert saved_for_backward(ac.raw) < saved_for_backward(plain.raw) / 2  # blocks keep their inputs only
    assert ac.run() == plain.run()  # recomputing a block in backward gives the same numbers, bitwise on CPU


def test_eval_reports_bpb_per_source_and_refuses_other_tokenizer(tokenized, tmp_path):
    bpi = [1.0] * tokenized.manifest.extra["vocab_size"]
    t = Trainer(*loop_cfg(tokenized, eval_tokens=16 * SEQ_LEN,
                          inputs=dict(bytes_per_id=bpi, eval_sets={"faq": [str(tokenized.paths("val")[0])]})))
    m = t.evaluate()
    assert {"val/loss", "val/ppl", "val/bpb", "eval/faq/loss"} <= set(m)
    assert m["val/bpb"] == pytest.approx(m["val/loss"] / 0.6931471805599453)  # 1 byte per token here
    t.save(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "meta.json").read_text())
    assert meta["step"] == 0 and meta["tokenizer_digest"] == tokenized.manifest.extra["tokenizer_digest"]
    other = Trainer(*loop_cfg(tokenized, inputs=dict(tokenizer_digest="f" * 64)))
    with pytest.raises(TokenizerMismatch, match="trained with tokenizer") as exc:
        other.load(tmp_path / "ckpt")
    assert "\n" not in str(exc.value)


def test_checkpoint_loads_with_weights_only(tokenized, tmp_path):
    t = Trainer(*loop_cfg(tokenized, max_steps=2))
    t.run()
    t.save(tmp_path / "c")
    state = torch.load(tmp_path / "c" / "state.pt", weights_only=True)
    assert state["step"] == 2 and "embed_tokens.weight" in state["model"]
    cfg = GPTConfig(**json.loads((tmp_path / "c" / "meta.json").read_text())["model"])
    assert cfg.n_kv_head == 2


def test_model_and_step_import_with_torch_alone():
    """The GPU machine has torch, numpy, pyarrow and sentencepiece, but no Ray, MLflow or pydantic: the model, one
    step, the Trainer and sampling must import there (None in sys.modules makes an import fail)."""
    blocked = "; ".join(f"sys.modules[{m!r}] = None" for m in ("pydantic", "ray", "mlflow", "annotated_types", "yaml"))
    code = (f"import sys; {blocked}; import stages.train.model, stages.train.step, stages.train.trainer, "
            "stages.train.generate, stages.train.parallel")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
