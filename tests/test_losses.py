"""Losses: numpy reference math against hand-computed values, Keras versions against numpy."""

import math

import numpy as np
import pytest

from coverid.model import losses as L

# 1-D embeddings where a negative sits closer than a positive (semi-hard != batch-hard):
# d(0,1)=2 d(0,2)=1 d(0,3)=5 d(1,2)=1 d(1,3)=3 d(2,3)=4
E = np.array([[0.0], [2.0], [1.0], [5.0]], np.float32)
Y = np.array([0, 0, 1, 1], np.int32)


def test_contrastive_by_hand():
    # y=1: d^2 = 0.25; y=0, d=2 > m: 0; y=0, d=0.3: (1 - 0.3)^2 = 0.49
    d, y = np.array([0.5, 2.0, 0.3]), np.array([1, 0, 0])
    assert L.contrastive_np(d, y, 1.0) == pytest.approx((0.25 + 0.0 + 0.49) / 3)
    assert float(L.contrastive_loss(y.astype("float32"), d.astype("float32"), 1.0)) == \
        pytest.approx((0.25 + 0.49) / 3, rel=1e-6)


def test_bce_by_hand():
    # -log(sigmoid(0)) = log 2; -log(1 - sigmoid(2)) = log(1 + e^2)
    want = (math.log(2) + math.log(1 + math.e**2)) / 2
    assert L.bce_np([0.0, 2.0], [1, 0]) == pytest.approx(want)
    assert float(L.bce_loss(np.array([1.0, 0.0], "float32"), np.array([0.0, 2.0], "float32"))) == \
        pytest.approx(want, rel=1e-6)


def test_bce_is_stable_for_large_logits():
    assert L.bce_np([100.0, -100.0], [1, 0]) == pytest.approx(0.0, abs=1e-12)
    assert float(L.bce_loss(np.array([0.0], "float32"), np.array([200.0], "float32"))) == \
        pytest.approx(200.0, rel=1e-6)


def test_triplet_by_hand():
    # batch-hard, margin 1: anchors 0..3 -> 1+2-1, 1+2-1, 1+4-1, 1+4-3 = 2, 2, 4, 2
    assert L.triplet_batch_hard_np(E, Y, 1.0, soft=False) == pytest.approx(2.5)
    # semi-hard: (0,1): nearest neg > 2 is 5 -> 0; (1,0): 3 -> 0; (2,3): none > 4 -> farthest 1
    # -> 4; (3,2): 5 -> 0
    assert L.triplet_semi_hard_np(E, Y, 1.0, soft=False) == pytest.approx(1.0)
    assert float(L.batch_hard_triplet_loss(Y, E, 1.0, soft=False)) == pytest.approx(2.5, abs=1e-4)
    assert float(L.semi_hard_triplet_loss(Y, E, 1.0, soft=False)) == pytest.approx(1.0, abs=1e-4)


def test_soft_margin_by_hand():
    # batch-hard x = d_ap - d_an per anchor: 2-1, 2-1, 4-1, 4-3 -> softplus
    want = np.mean(np.log1p(np.exp([1.0, 1.0, 3.0, 1.0])))
    assert L.triplet_batch_hard_np(E, Y, 0.0, soft=True) == pytest.approx(want)
    assert float(L.triplet_loss(Y, E, 5.0, "batch_hard", soft=True)) == pytest.approx(want, abs=1e-4)
    # semi-hard: (0,1): 2-5, (1,0): 2-3, (2,3): 4-1, (3,2): 4-5
    want = np.mean(np.log1p(np.exp([-3.0, -1.0, 3.0, -1.0])))
    assert L.triplet_semi_hard_np(E, Y, 0.0, soft=True) == pytest.approx(want)
    assert float(L.triplet_loss(Y, E, 5.0, "semi_hard", soft=True)) == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
def test_triplet_matches_numpy_on_random_pk_batches(mining):
    rng = np.random.default_rng(3)
    ref = L.triplet_batch_hard_np if mining == "batch_hard" else L.triplet_semi_hard_np
    for trial in range(4):
        e = rng.standard_normal((12, 5)).astype(np.float32)
        labels = np.repeat(np.arange(4), 3)
        labels[-1] = 7 if trial % 2 else labels[-1]  # a work with a single version
        got = float(L.triplet_loss(labels, e, 0.5, mining, soft=False))
        assert got == pytest.approx(ref(e, labels, 0.5, soft=False), rel=1e-4, abs=1e-4)


def test_triplet_without_negatives_is_zero():
    labels = np.zeros(4, np.int32)
    e = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    assert L.triplet_batch_hard_np(e, labels, 1.0, soft=False) == 0.0
    assert float(L.batch_hard_triplet_loss(labels, e, 1.0, soft=False)) == 0.0
    assert float(L.semi_hard_triplet_loss(labels, e, 1.0, soft=False)) == 0.0


def test_contrastive_matches_numpy_and_distances():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 6, 4)).astype(np.float32)
    y = (rng.random(6) < 0.5).astype(np.float32)
    d = np.asarray(L.euclidean(a, b))
    np.testing.assert_allclose(d, np.linalg.norm(a - b, axis=1), rtol=1e-5)
    assert float(L.contrastive_loss(y, d, 2.0)) == pytest.approx(L.contrastive_np(d, y, 2.0), rel=1e-5)
    e = rng.standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(L.pairwise_distances(e)), L.distances_np(e), atol=1e-3)


