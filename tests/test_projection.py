"""The projection: shapes, unit norm, seeded start, save/load, off = the old encoder, and the
whitening fitted after training (whiten.py)."""

import numpy as np
import pytest
from conftest import model_config, repo_params

keras = pytest.importorskip("keras")

from coverid.core.errors import CoveridError  # noqa: E402
from coverid.features.transform import tile_pitch  # noqa: E402
from coverid.model.bag import build_bag  # noqa: E402
from coverid.model.embedder import fingerprint, load_embedder, save_embedder  # noqa: E402
from coverid.model.encoders import (  # noqa: E402
    Projection,
    build_encoder,
    embedding_size,
    init_encoder,
    init_projection,
    projection_matrix,
)

# params.yaml's model section, a small bag encoder: 4 codes, unigrams + one lag = 20 dims -> 6
BAG = repo_params({"model.arch": "bag", "model.projection_dim": 6, "model.bag.downsample": 2,
                   "model.bag.patch": 3, "model.bag.codes": 4, "model.bag.sharpness": 20.0,
                   "model.bag.lags": [2], "model.bag.unigrams": True,
                   "model.bag.tempo_factors": [0.9, 1.0, 1.2], "model.bag.kmeans_iters": 5,
                   "model.bag.key_rolls": 1,
                   "model.projection_power": 1.0})["model"].to_dict()  # power: its own tests
FULL = 4 + 4 * 4


@pytest.fixture(autouse=True)
def _seeded_weights():
    keras.utils.set_random_seed(0)


def songs(n: int, length: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([tile_pitch(rng.random((12, length))) for _ in range(n)]).astype(np.float32)


def projection_of(encoder) -> Projection:
    return next(layer for layer in encoder.layers if isinstance(layer, Projection))


def test_projection_matrix_is_a_seeded_scaled_orthogonal_frame():
    m = projection_matrix(300, 20, seed=3)
    assert m.shape == (300, 20) and m.dtype == np.float32
    np.testing.assert_allclose(m.T @ m, 15.0 * np.eye(20), atol=1e-4)  # columns of norm sqrt(300/20)
    np.testing.assert_array_equal(m, projection_matrix(300, 20, seed=3))
    assert not np.allclose(m, projection_matrix(300, 20, seed=4))


def test_projected_bag_shape_norm_and_init():
    enc = build_encoder(BAG, (23, 40))
    x = songs(5)
    init_encoder(BAG, enc, x, seed=7)
    assert embedding_size(enc) == 6
    kernel = np.asarray(projection_of(enc).kernel)
    np.testing.assert_array_equal(kernel, projection_matrix(FULL, 6, seed=7))
    e = np.asarray(enc(x))
    assert e.shape == (5, 6) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # the projection is the last step: the full bag embedding times the kernel, normalised
    full = np.asarray(keras.Model(enc.input, enc.get_layer("embedding").output)(x))
    assert full.shape == (5, FULL)
    want = full @ kernel
    np.testing.assert_allclose(e, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-5)


def test_the_same_seed_gives_the_same_encoder():
    x = songs(4)
    a, b = build_encoder(BAG, (23, 40)), build_encoder(BAG, (23, 40))
    init_encoder(BAG, a, x, seed=1)
    init_encoder(BAG, b, x, seed=1)
    np.testing.assert_array_equal(np.asarray(a(x)), np.asarray(b(x)))
    init_projection(b, seed=2)
    assert not np.allclose(np.asarray(a(x)), np.asarray(b(x)))


def test_projection_off_is_the_plain_encoder():
    x = songs(3)
    off = build_encoder({**BAG, "projection_dim": None}, (23, 40))
    wide = build_encoder({**BAG, "projection_dim": FULL}, (23, 40))  # not wider: nothing to do
    for enc in (off, wide):
        assert not any(isinstance(layer, Projection) for layer in enc.layers)
        assert embedding_size(enc) == FULL
    keras.utils.set_random_seed(0)
    plain = build_bag(BAG["bag"], (23, 40))
    keras.utils.set_random_seed(0)
    again = build_encoder({**BAG, "projection_dim": None}, (23, 40))
    assert [w.name for w in plain.weights] == [w.name for w in again.weights]
    np.testing.assert_array_equal(np.asarray(plain(x)), np.asarray(again(x)))
    with pytest.raises(CoveridError, match="projection_dim"):
        build_encoder({**BAG, "projection_dim": 0}, (23, 40))


def test_move_is_projected_too():
    move = repo_params({"model.arch": "move", "model.embedding_dim": 8, "model.projection_dim": 3,
                        "model.move.channels": 4, "model.move.first_kernel": 3,
                        "model.move.kernel": 3, "model.move.dilations": [1],
                        "model.move.downsample": 1})["model"].to_dict()
    enc = build_encoder(move, (23, 20))
    e = np.asarray(enc(songs(2, 20)))
    assert e.shape == (2, 3)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)


def test_a_power_projection_power_normalises_the_full_embedding_first():
    from coverid.model.whiten import power_normalise

    enc = build_encoder({**BAG, "projection_power": 0.5}, (23, 40))
    x = songs(5)
    init_encoder(BAG, enc, x, seed=7)
    full = np.asarray(keras.Model(enc.input, enc.get_layer("embedding").output)(x), np.float64)
    kernel = np.asarray(projection_of(enc).kernel, np.float64)
    want = power_normalise(full, 0.5) @ kernel
    e = np.asarray(enc(x))
    np.testing.assert_allclose(e, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-5)
    plain = full @ kernel  # the counts' square roots, not the counts, are projected
    assert not np.allclose(e, plain / np.linalg.norm(plain, axis=1, keepdims=True), atol=1e-3)


