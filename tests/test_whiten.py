"""The whitening projection fitted after training and the BCE head refitted on it (whiten.py)."""

import numpy as np
import pytest

from coverid.model.whiten import fit_head, power_normalise, project, whitening


def clustered(n_works: int = 30, versions: int = 4, d: int = 40, seed: int = 0):
    """Non-negative unit rows (like the bag's counts): a work's versions share a pattern; one
    loud shared direction dominates the variance without telling works apart."""
    rng = np.random.default_rng(seed)
    base = rng.random((n_works, d)) ** 4
    x = np.repeat(base, versions, axis=0) + 0.05 * rng.random((n_works * versions, d))
    x[:, 0] += 3.0 * rng.random(len(x))  # loud, work-independent
    labels = np.repeat(np.arange(n_works), versions)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def map_of(e: np.ndarray, labels: np.ndarray) -> float:
    """Retrieval MAP of every row against the others (numpy reference)."""
    d = np.linalg.norm(e[:, None] - e[None], axis=-1)
    aps = []
    for q in range(len(e)):
        order = [i for i in np.argsort(d[q], kind="stable") if i != q]
        rel = labels[order] == labels[q]
        hits = np.flatnonzero(rel)
        aps.append(np.mean((np.arange(len(hits)) + 1) / (hits + 1)))
    return float(np.mean(aps))


def test_whitened_training_rows_have_zero_mean_and_unit_covariance():
    x, _ = clustered()
    w, b = whitening(x, dim=10, shrinkage=0.0)
    y = x @ w + b
    assert w.shape == (40, 10) and b.shape == (10,)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(10), atol=1e-4)


def test_the_components_are_the_top_principal_axes_in_order():
    x, _ = clustered()
    w, _ = whitening(x, dim=5, shrinkage=0.0)
    xc = x - x.mean(0)
    var, vec = np.linalg.eigh(np.cov(xc.T, bias=True))
    top = vec[:, ::-1][:, :5]
    # each column is a top eigenvector divided by the square root of its eigenvalue (up to sign)
    scaled = w * np.sqrt(var[::-1][:5])
    np.testing.assert_allclose(np.abs(np.sum(scaled * top, axis=0)), 1.0, atol=1e-4)


def test_shrinkage_damps_the_small_components_only_relatively():
    x, _ = clustered()
    w0, _ = whitening(x, dim=10, shrinkage=0.0)
    w1, _ = whitening(x, dim=10, shrinkage=1.0)
    gain = np.linalg.norm(w1, axis=0) / np.linalg.norm(w0, axis=0)
    assert np.all(gain < 1.0) and np.all(np.diff(gain) < 1e-9)  # the smallest shrink most


def test_whitening_is_deterministic_and_sign_fixed():
    x, _ = clustered()
    w, b = whitening(x, 8, 0.1)
    w2, b2 = whitening(x[::-1].copy(), 8, 0.1)  # another row order, the same covariance
    np.testing.assert_allclose(w, w2, atol=1e-5)
    np.testing.assert_allclose(b, b2, atol=1e-5)
    assert np.all(w[np.abs(w).argmax(0), np.arange(8)] > 0)


def test_whitening_keeps_retrieval_where_the_loud_shared_direction_hides_it():
    x, labels = clustered()
    w, b = whitening(x, dim=20, shrinkage=0.1)
    assert map_of(project(x, w, b), labels) > map_of(x, labels) + 0.05


def test_power_normalise_is_a_signed_power_of_unit_rows():
    x = np.array([[4.0, 0.0, 1.0, 0.0], [0.0, -9.0, 0.0, 16.0]])
    assert power_normalise(x, 1.0) is x  # off: untouched, the same bytes
    y = power_normalise(x, 0.5)
    want = np.array([[2.0, 0.0, 1.0, 0.0], [0.0, -3.0, 0.0, 4.0]])
    np.testing.assert_allclose(y, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-6)
    assert y.dtype == np.float32


def bursty(n_works: int = 25, versions: int = 4, d: int = 60, seed: int = 0):
    """Non-negative unit rows: a work's versions share a sparse set of patterns, and each song
    also has a burst (one pattern counted many times) that no other song shares, in a random
    dim: no principal axis holds the bursts, so whitening alone cannot damp them."""
    rng = np.random.default_rng(seed)
    base = (rng.random((n_works, d)) < 0.2) * rng.random((n_works, d))
    x = np.repeat(base, versions, axis=0) * (0.7 + 0.6 * rng.random((n_works * versions, d)))
    x[np.arange(len(x)), rng.integers(0, d, len(x))] += 4.0 * (0.5 + rng.random(len(x)))
    labels = np.repeat(np.arange(n_works), versions)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_power_below_1_damps_bursts_that_whitening_leaves(seed):
    x, labels = bursty(seed=seed)
    plain = project(x, *whitening(x, 40, 0.1))
    rooted = power_normalise(x, 0.5)
    powered = project(rooted, *whitening(rooted, 40, 0.1))
    assert map_of(powered, labels) > map_of(plain, labels) + 0.05


