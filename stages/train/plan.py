"""The planner behind `zhgpt plan` (cli.py renders it): what a pretraining run takes: memory per GPU, the smallest
parallel layout that fits, step time, tokens/s, days and GPU-hours.

    zhgpt plan --preset 175b --gpus 1024 --gpu h100      # the seed question: replicating GPT-3
    zhgpt plan --params 13B --tokens 1T --gpus 256 --gpu a100 --mfu 0.5
    zhgpt plan --published                               # the planner against published runs, with errors

Data: stages/train/gpus.py (the one GPU table: peak, memory, default MFU and goodput per GPU type),
configs/plan/shapes.yaml (published model shapes) plus the train presets as GPTConfig (shapes.py),
configs/plan/published.yaml (published runs). FLOPs per token are the PaLM formula of shapes.py, the one the train
step's MFU uses. A Shape carries what GPTConfig cannot (GELU MLPs, biases, learned positions: GPT-3, OPT, BLOOM).
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import yaml

from stages.train.gpus import planner_gpus
from stages.train.shapes import load_preset, palm_flops, preset_names

TABLES = Path(__file__).resolve().parents[2] / "configs" / "plan"
GIB = 1024**3
# bytes per parameter for (weights, gradients, optimizer states). bf16-mixed + AdamW = 2 + 2 + 12 (fp32 master,
# m, v): the ZeRO paper's 16 bytes/param. fp32 + AdamW = 4 + 4 + 8, what torch allocates for an fp32 model.
PRECISIONS = {"bf16-mixed": (2, 2, 12), "fp32": (4, 4, 8)}
ACT_BYTES = 2  # activations kept in bf16
TRAIN_VOCAB = 64000  # vocab for the train presets (a Chinese SentencePiece size) when --vocab is not given


class PlanError(ValueError):
    """A bad request, reported as one line (exit code 2)."""


@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    d_model: int
    heads: int
    ffn_hidden: int
    vocab: int
    seq_len: int
    kv_heads: Optional[int] = None  # None = heads (plain multi-head attention)
    glu: bool = True  # SwiGLU: 3 MLP matrices; else GELU: 2
    tied: bool = False
    bias: bool = False
    pos_embed: bool = False
    title: str = ""
    tokens: Optional[float] = None
    global_batch: Optional[float] = None

    @property
    def kv(self) -> int:
        return self.kv_heads or self.heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    def layer_matmul(self) -> int:
        d, hd = self.d_model, self.head_dim
        return d * hd * (2 * self.heads + 2 * self.kv) + (3 if self.glu else 2) * d * self.ffn_hidden

    def layer_params(self) -> int:
        d = self.d_model
        small = 4 * d if self.bias else 2 * d  # two norms (weight, + bias for LayerNorm)
        if self.bias:  # q/k/v/o and MLP biases
            small += (self.heads + 2 * self.kv) * self.head_dim + d + self.ffn_hidden + d
        return self.layer_matmul() + small

    def embed_params(self) -> int:
        return self.vocab * self.d_model + (self.seq_len * self.d_model if self.pos_embed else 0)

    def head_params(self) -> int:
        """Final norm plus the output layer (nothing extra when tied)."""
        return (2 if self.bias else 1) * self.d_model + (0 if self.tied else self.vocab * self.d_model)

    def n_params(self) -> int:
        return self.layers * self.layer_params() + self.embed_params() + self.head_params()

    def flops_per_token(self) -> float:
        n = self.layers * self.layer_matmul() + self.vocab * self.d_model
        return palm_flops(n, self.layers, self.heads, self.head_dim, self.seq_len)


@dataclass(frozen=True)
class Gpu:
    name: str
    label: str
    peak_tflops: float
    memory_gib: float
    per_node: int
    mfu: float
    goodput: float
    mfu_source: str = ""
    goodput_source: str = ""
    aliases: tuple = ()


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    pp: int = 1
    dp: int = 1
    zero: int = 0  # 0 = DDP, 1/2/3 = ZeRO stage (3 = FSDP full sharding)
    recompute: bool = False

    def label(self) -> str:
        tp_pp = f" TP{self.tp}" * (self.tp > 1) + f" PP{self.pp}" * (self.pp > 1)
        return ("DDP", "ZeRO-1", "ZeRO-2", "ZeRO-3/FSDP")[self.zero] + tp_pp + " +recompute" * self.recompute


def read_yaml(name: str) -> dict:
    path = TABLES / name
    if not path.is_file():
        raise PlanError(f"planner table {path} is missing (run from a source checkout of zhgpt)")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def parse_count(text, what: str) -> float:
    """'175B', '1.5T', '300e9', '7b' -> float; one clear line otherwise."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmbt]?)\s*", str(text), re.I)
    if not m:
        raise PlanError(f"{what}: {text!r} is not a count (write e.g. 175B, 1.5T, 300e9)")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]
    return float(m.group(1)) * scale


