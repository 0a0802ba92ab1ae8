"""Distances between embeddings (pure numpy): one function per metric, used everywhere."""

from __future__ import annotations

import numpy as np

METRICS = ("euclidean", "cosine", "bce")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return np.exp(-np.logaddexp(0.0, -z))


def pairwise(a: np.ndarray, b: np.ndarray, metric: str = "euclidean",
             head: tuple[np.ndarray, float] | None = None) -> np.ndarray:
    """Distance matrix (len(a), len(b)).

    euclidean: ||a - b||; cosine: 1 - cos(a, b); bce: 1 - sigmoid(w . |a - b| + bias), the
    BCE head's "not a cover" probability, which needs `head=(w, bias)`.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if metric == "euclidean":
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
        return np.sqrt(np.maximum(sq, 0.0))
    if metric == "cosine":
        an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return 1.0 - an @ bn.T
    if metric == "bce":
        if head is None:
            raise ValueError("the bce distance needs the head's (weights, bias)")
        w, bias = np.asarray(head[0], dtype=np.float32).ravel(), float(head[1])
        logits = np.stack([(np.abs(row[None, :] - b) * w).sum(1) for row in a]) + bias
        return 1.0 - _sigmoid(logits)
    raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")


def paired(a: np.ndarray, b: np.ndarray, metric: str = "euclidean",
           head: tuple[np.ndarray, float] | None = None) -> np.ndarray:
    """Row-wise distances d(a[i], b[i]) with the same definitions as `pairwise`."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if metric == "euclidean":
        return np.linalg.norm(a - b, axis=1)
    if metric == "cosine":
        num = (a * b).sum(1)
        den = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        return 1.0 - num / den
    if metric == "bce":
        if head is None:
            raise ValueError("the bce distance needs the head's (weights, bias)")
        w, bias = np.asarray(head[0], dtype=np.float32).ravel(), float(head[1])
        return 1.0 - _sigmoid((np.abs(a - b) * w).sum(1) + bias)
    raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
