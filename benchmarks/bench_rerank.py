"""Benchmark: the pipeline model's top K answers re-ranked with Qmax (two-stage retrieval).

The model ranks each song's collection (its split) as the evaluate stage does (query expansion
picked on val). Essentia's Qmax (coverid.eval.baselines.Qmax, baseline.qmax's settings, or
--downsample / --stack in place of baseline.downsample / frame_stack_size) then scores the
query against each of its K nearest songs, and those K are re-ordered by
z(model distance) + lambda z(Qmax distance), both standardised over the K; the rest keep the
model's order. K and lambda are picked on val; the hold-out is never used to choose. Times
are one process: the model's embedding per song plus the ranking, and Qmax's K pairs per query,
against the baseline stage's Qmax per hold-out query (reports/timings/baseline.json). Writes
reports/bench/rerank.json (--out).

    .venv/bin/python benchmarks/bench_rerank.py [--k 5 10 20] [--lambdas 0.25 0.5 1 2]
        [--downsample 8] [--stack 5]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from coverid.core import paths  # noqa: E402
from coverid.core.config import load_params  # noqa: E402
from coverid.core.io import read_json, write_json  # noqa: E402

OUT = Path("reports/bench/rerank.json")
SPLITS = ("val", "test", "holdout")


def top_k(emb: np.ndarray, qe: dict, k: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """The model's distances (N, N; own song at 0) and each song's k nearest others (N, k)."""
    from coverid.eval.distance import pairwise
    from coverid.eval.expansion import augment

    e = augment(emb, qe["k"], qe["alpha"], chunk) if qe["k"] else emb
    d = pairwise(e, e)
    np.fill_diagonal(d, np.inf)
    top = np.argsort(d, axis=1, kind="stable")[:, :k]
    np.fill_diagonal(d, 0.0)
    return d, top


def qmax_rows(chroma: np.ndarray, top: np.ndarray, cfg: dict, aligner: str) -> tuple[np.ndarray, float]:
    """Qmax distance of each song to its candidates (N, k) and the mean seconds per song:
    essentia's, one pair at a time, or coverid.eval.align's on a song's k pairs at once."""
    from tqdm import tqdm

    from coverid.eval.align import qmax_distances
    from coverid.eval.baselines import Qmax

    qmax = Qmax(cfg) if aligner == "essentia" else None
    out = np.zeros(top.shape)
    t0 = time.perf_counter()
    for i in tqdm(range(len(top)), desc=f"qmax ({aligner})", unit="query"):
        if aligner == "numpy":
            out[i] = qmax_distances(np.repeat(chroma[i:i + 1], top.shape[1], 0), chroma[top[i]], cfg)
        else:
            out[i] = [qmax(chroma[i], chroma[j]) for j in top[i]]
    secs = (time.perf_counter() - t0) / len(top)
    return np.nan_to_num(out, nan=np.inf, posinf=np.inf), secs


def zscore(x: np.ndarray) -> np.ndarray:
    """Standardised over the last axis (finite values; an unaligned pair sorts last)."""
    x = np.where(np.isfinite(x), x, np.nan)
    z = (x - np.nanmean(x, -1, keepdims=True)) / (np.nanstd(x, -1, keepdims=True) + 1e-9)
    return np.nan_to_num(z, nan=np.inf)


def reranked(d: np.ndarray, top: np.ndarray, qd: np.ndarray, k: int, lam: float) -> np.ndarray:
    """d with each row's top k re-ordered by z(model) + lam z(Qmax), still ahead of the rest."""
    out = d.copy()
    rows = np.arange(len(d))[:, None]
    t = top[:, :k]
    score = zscore(d[rows, t]) + lam * zscore(qd[:, :k])
    order = np.argsort(score, axis=1, kind="stable")
    # Distances below every other (>= 0) keep the re-ordered K in front, in their new order.
    out[rows, np.take_along_axis(t, order, 1)] = -1.0 + np.arange(k) / k
    return out


def scores(d: np.ndarray, work_id: np.ndarray, queries: np.ndarray | None) -> dict[str, float]:
    """MAP (and its s.e. over works), MR1 and P@10 of distance rows, on `queries` or all."""
    from coverid.eval.metrics import query_stats, stats_map_se, summarize

    rows = d if queries is None else d[queries]
    st = query_stats(rows, work_id, query_idx=queries)  # each row's own song is left out
    m = summarize(st, len(d) - 1)
    return {"map": round(m["map"], 4), "map_se": round(stats_map_se(st, work_id), 4),
            "mr1": round(m["mr1"], 2), "p10": round(m["p10"], 4), "n_queries": int(m["n_queries"])}