def gpus_table() -> dict[str, Gpu]:
    """The GPU types the planner knows, by name and alias (gpus.py rows that carry planner assumptions)."""
    keys = [f.name for f in Gpu.__dataclass_fields__.values() if f.name != "name"]
    out = {}
    for name, row in planner_gpus().items():
        gpu = Gpu(name=name, **{k: row[k] for k in keys if k in row})
        for key in (name, *gpu.aliases):
            out[key] = gpu
    return out


def train_preset_shape(name: str, vocab: int) -> Shape:
    """A train-stage preset as a Shape: its GPTConfig, with the vocab padded as the model pads it."""
    c = load_preset(name, vocab_size=vocab)
    return Shape(name=name, layers=c.n_layer, d_model=c.d_model, heads=c.n_head,
                 kv_heads=c.n_kv_head if c.n_kv_head != c.n_head else None, ffn_hidden=c.ffn_hidden,
                 vocab=c.padded_vocab, seq_len=c.max_seq_len, tied=c.tie_embeddings,
                 title=f"train preset {name} (vocab {vocab})")


def shapes_table(vocab: Optional[int] = None) -> dict[str, Shape]:
    """Named shapes: configs/plan/shapes.yaml, then the train presets; `vocab` replaces every vocabulary."""
    out = {name: Shape(name=name, **{**row, **({"vocab": vocab} if vocab else {})})
           for name, row in read_yaml("shapes.yaml").items()}
    for name in preset_names():
        out.setdefault(name, train_preset_shape(name, vocab or TRAIN_VOCAB))
    return out


def shape_from_params(n: float, vocab: int, seq_len: int) -> Shape:
    """A GPT-3-proportioned shape for a bare parameter count: d_model/layers = 128 (GPT-3 175B: 12288/96), head 128."""
    d = max(128, round((128 * n / 12) ** (1 / 3) / 128) * 128)
    layers = max(1, round((n - 2 * vocab * d) / (12 * d * d)))
    return Shape(name=f"{n / 1e9:.3g}B", layers=layers, d_model=d, heads=d // 128, ffn_hidden=4 * d, vocab=vocab,
                 seq_len=seq_len, glu=False, title="shape derived from the parameter count (GPT-3 proportions)")


def stage_params(shape: Shape, pp: int) -> int:
    """Parameters on the fullest pipeline stage: its layers plus the embedding (first) or the output layer (last)."""
    per = math.ceil(shape.layers / pp) * shape.layer_params()
    if pp == 1:
        return shape.n_params()
    return per + max(shape.embed_params(), shape.head_params() + (shape.vocab * shape.d_model if shape.tied else 0))


def layer_activations(shape: Shape, micro_batch: int, flash: bool = True) -> float:
    """Bytes one layer keeps for backward (bf16, no dropout), in units derived from the tensors saved.

    attention: norm input, q/k/v input, q/k/v, attention output = (3d + (H + 2*KV)*hd) per token;
    MLP: norm input, MLP input, then GLU gate+up, activation, product (4f) or GELU fc + activation (2f).
    Standard GPT (f = 4d) comes to 32*s*b*d bytes, Korthikanti et al. 2022's 34*s*b*h less the dropout masks.
    Without flash attention the scores and softmax (4 bytes per head per token pair) are kept as well.
    """
    d, s = shape.d_model, shape.seq_len
    per_token = 3 * d + (shape.heads + 2 * shape.kv) * shape.head_dim + 2 * d
    per_token += (4 if shape.glu else 2) * shape.ffn_hidden
    scores = 0 if flash else 4 * shape.heads * s * s * micro_batch
    return ACT_BYTES * per_token * s * micro_batch + scores


def memory(shape: Shape, lay: Layout, micro_batch: int = 1, precision: str = "bf16-mixed",
           flash: bool = True) -> dict[str, float]:
    """Bytes per GPU. TP shards every layer (with sequence parallelism, activations too); PP with 1F1B keeps
    p micro-batches of L/p layers in flight on the first stage, so activations are L layers' worth at any p."""
    wb, gb, ob = PRECISIONS[precision]
    n = stage_params(shape, lay.pp) / lay.tp
    layer = layer_activations(shape, micro_batch, flash) / lay.tp
    logits = shape.seq_len * micro_batch * shape.vocab * (2 + 4) / lay.tp  # bf16 logits + fp32 for the loss
    if lay.recompute:  # keep each layer's input only, rebuild one layer at a time in backward
        acts = shape.layers * ACT_BYTES * shape.seq_len * micro_batch * shape.d_model / lay.tp + layer
    else:
        acts = shape.layers * layer
    out = {"weights": wb * n / (lay.dp if lay.zero >= 3 else 1),
           "gradients": gb * n / (lay.dp if lay.zero >= 2 else 1),
           "optimizer": ob * n / (lay.dp if lay.zero >= 1 else 1),
           "activations": acts + logits}
    out["total"] = sum(out.values())
    return out


