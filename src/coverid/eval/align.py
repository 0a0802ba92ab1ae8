"""Qmax (Serra et al. 2009) in numpy, vectorised over many pairs at once: a query against its
nearest candidates in one call, about 17 times faster than essentia's one pair at a time
(benchmarks/bench_rerank.py), for re-ranking the model's top answers. Same steps as essentia's
ChromaCrossSimilarity (oti) and CoverSongSimilarity (serra09) as coverid.eval.baselines.Qmax
runs them; its distances rank candidates as essentia's do (tests/test_align.py)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from coverid.core.errors import CoveridError


def cross_similarity(a: np.ndarray, b: np.ndarray, m: int, kappa: float) -> np.ndarray:
    """Binary cross-similarity (B, n, n'): b rolled by the optimal transposition index (global
    profiles, each scaled to max 1), then m-frame stacks within both their row's and their
    column's kappa fraction of nearest (as essentia's ChromaCrossSimilarity with oti)."""
    ga, gb = a.sum(2), b.sum(2)
    ga, gb = ga / np.maximum(ga.max(1, keepdims=True), 1e-9), gb / np.maximum(gb.max(1, keepdims=True), 1e-9)
    shift = np.stack([(ga * np.roll(gb, s, axis=1)).sum(1) for s in range(12)], 1).argmax(1)
    b = np.stack([np.roll(x, s, axis=0) for x, s in zip(b, shift)])
    frames = (a * a).sum(1)[:, :, None] + (b * b).sum(1)[:, None, :] - 2 * (a.transpose(0, 2, 1) @ b)
    # a stack's squared distance is the sum of its m frames' along the diagonal; like essentia,
    # L - m stacks (frames i .. i + m - 1) and each row's and column's ceil(kappa n) nearest
    n, n2 = frames.shape[1] - m, frames.shape[2] - m
    d = sum(frames[:, k:k + n, k:k + n2] for k in range(m))
    kr, kc = max(1, math.ceil(kappa * n2)), max(1, math.ceil(kappa * n))
    return ((d <= np.partition(d, kr - 1, axis=2)[:, :, kr - 1:kr])
            & (d <= np.partition(d, kc - 1, axis=1)[:, kc - 1:kc, :]))


def alignment_score(c: np.ndarray, onset: float, extension: float) -> np.ndarray:
    """Serra et al. 2009's Qmax of each binary matrix c (B, n, m), as essentia's serra09: the best
    local alignment, steps (1, 1), (2, 1), (1, 2), +1 on a match, minus `onset` (the cell the
    step leaves is a match) or `extension` (it is not) on a mismatch; the first two rows and
    columns score 0. A row needs only rows i-1 and i-2: vectorised over j and B."""
    b, n, m = c.shape
    q = np.zeros((b, n, m), np.float32)
    qp = -np.where(c, onset, extension).astype(np.float32)  # q - penalty, filled row by row
    hit, miss = np.empty((b, m - 2), np.float32), np.empty((b, m - 2), np.float32)
    for i in range(2, n):
        np.maximum(q[:, i - 1, 1:-1], q[:, i - 2, 1:-1], out=hit)
        np.maximum(hit, q[:, i - 1, :-2], out=hit)
        np.maximum(qp[:, i - 1, 1:-1], qp[:, i - 2, 1:-1], out=miss)
        np.maximum(miss, qp[:, i - 1, :-2], out=miss)
        np.maximum(miss, 0, out=q[:, i, 2:])
        np.add(hit, 1, out=q[:, i, 2:], where=c[:, i, 2:])
        qp[:, i] += q[:, i]
    return q.reshape(b, -1).max(1)


def qmax_distances(a: np.ndarray, b: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    """Qmax distance sqrt(n') / Qmax of each pair of chroma (B, 12, L) (inf: no alignment), for
    baseline.qmax settings with frame_stack_stride 1 and distance_type asymmetric."""
    if int(cfg["frame_stack_stride"]) != 1 or cfg["distance_type"] != "asymmetric":
        raise CoveridError("the numpy Qmax supports frame_stack_stride 1 and distance_type asymmetric, "
                           f"got {cfg['frame_stack_stride']} and {cfg['distance_type']!r}")
    shortest = min(a.shape[2], b.shape[2]) - int(cfg["frame_stack_size"])
    if shortest < 3:
        raise CoveridError(f"Qmax needs at least {int(cfg['frame_stack_size']) + 3} frames, got "
                           f"{min(a.shape[2], b.shape[2])}")
    c = cross_similarity(a, b, int(cfg["frame_stack_size"]), float(cfg["binarize_percentile"]))
    s = alignment_score(c, float(cfg["dis_onset"]), float(cfg["dis_extension"]))
    return np.where(s > 0, np.sqrt(c.shape[2]) / np.maximum(s, 1e-9), np.inf)
