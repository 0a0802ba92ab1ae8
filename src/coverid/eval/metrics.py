"""Retrieval (MAP, MR1, P@10) and verification metrics, pure numpy (SPEC.md sections 4-5).

Retrieval: each query row of a distance matrix ranks all other performances (itself
excluded) by distance, ties broken by candidate index (a stable sort). Only the ranks of
the relevant candidates matter, so instead of arg-sorting every row we sort its values once
and find each relevant item's rank with a binary search, resolving exact ties by index.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from coverid.eval.distance import pairwise

TOP_K = 10
BOOTSTRAPS = 2000  # resamples for a standard error: enough for two significant digits
BOOTSTRAP_SEED = 0  # fixed resampling: the same ranking always reports the same error


# --------------------------------------------------------------------------- retrieval

def _codes(work_id: np.ndarray) -> np.ndarray:
    """Integer codes of the work ids (same work -> same code)."""
    return np.unique(np.asarray(work_id), return_inverse=True)[1].ravel()


def _relevant_ranks(d: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """1-based ranks (sorted) of candidates `cols` in row `d` under the stable order.

    `d` holds +inf at the query's own column, so the query sorts after every candidate.
    """
    vals = d[cols]
    srt = np.sort(d)
    less = np.searchsorted(srt, vals, side="left")
    ties = np.searchsorted(srt, vals, side="right") - less
    if np.any(ties > 1):
        # Equal distances: candidates with a smaller index rank first.
        n = len(d)
        before = (d[None, :] == vals[:, None]) & (np.arange(n)[None, :] < cols[:, None])
        less = less + before.sum(1)
    return np.sort(less + 1)


def _row_stats(d: np.ndarray, cols: np.ndarray, k: int = TOP_K) -> tuple[float, int, float]:
    """(AP, rank of the first relevant item, precision@k) for one query row."""
    ranks = _relevant_ranks(d, cols)
    ap = float(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    return ap, int(ranks[0]), float(np.count_nonzero(ranks <= k)) / k


def _check_rows(dist: np.ndarray, query_idx: np.ndarray, n: int) -> None:
    """Validate a block of distance rows against the number of performances."""
    if dist.ndim != 2 or dist.shape[1] != n:
        raise ValueError(f"distance rows must be (Q, {n}), got {dist.shape}")
    if len(query_idx) != len(dist):
        raise ValueError(f"{len(dist)} distance rows but {len(query_idx)} query indices")


def _block_stats(dist: np.ndarray, query_idx: np.ndarray, codes: np.ndarray,
                 k: int = TOP_K) -> dict[str, np.ndarray]:
    """Per-query stats for rows `dist` (Q, N) whose own columns are `query_idx`.

    Rows without a relevant candidate are left out (noise songs are never queries).
    """
    n = len(codes)
    _check_rows(dist, query_idx, n)
    d = np.array(dist, copy=True)
    rows = np.arange(len(d))
    d[rows, query_idx] = np.inf
    finite = np.isfinite(d)
    finite[rows, query_idx] = True
    if not finite.all():
        raise ValueError("distances must be finite (found NaN or inf)")
    rel = codes[None, :] == codes[query_idx][:, None]
    rel[rows, query_idx] = False
    out: dict[str, list] = {"query": [], "ap": [], "rank1": [], "p10": [], "n_relevant": []}
    for r in np.flatnonzero(rel.any(1)):
        cols = np.flatnonzero(rel[r])
        ap, rank1, pk = _row_stats(d[r], cols, k)
        out["query"].append(int(query_idx[r]))
        out["ap"].append(ap)
        out["rank1"].append(rank1)
        out["p10"].append(pk)
        out["n_relevant"].append(len(cols))
    return {
        "query": np.asarray(out["query"], dtype=np.int64),
        "ap": np.asarray(out["ap"], dtype=np.float64),
        "rank1": np.asarray(out["rank1"], dtype=np.int64),
        "p10": np.asarray(out["p10"], dtype=np.float64),
        "n_relevant": np.asarray(out["n_relevant"], dtype=np.int64),
    }


def _concat(blocks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join per-block stats into one dict of arrays."""
    keys = ("query", "ap", "rank1", "p10", "n_relevant")
    if not blocks:
        return {key: np.zeros(0, dtype=np.float64 if key in ("ap", "p10") else np.int64)
                for key in keys}
    return {key: np.concatenate([b[key] for b in blocks]) for key in keys}


