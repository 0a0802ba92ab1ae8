"""Query expansion for retrieval: alpha-weighted database-side augmentation (DBA) and query
expansion (alpha-QE) of Radenović, Tolias and Chum (2018), pure numpy.

A version of a work is often closer to another version than to the query itself, so
adding a song's nearest neighbours to its embedding pulls the other versions up the ranking.
Every vector becomes unit(x + sum_n max(cos(x, x_n), 0)^alpha x_n) over its k nearest
neighbours (by cosine, itself excluded); k = 0 leaves the vectors unit-normalised and
nothing else. Ranking expanded vectors by euclidean distance is ranking them by cosine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from coverid.core.errors import CoveridError
from coverid.eval.metrics import retrieval_metrics_from_embeddings


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest(queries: np.ndarray, collection: np.ndarray, k: int,
            chunk_size: int, exclude: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosines), both (Q, k): each query's k most similar collection rows, best
    first; `exclude[i]` (a collection index, -1 for none) is never returned for query i."""
    q, c = unit(queries), unit(collection)
    k = min(int(k), len(c) - (exclude is not None))
    idx = np.zeros((len(q), max(k, 0)), dtype=np.int64)
    sims = np.zeros((len(q), max(k, 0)), dtype=np.float32)
    if k <= 0:
        return idx, sims
    for start in range(0, len(q), chunk_size):
        s = q[start:start + chunk_size] @ c.T
        if exclude is not None:
            rows = np.arange(len(s))
            own = np.asarray(exclude[start:start + chunk_size])
            s[rows[own >= 0], own[own >= 0]] = -np.inf
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable")
        idx[start:start + len(s)] = np.take_along_axis(top, order, axis=1)
        sims[start:start + len(s)] = np.take_along_axis(s, idx[start:start + len(s)], axis=1)
    return idx, sims


def expand(queries: np.ndarray, neighbours: np.ndarray, sims: np.ndarray,
           alpha: float) -> np.ndarray:
    """unit(q + sum_n max(sim_n, 0)^alpha unit(c_n)) for queries (Q, D), their neighbours'
    vectors (Q, k, D) and cosines (Q, k)."""
    q = unit(queries)
    if neighbours.shape[1] == 0:
        return q
    c = unit(neighbours.reshape(-1, q.shape[1])).reshape(neighbours.shape)
    w = np.maximum(np.asarray(sims, dtype=np.float32), 0.0) ** float(alpha)
    return unit(q + np.einsum("qk,qkd->qd", w, c))


def augment(emb: np.ndarray, k: int, alpha: float, chunk_size: int) -> np.ndarray:
    """Database-side augmentation: every row expanded with its k nearest other rows."""
    own = np.arange(len(emb))
    idx, sims = nearest(emb, emb, k, chunk_size, exclude=own)
    return expand(emb, np.asarray(emb)[idx], sims, alpha)


NO_EXPANSION = {"k": 0, "alpha": 0.0}  # the plain ranking


def expansion_of(record: dict[str, Any] | None) -> dict[str, Any]:
    """The "expansion" entry of a threshold report or index sidecar; NO_EXPANSION where it has none."""
    return {**NO_EXPANSION, **((record or {}).get("expansion") or {})}


def check_expansion(cfg: dict[str, Any], metric: str) -> tuple[int, float]:
    """(k, alpha) from an expansion setting, checked against the model's distance."""
    k, alpha = int(cfg["k"]), float(cfg["alpha"])
    if k < 0 or alpha < 0:
        raise CoveridError(f"query expansion needs k >= 0 and alpha >= 0, got k={k}, alpha={alpha}")
    if k and metric not in ("euclidean", "cosine"):
        raise CoveridError(f"query expansion works on embedding distances, not {metric!r}")
    return k, alpha


def select_expansion(emb: np.ndarray, work_id: np.ndarray, metric: str,
                     head: tuple[np.ndarray, float] | None, grid: dict[str, list],
                     chunk_size: int) -> dict[str, Any]:
    """The (k, alpha) of `grid` with the best retrieval MAP on (validation) embeddings;
    ties go to the smaller k, then the smaller alpha. k = 0 is the plain ranking."""
    plain = retrieval_metrics_from_embeddings(emb, work_id, metric, head, chunk_size=chunk_size)["map"]
    best = {"k": 0, "alpha": 0.0, "map": plain}
    if metric in ("euclidean", "cosine"):
        for k in sorted(int(v) for v in grid["k"] if int(v) > 0):
            for alpha in sorted(float(v) for v in grid["alpha"]):
                check_expansion({"k": k, "alpha": alpha}, metric)
                m = retrieval_metrics_from_embeddings(augment(emb, k, alpha, chunk_size), work_id,
                                                      chunk_size=chunk_size)["map"]
                if m > best["map"]:
                    best = {"k": k, "alpha": alpha, "map": m}
    return {"k": best["k"], "alpha": best["alpha"], "val_map": float(best["map"]),
            "val_map_plain": float(plain)}