def test_whitening_needs_as_many_songs_as_dims():
    x, _ = clustered(n_works=2, versions=2)
    with pytest.raises(ValueError, match="at least 5 songs"):
        whitening(x, dim=5, shrinkage=0.1)
    with pytest.raises(ValueError, match="shrinkage"):
        whitening(x, dim=2, shrinkage=-1.0)


def test_project_is_unit_norm():
    x, _ = clustered()
    w, b = whitening(x, 6, 0.1)
    y = project(x, w, b)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(y, (x @ w + b) / np.linalg.norm(x @ w + b, axis=1, keepdims=True),
                               atol=1e-5)


def test_refitted_head_scores_same_work_pairs_higher():
    x, labels = clustered()
    e = project(x, *whitening(x, 10, 0.1))
    w, bias = fit_head(e, labels, n_negatives=2000, seed=0, c=0.1)
    i, j = np.triu_indices(len(e), k=1)
    logits = np.abs(e[i] - e[j]) @ w + bias
    same = labels[i] == labels[j]
    # nearly every positive pair outscores nearly every negative pair (ROC AUC)
    auc = (logits[same][:, None] > logits[~same][None]).mean()
    assert w.shape == (10,) and auc > 0.95
    # same bytes from the same seed
    w2, bias2 = fit_head(e, labels, n_negatives=2000, seed=0, c=0.1)
    np.testing.assert_array_equal(w, w2)
    assert bias == bias2


def test_a_strongly_regularised_head_is_a_plain_l1_distance():
    x, labels = clustered()
    e = project(x, *whitening(x, 10, 0.1))
    w, _ = fit_head(e, labels, n_negatives=2000, seed=0, c=1e-6)
    # the departures from uniform weights are penalised away; the L1 weight (negative: a larger
    # distance is less likely the same work) is not
    assert np.all(w < 0)
    np.testing.assert_allclose(w, w.mean(), rtol=0.02)
    loose, _ = fit_head(e, labels, n_negatives=2000, seed=0, c=10.0)
    assert np.std(loose) / abs(np.mean(loose)) > 0.1


def test_fit_head_needs_both_kinds_of_pair():
    e = np.random.default_rng(0).random((4, 3))
    with pytest.raises(ValueError, match="positive and negative"):
        fit_head(e, np.arange(4), 10, 0, 0.1)


@pytest.mark.parametrize("loss,power", [("triplet", 1.0), ("bce", 0.5)])
def test_fit_whitens_the_training_songs_and_refits_the_head(loss, power):
    pytest.importorskip("tensorflow")
    from conftest import make_feature_set
    from test_train import default_setup, tiny_params

    from coverid.core.config import with_overrides
    from coverid.model.embedder import Embedder, metric_for
    from coverid.model.encoders import full_embedding, projection_of
    from coverid.train.fit import fit

    tr = make_feature_set(n_works=4, versions=3, n_noise=1, spect_len=24, seed=0)
    va = make_feature_set(n_works=3, versions=2, n_noise=1, spect_len=24, seed=1)
    params = with_overrides(tiny_params(loss=loss, epochs=2), {"model.projection_dim": 4,
                                                               "model.projection_power": power})
    res = fit(params, tr, va, None, default_setup())
    proj = projection_of(res.encoder)
    assert not proj.trainable
    full = np.asarray(full_embedding(res.encoder)(tr.features, training=False), np.float64)
    assert full.shape == (len(tr.features), 8)
    full = np.asarray(power_normalise(full, power), np.float64)  # what the projection sees
    kernel, bias = np.asarray(proj.kernel, np.float64), np.asarray(proj.bias, np.float64)
    # the training rows, projected, are whitened: zero mean, covariance var / (var + s mean(var))
    # on the top 4 principal axes (compared as a covariance: the tiny model's near-equal
    # components are not pinned down one by one)
    y = full @ kernel + bias
    var = np.linalg.svd(full - full.mean(0), compute_uv=False)[:4] ** 2 / len(full)
    shrink = params["model"]["projection_shrinkage"]
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.diag(var / (var + shrink * var.mean())),
                               atol=1e-3)
    w, b = kernel, bias
    embedder = Embedder(res.encoder, {"metric": metric_for(loss)}, res.head)
    e = embedder.embed(tr.features)
    # float32 embeddings through two graphs: the smallest whitened components amplify their
    # rounding, which depends on the CPU's kernels (1e-4 held on one CPU, 2e-4 on another)
    np.testing.assert_allclose(e, project(full, w, b), atol=1e-3)
    if loss == "bce":
        bce = params["train"]["losses"]["bce"]
        head_w, head_b = fit_head(e, tr.work_id, bce["refit_negatives"], 7, bce["refit_c"])
        assert res.head[0].shape == (4,)
        np.testing.assert_allclose(res.head[0], head_w, rtol=1e-3, atol=1e-4)
    else:
        assert res.head is None