def main() -> None:
    """Embed, rank, Qmax the top K, pick K and lambda on val, score test and hold-out."""
    from coverid.data.splits import HOLDOUT, load_dataset, split_mask
    from coverid.eval.baselines import to_chroma
    from coverid.eval.evaluate import baseline_queries
    from coverid.eval.expansion import select_expansion
    from coverid.model.embedder import load_embedder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=paths.MODEL_DIR)
    ap.add_argument("--k", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    ap.add_argument("--downsample", type=int, default=None, help="in place of baseline.downsample")
    ap.add_argument("--stack", type=int, default=None, help="in place of baseline.qmax.frame_stack_size")
    ap.add_argument("--aligner", choices=("essentia", "numpy"), default="essentia",
                    help="numpy: Qmax vectorised over a query's K candidates (fast_qmax)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    params = load_params()
    chunk = int(params["evaluate"]["chunk_size"])
    ds = args.downsample or int(params["baseline"]["downsample"])
    qcfg = {**params["baseline"]["qmax"].to_dict(),
            "frame_stack_size": args.stack or int(params["baseline"]["qmax"]["frame_stack_size"])}
    fs, splits = load_dataset(params)
    sets = {n: fs.take(split_mask(fs.work_id, splits, n)) for n in SPLITS}
    model = load_embedder(args.model)
    t0 = time.perf_counter()
    emb = {n: model.embed(s.features) for n, s in sets.items()}
    embed_s = (time.perf_counter() - t0) / sum(len(s) for s in sets.values())
    qe = select_expansion(emb["val"], sets["val"].work_id, model.metric, model.head,
                          params["tune"]["expansion"], chunk)
    kmax = max(args.k)
    ranked, qmax_s = {}, {}
    for n in SPLITS:
        t0 = time.perf_counter()
        d, top = top_k(emb[n], qe, kmax, chunk)
        rank_s = (time.perf_counter() - t0) / len(d)
        qd, qmax_s[n] = qmax_rows(to_chroma(sets[n].features, ds), top, qcfg, args.aligner)
        ranked[n] = (d, top, qd, rank_s)
    base = {"test": read_json(paths.REPORTS / "baseline.json", "baseline report"),
            HOLDOUT: read_json(paths.REPORTS / "baseline_holdout.json", "baseline report")}
    timings = read_json(paths.REPORTS / "timings" / "baseline.json", "baseline timings")
    queries = {n: baseline_queries(params, sets[n].work_id, base[n]) for n in base}
    runs: list[dict[str, Any]] = []
    for k in [0, *args.k]:
        for lam in ([0.0] if k == 0 else args.lambdas):
            row: dict[str, Any] = {"k": k, "lambda": lam}
            for n, (d, top, qd, rank_s) in ranked.items():
                dd = d if k == 0 else reranked(d, top, qd, k, lam)
                row[n] = scores(dd, sets[n].work_id, None)
                if n in queries:
                    row[f"{n}_baseline_queries"] = scores(dd, sets[n].work_id, queries[n])
                row[f"{n}_seconds_per_query"] = round(embed_s + rank_s + qmax_s[n] * k / kmax, 5)
            runs.append(row)
            print(f"K={k} lambda={lam}: val {row['val']['map']} | test (Qmax's queries) "
                  f"{row['test_baseline_queries']['map']} | hold-out {row[HOLDOUT]['map']}, Qmax's "
                  f"queries {row['holdout_baseline_queries']['map']} | {row['holdout_seconds_per_query']} s",
                  flush=True)
    best = max(runs, key=lambda r: r["val"]["map"])
    hold_qmax = base[HOLDOUT]["qmax"]["map"]
    write_json(args.out, {
        "model": str(args.model), "expansion": {"k": qe["k"], "alpha": qe["alpha"]},
        "downsample": ds, "qmax": qcfg, "aligner": args.aligner,
        "qmax_pair_seconds": round(qmax_s[HOLDOUT] / kmax, 5),
        "qmax_full_query_seconds": {"test": timings["qmax_seconds_per_query"],
                                    HOLDOUT: timings["holdout_qmax_seconds_per_query"]},
        "baseline_map": {n: b["qmax"]["map"] for n, b in base.items()},
        "picked_on_val": {"k": best["k"], "lambda": best["lambda"],
                          "holdout_x_qmax": round(best["holdout_baseline_queries"]["map"] / hold_qmax, 3),
                          "holdout_speedup_vs_qmax": round(timings["holdout_qmax_seconds_per_query"]
                                                           / best["holdout_seconds_per_query"], 1)},
        "runs": runs})


if __name__ == "__main__":
    main()
