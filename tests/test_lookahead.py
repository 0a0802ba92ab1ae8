"""Lookahead against a numpy reimplementation of Zhang et al. (2019), and the LR schedule."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from coverid.train.lookahead import (  # noqa: E402
    Lookahead,
    WarmupDecay,
    make_optimizer,
    warmup_decay_np,
)

A = np.array([[2.0, 0.5], [0.5, 1.0]])
B = np.array([1.0, -2.0])
W0 = np.array([0.5, 0.5])


def grad(w):
    """Gradient of the quadratic 1/2 w'Aw - b'w."""
    return A @ w - B


def numpy_lookahead(inner_step, k, alpha, steps):
    """Algorithm 1 of Zhang et al.: k inner steps on fast weights, then phi += alpha (theta - phi),
    theta = phi. Returns (fast, slow) after every step."""
    theta, phi, state, out = W0.copy(), W0.copy(), {}, []
    for t in range(1, steps + 1):
        theta = inner_step(theta, grad(theta), t, state)
        if t % k == 0:
            phi = phi + alpha * (theta - phi)
            theta = phi.copy()
        out.append((theta.copy(), phi.copy()))
    return out


def sgd(lr):
    return lambda w, g, t, s: w - lr * g


def adam(lr, b1=0.9, b2=0.999, eps=1e-7):
    def step(w, g, t, s):
        s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
        a = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        return w - a * s["m"] / (np.sqrt(s["v"]) + eps)
    return step


def keras_lookahead(inner, k, alpha, steps, strategy=None):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        w = keras.Variable(W0.astype("float32"))
        opt = Lookahead(inner, sync_period=k, slow_step_size=alpha)
        opt.build([w])
    a, b = tf.constant(A, tf.float32), tf.constant(B, tf.float32)

    @tf.function
    def step():
        def replica():
            g = tf.linalg.matvec(a, w.value) - b
            opt.apply([g], [w])
        strategy.run(replica)

    out = []
    for _ in range(steps):
        step()
        out.append((w.numpy().copy(), opt.slow_weights[0].numpy().copy()))
    return out


@pytest.mark.parametrize("inner,ref", [(lambda: keras.optimizers.SGD(0.1), sgd(0.1)),
                                       (lambda: keras.optimizers.Adam(0.05), adam(0.05))],
                         ids=["sgd", "adam"])
def test_matches_numpy_step_by_step(inner, ref):
    want = numpy_lookahead(ref, k=3, alpha=0.5, steps=12)
    got = keras_lookahead(inner(), k=3, alpha=0.5, steps=12)
    for t, ((f, s), (wf, ws)) in enumerate(zip(got, want), start=1):
        np.testing.assert_allclose(f, wf, rtol=1e-5, atol=1e-6, err_msg=f"fast weights, step {t}")
        np.testing.assert_allclose(s, ws, rtol=1e-5, atol=1e-6, err_msg=f"slow weights, step {t}")
    # the slow weights only move at sync steps
    assert np.allclose(got[3][1], got[4][1]) and not np.allclose(got[4][1], got[5][1])


def test_inside_a_mirrored_strategy():
    want = numpy_lookahead(sgd(0.1), k=2, alpha=0.8, steps=6)
    got = keras_lookahead(keras.optimizers.SGD(0.1), 2, 0.8, 6,
                          tf.distribute.MirroredStrategy(["/cpu:0"]))
    np.testing.assert_allclose(got[-1][0], want[-1][0], rtol=1e-5)
    np.testing.assert_allclose(got[-1][1], want[-1][1], rtol=1e-5)


def test_config_round_trip_and_bad_arguments():
    opt = Lookahead(keras.optimizers.Adam(0.01), sync_period=4, slow_step_size=0.25)
    back = Lookahead.from_config(opt.get_config())
    assert (back.sync_period, back.slow_step_size) == (4, 0.25)
    assert isinstance(back.inner_optimizer, keras.optimizers.Adam)
    with pytest.raises(ValueError, match="sync_period"):
        Lookahead(keras.optimizers.SGD(), sync_period=0, slow_step_size=0.5)
    with pytest.raises(ValueError, match="slow_step_size"):
        Lookahead(keras.optimizers.SGD(), sync_period=5, slow_step_size=1.5)


def test_warmup_decay_by_hand_and_against_numpy():
    sched = WarmupDecay(1e-3, warmup_steps=4, decay_rate=0.5, decay_steps=2)
    # warm-up (s+1)/4, then halved every 2 steps after step 4
    hand = {0: 0.25e-3, 3: 1e-3, 4: 1e-3, 6: 0.5e-3, 8: 0.25e-3, 5: 1e-3 * 0.5**0.5}
    for step, lr in hand.items():
        assert float(sched(step)) == pytest.approx(lr, rel=1e-6)
    steps = np.arange(20)
    np.testing.assert_allclose([float(sched(s)) for s in steps],
                               warmup_decay_np(steps, 1e-3, 4, 0.5, 2), rtol=1e-6)
    assert WarmupDecay(**sched.get_config()).get_config() == sched.get_config()


def test_make_optimizer_uses_params():
    train = {"warmup_epochs": 1, "decay_rate": 0.9, "lookahead_k": 7, "lookahead_alpha": 0.3}
    opt = make_optimizer(train, steps_per_epoch=10, learning_rate=0.002)
    assert (opt.sync_period, opt.slow_step_size) == (7, 0.3)
    sched = opt.inner_optimizer._learning_rate
    assert float(sched(9)) == pytest.approx(0.002) and float(sched(20)) == pytest.approx(0.002 * 0.9)
