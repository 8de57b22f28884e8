"""`zhgpt ablate CONFIG --vary KEY=V1,V2,... [--vary ...] [--noise-seed S] [-o KEY=VALUE] [--dry-run]`

One pipeline run per combination of the --vary values (their cartesian product), in one process with one Ray,
so every stage whose key two variants share runs once and is reused (cached) by the others. What is compared
stays fixed: every variant must train the same model (train.preset, train.model), from the same seed, on the
same token budget (train.max_steps x train.global_batch x tokenize.seq_len) and be measured on the same eval
sets (train.eval_sets, train.eval_tokens); a --vary that changes one of them is refused. --noise-seed S runs
the first variant once more with train.seed = S: the seed-to-seed noise the differences are read against.

--vary values are a YAML flow list without its brackets. A whole stage section can be varied:
    --vary 'quality=null,{keep_fraction: 0.7},{keep_fraction: 0.5}'
null removes the section (an optional stage such as quality is then not in the pipeline); a mapping is merged
into the config's section (which must then be complete enough to run, e.g. hold quality.positives). A dotted
key sets one value: --vary clean.min_chars=100,200.

MLflow: a parent run (tag zhgpt.kind=ablation) in the pipeline's experiment; each variant's pipeline run is its
child (tag zhgpt.variant), with that variant's stage runs nested under it as in `zhgpt run`. The parent holds
the table (ablation.csv, ablation.md) and the plot (ablation.png); pipelines/ablate_run.py runs and reports.
--dry-run lists the variants and, per variant, which stages would run and which would be reused, from the cache
keys alone (without starting Ray or writing to MLflow).
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import typer
import yaml

from pipelines.config import ConfigError, RootBase, load_dict, validate

# What every variant must share, as (config path, what it is): the comparison is between data recipes.
FIXED = [("train.preset", "the model"), ("train.model", "the model"), ("train.seed", "the seed"),
         ("train.max_steps", "the token budget"), ("train.global_batch", "the token budget"),
         ("tokenize.seq_len", "the token budget"), ("train.eval_sets", "the eval sets"),
         ("train.eval_tokens", "the eval sets")]


class AblationError(ValueError):
    """A bad --vary, or variants that would not be comparable: one line, exit 2."""


@dataclass
class Variant:
    vid: str  # v1, v2, ...
    label: str  # "quality=null, clean.min_chars=100"
    cfg: RootBase
    seed_of: str | None = None  # the variant this one repeats with another seed
    settings: dict[str, Any] = field(default_factory=dict)


def parse_vary(item: str) -> tuple[str, list[Any]]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip() or not raw.strip():
        raise AblationError(f"--vary {item!r}: expected KEY=V1,V2,... (e.g. --vary 'quality=null,{{keep_fraction: "
                            f"0.7}}')")
    try:
        values = yaml.safe_load(f"[{raw}]")
    except yaml.YAMLError:
        raise AblationError(f"--vary {key}: {raw!r} is not a YAML list of values (without its brackets)") from None
    key = key.strip()
    for path, what in FIXED:
        if path == key or key.startswith(path + "."):  # a whole section is checked once resolved
            hint = " (use --noise-seed to measure seed noise)" if "seed" in path else ""
            raise AblationError(f"--vary {key}: it changes {what} ({path}), which every variant must share{hint}")
    return key, values


def _set(data: dict, key: str, value: Any) -> None:
    """Set a dotted key; null removes it (a section: the stage leaves the pipeline); a mapping given for a
    mapping is merged into it."""
    *parents, last = key.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise AblationError(f"--vary {key}: {p} is not a section")
    if value is None:
        node.pop(last, None)
    elif isinstance(value, dict) and isinstance(node.get(last), dict):
        node[last] = _merge(node[last], value)
    else:
        node[last] = value


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _label(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={yaml.safe_dump(v, default_flow_style=True, width=1000).strip().removesuffix('...').strip()}"
                     for k, v in settings.items()) or "as configured"


def _validated(data: dict, label: str) -> RootBase:
    try:
        return validate(data)
    except ConfigError as exc:
        raise AblationError(f"variant {label}: {str(exc).removeprefix('config error: ')}") from None


def build_variants(data: dict, varies: list[tuple[str, list[Any]]], noise_seeds: list[int]) -> list[Variant]:
    """The cartesian product of the --vary values (then the noise-seed repeats of the first), each validated."""
    out: list[Variant] = []
    for combo in itertools.product(*[values for _, values in varies]):
        settings = dict(zip([k for k, _ in varies], combo))
        d = copy.deepcopy(data)
        for k, v in settings.items():
            _set(d, k, v)
        out.append(Variant(f"v{len(out) + 1}", _label(settings), _validated(d, _label(settings)), settings=settings))
    first = out[0]
    for s in noise_seeds:
        d = copy.deepcopy(data)
        for k, v in first.settings.items():
            _set(d, k, v)
        _set(d, "train.seed", s)
        label = f"{first.label}, train.seed={s}"
        out.append(Variant(f"v{len(out) + 1}", label, _validated(d, label), seed_of=first.vid, settings=first.settings))
    try:  # the config as given is the reference; one that only runs once a --vary completes it is not
        base = _validated(copy.deepcopy(data), "as configured")
    except AblationError:
        base = None
    check_comparable(out, base)
    return out


def _at(dump: dict, path: str) -> Any:
    node: Any = dump
    for p in path.split("."):
        node = node.get(p) if isinstance(node, dict) else None
    return node


def check_comparable(variants: list[Variant], base: RootBase | None = None) -> None:
    """Every variant trains, and the FIXED settings are those of the config as given (else of the first variant)
    in every variant (the seed except in noise repeats)."""
    for v in variants:
        if getattr(v.cfg, "train", None) is None:
            raise AblationError(f"variant {v.label}: no train section; an ablation compares trained models")
    ref = (base if base is not None and getattr(base, "train", None) is not None else variants[0].cfg)
    want = ref.model_dump(mode="json")
    for path, what in FIXED:
        for v in variants:
            if path == "train.seed" and v.seed_of:
                continue
            if _at(v.cfg.model_dump(mode="json"), path) != _at(want, path):
                raise AblationError(f"variant {v.label} changes {what} ({path}), which every variant must share")


# -- dry run: which stages each variant would run, from the cache keys -----------------------------------------
def dry_run(variants: list[Variant]) -> list[tuple[str, dict[str, str]]]:
    """[(variant, {stage: "reuse" | "run" | "reuse (run by vN)"})] without running anything.

    A stage whose inputs exist has its real cache key; one downstream of a stage still to run gets a key made
    the same way from its inputs' keys instead of their digests: outputs are deterministic, so equal keys mean
    equal outputs, and a stage an earlier variant runs is reused by a later one with the same key."""
    from pipelines.runner import code_version, plan_all
    from pipelines.stage import ordered
    from pipelines.storage import Store

    made: dict[str, str] = {}  # identity -> the variant that runs it
    out = []
    for v in variants:
        plans = plan_all(v.cfg, Store.of(v.cfg))
        ident: dict[str, str] = {}
        states = {}
        for name in ordered(v.cfg.stage_names()):
            p = plans[name]
            if p.key is not None:
                ident[name] = p.key
            else:
                scfg = v.cfg.stage_cfg(name)
                payload = json.dumps([name, scfg.key_dict(), code_version(p.spec), scfg.external_digest(),
                                      sorted((u, ident[r]) for u, r in p.inputs.items())], sort_keys=True)
                ident[name] = "virtual:" + hashlib.sha256(payload.encode()).hexdigest()
            if p.complete:
                states[name] = "reuse"
            elif ident[name] in made:
                states[name] = f"reuse (run by {made[ident[name]]})"
            else:
                states[name] = "run"
                made[ident[name]] = v.vid
        out.append((v, states))
    return out


# -- the command ----------------------------------------------------------------------------------------------
def ablate_command(config: Path = typer.Argument(..., help="pipeline config YAML, e.g. configs/ablation.yaml"),
                   vary: List[str] = typer.Option(..., "--vary", help="KEY=V1,V2,... (repeatable: the product)"),
                   noise_seed: Optional[List[int]] = typer.Option(None, "--noise-seed", help="also run the first "
                                                                  "variant with train.seed=S (repeatable)"),
                   override: Optional[List[str]] = typer.Option(None, "-o", "--override", help="KEY=VALUE for "
                                                                "every variant (repeatable)"),
                   dry_run_: bool = typer.Option(False, "--dry-run", help="list variants and what each would "
                                                 "run; run nothing")) -> None:
    from pipelines.cli import fail
    from pipelines.config import apply_override

    try:
        data = load_dict(config)
        for item in override or []:
            apply_override(data, item)
        variants = build_variants(data, [parse_vary(v) for v in vary], list(noise_seed or []))
    except (ConfigError, AblationError) as exc:
        fail(str(exc), 2)
    if dry_run_:
        for v, states in dry_run(variants):
            typer.echo(f"{v.vid}: {v.label}")
            for stage, state in states.items():
                typer.echo(f"    {stage:<10} {state}")
        return
    from pipelines.ablate_run import run_ablation
    from pipelines.dataset import ContractError
    from pipelines.runner import SelectionError, StageFailed

    try:
        result = run_ablation(variants, [f"--vary {v}" for v in vary] + [f"--noise-seed {s}" for s in noise_seed or []])
    except (StageFailed, ContractError) as exc:
        fail(str(exc), 1)
    except (SelectionError, ConnectionError) as exc:
        fail(str(exc), 2)
    typer.echo(result.markdown)
    typer.echo(f"ablation: MLflow run {result.run_id}; table and plot in {result.out_dir}")

