"""Siamese losses: pure numpy reference math, and the Keras (keras.ops) versions used to train.

Label convention for pair losses: y = 1 when the two songs are versions of the same work.

- contrastive (Hadsell, Chopra & LeCun 2006, in the form tf-addons used):
  L = mean_i [ y_i d_i^2 + (1 - y_i) max(0, m - d_i)^2 ], d_i the Euclidean distance.
  Hadsell et al. write it with Y = 0 for similar pairs and a factor 1/2 on both terms; this is
  the same loss with the label flipped and without the 1/2.
- bce: a head maps |e1 - e2| to a logit z;
  L = mean_i [ -y_i log s(z_i) - (1 - y_i) log(1 - s(z_i)) ], computed as softplus(z) - y z.
- triplet (Schroff et al. 2015; Hermans et al. 2017) on Euclidean distances within a batch of
  P works x K versions, L = max(0, m + d(a, p) - d(a, n)):
  batch_hard: per anchor, the farthest positive and the nearest negative; mean over anchors
  that have both.
  semi_hard: per (anchor, positive) pair, the nearest negative farther than the positive
  (d(a, n) > d(a, p)); when there is none, the farthest negative; mean over the pairs whose
  anchor has a negative in the batch.
  With `soft=True` the hinge max(0, m + x) becomes the soft margin log(1 + exp(x)) of Hermans
  et al. (no margin parameter; it keeps pulling, and resists the collapse of every embedding
  to one point that a hard margin invites, where the loss sits at m).
"""

from __future__ import annotations

import numpy as np

LOSSES = ("contrastive", "bce", "triplet")
MINING = ("batch_hard", "semi_hard")
EPS = 1e-12  # inside sqrt: keeps the distance's gradient finite at 0


# ---------------------------------------------------------------- numpy reference math

def contrastive_np(d: np.ndarray, y: np.ndarray, margin: float) -> float:
    """Contrastive loss of distances `d` with labels `y` (1 = same work)."""
    d, y = np.asarray(d, np.float64), np.asarray(y, np.float64)
    return float(np.mean(y * d**2 + (1 - y) * np.maximum(0.0, margin - d) ** 2))


