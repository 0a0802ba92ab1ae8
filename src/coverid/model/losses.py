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

Pair losses mined in a P x K batch (the batches triplet uses), each balanced: the mean over the
positive pairs and the mean over the (mined) negative pairs weigh 1/2 each, so the few positives
(K - 1 per song) are not drowned by the many negatives.
- contrastive, with the per-pair terms above: every positive pair (a, p), a != p, with
  y = 1, and the negative pairs mining picks, with y = 0:
  all: every negative pair (a, n).
  hard: per anchor, its nearest negative (as batch_hard).
  semi_hard: per (anchor, positive) pair, the negative triplet semi_hard picks (the nearest
  farther than the positive, else the farthest); anchors without a negative pick none.
- bce, with the per-pair terms above on the head's logits:
  all: every pair (i, j), i != j, of the batch. Costly with a large embedding (the head needs
  |e_i - e_j| of all B^2 pairs: 128^2 x 16384 values for the bag encoder, no Gram-matrix
  shortcut as for Euclidean distances).
  hard, semi_hard: every positive pair, and the negatives contrastive's mining of the same name
  picks by Euclidean distance: about B K head evaluations instead of B^2. semi_hard's negatives
  are farther than their positives, which teaches a fresh head that a larger |e1 - e2| means
  another work; hard's nearest negatives are often nearer than the positives while the encoder
  is young, and the head learns to weigh the wrong dimensions.
