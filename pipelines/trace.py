"""`zhgpt trace`: follow a document from its URL to the token rows a model trained on, and a row back to its pages.

It reads only the per-stage lookup indexes (`_index/by_id/`, `_index/by_url/`: one file of each per lookup, see
index.py) and the single row groups that hold the matching rows; never the corpus. The stage directories come from
the MLflow parent run (the latest finished one of the pipeline, or `--run RUN_ID`): its children's
`zhgpt.stage_dir` tags. When those are URLs (a work_dir in object storage), the run's stage outputs are first
fetched into the scratch mirror.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipelines.dataset import StageData, read_manifest
from pipelines.index import find, url_hash
from pipelines.storage import Store, is_url

# What it means for a document to appear in a stage's output, by output name.
FATE = {"docs": "kept", "rejects": "rejected", "duplicates": "removed as duplicate", "log": "logged",
        "rows": "packed into token rows"}
FIRST_STAGE_FATE = {"docs": "fetched"}  # a document in the first stage's docs was fetched / read, not "kept"
SKIP_COLUMNS = {"text", "html"}


class TraceError(LookupError):
    """Nothing to trace (unknown URL / id / row, or no finished run): one line, exit 1."""


def run_stage_dirs(client: Any, experiment: str, run_id: str | None) -> tuple[str, dict[str, tuple[str, str]]]:
    """(parent run id, {stage: (dir tag, child run id)}) of a pipeline run: the tags as written, see rebase()."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise TraceError(f"no MLflow experiment {experiment!r}: run the pipeline first")
    if run_id is None:
        finished = "tags.`zhgpt.kind` = 'pipeline' and attributes.status = 'FINISHED'"
        runs = client.search_runs([exp.experiment_id], finished, order_by=["attributes.start_time DESC"],
                                  max_results=1)
        if not runs:
            raise TraceError(f"pipeline {experiment!r} has no finished run yet")
        run_id = runs[0].info.run_id
    kids = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    if not kids:
        raise TraceError(f"MLflow run {run_id} has no stage runs (is it a zhgpt pipeline run?)")
    return run_id, {k.data.tags["zhgpt.stage"]: (k.data.tags["zhgpt.stage_dir"], k.info.run_id) for k in kids
                    if "zhgpt.stage_dir" in k.data.tags}


def recorded_stage_dirs(local: Path, run: str | None = None) -> tuple[str, dict[str, tuple[Any, str]]] | None:
    """(pipeline run, {stage: (dir, MLflow run that made the output)}) from the work_dir's run records (see
    pipelines/runs.py), without MLflow: the latest finished run, or `run` given as its number (`15`, `#15`).
    None when `run` is not a number, or no record exists (a work_dir from before the records)."""
    from pipelines.runs import abs_dir, all_runs, latest

    if run is None:
        rec = latest(local)
    elif run.lstrip("#").isdigit():
        rec = next((r for r in all_runs(local) if r.get("number") == int(run.lstrip("#"))), None)
        if rec is None:
            raise TraceError(f"--run {run}: no run #{run.lstrip('#')} in {local}")
    else:
        return None
    if rec is None:
        return None
    stages = {n: (abs_dir(local, s["dir"]), s.get("producer_run_id") or "") for n, s in rec["stages"].items()}
    return rec.get("mlflow_run_id") or rec["name"], stages


def rebase(stages: dict[str, tuple[str, str]], local: Path) -> dict[str, tuple[Any, str]]:
    """Stage dirs from MLflow tags, in this work_dir: relative tags joined to it, another copy's absolute ones
    rebased (a moved or copied work_dir never reads the other copy's files)."""
    from pipelines.runs import abs_dir

    return {n: (abs_dir(local, d), r) for n, (d, r) in stages.items()}


def localise(stages: dict[str, tuple[Any, str]], local: Path, options: dict) -> dict[str, tuple[Path, str]]:
    """Stage dirs that are URLs (`<root>/<stage>/<key16>`) become their scratch-mirror copies, fetched and checked."""
    out = {}
    for name, (d, run_id) in stages.items():
        if is_url(d):
            root, stage, key16 = str(d).rsplit("/", 2)
            store = Store(root, local, options)
            m = store.read_manifest(stage, key16)
            if m is None:
                raise TraceError(f"{d}: no manifest in the store (was the run's work_dir removed?)")
            d = store.fetch(stage, key16, m)
        out[name] = (d, run_id)
    return out