def bce_np(logits: np.ndarray, y: np.ndarray) -> float:
    """Binary cross-entropy of logits with labels `y` (1 = same work)."""
    z, y = np.asarray(logits, np.float64), np.asarray(y, np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def distances_np(e: np.ndarray) -> np.ndarray:
    """All pairwise Euclidean distances of the rows of `e`, by explicit differences."""
    e = np.asarray(e, np.float64)
    return np.sqrt(((e[:, None, :] - e[None, :, :]) ** 2).sum(-1))


def _hinge_np(x: float, margin: float, soft: bool) -> float:
    """max(0, margin + x), or log(1 + exp(x)) for the soft margin."""
    return float(np.logaddexp(0.0, x)) if soft else max(0.0, margin + x)


def triplet_batch_hard_np(e: np.ndarray, labels: np.ndarray, margin: float,
                          soft: bool) -> float:
    """Batch-hard triplet loss, written as loops over anchors."""
    d, labels = distances_np(e), np.asarray(labels)
    losses = []
    for a in range(len(labels)):
        pos = [d[a, p] for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        neg = [d[a, n] for n in range(len(labels)) if labels[n] != labels[a]]
        if pos and neg:
            losses.append(_hinge_np(max(pos) - min(neg), margin, soft))
    return float(np.mean(losses)) if losses else 0.0


def triplet_semi_hard_np(e: np.ndarray, labels: np.ndarray, margin: float,
                         soft: bool) -> float:
    """Semi-hard triplet loss, written as loops over (anchor, positive) pairs."""
    d, labels = distances_np(e), np.asarray(labels)
    n_items = len(labels)
    losses = []
    for a in range(n_items):
        neg = [d[a, n] for n in range(n_items) if labels[n] != labels[a]]
        if not neg:
            continue
        for p in range(n_items):
            if p == a or labels[p] != labels[a]:
                continue
            farther = [x for x in neg if x > d[a, p]]
            dn = min(farther) if farther else max(neg)
            losses.append(_hinge_np(d[a, p] - dn, margin, soft))
    return float(np.mean(losses)) if losses else 0.0


# ---------------------------------------------------------------- Keras versions

def euclidean(e1, e2):
    """Row-wise Euclidean distance (B,) between two (B, D) tensors."""
    from keras import ops

    return ops.sqrt(ops.sum(ops.square(e1 - e2), axis=-1) + EPS)


def pairwise_distances(e):
    """(B, B) Euclidean distances between the rows of `e` (via the Gram matrix)."""
    from keras import ops

    sq = ops.sum(ops.square(e), axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * ops.matmul(e, ops.transpose(e))
    return ops.sqrt(ops.maximum(d2, 0.0) + EPS)


def contrastive_loss(y, d, margin: float):
    """Contrastive loss (module docstring) of distances `d` (B,) with labels `y` (B,)."""
    from keras import ops

    y = ops.cast(y, d.dtype)
    return ops.mean(y * ops.square(d) + (1.0 - y) * ops.square(ops.relu(margin - d)))


def bce_loss(y, logits):
    """Binary cross-entropy of `logits` (B,) with labels `y` (B,), computed stably."""
    from keras import ops

    y = ops.cast(y, logits.dtype)
    return ops.mean(ops.softplus(logits) - y * logits)


def _masks(labels):
    """(same work and not self, different work) boolean (B, B) masks."""
    from keras import ops

    same = ops.equal(labels[:, None], labels[None, :])
    not_self = ops.logical_not(ops.cast(ops.eye(ops.shape(labels)[0]), "bool"))
    return ops.logical_and(same, not_self), ops.logical_not(same)


def _hinge(x, margin: float, soft: bool):
    """max(0, margin + x), or softplus(x) for the soft margin."""
    from keras import ops

    return ops.softplus(x) if soft else ops.relu(margin + x)


def batch_hard_triplet_loss(labels, e, margin: float, soft: bool):
    """Batch-hard triplet loss (module docstring) of embeddings `e` (B, D)."""
    from keras import ops

    d = pairwise_distances(e)
    pos, neg = _masks(labels)
    big = ops.max(d) + 1.0
    hardest_pos = ops.max(ops.where(pos, d, 0.0), axis=1)
    hardest_neg = ops.min(ops.where(neg, d, big), axis=1)
    valid = ops.cast(ops.logical_and(ops.any(pos, axis=1), ops.any(neg, axis=1)), d.dtype)
    per_anchor = _hinge(hardest_pos - hardest_neg, margin, soft) * valid
    return ops.sum(per_anchor) / ops.maximum(ops.sum(valid), 1.0)


def semi_hard_triplet_loss(labels, e, margin: float, soft: bool):
    """Semi-hard triplet loss (module docstring) of embeddings `e` (B, D)."""
    from keras import ops

    d = pairwise_distances(e)
    pos, neg = _masks(labels)
    big = ops.max(d) + 1.0
    d_ap = d[:, :, None]  # [a, p, 1]
    d_an = d[:, None, :]  # [a, 1, n]
    neg3 = ops.broadcast_to(neg[:, None, :], ops.shape(d_ap * d_an))
    farther = ops.logical_and(neg3, d_an > d_ap)
    nearest_farther = ops.min(ops.where(farther, d_an, big), axis=2)  # [a, p]
    farthest_neg = ops.max(ops.where(neg, d, -1.0), axis=1)[:, None]  # [a, 1]
    d_neg = ops.where(ops.any(farther, axis=2), nearest_farther, farthest_neg)
    valid = ops.cast(ops.logical_and(pos, ops.any(neg, axis=1)[:, None]), d.dtype)
    per_pair = _hinge(d - d_neg, margin, soft) * valid
    return ops.sum(per_pair) / ops.maximum(ops.sum(valid), 1.0)


def triplet_loss(labels, e, margin: float, mining: str, soft: bool):
    """Triplet loss with the given online mining strategy (and hard or soft margin)."""
    if mining == "batch_hard":
        return batch_hard_triplet_loss(labels, e, margin, soft)
    if mining == "semi_hard":
        return semi_hard_triplet_loss(labels, e, margin, soft)
    raise ValueError(f"unknown triplet mining {mining!r}; expected one of {MINING}")
