"""Pair / P x K sampling (numpy) and the augmentations and datasets (tf.data)."""

import numpy as np
import pytest
from conftest import repo_params

tf = pytest.importorskip("tensorflow")

from coverid.core.errors import CoveridError  # noqa: E402
from coverid.features.transform import tile_pitch  # noqa: E402
from coverid.train import pairs as P  # noqa: E402

# works 0..3 with 3 versions, then two noise songs (works 4, 5)
LABELS = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 5], np.int32)
# params.yaml's train section with every augmentation off, then a small contrastive setting
PARAMS_TRAIN = repo_params()["train"].to_dict()
AUG_OFF = {**PARAMS_TRAIN["augment"], "p_transpose": 0.0, "p_stretch": 0.0, "stretch_range": 0.2,
           "p_crop": 0.0, "crop_min": 0.6, "p_warp": 0.0, "warp_rate": 0.1, "p_notes": 0.0,
           "p_remap": 0.0, "p_reverse": 0.0}
TRAIN = {**PARAMS_TRAIN, "loss": "contrastive", "negative_sampling": "random", "steps_per_epoch": 3,
         "batch_size": 6, "works_per_batch": 2, "versions_per_work": 3, "singleton_positives": False,
         "augment": {**AUG_OFF, "p_transpose": 0.5, "p_stretch": 0.5, "p_crop": 0.5, "p_warp": 0.5}}


def test_encode_labels_and_groups():
    labels = P.encode_labels(np.array(["W_b", "W_a", "W_b", "W_c"]))
    assert labels.tolist() == [1, 0, 1, 2]
    assert [g.tolist() for g in P.work_groups(labels)] == [[0, 2]]


def test_sample_pairs_balanced_and_correct():
    i, j, y = P.sample_pairs(LABELS, batches=5, batch_size=8, rng=P.epoch_rng(0, 0), singletons=False)
    assert len(i) == 40
    for b in range(5):
        assert y[b * 8:(b + 1) * 8].sum() == 4  # half positive in every batch
    pos, neg = y == 1, y == 0
    assert (LABELS[i[pos]] == LABELS[j[pos]]).all() and (i[pos] != j[pos]).all()
    assert (LABELS[i[neg]] != LABELS[j[neg]]).all()
    again = P.sample_pairs(LABELS, 5, 8, P.epoch_rng(0, 0), False)
    other = P.sample_pairs(LABELS, 5, 8, P.epoch_rng(0, 1), False)
    assert all(np.array_equal(a, b) for a, b in zip((i, j, y), again))
    assert not np.array_equal(i, other[0])


def test_sample_pk():
    idx = P.sample_pk(LABELS, batches=4, p=2, k=3, rng=P.epoch_rng(1, 0), singletons=False)
    assert len(idx) == 24
    for b in idx.reshape(4, 2, 3):
        works = LABELS[b]
        assert (works == works[:, :1]).all()  # each block of K is one work
        assert works[0, 0] != works[1, 0]  # P distinct works
        assert all(len(set(r)) == 3 for r in b)  # enough versions: no repeats
    # K larger than a work's versions: drawn with replacement
    assert len(P.sample_pk(LABELS, 1, 2, 5, P.epoch_rng(1, 0), False)) == 10


def test_singleton_positives_make_noise_songs_works():
    rng = P.epoch_rng(2, 0)
    idx = P.sample_pk(LABELS, batches=30, p=6, k=2, rng=rng, singletons=True)
    blocks = idx.reshape(-1, 2)
    noise = [b for b in blocks if LABELS[b[0]] >= 4]
    assert noise and all(b[0] == b[1] for b in noise)  # K augmented copies of the one song
    assert set(LABELS[idx]) == set(range(6))
    i, j = P.sample_positive_pairs(LABELS, 200, rng, singletons=True)
    assert (LABELS[i] == LABELS[j]).all() and ((i == j) == (LABELS[i] >= 4)).all()
    assert 12 in i and 13 in i
    assert 12 not in P.sample_positive_pairs(LABELS, 200, rng, False)[0]


def test_sampling_errors():
    with pytest.raises(CoveridError, match="two or more versions"):
        P.sample_positive_pairs(np.arange(4), 3, P.epoch_rng(0, 0), False)
    with pytest.raises(CoveridError, match="at least 2"):
        P.sample_pk(np.array([0, 0, 1]), 1, 2, 2, P.epoch_rng(0, 0), False)
    with pytest.raises(CoveridError, match="two works"):
        P.sample_negative_pairs(np.zeros(3, np.int32), 2, P.epoch_rng(0, 0))