def read_row(path: Path, row: int) -> dict[str, Any]:
    """One row of a Parquet shard, reading only the row group that holds it (text columns left out)."""
    with open(path, "rb") as fh:  # Python's open(): audit hooks see every file a trace reads
        f = pq.ParquetFile(fh)
        start = 0
        for g in range(f.num_row_groups):
            n = f.metadata.row_group(g).num_rows
            if row < start + n:
                cols = [c for c in f.schema_arrow.names if c not in SKIP_COLUMNS]
                return f.read_row_group(g, columns=cols).slice(row - start, 1).to_pylist()[0]
            start += n
    raise TraceError(f"{path}: no row {row}")


def _records(data: StageData, hits: list[dict]) -> list[dict[str, Any]]:
    out = []
    for h in hits:
        shard = data.manifest.outputs[h["output"]].shards[h["shard"]]
        rec = read_row(data.dir / shard.path, h["row"])
        out.append({**rec, "output": h["output"], "file": shard.path, "file_row": h["row"]})
    return out


def _open(stages: dict[str, tuple[Path, str]]) -> dict[str, StageData]:
    """The stages that are complete and indexed (a failed stage has no manifest; a model-only stage no index)."""
    found = {name: (d, read_manifest(d)) for name, (d, _) in stages.items()}
    return {name: StageData(d, m) for name, (d, m) in found.items() if m is not None and "_index" in m.outputs}


def source_id_docs(stages: dict[str, tuple[Path, str]], order: list[str], source_id: str) -> list[str]:
    """Ids of the documents whose `source_id` (a files source's own record id) is `source_id`, from the first
    stage's documents: the one lookup without an index. Only the `source_id` and `id` columns are read, and row
    groups whose statistics leave the value out are skipped (ids in a dump's order make that most of them)."""
    first = next((n for n in order if n in stages), None)
    if first is None:
        return []
    ids: list[str] = []
    for p in StageData.open(stages[first][0]).paths():
        with open(p, "rb") as fh:  # Python's open(): audit hooks see every file a trace reads
            if "source_id" not in pq.read_schema(fh).names:
                continue
            fh.seek(0)
            t = pq.read_table(fh, columns=["id"], filters=[("source_id", "=", source_id)])
        ids += [i for i in t.column("id").to_pylist() if i not in ids]
    return ids


def trace_docs(stages: dict[str, tuple[Path, str]], order: list[str], url: str | None = None,
               doc: str | None = None, source_id: str | None = None) -> dict[str, Any]:
    data = _open(stages)
    ids: list[str] = [doc] if doc else source_id_docs(stages, order, source_id) if source_id is not None else []
    url_only: dict[str, list] = {}
    if url:
        for name in order:
            if name not in data:
                continue
            hits = [h for h in find(data[name], "by_url", url_hash(url)).to_pylist() if h["url"] == url]
            for h in hits:
                if h["id"] and h["id"] not in ids:
                    ids.append(h["id"])
            no_id = [h for h in hits if not h["id"]]
            if no_id:
                url_only[name] = _records(data[name], no_id)
    documents = []
    for i in ids:
        per_stage = {}
        for k, name in enumerate(order):
            if name not in data:
                continue
            hits = find(data[name], "by_id", i).to_pylist()
            fates = {**FATE, **(FIRST_STAGE_FATE if k == 0 else {})}
            per_stage[name] = {"run_id": stages[name][1], "fate": "absent" if not hits else
                               fates.get(hits[0]["output"], hits[0]["output"]), "records": _records(data[name], hits)}
        if any(s["records"] for s in per_stage.values()):
            documents.append({"id": i, "stages": per_stage})
    if not documents and not url_only:
        what = f"url {url}" if url else f"source id {source_id}" if source_id is not None else f"document {doc}"
        raise TraceError(f"{what} was never seen by this pipeline run")
    query = {"url": url, "doc": doc, **({"source_id": source_id} if source_id is not None else {})}
    return {"query": query, "documents": documents, "url_records": url_only}