def test_gradients_are_finite_for_identical_embeddings():
    import tensorflow as tf

    e = tf.Variable(np.ones((4, 3), np.float32))
    with tf.GradientTape() as tape:
        loss = L.batch_hard_triplet_loss(np.array([0, 0, 1, 1]), e, 1.0, soft=False) + \
            L.contrastive_loss(np.ones(2, np.float32), L.euclidean(e[:2], e[2:]), 1.0)
    g = tape.gradient(loss, e)
    assert np.isfinite(g.numpy()).all()


def test_unknown_mining():
    with pytest.raises(ValueError, match="unknown triplet mining"):
        L.triplet_loss(Y, E, 1.0, "hardest", soft=False)


# ---------------------------------------------------------------- pair losses mined in P x K batches

def _pk_batch(rng: np.random.Generator, single: bool) -> tuple[np.ndarray, np.ndarray]:
    """A random 4 works x 3 versions batch; with `single`, the last song a work of its own."""
    e = rng.standard_normal((12, 5)).astype(np.float32)
    labels = np.repeat(np.arange(4), 3)
    if single:
        labels[-1] = 7
    return e, labels


def test_mined_negatives_by_hand():
    # E, Y above: d(0,2)=1 d(0,3)=5 d(1,2)=1 d(1,3)=3 (negatives); positives d(0,1)=2, d(2,3)=4
    assert L.mined_negatives_np(E, Y, "hard") == [(0, 2), (1, 2), (2, 0), (3, 1)]
    # semi-hard, per (a, p): (0,1): nearest > 2 is 3 -> 5; (1,0): 3 -> 3; (2,3): none > 4 ->
    # farthest 1 (n=0, tie with 1: the first); (3,2): 5 -> n=0
    assert L.mined_negatives_np(E, Y, "semi_hard") == [(0, 3), (1, 3), (2, 0), (3, 0)]
    assert len(L.mined_negatives_np(E, Y, "all")) == 8


def test_mined_contrastive_by_hand():
    # positives: d^2 = 4, 4, 16, 16 -> mean 10; hard negatives (m = 2): d = 1, 1, 1, 3 ->
    # (2-1)^2 x 3 + 0 -> mean 0.75; balanced: (10 + 0.75) / 2
    assert L.mined_contrastive_np(E, Y, 2.0, "hard") == pytest.approx(5.375)
    assert float(L.mined_contrastive_loss(Y, E, 2.0, "hard")) == pytest.approx(5.375, rel=1e-5)
    # all negatives (m = 2): d = 1, 5, 1, 3 (twice each) -> (1 + 0 + 1 + 0) / 4 = 0.5
    assert L.mined_contrastive_np(E, Y, 2.0, "all") == pytest.approx(5.25)
    assert float(L.mined_contrastive_loss(Y, E, 2.0, "all")) == pytest.approx(5.25, rel=1e-5)


@pytest.mark.parametrize("mining", ["all", "hard", "semi_hard"])
def test_mined_contrastive_matches_numpy_on_random_pk_batches(mining):
    rng = np.random.default_rng(5)
    for trial in range(4):
        e, labels = _pk_batch(rng, single=bool(trial % 2))
        got = float(L.mined_contrastive_loss(labels, e, 3.0, mining))
        assert got == pytest.approx(L.mined_contrastive_np(e, labels, 3.0, mining), rel=1e-4)


def _head_fn(w: np.ndarray, bias: float):
    """The BCE head's logits w . |e1 - e2| + bias, as encoders.head_logits computes them."""
    from keras import ops

    return lambda a, b: ops.sum(ops.abs(a - b) * w, axis=-1) + bias


def test_mined_bce_by_hand():
    # head: logit = -|e1 - e2| + 1. Positives (d = 2, 2, 4, 4): logits -1, -3 -> bce
    # softplus(-z); hard negatives d = 1, 1, 1, 3: logits 0, 0, 0, -2 -> softplus(z)
    w, bias = np.array([-1.0], np.float32), 1.0
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    want = 0.5 * (sp(1.0) + sp(3.0)) / 2 + 0.5 * (3 * sp(0.0) + sp(-2.0)) / 4
    assert L.mined_bce_np(E, Y, w, bias, "hard") == pytest.approx(want)
    assert float(L.mined_bce_loss(Y, E, _head_fn(w, bias), "hard")) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("mining", ["all", "hard", "semi_hard"])
def test_mined_bce_matches_numpy_on_random_pk_batches(mining):
    rng = np.random.default_rng(6)
    for trial in range(4):
        e, labels = _pk_batch(rng, single=bool(trial % 2))
        w, bias = rng.standard_normal(5).astype(np.float32), float(rng.standard_normal())
        got = float(L.mined_bce_loss(labels, e, _head_fn(w, bias), mining))
        assert got == pytest.approx(L.mined_bce_np(e, labels, w, bias, mining), rel=1e-4)


def test_balanced_weighting_counts_each_class_half():
    # one positive pair among many negatives: its term weighs 1/2 whatever the batch size
    e = np.array([[0.0], [1.0], [10.0], [20.0], [30.0]], np.float32)
    labels = np.array([0, 0, 1, 2, 3])
    assert L.mined_contrastive_np(e, labels, 0.5, "all") == pytest.approx(0.5 * 1.0)
    assert float(L.mined_contrastive_loss(labels, e, 0.5, "all")) == pytest.approx(0.5, rel=1e-5)


def test_unknown_pair_mining():
    with pytest.raises(ValueError, match="unknown pair mining"):
        L.mined_contrastive_loss(Y, E, 1.0, "hardest")
    with pytest.raises(ValueError, match="unknown bce mining"):
        L.mined_bce_loss(Y, E, _head_fn(np.ones(1, np.float32), 0.0), "batch_hard")
