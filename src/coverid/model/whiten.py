"""The compact embedding's projection, fitted after training (numpy; no TensorFlow).

`whitening`: PCA whitening of the training songs' full embeddings, kept to `dim` components
(Jegou & Chum 2012: on bag-of-words vectors, PCA whitening then L2 normalisation keeps, and
can even improve, retrieval where plain PCA loses it, because whitening down-weights the
frequent, shared patterns that dominate the variance). Eigenvalues are shrunk towards their
mean before inverting, so the small, poorly estimated components of ~1,000 training songs
are not blown up. `fit_head`: the BCE head refitted on projected embeddings (its learned
weights belong to the full embedding).
"""

from __future__ import annotations

import numpy as np

L1_SCALE = 10.0  # fit_head's L1-distance column is this x the sum of |e_i - e_j|


def power_normalise(x: np.ndarray, power: float) -> np.ndarray:
    """sign(x) |x|^power, rows rescaled to unit L2 norm (what the encoder's Projection does
    first); power 1 returns x as is. Below 1 it flattens the bursts of a few frequent patterns'
    counts (Perronnin et al. 2010, Jegou et al. 2009's burstiness)."""
    if power == 1.0:
        return x
    y = np.sign(x) * np.abs(np.asarray(x, np.float64)) ** power
    return (y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def whitening(x: np.ndarray, dim: int, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """(W (D, dim), b (dim,)) such that x W + b is the PCA-whitened `x` on its top `dim`
    components: (x - mean) V / sqrt(lambda + shrinkage * mean(lambda))."""
    x = np.asarray(x, np.float64)
    n, d = x.shape
    if not 1 <= dim <= min(n, d):
        raise ValueError(f"whitening to {dim} dims needs at least {dim} songs and dims, "
                         f"got {n} x {d}")
    if shrinkage < 0:
        raise ValueError(f"shrinkage must be >= 0, got {shrinkage}")
    mean = x.mean(0)
    # the SVD of the centred rows: V (d, dim) are the principal axes, s^2 / n their variances
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    return whitening_of_axes(mean, vt[:dim].T, s[:dim] ** 2 / n, shrinkage)


def whitening_of_axes(mean: np.ndarray, axes: np.ndarray, var: np.ndarray,
                      shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of `whitening` from the data's mean, its principal axes (d, dim) and their
    variances (however they were computed)."""
    scale = np.sqrt(var + shrinkage * var.mean())
    scale[scale == 0] = 1.0
    w = axes / scale
    # a principal axis' sign is arbitrary: make each one's largest entry positive (same bytes
    # from the same data)
    w *= np.sign(w[np.abs(w).argmax(0), np.arange(w.shape[1])])
    return w.astype(np.float32), (-mean @ w).astype(np.float32)


def project(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x W + b scaled to unit L2 norm (what the encoder's Projection layer computes)."""
    y = np.asarray(x, np.float64) @ w + b
    return (y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def fit_head(e: np.ndarray, labels: np.ndarray, n_negatives: int, seed: int,
             c: float) -> tuple[np.ndarray, float]:
    """BCE head (w (D,), bias) for embeddings `e`: logistic regression of same-work on
    |e_i - e_j| over every positive pair and `n_negatives` sampled negative pairs, classes
    balanced (as the mined BCE loss weighs them), regularised towards the plain L1 distance:
    w = a (1, ..., 1) + delta, with only delta penalised (L2, strength 1 / c). Shrinking every
    weight towards 0 instead leaves a few dims' noise deciding the ranking (test MAP 0.665
    against 0.720, docs/results.md)."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    i, j = np.triu_indices(len(e), k=1)
    same = labels[i] == labels[j]
    if not same.any() or same.all():
        raise ValueError("fitting the BCE head needs positive and negative pairs")
    neg = rng.choice(np.flatnonzero(~same), size=min(n_negatives, int((~same).sum())), replace=False)
    rows = np.concatenate([np.flatnonzero(same), neg])
    feats = np.abs(e[i[rows]] - e[j[rows]])
    # the L1 distance as one more column, scaled up so that its weight (a / L1_SCALE) is small
    # and all but unpenalised
    x = np.concatenate([feats, L1_SCALE * feats.sum(1, keepdims=True)], axis=1)
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    model.fit(x, same[rows].astype(int))
    coef = model.coef_[0]
    return (coef[:-1] + L1_SCALE * coef[-1]).astype(np.float32), float(model.intercept_[0])
