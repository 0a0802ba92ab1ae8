"""Classical cover song baselines on chroma: key-shifted banded DTW and essentia's Qmax.

Both rank every test performance against a bounded, seeded set of queries and are scored
with the same metric functions as the model (coverid.eval.metrics).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from coverid.core.errors import CoveridError
from coverid.eval.metrics import query_stats, stats_map_se, summarize

log = logging.getLogger(__name__)

METHODS = ("dtw", "qmax")
N_PITCH = 12
# Memory budget for one batch of DTW cost matrices (candidates x 12 shifts x n x m floats).
_DTW_BATCH_BYTES = 64 * 2**20
_FAR = float(np.finfo(np.float64).max)


# ---------------------------------------------------------------------------- features

def to_chroma(features: np.ndarray, downsample: int) -> np.ndarray:
    """(N, F, L) model features -> (N, 12, L // downsample): the first 12 pitch rows (the
    untiled chroma), averaged over blocks of `downsample` frames."""
    x = np.asarray(features, dtype=np.float32)[:, :N_PITCH]
    ds = max(1, int(downsample))
    if ds == 1 or x.shape[2] < ds:
        return np.ascontiguousarray(x)
    n = x.shape[2] // ds
    return x[:, :, :n * ds].reshape(len(x), N_PITCH, n, ds).mean(-1)


def select_queries(work_id: np.ndarray, max_queries: int | None, seed: int) -> np.ndarray:
    """Sorted indices of up to `max_queries` performances (seeded) that have a relevant
    candidate, i.e. whose work has another performance; all of them when None."""
    _, codes, counts = np.unique(np.asarray(work_id), return_inverse=True, return_counts=True)
    eligible = np.flatnonzero(counts[codes.ravel()] > 1)
    if max_queries is None or max_queries >= len(eligible):
        return eligible
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(eligible, size=int(max_queries), replace=False))


# ---------------------------------------------------------------------------------- DTW

def band_mask(n: int, m: int, band: float) -> np.ndarray:
    """Sakoe-Chiba band (n, m): |i/(n-1) - j/(m-1)| <= band, i.e. a half-width of `band`
    times the longer sequence around the diagonal; the rounded diagonal is always allowed
    so that a warping path exists for any band."""
    u = np.arange(n)[:, None] / max(n - 1, 1)
    v = np.arange(m)[None, :] / max(m - 1, 1)
    mask = np.abs(u - v) <= band
    if n >= m:
        mask[np.arange(n), np.rint(np.arange(n) * (m - 1) / max(n - 1, 1)).astype(int)] = True
    else:
        mask[np.rint(np.arange(m) * (n - 1) / max(m - 1, 1)).astype(int), np.arange(m)] = True
    return mask


def shifted_cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Frame cosine distances between query `a` (12, n) and candidates `b` (M, 12, m) under
    each of the 12 circular pitch shifts of the candidates: (M, 12, n, m).

    Shift s compares `a` with np.roll(b, s, axis=pitch).
    """
    an = a / np.maximum(np.linalg.norm(a, axis=0, keepdims=True), 1e-9)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-9)
    rolled = np.stack([np.roll(bn, s, axis=1) for s in range(N_PITCH)], axis=1)  # (M,12,12,m)
    return (1.0 - an.T @ rolled).astype(np.float32)


