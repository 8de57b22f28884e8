"""The tokenizer stage's run(): train SentencePiece in one Ray task (or pin a model), describe the result.

Try it alone: `.venv/bin/python -m pytest -q tests/stages/test_tokenizer.py`.
"""
from __future__ import annotations

from pathlib import Path

from pipelines.stage import StageContext, StageResult
from stages.tokenizer.train import MODEL, VOCAB, describe, train_task, write_model


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.cfg
    if cfg.model_path is not None:
        model = Path(cfg.model_path).read_bytes()
        shards, counts = write_model(model, str(ctx.out_dir)), {}
        ctx.log(f"pinned {cfg.model_path} ({len(model)} bytes); nothing trained")
    else:
        import ray

        paths = [str(p) for p in ctx.upstream["dedupe"].paths("docs")]
        cpus = min(cfg.num_threads, int(ray.cluster_resources().get("CPU", 1)))  # never ask for more than exists
        [(shards, counts)] = ctx.map(train_task, [(paths, cfg, str(ctx.out_dir))], num_cpus=max(1, cpus))
    facts = describe((ctx.out_dir / MODEL).read_bytes())
    stats = {"vocab_size": facts["vocab_size"], "pinned": int(cfg.model_path is not None), **counts}
    extra = {**facts, "model_type": cfg.model_type if cfg.model_path is None else "pinned",
             "byte_fallback": facts["byte_pieces"] > 0, "pinned": cfg.model_path is not None}
    made = "pinned" if cfg.model_path is not None else f"trained a {extra['model_type']}"
    size = sum(s.bytes for s in shards)
    said = (f"{made} tokenizer: vocab {facts['vocab_size']:,}, {len(shards)} file(s), {size / 1e3:,.0f} kB"
            + (f", from {counts['train_lines']:,.0f} lines" if counts.get("train_lines") else ""))
    return StageResult(outputs={"model": shards}, stats=stats, extra=extra, artifacts=[MODEL, VOCAB], summary=said)
