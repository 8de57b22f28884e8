"""The `seeds` source: a breadth-first crawl in rounds. The driver plans each round (frontier.plan_round, pure),
runs one Ray task per host partition (partition.crawl_partition), folds the results in and checkpoints the state
in `.partial/`. Inside a round each task journals its pages as it goes (journal.py), so a killed crawl re-plans
the same round, reuses every partition that had finished and resumes the others where their checkpoint left them.
"""
from __future__ import annotations

import os

from pipelines.dataset import ShardInfo, table_of, write_parquet
from pipelines.faults import ENV as FAULT_ENV, fault_point
from pipelines.io import read_json, write_json
from pipelines.stats import Stats
from stages.crawl.frontier import CrawlState, Scope, advance, host_of, normalize_url, plan_round
from stages.crawl.partition import crawl_partition
from stages.crawl.tables import LOG_SCHEMA


def _ready_for(state: CrawlState, urls: list[list]) -> dict[str, float]:
    hosts = {host_of(u) for u, _ in urls}
    return {h: t for h, t in state.host_ready.items() if h in hosts}


def helpers_for(workers: int, cpus: int, partitions: int) -> list[int]:
    """Helper tasks per partition of a round: the workers the partitions leave idle, shared out (a one-host round
    on 2 workers: one helper). Never more than the cluster's CPUs, where a waiting helper would hold its pages."""
    spare = max(0, min(workers, cpus) - partitions)
    return [spare // partitions + (p < spare % partitions) for p in range(partitions)]


def _cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else 1


def _log_refused(ctx, src, state: CrawlState, refused: list[dict]) -> None:
    rows = [{**r, "source_name": src.name} for r in refused]
    rel = f"log/{src.name}-r{state.round:03d}-plan.parquet"
    state.shards["log"].append(vars(write_parquet(table_of(rows, LOG_SCHEMA), ctx.out_dir, rel)))
    state.counts = Stats(state.counts).add(Stats.total({r["fate"]: 1} for r in refused))


def run_seeds(ctx, idx: int, src) -> tuple[dict[str, list[ShardInfo]], dict]:
    """Crawl one seeds source round by round; return its shards in round order and its counts by fate."""
    cfg, partial = ctx.cfg, ctx.partial_dir / src.name
    ckpt = partial / "state.json"
    state = CrawlState(**read_json(ckpt)) if ckpt.exists() else CrawlState(candidates=[[s, ""] for s in src.seeds])
    scope = Scope.of(src, [normalize_url(s)[0] or s for s in src.seeds])
    while state.candidates:
        plan, refused = plan_round(state, scope, cfg.partitions)
        if refused:
            _log_refused(ctx, src, state, refused)
        helpers = helpers_for(ctx.workers, _cluster_cpus(), len(plan)) if plan else []
        items = [(src, cfg, state.round, p, urls, str(ctx.out_dir), str(partial), _ready_for(state, urls), h,
                  os.environ.get(FAULT_ENV, "")) for (p, urls), h in zip(plan.items(), helpers)]
        urls = sum(len(u) for u in plan.values())
        ctx.log(f"{src.name}: round {state.round}: {urls} URLs in {len(items)} partition(s)"
                + (f", {sum(helpers)} helper task(s)" if sum(helpers) else ""))
        results = ctx.map(crawl_partition, items, rows_of=lambda r: r["shards"]["docs"][0]["rows"]) if items else []
        for res in results:
            for k, infos in res["shards"].items():
                state.shards[k].extend(infos)
        advance(state, results)
        write_json(ckpt, state.to_dict())
        fault_point("crawl.round", state.round - 1)  # test hook: after the round is checkpointed
    return {k: [ShardInfo(**d) for d in v] for k, v in state.shards.items()}, state.counts