"""

from __future__ import annotations

import numpy as np

LOSSES = ("contrastive", "bce", "triplet")
MINING = ("batch_hard", "semi_hard")
PAIR_MINING = ("all", "hard", "semi_hard")
BCE_MINING = PAIR_MINING
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


def mined_negatives_np(e: np.ndarray, labels: np.ndarray, mining: str) -> list[tuple[int, int]]:
    """The negative pairs (anchor, negative) that contrastive pair mining picks, by loops."""
    d, labels = distances_np(e), np.asarray(labels)
    n_items = len(labels)
    out = []
    for a in range(n_items):
        neg = [n for n in range(n_items) if labels[n] != labels[a]]
        if not neg:
            continue
        if mining == "all":
            out += [(a, n) for n in neg]
        elif mining == "hard":
            out.append((a, min(neg, key=lambda n: d[a, n])))
        elif mining == "semi_hard":
            for p in range(n_items):
                if p == a or labels[p] != labels[a]:
                    continue
                farther = [n for n in neg if d[a, n] > d[a, p]]
                out.append((a, min(farther, key=lambda n: d[a, n]) if farther
                            else max(neg, key=lambda n: d[a, n])))
        else:
            raise ValueError(f"unknown pair mining {mining!r}; expected one of {PAIR_MINING}")
    return out


def _balanced_np(pos_terms: list[float], neg_terms: list[float]) -> float:
    """Half the mean positive term plus half the mean negative term (0 for an empty side)."""
    return 0.5 * (float(np.mean(pos_terms)) if pos_terms else 0.0) + \
        0.5 * (float(np.mean(neg_terms)) if neg_terms else 0.0)


def _positive_pairs_np(labels: np.ndarray) -> list[tuple[int, int]]:
    """Every ordered pair (a, p), a != p, of one work."""
    labels = np.asarray(labels)
    return [(a, p) for a in range(len(labels)) for p in range(len(labels))
            if a != p and labels[a] == labels[p]]


def mined_contrastive_np(e: np.ndarray, labels: np.ndarray, margin: float, mining: str) -> float:
    """Balanced contrastive loss of a P x K batch: every positive pair, the mined negatives."""
    d = distances_np(e)
    pos = [d[a, p] ** 2 for a, p in _positive_pairs_np(labels)]
    neg = [max(0.0, margin - d[a, n]) ** 2 for a, n in mined_negatives_np(e, labels, mining)]
    return _balanced_np(pos, neg)


def mined_bce_np(e: np.ndarray, labels: np.ndarray, w: np.ndarray, bias: float,
                 mining: str) -> float:
    """Class-balanced BCE of a batch: the head logit w . |e_i - e_j| + bias of every positive
    pair and of the negatives mined_negatives_np picks."""
    if mining not in BCE_MINING:
        raise ValueError(f"unknown bce mining {mining!r}; expected one of {BCE_MINING}")
    e, w = np.asarray(e, np.float64), np.asarray(w, np.float64).ravel()

    def logit(i: int, j: int) -> float:
        return float(np.abs(e[i] - e[j]) @ w + bias)

    pos = [bce_np([logit(a, p)], [1]) for a, p in _positive_pairs_np(labels)]
    neg = [bce_np([logit(a, n)], [0]) for a, n in mined_negatives_np(e, labels, mining)]
    return _balanced_np(pos, neg)


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


def _semi_hard_negatives(d, neg):
    """Per (anchor, positive) [a, p]: the distance to the nearest negative farther than the
    positive, else to the farthest negative."""
    from keras import ops

    big = ops.max(d) + 1.0
    d_ap = d[:, :, None]  # [a, p, 1]
    d_an = d[:, None, :]  # [a, 1, n]
    neg3 = ops.broadcast_to(neg[:, None, :], ops.shape(d_ap * d_an))
    farther = ops.logical_and(neg3, d_an > d_ap)
    nearest_farther = ops.min(ops.where(farther, d_an, big), axis=2)  # [a, p]
    farthest_neg = ops.max(ops.where(neg, d, -1.0), axis=1)[:, None]  # [a, 1]
    return ops.where(ops.any(farther, axis=2), nearest_farther, farthest_neg)


def _semi_hard_negative_index(d, neg):
    """Per (anchor, positive) [a, p]: the index of the negative `_semi_hard_negatives` picks
    (ties: the first)."""
    from keras import ops

    big = ops.max(d) + 1.0
    d_ap = d[:, :, None]  # [a, p, 1]
    d_an = d[:, None, :]  # [a, 1, n]
    neg3 = ops.broadcast_to(neg[:, None, :], ops.shape(d_ap * d_an))
    farther = ops.logical_and(neg3, d_an > d_ap)
    nearest_farther = ops.argmin(ops.where(farther, d_an, big), axis=2)  # [a, p]
    farthest_neg = ops.argmax(ops.where(neg, d, -1.0), axis=1)[:, None]  # [a, 1]
    return ops.where(ops.any(farther, axis=2), nearest_farther, farthest_neg)


def semi_hard_triplet_loss(labels, e, margin: float, soft: bool):
    """Semi-hard triplet loss (module docstring) of embeddings `e` (B, D)."""
    from keras import ops

    d = pairwise_distances(e)
    pos, neg = _masks(labels)
    d_neg = _semi_hard_negatives(d, neg)
    valid = ops.cast(ops.logical_and(pos, ops.any(neg, axis=1)[:, None]), d.dtype)
    per_pair = _hinge(d - d_neg, margin, soft) * valid
    return ops.sum(per_pair) / ops.maximum(ops.sum(valid), 1.0)


def _balanced(pos_terms, pos, neg_terms, neg):
    """Half the mean of `pos_terms` over mask `pos` plus half that of `neg_terms` over `neg`."""
    from keras import ops

    pos, neg = ops.cast(pos, pos_terms.dtype), ops.cast(neg, neg_terms.dtype)
    return 0.5 * ops.sum(pos_terms * pos) / ops.maximum(ops.sum(pos), 1.0) + \
        0.5 * ops.sum(neg_terms * neg) / ops.maximum(ops.sum(neg), 1.0)


def mined_contrastive_loss(labels, e, margin: float, mining: str):
    """Balanced contrastive loss (module docstring) of a P x K batch of embeddings `e` (B, D)."""
    from keras import ops

    d = pairwise_distances(e)
    pos, neg = _masks(labels)
    pos_terms = ops.square(d)
    if mining == "all":
        return _balanced(pos_terms, pos, ops.square(ops.relu(margin - d)), neg)
    has_neg = ops.any(neg, axis=1)
    if mining == "hard":
        d_neg = ops.min(ops.where(neg, d, ops.max(d) + 1.0), axis=1)  # [a]
        return _balanced(pos_terms, pos, ops.square(ops.relu(margin - d_neg)), has_neg)
    if mining == "semi_hard":
        d_neg = _semi_hard_negatives(d, neg)  # [a, p]
        picked = ops.logical_and(pos, has_neg[:, None])
        return _balanced(pos_terms, pos, ops.square(ops.relu(margin - d_neg)), picked)
    raise ValueError(f"unknown pair mining {mining!r}; expected one of {PAIR_MINING}")


def mined_bce_loss(labels, e, logits_fn, mining: str):
    """Class-balanced BCE (module docstring) of a P x K batch of embeddings `e` (B, D);
    `logits_fn(e1, e2)` is the head's logit of broadcastable pairs of embeddings."""
    from keras import ops

    pos, neg = _masks(labels)
    if mining == "all":
        z = logits_fn(e[:, None, :], e[None, :, :])  # (B, B)
        return _balanced(ops.softplus(z) - z, pos, ops.softplus(z), neg)
    if mining not in BCE_MINING:
        raise ValueError(f"unknown bce mining {mining!r}; expected one of {BCE_MINING}")
    # z is symmetric: each unordered positive pair once (i < j) gives the same mean
    upper = ops.triu(ops.ones_like(ops.cast(pos, e.dtype)), k=1) > 0
    a, p = ops.where(ops.logical_and(pos, upper))
    z_pos = logits_fn(ops.take(e, a, axis=0), ops.take(e, p, axis=0))
    d = ops.stop_gradient(pairwise_distances(e))
    has_neg = ops.any(neg, axis=1)
    if mining == "hard":  # per anchor with a negative
        anchors = ops.where(has_neg)[0]
        picked = ops.take(ops.argmin(ops.where(neg, d, ops.max(d) + 1.0), axis=1), anchors)
    else:  # semi_hard: per (anchor, positive) whose anchor has a negative
        anchors, positives = ops.where(ops.logical_and(pos, has_neg[:, None]))
        index = _semi_hard_negative_index(d, neg)
        picked = ops.take(ops.reshape(index, (-1,)), anchors * ops.shape(d)[0] + positives)
    z_neg = logits_fn(ops.take(e, anchors, axis=0), ops.take(e, picked, axis=0))
    return _balanced(ops.softplus(z_pos) - z_pos, ops.ones_like(z_pos) > 0,
                     ops.softplus(z_neg), ops.ones_like(z_neg) > 0)


def triplet_loss(labels, e, margin: float, mining: str, soft: bool):
    """Triplet loss with the given online mining strategy (and hard or soft margin)."""
    if mining == "batch_hard":
        return batch_hard_triplet_loss(labels, e, margin, soft)
    if mining == "semi_hard":
        return semi_hard_triplet_loss(labels, e, margin, soft)
    raise ValueError(f"unknown triplet mining {mining!r}; expected one of {MINING}")