def test_fit_says_when_there_are_too_few_songs_to_whiten():
    pytest.importorskip("tensorflow")
    from conftest import make_feature_set
    from test_train import default_setup, tiny_params

    from coverid.core.config import with_overrides
    from coverid.core.errors import CoveridError
    from coverid.train.fit import fit

    tr = make_feature_set(n_works=2, versions=2, n_noise=0, spect_len=24, seed=0)
    params = with_overrides(tiny_params(epochs=1), {"model.projection_dim": 6})
    with pytest.raises(CoveridError, match="projection_dim 6: the whitening needs at least"):
        fit(params, tr, tr, None, default_setup())


@pytest.mark.parametrize("loss", ["triplet", "bce"])
def test_refitting_the_whitening_while_training_trains_through_it(loss, monkeypatch):
    """model.projection_refit_every N: the whitening is fitted at the start and after every N
    epochs, the loss (and val MAP) see the projected embedding, and the saved projection is the
    whitening of the best weights' training songs, as without it."""
    pytest.importorskip("tensorflow")
    from conftest import make_feature_set
    from test_train import default_setup, tiny_params

    from coverid.core.config import with_overrides
    from coverid.model.embedder import embed_batches, make_embed_fn
    from coverid.model.encoders import full_embedding, projection_of
    from coverid.train import fit as fit_mod
    from coverid.train.pairs import batch_items, encode_labels

    tr = make_feature_set(n_works=4, versions=3, n_noise=1, spect_len=24, seed=0)
    va = make_feature_set(n_works=3, versions=2, n_noise=1, spect_len=24, seed=1)
    over = {"model.projection_dim": 4, "model.projection_power": 0.75}
    base = with_overrides(tiny_params(loss=loss, epochs=4), over)
    refit = with_overrides(base, {"model.projection_refit_every": 2})
    calls = []
    original = fit_mod.Trainer.refit_projection
    monkeypatch.setattr(fit_mod.Trainer, "refit_projection",
                        lambda self, x, b: (calls.append(len(x)), original(self, x, b))[1])
    trainer = fit_mod.Trainer(refit, tr.features.shape[1:], default_setup())
    assert trainer.embed(tr.features[:3], True).shape == (3, 4)  # the loss sees the projection
    assert fit_mod.Trainer(base, tr.features.shape[1:], default_setup()).embed(
        tr.features[:3], True).shape == (3, 8)
    a = fit_mod.fit(refit, tr, va, None, default_setup())
    assert calls == [len(tr.features)] * 3  # the start, after epochs 2 and 4
    b = fit_mod.fit(base, tr, va, None, default_setup())
    full_a = np.asarray(full_embedding(a.encoder)(tr.features, training=False))
    full_b = np.asarray(full_embedding(b.encoder)(tr.features, training=False))
    assert np.all(np.isfinite(full_a)) and not np.allclose(full_a, full_b, atol=1e-4)
    # the trainer's own embedding graph and batches: the same float32 bytes (a whitening of this
    # tiny model amplifies the rounding of another graph's embeddings into its kernel)
    batch = batch_items(refit["train"], encode_labels(tr.work_id))
    full = embed_batches(make_embed_fn(full_embedding(a.encoder)), tr.features, batch, 8)
    kernel, bias = fit_mod.fitted_whitening(refit["model"], power_normalise(full, 0.75))
    np.testing.assert_allclose(np.asarray(projection_of(a.encoder).kernel), kernel, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(projection_of(a.encoder).bias), bias, rtol=1e-5,
                               atol=1e-6)
    again = fit_mod.fit(refit, tr, va, None, default_setup())
    assert again.state.history == a.state.history
