"""The bag-of-patterns encoder: each layer against numpy, invariances, codebook initialisation."""

import numpy as np
import pytest
from conftest import model_config, repo_params

keras = pytest.importorskip("keras")

from coverid.core.errors import CoveridError  # noqa: E402
from coverid.features.transform import tile_pitch  # noqa: E402
from coverid.model.bag import (  # noqa: E402
    BagNormalize,
    KeyRolls,
    MixRolls,
    NgramCounts,
    PatchCodes,
    TimeStretch,
    init_codebook,
    spherical_kmeans,
    windows,
)
from coverid.model.encoders import build_encoder  # noqa: E402
from coverid.model.layers import DIATONIC, KEY_SIGNATURES, KeyRoll  # noqa: E402

# params.yaml's model section, a small bag encoder with one key roll
BAG = repo_params({"model.arch": "bag", "model.bag.downsample": 2, "model.bag.patch": 3,
                   "model.bag.codes": 4, "model.bag.sharpness": 20.0, "model.bag.lags": [2],
                   "model.bag.unigrams": True, "model.bag.tempo_factors": [0.9, 1.0, 1.2],
                   "model.bag.kmeans_iters": 5, "model.bag.key_rolls": 1})["model"].to_dict()


@pytest.fixture(autouse=True)
def _seeded_weights():
    keras.utils.set_random_seed(0)


def test_time_stretch_is_linear_interpolation():
    x = np.random.default_rng(0).random((2, 7, 3)).astype(np.float32)
    for factor in (1.0, 1.5, 0.6):
        y = np.asarray(TimeStretch(factor)(x))
        n = round(7 * factor)
        pos = np.linspace(0, 6, n)
        want = np.stack([[np.interp(pos, np.arange(7), x[b, :, c]) for c in range(3)]
                         for b in range(2)]).transpose(0, 2, 1)
        assert y.shape == (2, n, 3)
        np.testing.assert_allclose(y, want, atol=1e-5)


def test_patch_codes_are_a_softmax_of_window_cosines():
    rng = np.random.default_rng(1)
    x = rng.random((2, 6, 3)).astype(np.float32)
    layer = PatchCodes(codes=4, patch=2, sharpness=5.0)
    layer.build(x.shape)
    book = rng.normal(size=(2, 3, 4)).astype(np.float32)
    layer.codebook.assign(book)
    got = np.asarray(layer(x))
    unit = book.reshape(6, 4) / np.linalg.norm(book.reshape(6, 4), axis=0)
    for b in range(2):
        for t in range(5):
            w = x[b, t:t + 2].reshape(-1)  # time-major window, as `windows` builds it
            np.testing.assert_allclose(w / np.linalg.norm(w), windows(x[b], 2)[t], atol=1e-3)
            s = 5.0 * (w @ unit) / np.linalg.norm(w)
            want = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
            np.testing.assert_allclose(got[b, t], want, atol=1e-4)


def test_ngram_counts_by_hand():
    codes = np.array([[0, 1, 1, 2]])  # one song, 4 windows, hard codes
    a = np.eye(3, dtype=np.float32)[codes]
    out = np.asarray(NgramCounts([1, 2], unigrams=True)(a))[0]
    np.testing.assert_allclose(out[:3], [0.25, 0.5, 0.25])
    lag1 = np.zeros((3, 3))
    for i, j in ((0, 1), (1, 1), (1, 2)):
        lag1[i, j] += 1 / 3
    lag2 = np.zeros((3, 3))
    for i, j in ((0, 1), (1, 2)):
        lag2[i, j] += 1 / 2
    np.testing.assert_allclose(out[3:12], lag1.ravel(), atol=1e-6)
    np.testing.assert_allclose(out[12:], lag2.ravel(), atol=1e-6)
    assert np.asarray(NgramCounts([1], unigrams=False)(a)).shape == (1, 9)


def test_bag_normalize_gives_unit_norm_square_roots():
    x = np.array([[4.0, 0.0, 1.0, 1.0, 1.0]], dtype=np.float32)
    y = np.asarray(BagNormalize([2, 3], weighted=False)(x))[0]
    assert np.linalg.norm(y) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(y[:2], [1 / np.sqrt(2), 0.0], atol=1e-3)
    np.testing.assert_allclose(y[2:], np.full(3, 1 / np.sqrt(3) / np.sqrt(2)), atol=1e-3)


def test_key_roll_finds_the_key_signature():
    profile = np.full(12, 0.1, dtype=np.float32)
    profile[[(d + 5) % 12 for d in DIATONIC]] = 1.0  # the diatonic set of F (bin 5)
    x = np.repeat(profile[None, :, None], 4, axis=2)
    y = np.asarray(KeyRoll()(x))
    np.testing.assert_allclose(y[0, :, 0], np.roll(profile, -5))  # rolled to row 0 = tonic