def test_transpose_rolls_pitch_classes_before_tiling():
    base = np.random.default_rng(0).random((12, 10)).astype(np.float32)
    got = P.transpose(tf.constant(tile_pitch(base)), 3, tiled=True).numpy()
    np.testing.assert_array_equal(got, tile_pitch(np.roll(base, 3, axis=0)))
    np.testing.assert_array_equal(P.transpose(tf.constant(base), 5, tiled=False).numpy(),
                                  np.roll(base, 5, axis=0))


def test_stretch_crop_warp_identities_and_shapes():
    x = tf.constant(np.random.default_rng(1).random((23, 40)).astype(np.float32))
    np.testing.assert_allclose(P.stretch(x, 1.0, 0.3).numpy(), x.numpy(), atol=1e-6)
    np.testing.assert_allclose(P.crop(x, 1.0, 0.7).numpy(), x.numpy(), atol=1e-6)
    np.testing.assert_allclose(P.warp(x, tf.fill([40], 0.99), 0.1).numpy(), x.numpy())
    slow = P.stretch(x, 1.5, 0.0).numpy()  # 60 frames, first 40 kept
    assert slow.shape == (23, 40)
    np.testing.assert_allclose(slow[:, 0], x.numpy()[:, 0], atol=1e-6)
    fast = P.stretch(x, 0.5, 0.0).numpy()  # 20 frames, wrap-padded
    np.testing.assert_allclose(fast[:, :20], fast[:, 20:], atol=1e-6)
    half = P.crop(x, 0.5, 0.0).numpy()  # frames 0..19 stretched over 40
    np.testing.assert_allclose(half[:, -1], x.numpy()[:, 19], atol=1e-6)
    # warp (rate 0.3: thirds of 0.1): frames 0, 1 dropped, 2 duplicated, 3 silenced -> 39 frames
    u = np.full(40, 0.99, np.float32)
    u[:4] = [0.05, 0.05, 0.15, 0.25]
    w = P.warp(x, tf.constant(u), 0.3).numpy()
    xs = x.numpy()
    np.testing.assert_array_equal(w[:, 0], xs[:, 2])
    np.testing.assert_array_equal(w[:, 1], xs[:, 2])
    assert (w[:, 2] == 0).all()
    np.testing.assert_array_equal(w[:, 3:39], xs[:, 4:40])
    np.testing.assert_array_equal(w[:, 39], xs[:, 2])  # wrapped back to 40 frames


def test_augment_is_seeded():
    x = tf.constant(tile_pitch(np.random.default_rng(2).random((12, 32))).astype(np.float32))
    aug = TRAIN["augment"]
    a = P.augment(x, tf.constant([1, 2], tf.int64), aug).numpy()
    b = P.augment(x, tf.constant([1, 2], tf.int64), aug).numpy()
    outs = [P.augment(x, tf.constant([s, 9], tf.int64), aug).numpy() for s in range(6)]
    np.testing.assert_array_equal(a, b)
    assert a.shape == (23, 32)
    assert any(not np.allclose(o, x.numpy()) for o in outs)
    assert any(not np.allclose(o, outs[0]) for o in outs[1:])
    np.testing.assert_array_equal(P.augment(x, tf.constant([1, 2], tf.int64), AUG_OFF).numpy(),
                                  x.numpy())


@pytest.mark.parametrize("loss,sampling", [("contrastive", "random"), ("bce", "hardest"),
                                           ("triplet", "random")])
def test_make_dataset_modes(loss, sampling):
    x = np.random.default_rng(3).random((len(LABELS), 23, 16)).astype(np.float32)
    train = {**TRAIN, "loss": loss, "negative_sampling": sampling}
    batches = list(P.make_dataset(x, LABELS, train, seed=5, epochs=2))
    again = list(P.make_dataset(x, LABELS, train, seed=5, epochs=2))
    assert len(batches) == 3
    if loss == "triplet":
        xb, w = batches[0]
        assert xb.shape == (6, 23, 16) and w.shape == (6,)
        assert P.batch_items(train) == 6
    else:
        (x1, x2), extra = batches[0]
        assert x1.shape == x2.shape == (6, 23, 16)
        assert extra.shape == ((6,) if sampling == "random" else (6, 2))
        assert P.batch_items(train) == 12
    flat = lambda bs: np.concatenate([np.ravel(t) for b in bs for t in tf.nest.flatten(b)])  # noqa: E731
    np.testing.assert_array_equal(flat(batches), flat(again))
    unaugmented = list(P.make_dataset(x, LABELS, train, 5, 2, augment_on=False))
    assert not np.array_equal(flat(batches), flat(unaugmented))
    two_epochs = list(P.make_dataset(x, LABELS, train, 5, range(1, 3)))
    assert len(two_epochs) == 6
    np.testing.assert_array_equal(flat(two_epochs[3:]), flat(batches))