def candidate_layouts(shape: Shape, gpus: int, per_node: int):
    """Every (TP within a node, PP dividing the layers, ZeRO stage, recompute) that uses exactly `gpus` GPUs."""
    tps = [t for t in (1, 2, 4, 8, 16) if t <= per_node and shape.heads % t == 0 and shape.kv % t == 0]
    pps = [p for p in range(1, shape.layers + 1) if shape.layers % p == 0]
    for tp in tps:
        for pp in pps:
            if gpus % (tp * pp) == 0:
                for zero in range(4):
                    for rc in (False, True):
                        yield Layout(tp=tp, pp=pp, dp=gpus // (tp * pp), zero=zero, recompute=rc)


def smallest_fit(shape: Shape, gpus: int, gpu: Gpu, usable: float = 0.9, fixed: Optional[dict] = None,
                 **kw) -> Optional[Layout]:
    """The fit with the fewest model-parallel GPUs (TP*PP), then no recompute, then the lowest ZeRO stage: the
    layout with the least communication and recomputation that fits `usable` of the GPU's memory. `fixed` pins
    any of tp/pp/zero/recompute (the command line's --tp/--pp/--zero/--recompute)."""
    cap, fixed = gpu.memory_gib * GIB * usable, fixed or {}
    want = [x for x in candidate_layouts(shape, gpus, gpu.per_node)
            if all(getattr(x, k) == v for k, v in fixed.items())]
    if not want:
        raise PlanError(f"no layout of {gpus} GPUs matches {fixed} (TP*PP must divide the GPU count, PP the layers)")
    fits = [lay for lay in want if memory(shape, lay, **kw)["total"] <= cap]
    return min(fits, key=lambda x: (x.tp * x.pp, x.recompute, x.zero, x.tp), default=None)


def throughput(shape: Shape, tokens: float, gpus: int, peak_tflops: float, mfu: float, goodput: float,
               global_batch: float) -> dict[str, float]:
    """MFU is model FLOPs over peak: recompute and pipeline bubbles are inside it, as they were in the runs it
    comes from. Goodput stretches wall time only."""
    fpt = shape.flops_per_token()
    tps = gpus * peak_tflops * 1e12 * mfu / fpt
    days = tokens / (tps * goodput) / 86400
    return {"flops_per_token": fpt, "total_flops": fpt * tokens, "tokens_per_s": tps,
            "tokens_per_s_per_gpu": tps / gpus, "tflops_per_gpu": peak_tflops * mfu, "step_s": global_batch / tps,
            "days": days, "gpu_hours": gpus * days * 24}


def implied_mfu(shape: Shape, tokens: float, gpu_hours: float, gpu: Gpu) -> float:
    """The MFU a published GPU-hour figure implies, at the GPU type's default goodput."""
    return shape.flops_per_token() * tokens / (gpu_hours * 3600 * gpu.peak_tflops * 1e12 * gpu.goodput)


def published_checks() -> list[dict]:
    """Each published run against the planner's defaults: predicted figure, published figure, error."""
    shapes, gpus, rows = shapes_table(), gpus_table(), []
    for name, case in read_yaml("published.yaml").items():
        shape, gpu = shapes[case["shape"]], gpus[case["gpu"]]
        est = throughput(shape, case["tokens"], case["gpus"], gpu.peak_tflops, gpu.mfu, gpu.goodput,
                         shape.global_batch or 4e6)
        metric = "gpu_hours" if "gpu_hours" in case else "tflops_per_gpu"
        pred, pub = est[metric], case[metric]
        mfu = implied_mfu(shape, case["tokens"], pub, gpu) if metric == "gpu_hours" else pub / gpu.peak_tflops
        rows.append({"run": name, "gpu": gpu.label, "metric": metric, "published": pub, "predicted": pred,
                     "error": pred / pub - 1, "implied_mfu": mfu, "check": case["check"], "source": case["source"]})
    return rows


def resolve_shape(preset: Optional[str], params: Optional[str], vocab: Optional[int], seq_len: Optional[int],
                  dims: dict) -> Shape:
    """A preset from the tables, or a shape from --params (and any --layers/--d-model/... given), overrides applied."""
    if preset:
        table = shapes_table(vocab)
        if preset not in table:
            raise PlanError(f"unknown preset {preset!r}; known: {', '.join(table)} (or give --params and a shape)")
        shape = table[preset]
    elif params or (dims.get("layers") and dims.get("d_model")):
        n = parse_count(params, "--params") if params else 12 * dims["layers"] * dims["d_model"] ** 2
        shape = shape_from_params(n, vocab or TRAIN_VOCAB, seq_len or 2048)
    else:
        raise PlanError("say which model: --preset NAME, --params COUNT, or --layers and --d-model")
    given = {k: v for k, v in {**dims, "vocab": vocab if not preset else None, "seq_len": seq_len}.items() if v}
    if "d_model" in given:  # a new width keeps 128-wide heads and a 4x MLP unless those are given too
        given = {"heads": max(1, given["d_model"] // 128), "ffn_hidden": 4 * given["d_model"], **given}
    shape = replace(shape, **given)
    if not preset:  # name it by what the final shape holds
        title = "shape from --layers/--d-model/..." if any(dims.values()) else shape.title
        shape = replace(shape, name=f"{shape.n_params() / 1e9:.3g}B", title=title)
    if shape.d_model % shape.heads or shape.heads % shape.kv:
        raise PlanError(f"d_model {shape.d_model} must divide by heads {shape.heads}, and heads by kv heads {shape.kv}")
    return shape


def build_plan(shape: Shape, gpu: Gpu, gpus: int, tokens: float, global_batch: float, micro_batch: int = 1,
               precision: str = "bf16-mixed", usable: float = 0.9, fixed: Optional[dict] = None) -> dict:
    """Everything the report shows, as plain data (the --json output)."""
    if gpus < 1:
        raise PlanError(f"--gpus must be at least 1 (got {gpus})")
    kw = {"micro_batch": micro_batch, "precision": precision}
    rows = [Layout(dp=gpus, zero=z) for z in range(4)]
    mega = next((lay for lay in sorted(candidate_layouts(shape, gpus, gpu.per_node), key=lambda x: (x.pp, -x.tp))
                 if lay.tp == min(gpu.per_node, 8) and lay.zero == 1 and not lay.recompute
                 and memory(shape, lay, **kw)["total"] <= gpu.memory_gib * GIB * usable), None)
    pick = smallest_fit(shape, gpus, gpu, usable, fixed, **kw)
    base = replace(pick, recompute=False) if pick else None
    rows += [x for x in (mega, base) if x and x not in rows]
    table = [{"layout": lay.label(), **asdict(lay), "plain": memory(shape, lay, **kw),
              "recompute": memory(shape, replace(lay, recompute=True), **kw), "chosen": lay == base} for lay in rows]
    est = throughput(shape, tokens, gpus, gpu.peak_tflops, gpu.mfu, gpu.goodput, global_batch)
    return {"shape": asdict(shape), "params": shape.n_params(), "gpu": asdict(gpu), "gpus": gpus, "tokens": tokens,
            "global_batch": global_batch, "micro_batch": micro_batch, "precision": precision,
            "capacity_bytes": gpu.memory_gib * GIB * usable, "memory": table,
            "layout": asdict(pick) | {"label": pick.label()} if pick else None, "estimate": est,
            "min_gpus": None if pick else next((n for n in (gpu.per_node * 2**k for k in range(14)) if n > gpus
                                                and smallest_fit(shape, n, gpu, usable, None, **kw)), None)}


def make_plan(preset, params, dims, vocab, seq_len, tokens, gpus, gpu, mfu, goodput, global_batch, micro_batch,
              precision, usable, fixed) -> dict:
    """Validate the command line's values and build the plan (one PlanError line for anything wrong)."""
    table = gpus_table()
    if gpu.lower() not in table:
        raise PlanError(f"unknown GPU type {gpu!r}; known: {', '.join(table)}")
    if precision not in PRECISIONS:
        raise PlanError(f"unknown --precision {precision!r}; known: {', '.join(PRECISIONS)}")
    for name, val in (("mfu", mfu), ("goodput", goodput), ("usable", usable)):
        if val is not None and not 0 < val <= 1:
            raise PlanError(f"--{name} must be in (0, 1] (got {val})")
    g = replace(table[gpu.lower()], **{k: v for k, v in (("mfu", mfu), ("goodput", goodput)) if v is not None})
    shape = resolve_shape(preset, params, vocab, seq_len, dims)
    n_tok = parse_count(tokens, "--tokens") if tokens else shape.tokens or 20.0 * shape.n_params()
    batch = parse_count(global_batch, "--global-batch") if global_batch else shape.global_batch or 4e6
    fixed = {k: v for k, v in fixed.items() if v is not None}
    return build_plan(shape, g, gpus, n_tok, batch, micro_batch, precision, usable, fixed or None)