def test_key_rolls_take_the_best_signatures_with_softmax_weights():
    rng = np.random.default_rng(8)
    x = rng.random((2, 12, 6)).astype(np.float32)
    x[0, [(d + 5) % 12 for d in DIATONIC]] += 1.0  # song 0 leans to the signature of F
    rolled, w = KeyRolls(3, 40.0)(x)
    rolled, w = np.asarray(rolled), np.asarray(w)
    profile = x.mean(axis=2)
    scores = (profile / profile.sum(axis=1, keepdims=True)) @ KEY_SIGNATURES
    best = np.argsort(-scores, axis=1)[:, :3]
    assert best[0, 0] == 5
    top = np.take_along_axis(scores, best, axis=1)
    want_w = np.exp(40 * top) / np.exp(40 * top).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(w, want_w, rtol=1e-4)
    assert rolled.shape == (6, 12, 6)  # song-major: song 0's three rolls, then song 1's
    for b in range(2):
        for r in range(3):
            np.testing.assert_allclose(rolled[3 * b + r], np.roll(x[b], -best[b, r], axis=0))


def test_mix_rolls_is_the_weighted_sum_of_each_songs_rolls():
    counts = np.arange(12, dtype=np.float32).reshape(4, 3)  # 2 songs x 2 rolls, D = 3
    w = np.array([[0.75, 0.25], [0.0, 1.0]], dtype=np.float32)
    got = np.asarray(MixRolls()([counts, w]))
    np.testing.assert_allclose(got, [0.75 * counts[0] + 0.25 * counts[1], counts[3]])


def test_key_rolls_train_on_the_best_roll_unless_asked():
    """While training the mixed encoder is the hard-rolled one (one roll, weight 1)."""
    rng = np.random.default_rng(10)
    x = rng.random((3, 12, 8)).astype(np.float32)
    rolled, w = KeyRolls(2, 100.0)(x, training=True)
    np.testing.assert_allclose(np.asarray(rolled), np.asarray(KeyRoll()(x)))
    np.testing.assert_allclose(np.asarray(w), np.ones((3, 1)))
    rolled, w = KeyRolls(2, 100.0, in_training=True)(x, training=True)
    assert np.asarray(rolled).shape == (6, 12, 8) and np.asarray(w).shape == (3, 2)


def test_soft_key_rolls_keep_an_ambiguous_key_continuous():
    """A song on the fence between two signatures a fifth apart: a tiny change that flips the
    best signature moves the hard-rolled embedding far, the mixed one hardly at all."""
    rng = np.random.default_rng(9)
    c_major, g_major = 3, 10  # bin 0 = A
    sets = [{(t + d) % 12 for d in DIATONIC} for t in (c_major, g_major)]
    shared = sorted(sets[0] & sets[1])
    f, f_sharp = (sets[0] - sets[1]).pop(), (sets[1] - sets[0]).pop()
    base = np.zeros((12, 40), dtype=np.float32)
    base[shared] = rng.random((len(shared), 40))  # the notes both keys share, moving
    base[[f, f_sharp]] = 0.5  # the one note each key has alone, equally strong
    nudged = [base.copy(), base.copy()]
    nudged[0][f] += 0.01
    nudged[1][f_sharp] += 0.01
    x = np.stack([tile_pitch(v) for v in nudged])
    hard = build_encoder(BAG, (23, 40))
    soft = build_encoder({**BAG, "bag": {**BAG["bag"], "key_rolls": 2, "key_sharpness": 30.0}},
                         (23, 40))
    soft.get_layer("patch_codes").codebook.assign(hard.get_layer("patch_codes").codebook)
    shifts = np.argmax(x[:, :12].mean(axis=2) @ KEY_SIGNATURES, axis=1)
    assert list(shifts) == [c_major, g_major]  # each nudge picks the other signature
    e_hard, e_soft = np.asarray(hard(x)), np.asarray(soft(x))
    far, near = np.linalg.norm(e_hard[0] - e_hard[1]), np.linalg.norm(e_soft[0] - e_soft[1])
    assert far > 0.3 and near < 0.1 * far


def test_bag_encoder_is_transposition_invariant_and_length_free():
    rng = np.random.default_rng(2)
    enc = build_encoder(BAG, (23, 40))
    base = rng.random((3, 12, 40)).astype(np.float32)
    base[:, list(DIATONIC)] += 1.0  # a clear key signature, so that no tie decides the roll
    x = np.stack([tile_pitch(b) for b in base])
    shifted = np.stack([tile_pitch(np.roll(b, 7, axis=0)) for b in base])
    e = np.asarray(enc(x))
    np.testing.assert_allclose(e, np.asarray(enc(shifted)), atol=1e-5)
    assert e.shape == (3, 4 + 16)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert np.asarray(enc(x[:, :, :29])).shape == (3, 20)
    assert not np.allclose(e[0], e[1])  # different songs differ