def _query_rows(n: int, query_mask: np.ndarray | None) -> np.ndarray:
    """Indices of the performances allowed to be queries."""
    if query_mask is None:
        return np.arange(n)
    query_mask = np.asarray(query_mask, dtype=bool)
    if query_mask.shape != (n,):
        raise ValueError(f"query_mask must have shape ({n},), got {query_mask.shape}")
    return np.flatnonzero(query_mask)


def query_stats(dist: np.ndarray, work_id: np.ndarray, query_mask: np.ndarray | None = None,
                query_idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-query AP, first-relevant rank and P@10 from distance rows.

    `dist` is (N, N), or (Q, N) rows for the performances `query_idx` (each row's own
    column is excluded). `query_mask` (N,) limits which performances may be queries.
    Returns arrays `query` (performance index), `ap`, `rank1`, `p10`, `n_relevant`.
    """
    dist = np.asarray(dist)
    codes = _codes(work_id)
    n = len(codes)
    if query_idx is None:
        if dist.shape != (n, n):
            raise ValueError(f"a square distance matrix ({n}, {n}) is needed, got {dist.shape}")
        query_idx = np.arange(n)
    query_idx = np.asarray(query_idx, dtype=np.int64)
    keep = np.isin(query_idx, _query_rows(n, query_mask))
    return _block_stats(dist[keep], query_idx[keep], codes)


def per_query_ap(dist: np.ndarray, work_id: np.ndarray, query_mask: np.ndarray | None = None,
                 query_idx: np.ndarray | None = None) -> np.ndarray:
    """Average precision of every valid query (one with a relevant candidate), in row order."""
    return query_stats(dist, work_id, query_mask, query_idx)["ap"]


def map_standard_error(ap: np.ndarray, query_work: np.ndarray, n_boot: int = BOOTSTRAPS) -> float:
    """Standard error of MAP when the works are resampled with replacement (the queries of
    one work are not independent): the std of the resampled sets' MAPs; NaN under 2 works."""
    works, codes = np.unique(np.asarray(query_work), return_inverse=True)
    if len(works) < 2:
        return float("nan")
    sums = np.bincount(codes, weights=np.asarray(ap, np.float64))
    counts = np.bincount(codes).astype(np.float64)
    picks = np.random.default_rng(BOOTSTRAP_SEED).integers(0, len(works), (n_boot, len(works)))
    return float((sums[picks].sum(axis=1) / counts[picks].sum(axis=1)).std())


def stats_map_se(stats: dict[str, np.ndarray], work_id: np.ndarray) -> float:
    """map_standard_error of per-query stats (their "query" rows index `work_id`)."""
    return map_standard_error(stats["ap"], np.asarray(work_id)[stats["query"]])


def summarize(stats: dict[str, np.ndarray], n_candidates: int) -> dict[str, Any]:
    """MAP, MR1, P@10 and counts from per-query stats (NaN metrics when no query)."""
    n_q = len(stats["ap"])
    mean = (lambda a: float(np.mean(a))) if n_q else (lambda a: float("nan"))
    return {
        "map": mean(stats["ap"]),
        "mr1": mean(stats["rank1"]),
        "p10": mean(stats["p10"]),
        "n_queries": int(n_q),
        "n_candidates": int(n_candidates),
    }


def retrieval_metrics(dist: np.ndarray, work_id: np.ndarray, query_mask: np.ndarray | None = None,
                      query_idx: np.ndarray | None = None) -> dict[str, Any]:
    """MAP, MR1 (1-based), P@10, n_queries, n_candidates from a distance matrix (SPEC 4)."""
    stats = query_stats(dist, work_id, query_mask, query_idx)
    return summarize(stats, len(np.asarray(work_id)) - 1)


def distance_chunks(emb: np.ndarray, metric: str, head: tuple[np.ndarray, float] | None,
                    rows: np.ndarray, chunk_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (row indices, distance rows vs all of `emb`) in chunks of `chunk_size` rows."""
    for start in range(0, len(rows), chunk_size):
        idx = rows[start:start + chunk_size]
        yield idx, pairwise(emb[idx], emb, metric, head)


def query_stats_from_embeddings(emb: np.ndarray, work_id: np.ndarray, metric: str = "euclidean",
                                head: tuple[np.ndarray, float] | None = None, *,
                                chunk_size: int, query_mask: np.ndarray | None = None,
                                progress: bool = False) -> dict[str, np.ndarray]:
    """Per-query stats with the distance matrix computed `chunk_size` rows at a time."""
    emb = np.asarray(emb, dtype=np.float32)
    codes = _codes(work_id)
    n = len(codes)
    if emb.ndim != 2 or len(emb) != n:
        raise ValueError(f"embeddings must be ({n}, D), got {emb.shape}")
    # Rows whose work has a single performance can never be queries: skip their distances.
    counts = np.bincount(codes)
    rows = _query_rows(n, query_mask)
    rows = rows[counts[codes[rows]] > 1]
    chunks = distance_chunks(emb, metric, head, rows, max(1, int(chunk_size)))
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, total=-(-len(rows) // max(1, int(chunk_size))), desc="ranking",
                      unit="chunk")
    return _concat([_block_stats(d, idx, codes) for idx, d in chunks])


def retrieval_metrics_from_embeddings(emb: np.ndarray, work_id: np.ndarray,
                                      metric: str = "euclidean",
                                      head: tuple[np.ndarray, float] | None = None, *,
                                      chunk_size: int,
                                      query_mask: np.ndarray | None = None,
                                      progress: bool = False) -> dict[str, Any]:
    """`retrieval_metrics` on embeddings, never holding more than `chunk_size` distance rows."""
    stats = query_stats_from_embeddings(emb, work_id, metric, head, chunk_size=chunk_size,
                                        query_mask=query_mask, progress=progress)
    return summarize(stats, len(emb) - 1)


# ------------------------------------------------------------------------ verification

def _check_pairs(dist: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate pair distances and 0/1 labels; return them as float64 and bool arrays."""
    dist = np.asarray(dist, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if dist.shape != labels.shape:
        raise ValueError(f"{len(dist)} distances but {len(labels)} labels")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (different work) or 1 (same work)")
    if not np.isfinite(dist).all():
        raise ValueError("distances must be finite (found NaN or inf)")
    labels = labels.astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("need both positive (same work) and negative pairs")
    return dist, labels


def _cumulative(dist: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Distinct distances ascending, with cumulative TP and FP when predicting d <= each."""
    order = np.argsort(dist, kind="stable")
    d, y = dist[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(d)), len(d) - 1]  # last index of each distinct value
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return d[last], tp.astype(np.float64), fp.astype(np.float64)


def roc_curve(dist: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): one point per distinct distance t (cover when d <= t),
    starting at (0, 0) with threshold -inf."""
    dist, labels = _check_pairs(dist, labels)
    thr, tp, fp = _cumulative(dist, labels)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return (np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos], np.r_[-np.inf, thr])


def pr_curve(dist: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds): one point per distinct distance t (cover when
    d <= t), ascending in t, starting at (precision 1, recall 0) with threshold -inf."""
    dist, labels = _check_pairs(dist, labels)
    thr, tp, fp = _cumulative(dist, labels)
    return (np.r_[1.0, tp / (tp + fp)], np.r_[0.0, tp / labels.sum()], np.r_[-np.inf, thr])


def roc_auc(dist: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids; tied distances count one half)."""
    fpr, tpr, _ = roc_curve(dist, labels)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def average_precision(dist: np.ndarray, labels: np.ndarray) -> float:
    """Sum over distinct thresholds of (recall step) x precision, as sklearn defines it."""
    precision, recall, _ = pr_curve(dist, labels)
    return float(np.sum(np.diff(recall) * precision[1:]))


def confusion(dist: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, int]:
    """TP, FP, TN, FN when a pair is predicted "cover" for d <= threshold."""
    dist, labels = _check_pairs(dist, labels)
    pred = dist <= threshold
    return {"tp": int(np.sum(pred & labels)), "fp": int(np.sum(pred & ~labels)),
            "tn": int(np.sum(~pred & ~labels)), "fn": int(np.sum(~pred & labels))}


def threshold_scores(tp: np.ndarray, fp: np.ndarray, n_pos: float, n_neg: float
                     ) -> dict[str, np.ndarray]:
    """Accuracy, precision, recall, F1, balanced accuracy from (arrays of) TP/FP counts."""
    tp = np.asarray(tp, dtype=np.float64)
    fp = np.asarray(fp, dtype=np.float64)
    tn = n_neg - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = tp / n_pos
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {
        "accuracy": (tp + tn) / (n_pos + n_neg),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "balanced_accuracy": (recall + tn / n_neg) / 2.0,
    }


def verification_metrics(dist: np.ndarray, labels: np.ndarray,
                         threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, F1, balanced accuracy at `threshold`; ROC AUC and AP."""
    c = confusion(dist, labels, threshold)
    n_pos, n_neg = c["tp"] + c["fn"], c["tn"] + c["fp"]
    at_t = {k: float(v) for k, v in threshold_scores(c["tp"], c["fp"], n_pos, n_neg).items()}
    return {**at_t, "roc_auc": roc_auc(dist, labels),
            "average_precision": average_precision(dist, labels),
            "threshold": float(threshold), "n_pairs": int(n_pos + n_neg),
            "n_positive": int(n_pos)}


class ThresholdScorer:
    """Scores many thresholds on fixed pair distances in O(log n) each (for tuning)."""

    def __init__(self, dist: np.ndarray, labels: np.ndarray) -> None:
        dist, labels = _check_pairs(dist, labels)
        order = np.argsort(dist, kind="stable")
        self.sorted = dist[order]
        self.cum_pos = np.r_[0, np.cumsum(labels[order])]
        self.n_pos = float(labels.sum())
        self.n_neg = float(len(labels) - labels.sum())

    def __call__(self, threshold: float, objective: str) -> float:
        """The `objective` (a key of `threshold_scores`) when covers are d <= threshold."""
        k = int(np.searchsorted(self.sorted, threshold, side="right"))
        tp = self.cum_pos[k]
        return float(threshold_scores(tp, k - tp, self.n_pos, self.n_neg)[objective])


# ------------------------------------------------------------------------------- pairs

def sample_pairs(work_id: np.ndarray, n_negatives: int, seed: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All same-work pairs (i < j) plus a seeded sample of `n_negatives` different-work pairs.

    Returns (i, j, labels) sorted by (i, j); all negatives when there are fewer than asked.
    """
    codes = _codes(work_id)
    n = len(codes)
    counts = np.bincount(codes).astype(np.int64)
    n_negatives = int(min(n_negatives, (n * (n - 1) - np.sum(counts * (counts - 1))) // 2))
    iu, ju = np.triu_indices(n, k=1) if n <= 4000 else (None, None)
    if iu is not None:
        same = codes[iu] == codes[ju]
        pi, pj = iu[same], ju[same]
        ni, nj = iu[~same], ju[~same]
        rng = np.random.default_rng(seed)
        if n_negatives < len(ni):
            pick = np.sort(rng.choice(len(ni), size=n_negatives, replace=False))
            ni, nj = ni[pick], nj[pick]
    else:
        pi, pj = _positive_pairs(codes)
        ni, nj = _sample_negatives(codes, n_negatives, seed)
    i = np.r_[pi, ni].astype(np.int64)
    j = np.r_[pj, nj].astype(np.int64)
    labels = np.r_[np.ones(len(pi), np.int8), np.zeros(len(ni), np.int8)]
    order = np.lexsort((j, i))
    return i[order], j[order], labels[order]


def _positive_pairs(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (i < j) pair of rows sharing a code, without the N x N triangle."""
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    pi, pj = [], []
    for members in np.split(order, bounds):
        if len(members) > 1:
            a, b = np.triu_indices(len(members), k=1)
            pi.append(np.sort(members)[a])
            pj.append(np.sort(members)[b])
    if not pi:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(pi), np.concatenate(pj)


def _sample_negatives(codes: np.ndarray, n_negatives: int, seed: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of distinct different-code pairs (i < j) by rejection (large N)."""
    n = len(codes)
    rng = np.random.default_rng(seed)
    keys: np.ndarray = np.zeros(0, np.int64)
    while len(keys) < n_negatives:
        a = rng.integers(0, n, size=2 * n_negatives)
        b = rng.integers(0, n, size=2 * n_negatives)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        ok = (lo != hi) & (codes[lo] != codes[hi])
        new = lo[ok].astype(np.int64) * n + hi[ok]
        _, first = np.unique(np.r_[keys, new], return_index=True)
        keys = np.r_[keys, new][np.sort(first)]
    keys = keys[:n_negatives]
    return keys // n, keys % n