def parse_row(spec: str) -> tuple[str, int, int]:
    try:
        split, shard, row = spec.split(":")
        return split, int(shard), int(row)
    except ValueError:
        raise TraceError(f"--row {spec!r}: expected SPLIT:SHARD:ROW, e.g. train:0:12") from None


def trace_row(stages: dict[str, tuple[Path, str]], spec: str) -> dict[str, Any]:
    """The documents packed in one training row, their spans, and the row's decoded text."""
    split, shard, row = parse_row(spec)
    if "tokenize" not in stages:
        raise TraceError("this run has no tokenize stage")
    tok = StageData.open(stages["tokenize"][0])
    if split not in tok.manifest.outputs or shard >= len(tok.manifest.outputs[split].shards):
        raise TraceError(f"--row {spec}: tokenize has no {split} shard {shard}")
    arrow = tok.dir / tok.manifest.outputs[split].shards[shard].path
    name = f"{split}-{shard:05d}"
    sidecar = next((s for s in tok.manifest.outputs["rows"].shards if Path(s.path).stem == name), None)
    if sidecar is None:
        raise TraceError(f"--row {spec}: no lineage sidecar for {split} shard {shard}")
    with open(tok.dir / sidecar.path, "rb") as fh:
        segs = pq.read_table(fh, filters=[("row", "=", row)]).to_pylist()
    if not segs:
        raise TraceError(f"--row {spec}: {split} shard {shard} has no row {row}")
    tokens = _row_tokens(arrow, row)
    sp = _processor(stages)
    docs = [{"id": s["id"], "url": s["url"], "source_name": s["source_name"], "start": s["start"],
             "length": s["length"], "doc_offset": s["doc_offset"],
             "text": sp.decode(tokens[s["start"]:s["start"] + s["length"]]) if sp else None} for s in segs]
    return {"query": {"row": spec}, "run_id": stages["tokenize"][1], "shard": str(arrow), "tokens": len(tokens),
            "documents": docs, "text": sp.decode(tokens) if sp else None}


def _row_tokens(path: Path, row: int) -> list[int]:
    import pyarrow as pa

    sys.audit("open", str(path), "rb", 0)  # memory-mapped: only the pages of this row are read from disk
    with pa.memory_map(str(path)) as src:
        reader = pa.ipc.open_file(src)
        for b in range(reader.num_record_batches):
            batch = reader.get_batch(b)
            if row < batch.num_rows:
                return [int(x) for x in batch.column("tokens")[row].values.to_pylist()]
            row -= batch.num_rows
    raise TraceError(f"{path}: no such row")


def _processor(stages: dict[str, tuple[Path, str]]):
    if "tokenizer" not in stages:
        return None
    import sentencepiece as spm

    data = StageData.open(stages["tokenizer"][0])
    model = next(p for p in data.paths("model") if p.suffix == ".model")
    return spm.SentencePieceProcessor(model_file=str(model))


def _brief(rec: dict[str, Any]) -> str:
    keep = {k: v for k, v in rec.items() if k not in ("output", "file", "file_row", "id", "url", "title")
            and v not in (None, "")}
    return ", ".join(f"{k}={v}" for k, v in list(keep.items())[:8])


def render(out: dict[str, Any]) -> str:
    """Human-readable form of a trace (the JSON form carries every field)."""
    lines = [f"pipeline run {out['pipeline_run_id']}"]
    if "row" in out["query"]:
        lines.append(f"row {out['query']['row']} ({out['tokens']} tokens) in {out['shard']}")
        for d in out["documents"]:
            lines.append(f"  tokens [{d['start']}, {d['start'] + d['length']}) <- {d['url']} (id {d['id']}, "
                         f"{d['source_name']}, from token {d['doc_offset']} of the document)")
        if out.get("text") is not None:
            lines += ["--- decoded row ---", out["text"]]
        return "\n".join(lines)
    for d in out["documents"]:
        lines.append(f"document {d['id']}")
        for stage, s in d["stages"].items():
            lines.append(f"  {stage:<10} {s['fate']:<22} (MLflow run {s['run_id']})")
            for r in s["records"]:
                lines.append(f"      {r['file']}#{r['file_row']}: {_brief(r)}")
    for stage, recs in out.get("url_records", {}).items():
        for r in recs:
            lines.append(f"{stage}: {r['file']}#{r['file_row']}: {_brief(r)}")
    return "\n".join(lines)