def test_spherical_kmeans_recovers_separated_directions():
    rng = np.random.default_rng(3)
    centres = np.eye(4)[:3] * 5
    x = np.concatenate([c + rng.normal(scale=0.3, size=(50, 4)) for c in centres])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    got = spherical_kmeans(x, 3, iters=10, seed=0)
    best = np.max(got @ np.eye(4)[:3].T, axis=0)
    assert (best > 0.95).all()
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    with pytest.raises(CoveridError, match="at least 5"):
        spherical_kmeans(x[:4], 5, iters=1, seed=0)


def test_init_codebook_puts_training_windows_on_codes():
    rng = np.random.default_rng(4)
    enc = build_encoder(BAG, (12, 30))
    feats = rng.random((6, 12, 30)).astype(np.float32)
    before = np.array(enc.get_layer("patch_codes").codebook)
    init_codebook(enc, feats, iters=5, seed=0)
    after = np.array(enc.get_layer("patch_codes").codebook)
    assert not np.allclose(before, after)
    # every code is a unit-norm mean of real windows: its best window cosine is high
    unit = after.reshape(-1, 4)
    unit = unit / np.linalg.norm(unit, axis=0)
    front = keras.Model(enc.input, enc.get_layer("stretch1").output)
    wins = np.concatenate([windows(s, 3) for s in np.asarray(front(feats))])
    assert (np.max(wins @ unit, axis=0) > 0.8).all()


def test_init_codebook_with_key_rolls_uses_each_songs_best_roll():
    """Mixing rolls does not change the k-means start: the other rolls are wrong-key copies."""
    rng = np.random.default_rng(11)
    feats = rng.random((6, 12, 30)).astype(np.float32)
    hard = build_encoder(BAG, (12, 30))
    soft = build_encoder({**BAG, "bag": {**BAG["bag"], "key_rolls": 3}}, (12, 30))
    for enc in (hard, soft):
        init_codebook(enc, feats, iters=5, seed=0)
    np.testing.assert_allclose(np.array(soft.get_layer("patch_codes").codebook),
                               np.array(hard.get_layer("patch_codes").codebook), rtol=1e-5)


def test_bad_bag_params():
    with pytest.raises(CoveridError, match="tempo_factors"):
        build_encoder({**BAG, "bag": {**BAG["bag"], "tempo_factors": []}}, (23, 30))
    with pytest.raises(CoveridError, match="lags"):
        build_encoder({**BAG, "bag": {**BAG["bag"], "lags": [0]}}, (23, 30))
    with pytest.raises(CoveridError, match="key_rolls must be in 1..12"):
        build_encoder({**BAG, "bag": {**BAG["bag"], "key_rolls": 0}}, (23, 30))
    with pytest.raises(CoveridError, match=r"spect_len >= 14"):
        build_encoder(BAG, (23, 12))
    # 14 frames -> 7 -> 6 at factor 0.9: 4 windows of 3, so bigrams at lag 2 exist
    x = np.random.default_rng(5).random((1, 23, 14)).astype("float32")
    assert np.asarray(build_encoder(BAG, (23, 14))(x)).any()
    with pytest.raises(CoveridError, match="unigrams or"):
        build_encoder({**BAG, "bag": {**BAG["bag"], "lags": [], "unigrams": False}}, (23, 30))


@pytest.mark.parametrize("rolls", [1, 2])
def test_saved_bag_encoder_loads_in_a_fresh_process(tmp_path, rolls):
    """The loader registers the bag layers itself (a new process has not imported coverid.model.bag)."""
    import subprocess
    import sys

    from coverid.model.embedder import save_embedder

    rng = np.random.default_rng(6)
    enc = build_encoder({**BAG, "bag": {**BAG["bag"], "key_rolls": rolls}}, (23, 30))
    init_codebook(enc, rng.random((4, 23, 30)).astype(np.float32), iters=3, seed=0)
    x = rng.random((3, 23, 30)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "want.npy", np.asarray(enc(x)))
    save_embedder(tmp_path / "encoder", enc, model_config(arch="bag", loss="triplet"), None)
    code = ("import sys, numpy as np; from coverid.model.embedder import load_embedder; "
            "d = sys.argv[1]; e = load_embedder(d + '/encoder'); "
            "got = e.embed(np.load(d + '/x.npy')); "
            "assert np.allclose(got, np.load(d + '/want.npy'), atol=1e-5), 'embeddings differ'")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_weighted_bag_starts_as_the_plain_one_and_learns_per_entry_weights():
    x = np.random.default_rng(7).random((2, 5)).astype(np.float32)
    plain, weighted = BagNormalize([2, 3], weighted=False), BagNormalize([2, 3], weighted=True)
    np.testing.assert_allclose(np.asarray(weighted(x)), np.asarray(plain(x)), atol=1e-6)
    assert len(weighted.trainable_weights) == 1 and not plain.trainable_weights
    weighted.logits.assign(np.array([5.0, -5.0, 0.5, 0.5, 0.5], np.float32))
    y = np.asarray(weighted(x))
    assert y[0, 0] > 10 * y[0, 1]  # the first entry now outweighs the second