def dtw(cost: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Length-normalised DTW over the last two axes of `cost` (..., n, m), only through the
    cells where `mask` (n, m) is True (the band; all cells when None).

    Symmetric step weights (1 for horizontal/vertical, 2 for diagonal steps and the start),
    so every path's weights sum to n + m and the result is a weighted mean frame cost.
    The recursion runs over anti-diagonals i + j = k, each one vectorised across its
    allowed cells and all leading (batch) axes. inf when no path fits the mask.
    """
    *lead, n, m = cost.shape
    if mask is None:
        mask = np.ones((n, m), dtype=bool)
    # Diagonal arrays are indexed by i + 1; slot 0 stays inf (the i = -1 border).
    prev2 = np.full((*lead, n + 1), np.inf, dtype=np.float32)
    prev1 = prev2.copy()
    if mask[0, 0]:
        prev1[..., 1] = 2.0 * cost[..., 0, 0]
    for k in range(1, n + m - 1):
        ii = np.arange(max(0, k - m + 1), min(n - 1, k) + 1)
        ii = ii[mask[ii, k - ii]]
        cur = np.full_like(prev1, np.inf)
        if len(ii):
            c = cost[..., ii, k - ii]
            cur[..., ii + 1] = np.minimum(
                np.minimum(prev1[..., ii], prev1[..., ii + 1]) + c,  # from (i-1, j), (i, j-1)
                prev2[..., ii] + 2.0 * c,  # from (i-1, j-1)
            )
        prev2, prev1 = prev1, cur
    return prev1[..., n].astype(np.float64) / (n + m)


def dtw_shift_distances(a: np.ndarray, b: np.ndarray, band: float) -> np.ndarray:
    """Banded DTW distance of query `a` (12, n) to each candidate in `b` (M, 12, m) under
    every circular pitch shift: (M, 12)."""
    n, m = a.shape[1], b.shape[2]
    mask = band_mask(n, m, band)
    per_cand = N_PITCH * n * m * 4
    step = max(1, _DTW_BATCH_BYTES // per_cand)
    out = []
    for start in range(0, len(b), step):
        out.append(dtw(shifted_cost(a, b[start:start + step]), mask))
    return np.concatenate(out) if out else np.zeros((0, N_PITCH))


def dtw_distance(a: np.ndarray, b: np.ndarray, band: float) -> tuple[float, int]:
    """(distance, shift): the best of 12 key shifts of `b` (12, m) against `a` (12, n);
    np.roll(b, shift, axis=0) is the transposition that aligns `b` to `a`."""
    d = dtw_shift_distances(np.asarray(a, np.float32), np.asarray(b, np.float32)[None], band)[0]
    s = int(np.argmin(d))
    return float(d[s]), s


# --------------------------------------------------------------------------------- Qmax

class Qmax:
    """Serra et al. 2009 Qmax via essentia: binary cross-similarity with the optimal
    transposition index, then Smith-Waterman-like alignment; the distance it returns."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        import essentia
        import essentia.standard as es

        essentia.log.infoActive = False
        essentia.log.warningActive = False
        self.csm = es.ChromaCrossSimilarity(
            frameStackSize=int(cfg["frame_stack_size"]),
            frameStackStride=int(cfg["frame_stack_stride"]),
            binarizePercentile=float(cfg["binarize_percentile"]),
            oti=True,
        )
        self.align = es.CoverSongSimilarity(
            alignmentType="serra09",
            disOnset=float(cfg["dis_onset"]),
            disExtension=float(cfg["dis_extension"]),
            distanceType=str(cfg["distance_type"]),
        )

    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        """Qmax distance of reference `b` (12, m) to query `a` (12, n)."""
        csm = self.csm(np.ascontiguousarray(a.T, np.float32), np.ascontiguousarray(b.T, np.float32))
        return float(self.align(csm)[1])


# ------------------------------------------------------------------------------ running

_STATE: dict[str, Any] = {}


def _init_worker(method: str, chroma: np.ndarray, cfg: dict[str, Any]) -> None:
    """Hold the chroma set and the method's state in this (worker) process."""
    _STATE.clear()
    _STATE.update(method=method, chroma=chroma, cfg=cfg)
    if method == "qmax":
        _STATE["qmax"] = Qmax(cfg["qmax"])


def _query_row(q: int) -> tuple[int, np.ndarray, float]:
    """(q, distances from query q to every performance, seconds taken)."""
    t0 = time.perf_counter()
    chroma, cfg = _STATE["chroma"], _STATE["cfg"]
    if _STATE["method"] == "dtw":
        row = dtw_shift_distances(chroma[q], chroma, float(cfg["dtw_band"])).min(1)
    else:
        qmax = _STATE["qmax"]
        row = np.array([0.0 if j == q else qmax(chroma[q], chroma[j]) for j in range(len(chroma))])
        # No alignment at all gives inf: rank such candidates last (ties keep index order).
        row = np.nan_to_num(row, nan=_FAR, posinf=_FAR)
    return q, row.astype(np.float64), time.perf_counter() - t0


def distance_rows(method: str, chroma: np.ndarray, queries: np.ndarray, cfg: dict[str, Any],
                  workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances (Q, N) from each query to every performance, and seconds per query,
    computed in a process pool of `workers` (in this process when 1)."""
    from tqdm import tqdm

    if method not in METHODS:
        raise ValueError(f"unknown baseline method {method!r}; expected one of {METHODS}")
    rows = np.zeros((len(queries), len(chroma)))
    secs = np.zeros(len(queries))
    where = {int(q): k for k, q in enumerate(queries)}
    bar = tqdm(total=len(queries), desc=method, unit="query")
    if workers <= 1:
        _init_worker(method, chroma, cfg)
        results = map(_query_row, (int(q) for q in queries))
        pool = None
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn: safe even when the parent has imported threaded libraries (TF, BLAS).
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                   initializer=_init_worker, initargs=(method, chroma, cfg))
        results = pool.map(_query_row, (int(q) for q in queries))
    try:
        for q, row, s in results:
            rows[where[q]], secs[where[q]] = row, s
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return rows, secs


def run_baselines(features: np.ndarray, work_id: np.ndarray, cfg: dict[str, Any],
                  seed: int) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """({method: {map, mr1, p10, n_queries, map_se}}, {method: seconds per query}) for each of
    cfg['methods'] on features (N, F, L), with the queries of `select_queries`."""
    unknown = [m for m in cfg["methods"] if m not in METHODS]
    if unknown:
        raise CoveridError(f"baseline.methods: unknown {unknown}; expected some of {METHODS}")
    chroma = to_chroma(features, int(cfg["downsample"]))
    queries = select_queries(work_id, cfg["max_queries"], seed)
    if len(queries) == 0:
        raise CoveridError("no performance has another version of its work: nothing to query")
    if "qmax" in cfg["methods"]:
        q = cfg["qmax"]
        need = int(q["frame_stack_size"]) * int(q["frame_stack_stride"]) + 2
        if chroma.shape[2] < need:
            raise CoveridError(f"qmax needs at least {need} frames after baseline.downsample, "
                               f"got {chroma.shape[2]}: lower baseline.downsample or "
                               "baseline.qmax.frame_stack_size")
    out: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for method in cfg["methods"]:
        log.info("%s: %d queries x %d candidates", method, len(queries), len(chroma))
        rows, secs = distance_rows(method, chroma, queries, cfg, int(cfg["workers"]))
        stats = query_stats(rows, work_id, query_idx=queries)
        m = summarize(stats, len(chroma) - 1)
        out[method] = {k: m[k] for k in ("map", "mr1", "p10", "n_queries")}
        out[method]["map_se"] = stats_map_se(stats, work_id)
        seconds[method] = float(np.mean(secs)) if len(secs) else float("nan")
        log.info("%s: MAP %.4f MR1 %.2f P@10 %.4f", method, m["map"], m["mr1"], m["p10"])
    return out, seconds
