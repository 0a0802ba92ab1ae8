"""Benchmark: what query expansion (database-side augmentation + alpha-QE, coverid.eval.expansion)
adds to the model, and what the same expansion adds to Qmax, on the test split.

Qmax gives distances, not vectors, so it is expanded in similarity space, which is exactly
what expanding unit vectors does to their cosine matrix S: with A = I + W (W[i, j] = 1 for
the k nearest j of i, alpha = 0), S' = A S A^T, normalised by sqrt(S'[q, q] S'[x, x]). Qmax's
similarity is 1 - d / max(d) (0 without any alignment), symmetrised. The model is measured both with the tuned setting
(reports/threshold.json) and with this alpha = 0 form. Needs Qmax on every test song
(a few minutes); writes reports/bench/expansion.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from coverid.core import paths
from coverid.core.config import load_params
from coverid.core.io import write_json
from coverid.eval.expansion import expansion_of

OUT = Path("reports/bench/expansion.json")


def expand_similarity(s: np.ndarray, k: int) -> np.ndarray:
    """Cosine-normalised A S A^T for a similarity matrix with its k nearest neighbours."""
    s = (s + s.T) / 2
    off = s.copy()
    np.fill_diagonal(off, -np.inf)
    nn = np.argsort(-off, axis=1, kind="stable")[:, :k]
    a = np.eye(len(s))
    np.put_along_axis(a, nn, 1.0, axis=1)
    t = a @ s @ a.T
    d = np.sqrt(np.maximum(np.diag(t), 1e-12))
    return t / d[:, None] / d[None, :]


def scores(dist: np.ndarray, work_id: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    """MAP on all queries and on the baseline's queries, from a full distance matrix."""
    from coverid.eval.metrics import query_stats

    every = query_stats(dist, work_id)
    sub = np.isin(every["query"], queries)
    return {"map": float(every["ap"].mean()), "map_baseline_queries": float(every["ap"][sub].mean()),
            "mr1": float(every["rank1"].mean())}


def main() -> None:
    """Print and record MAP with and without expansion for the model and for Qmax."""
    from coverid.data.splits import load_split
    from coverid.eval.baselines import distance_rows, select_queries, to_chroma
    from coverid.eval.distance import pairwise
    from coverid.eval.expansion import augment
    from coverid.model.embedder import load_embedder

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--k", type=int, default=None, help="neighbours (default: the tuned k)")
    args = ap.parse_args()
    params = load_params()
    tuned = expansion_of(json.loads((paths.REPORTS / "threshold.json").read_text()))
    k = args.k if args.k is not None else int(tuned["k"]) or 2
    alpha = float(tuned["alpha"])
    test = load_split(params, "test")
    queries = select_queries(test.work_id, params["baseline"]["max_queries"], int(params["seed"]))
    emb = load_embedder(paths.MODEL_DIR).embed(test.features)
    cos = 1.0 - pairwise(emb, emb, "cosine")
    aug = augment(emb, k, alpha, int(params["evaluate"]["chunk_size"]))
    rows: dict[str, Any] = {
        "k": k, "alpha": alpha,
        "model": scores(pairwise(emb, emb, "cosine"), test.work_id, queries),
        f"model, expanded (alpha {alpha:g})": scores(pairwise(aug, aug), test.work_id, queries),
        "model, expanded (alpha 0, similarity form)":
            scores(1.0 - expand_similarity(cos, k), test.work_id, queries),
    }
    bcfg = params["baseline"]
    chroma = to_chroma(test.features, int(bcfg["downsample"]))
    d, _ = distance_rows("qmax", chroma, np.arange(len(chroma)), bcfg, int(bcfg["workers"]))
    rows["qmax"] = scores(d, test.work_id, queries)
    far = d >= np.finfo(np.float64).max  # no alignment at all: least similar
    s = np.where(far, 0.0, 1.0 - d / d[~far].max())
    rows["qmax, expanded (alpha 0, similarity form)"] = scores(1.0 - expand_similarity(s, k),
                                                                test.work_id, queries)
    for name, r in rows.items():
        if isinstance(r, dict):
            print(f"{name:45s} MAP {r['map']:.4f}  on the baseline's queries "
                  f"{r['map_baseline_queries']:.4f}  MR1 {r['mr1']:.2f}")
    write_json(OUT, rows)


if __name__ == "__main__":
    main()