def test_a_projection_saved_before_the_power_option_loads_with_power_1():
    layer = Projection(6, 0.5, name="projection")
    config = layer.get_config()
    assert config["power"] == 0.5
    del config["power"]  # as models saved before model.projection_power wrote it
    assert Projection.from_config(config).power == 1.0


@pytest.mark.parametrize("power", [0.0, -0.5, 1.5])
def test_a_projection_power_outside_0_1_is_refused(power):
    with pytest.raises(CoveridError, match="projection_power"):
        build_encoder({**BAG, "projection_power": power}, (23, 40))


def test_a_trained_projection_is_not_power_normalised():
    # projection_power shapes the fixed (whiten | random) projections only, as the shrinkage does
    # the whitening: a trained one would need the gradient of |x|^p at 0
    enc = build_encoder({**BAG, "projection": "trained", "projection_power": 0.5}, (23, 40))
    assert projection_of(enc).power == 1.0 and projection_of(enc).trainable


@pytest.mark.parametrize("trainable", [False, True])
def test_save_load_round_trip_is_exact_and_reproducible(tmp_path, trainable):
    x = songs(4)
    enc = build_encoder({**BAG, "projection": "trained" if trainable else "whiten",
                         "projection_power": 1.0 if trainable else 0.75}, (23, 40))
    init_encoder(BAG, enc, x, seed=5)
    config = model_config(embedding_dim=6, spect_len=40)
    save_embedder(tmp_path / "a", enc, config)
    save_embedder(tmp_path / "b", enc, config)
    assert (tmp_path / "a" / "encoder.keras").read_bytes() == (tmp_path / "b" / "encoder.keras").read_bytes()
    assert fingerprint(tmp_path / "a") == fingerprint(tmp_path / "b")
    emb = load_embedder(tmp_path / "a")
    assert emb.dim == 6 and projection_of(emb.encoder).trainable is trainable
    assert projection_of(emb.encoder).power == (1.0 if trainable else 0.75)
    np.testing.assert_array_equal(np.asarray(projection_of(emb.encoder).kernel),
                                  np.asarray(projection_of(enc).kernel))
    np.testing.assert_allclose(emb.embed(x, batch_size=3), np.asarray(enc(x)), atol=1e-6)


@pytest.mark.parametrize("trainable", [False, True])
def test_a_fixed_projection_trains_the_full_embedding(trainable):
    enc = build_encoder({**BAG, "projection": "trained" if trainable else "whiten"}, (23, 40))
    x = songs(3)
    init_encoder(BAG, enc, x, seed=0)
    proj = projection_of(enc)
    assert any(w is proj.kernel for w in enc.trainable_weights) is trainable
    # the loss sees the full embedding when the projection is fixed, the projected one when learned
    assert np.asarray(enc(x, training=True)).shape == (3, 6 if trainable else FULL)
    assert np.asarray(enc(x, training=False)).shape == (3, 6)


@pytest.mark.parametrize("kind", ["whiten", "trained"])
def test_the_bce_head_sees_the_embedding_the_loss_trains(kind):
    from coverid.train.devices import setup_devices
    from coverid.train.fit import Trainer

    params = repo_params({"train.loss": "bce", "model.projection_dim": 6, "model.projection": kind,
                          "model.bag.downsample": 2, "model.bag.patch": 3, "model.bag.codes": 4,
                          "model.bag.lags": [2], "model.bag.unigrams": True, "model.bag.key_rolls": 1})
    trainer = Trainer(params, (23, 40), setup_devices(params["train"]))
    # a fixed projection: the head learns on the full embedding (and is refitted after training)
    assert trainer.head.kernel.shape == ((6 if kind == "trained" else FULL), 1)


def test_the_training_path_of_a_projection_matches_inference_with_finite_gradients_at_zeros():
    tf = pytest.importorskip("tensorflow")
    layer = Projection(3, 0.75)
    layer.build((None, 5))
    x = np.array([[0.0, 0.2, 0.0, 0.5, 0.1], [0.3, 0.0, 0.0, 0.0, 0.9]], np.float32)
    np.testing.assert_allclose(np.asarray(layer.through(x)), np.asarray(layer(x)), atol=1e-6)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = tf.reduce_sum(layer.through(xt) * tf.constant([1.0, -2.0, 0.5]))
    grad, kernel_grad = tape.gradient(y, [xt, layer.kernel])
    assert np.all(np.isfinite(np.asarray(grad))) and np.abs(np.asarray(grad)).sum() > 0
    assert kernel_grad is None  # the fitted whitening is not trained, only trained through
    with tf.GradientTape() as tape:  # the inference formula: |x|^p has no finite gradient at 0
        tape.watch(xt)
        y = tf.reduce_sum(layer(xt))
    assert not np.all(np.isfinite(np.asarray(tape.gradient(y, xt))))


@pytest.mark.parametrize("projection,refit", [("random", 1), ("whiten", -1)])
def test_a_refitted_projection_must_be_a_whitening(projection, refit):
    with pytest.raises(CoveridError, match="projection_refit_every"):
        build_encoder({**BAG, "projection": projection, "projection_refit_every": refit}, (23, 40))
