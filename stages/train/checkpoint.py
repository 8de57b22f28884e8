"""Checkpoints: the full model + optimizer state, whatever the parallelism, and what the run had reached. torch is
imported where a state is saved or loaded, so the config can find a checkpoint directory without it.

A checkpoint directory holds
  state.pt      {"model", "optim", "step"}: full state dicts keyed by parameter name (torch.load(weights_only=True))
  meta.json     what the weights are: step, model config, tokenizer digest, data position, MLflow run
  metrics.json  the run's latest figures at that step (loss, the last evaluation, tokens/s, ...): where the stage
                reads its final figures, so a worker group restarted from the final checkpoint, which trains no
                step, still yields them. Kept out of the published checkpoint: timings differ run to run.

    save(trainer, d)                          # rank 0 (sharded: pass the state every rank built)
    load(trainer, d)                          # resume: model, optimizer, step, data position, metrics
    load(trainer, d, weights_only_init=True)  # train.init_from: the weights only, a fresh schedule
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.io import read_json, write_json

if TYPE_CHECKING:
    from stages.train.trainer import Trainer

STATE, META, METRICS = "state.pt", "meta.json", "metrics.json"


class TokenizerMismatch(ValueError):
    """A checkpoint trained with another tokenizer than the shards'."""


def meta_of(t: "Trainer") -> dict:
    return {"step": t.step, "tokenizer_digest": t.inputs.tokenizer_digest, "mlflow_run_id": t.run_id,
            "model": t.mcfg.to_dict(), "seed": t.cfg["seed"], "global_batch": t.global_batch,
            "samples_seen": t.step * t.global_batch, "sources": t.rows.sources, "seen_per_source": t.seen.tolist(),
            "max_steps": t.max_steps}


def save(t: "Trainer", d: str | Path, state: dict | None = None) -> None:
    """Rank 0 only: state.pt, meta.json and metrics.json in `d`. Under Ray `d` is a fresh directory that Ray Train
    takes only once this returns, so no reader sees a half-written file. state.pt is saved under its own name, not
    through a temporary one: torch.save names the archive's records after the file ("state/data.pkl"), so the
    bytes, and the published checkpoint's digest, would change with the name."""
    import torch

    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    torch.save({**(state or t.full_state()), "step": t.step}, d / STATE)
    write_json(d / META, meta_of(t), indent=1)
    write_json(d / METRICS, {"step": t.step, **t.last}, indent=1)


def load(t: "Trainer", d: str | Path, weights_only_init: bool = False) -> None:
    """Resume from a checkpoint dir (model, optimizer, step), or with weights_only_init take the weights only.
    Refuses another tokenizer's checkpoint."""
    import numpy as np
    import torch

    from stages.train.parallel import load_full_state

    d = Path(d)
    meta = read_json(d / META)
    if meta["tokenizer_digest"] != t.inputs.tokenizer_digest:
        raise TokenizerMismatch(f"checkpoint {d} was trained with tokenizer {meta['tokenizer_digest'][:16]}, "
                                f"but the shards come from {t.inputs.tokenizer_digest[:16]}; "
                                "retokenize with that tokenizer or start a fresh run")
    # sharded: rank 0 reads the file and the state is broadcast, so a node holds one copy, not one per rank
    reads = not t.sharded or t.rank == 0
    state = torch.load(d / STATE, map_location="cpu", weights_only=True) if reads else {}
    load_full_state(t.raw, None if weights_only_init else t.opt, state, t.sharded)
    if weights_only_init:
        return
    t.step = int(meta["step"])
    t.run_id = meta.get("mlflow_run_id") or t.run_id
    t.seen = np.array(meta.get("seen_per_source") or t.seen, dtype=np.int64)
    if (d / METRICS).is_file():
        t.last = {k: v for k, v in read_json(d / METRICS).items() if k != "step"}


def final_figures(d: str | Path) -> dict[str, float]:
    """The figures a checkpoint recorded (empty for a checkpoint from before metrics.json existed)."""
    path = Path(d) / METRICS
    return read_json(path) if path.is_file() else {}


def find_checkpoint(path: Path) -> Path:
    """The folder holding state.pt + meta.json for a stage dir, a checkpoints dir, or a state.pt path."""
    path = Path(path)
    for cand in (path, path / "checkpoints", path.parent, path.parent / "checkpoints"):  # .../export works too
        if (cand / STATE).is_file() and (cand / META).is_file():
            return cand
    raise FileNotFoundError(f"{path}: no trained model here (expected state.pt and meta.json, "
                            "e.g. work/train/<key>/checkpoints)")
