"""The tokenizer stage's run(): sample the corpus in one Ray task per shard, train SentencePiece in one more (or pin
a model), describe the result.

Try it alone: `.venv/bin/python -m pytest -q tests/stages/test_tokenizer.py`.
"""
from __future__ import annotations

from pathlib import Path

from pipelines.stage import StageContext, StageResult
from pipelines.stats import Stats
from stages.tokenizer.sample import line_threshold, lines_file, sample_task, train_task
from stages.tokenizer.train import MODEL, VOCAB, describe, write_model


def train(ctx: StageContext) -> tuple[list, dict[str, int]]:
    """Sample and split the documents in one task per shard (in one task, reading the shards kept one core busy
    while the others idled), then train in one task on the lines sample.py chose."""
    import ray

    cfg, lines = ctx.cfg, ctx.partial_dir / "lines"
    paths = [str(p) for p in ctx.upstream["dedupe"].paths("docs")]
    parts = ctx.map(sample_task, [(i, p, cfg, str(lines)) for i, p in enumerate(paths)],
                    rows_of=lambda c: c["train_docs"])
    counts = Stats.total(parts, train_docs=0, train_chars=0, train_lines=0)
    if counts["train_lines"] == 0:
        raise ValueError("no text to train on: the dedupe output has no non-empty documents")
    files = [str(lines_file(lines, i)) for i in range(len(paths))]
    cpus = min(cfg.num_threads, int(ray.cluster_resources().get("CPU", 1)))  # never ask for more than exists
    threshold = line_threshold(cfg, counts["train_lines"])
    [(shards, fed)] = ctx.map(train_task, [(files, cfg, str(ctx.out_dir), threshold)], num_cpus=max(1, cpus))
    return shards, {**counts, "sentencepiece_lines": fed}


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.cfg
    if cfg.model_path is not None:
        model = Path(cfg.model_path).read_bytes()
        shards, counts = write_model(model, str(ctx.out_dir)), {}
        ctx.log(f"pinned {cfg.model_path} ({len(model)} bytes); nothing trained")
    else:
        shards, counts = train(ctx)
    facts = describe((ctx.out_dir / MODEL).read_bytes())
    stats = {"vocab_size": facts["vocab_size"], "pinned": int(cfg.model_path is not None), **counts}
    extra = {**facts, "model_type": cfg.model_type if cfg.model_path is None else "pinned",
             "byte_fallback": facts["byte_pieces"] > 0, "pinned": cfg.model_path is not None}
    made = "pinned" if cfg.model_path is not None else f"trained a {extra['model_type']}"
    size = sum(s.bytes for s in shards)
    said = (f"{made} tokenizer: vocab {facts['vocab_size']:,}, {len(shards)} file(s), {size / 1e3:,.0f} kB"
            + (f", from {counts['train_lines']:,.0f} lines" if counts.get("train_lines") else ""))
    return StageResult(outputs={"model": shards}, stats=stats, extra=extra, artifacts=[MODEL, VOCAB], summary=said)
