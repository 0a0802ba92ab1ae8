"""Benchmark: seconds per query of the model (embedding + ranking) against the classical
baselines (Qmax, DTW) on the test split; writes reports/bench/compare.json.

By default it reads reports/compare.json (written by the evaluate stage); with --recompute,
or when that file is missing, it times both sides itself from data/processed and
data/models/encoder (the baselines on --queries queries, in this process).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from coverid.core import paths
from coverid.core.config import load_params
from coverid.core.errors import CoveridError
from coverid.core.io import write_json

OUT = Path("reports/bench/compare.json")


def from_reports() -> dict[str, dict[str, Any]]:
    """The rows of reports/compare.json (with n_candidates from reports/metrics.json)."""
    rows = json.loads((paths.REPORTS / "compare.json").read_text())
    metrics = paths.REPORTS / "metrics.json"
    if metrics.exists():
        rows["model"]["n_candidates"] = json.loads(metrics.read_text()).get("n_candidates")
    return rows


def recompute(params: dict[str, Any], n_queries: int, methods: list[str]) -> dict[str, Any]:
    """Time the model and the baselines on the test split of the processed features."""
    from coverid.data.splits import load_split
    from coverid.eval.baselines import distance_rows, select_queries, to_chroma
    from coverid.eval.metrics import query_stats_from_embeddings, summarize
    from coverid.model.embedder import load_embedder

    test = load_split(params, "test")
    embedder = load_embedder(paths.MODEL_DIR)
    cfg = params["evaluate"]
    embedder.embed(test.features[:1])  # build the inference function outside the timing
    t0 = time.perf_counter()
    emb = embedder.embed(test.features, batch_size=int(cfg["batch_size"]))
    embed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = query_stats_from_embeddings(emb, test.work_id, embedder.metric, embedder.head,
                                        chunk_size=int(cfg["chunk_size"]))
    rank_s = time.perf_counter() - t0
    model = summarize(stats, len(emb) - 1)
    rows = {"model": {**model, "seconds_per_query":
                      embed_s / len(emb) + rank_s / max(1, model["n_queries"])}}
    bcfg = params["baseline"]
    chroma = to_chroma(test.features, int(bcfg["downsample"]))
    queries = select_queries(test.work_id, n_queries, int(params["seed"]))
    for method in methods:
        _, secs = distance_rows(method, chroma, queries, bcfg, workers=1)
        rows[method] = {"n_queries": len(queries), "seconds_per_query": float(secs.mean())}
    return rows


def main() -> None:
    """Print and record seconds per query and the model's speed-up over each baseline."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--recompute", action="store_true", help="time everything here")
    ap.add_argument("--queries", type=int, default=5, help="baseline queries when recomputing")
    args = ap.parse_args()
    params = load_params()
    methods = list(params["baseline"]["methods"])
    have = (paths.REPORTS / "compare.json").exists()
    try:
        rows = recompute(params, args.queries, methods) if args.recompute or not have \
            else from_reports()
    except CoveridError as e:
        # Nothing to time before the pipeline has run once: say so without failing `make bench`.
        print(f"bench_compare skipped: {e} (run the pipeline first)")
        return
    model_s = rows["model"]["seconds_per_query"]
    out: dict[str, Any] = {"source": "recomputed" if args.recompute or not have
                           else "reports/compare.json",
                           "n_candidates": rows["model"].get("n_candidates"),
                           "model_seconds_per_query": model_s}
    for method in methods:
        if method in rows and rows[method].get("seconds_per_query"):
            s = rows[method]["seconds_per_query"]
            out[f"{method}_seconds_per_query"] = s
            out[f"speedup_vs_{method}"] = s / model_s if model_s else None
    for k, v in out.items():
        print(f"{k:>26}: {v}")
    write_json(OUT, out)


if __name__ == "__main__":
    main()