def test_pair_losses_use_pk_batches_with_batch_sampling():
    for loss in ("contrastive", "bce", "triplet"):
        assert P.mode_for({**TRAIN, "loss": loss, "negative_sampling": "batch"}) == "pk"
        assert P.batch_items({**TRAIN, "loss": loss, "negative_sampling": "batch"}) == 6


def test_mode_errors():
    with pytest.raises(CoveridError, match="negative_sampling"):
        P.mode_for({**TRAIN, "negative_sampling": "semi"})


def _versions(rng: np.random.Generator, shifts: list[int], length: int = 20) -> np.ndarray:
    """Versions of one random (12, length) song, each rolled by its key shift, tiled."""
    base = rng.random((12, length)) * np.linspace(1.0, 0.2, 12)[:, None]  # a clear key profile
    return np.stack([tile_pitch(np.roll(base, s, axis=0)) for s in shifts]).astype(np.float32)


def test_relative_keys_recover_the_shifts():
    rng = np.random.default_rng(4)
    x = np.concatenate([_versions(rng, [0, 3, 7]), _versions(rng, [5, 5, 11])])
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert P.relative_keys(x, labels).tolist() == [0, 3, 7, 0, 0, 6]


def test_remap_makes_a_new_work_whose_versions_stay_transpositions():
    x = _versions(np.random.default_rng(5), [0, 4])
    perm = tf.constant([3, 0, 1, 2, 11, 5, 6, 7, 8, 9, 10, 4])
    a = P.remap(tf.constant(x[0]), perm, 0, tiled=True).numpy()
    b = P.remap(tf.constant(x[1]), perm, 4, tiled=True).numpy()
    np.testing.assert_allclose(a[:12], x[0][:12][perm.numpy()])  # row i <- row perm[i]
    np.testing.assert_allclose(np.roll(a[:12], 4, axis=0), b[:12])  # still 4 semitones apart
    np.testing.assert_allclose(a[12:], a[:11])  # re-tiled
    assert not np.allclose(a, x[0])


def test_pk_batches_remap_each_work_once_for_all_its_versions():
    rng = np.random.default_rng(6)
    x = np.concatenate([_versions(rng, [0, 0, 0], 16) for _ in range(4)])  # identical versions
    labels = np.repeat(np.arange(4), 3).astype(np.int32)
    train = {**TRAIN, "loss": "triplet", "steps_per_epoch": 6,
             "augment": {**AUG_OFF, "p_remap": 1.0}}
    changed = 0
    for xb, w in P.make_dataset(x, labels, train, seed=7, epochs=1):
        xb, w = xb.numpy(), w.numpy()
        for work in np.unique(w):
            rows = xb[w == work]
            for other in rows[1:]:  # one permutation for every version of the work
                np.testing.assert_array_equal(other, rows[0])
            assert sorted(map(tuple, rows[0][:12])) == sorted(map(tuple, x[3 * work][:12]))
            changed += not np.array_equal(rows[0], x[3 * work])
    assert changed == 6 * 2  # every work of every batch became a new one


def test_move_notes_moves_energy_a_step_or_two_within_short_spans():
    base = np.zeros((12, 40), np.float32)
    base[0] = 1.0  # one note (pitch class 0) held throughout
    x = tf.constant(tile_pitch(base))
    y = P.move_notes(x, tf.constant([3, 4], tf.int64), n_moves=2, min_frames=3,
                     max_frames=5, tiled=True).numpy()
    np.testing.assert_allclose(y[:12].sum(0), 1.0)  # energy moved, not created or lost
    np.testing.assert_array_equal(y[12:], y[:11])
    moved = np.flatnonzero(y[0] < 1.0)
    assert 3 <= len(moved) <= 10  # two spans of 3..5 frames (they may overlap)
    assert set(np.flatnonzero(y[:, moved].max(1) > 0)) <= {0, 1, 2, 10, 11}  # 1-2 steps away
    again = P.move_notes(x, tf.constant([3, 4], tf.int64), 2, 3, 5, True).numpy()
    np.testing.assert_array_equal(y, again)


def test_batch_items_counts_the_works_a_batch_can_hold():
    train = {**TRAIN, "loss": "triplet", "works_per_batch": 10}
    assert P.batch_items(train) == 30
    # LABELS has 4 works with versions: sample_pk draws 4 works per batch, not 10.
    assert P.batch_items(train, LABELS) == 12
    assert P.batch_items({**train, "singleton_positives": True}, LABELS) == 18
    assert len(P.sample_pk(LABELS, 1, 10, 3, np.random.default_rng(0), False)) == 12
