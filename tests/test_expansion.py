"""Query expansion / database-side augmentation against hand-computed values."""

import numpy as np
import pytest
from conftest import CHUNK, chains

from coverid.core.errors import CoveridError
from coverid.eval.expansion import (
    augment,
    check_expansion,
    expand,
    expansion_of,
    nearest,
    select_expansion,
    unit,
)
from coverid.eval.metrics import retrieval_metrics_from_embeddings


def test_nearest_matches_brute_force_and_excludes_self():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5)).astype(np.float32)
    idx, sims = nearest(x, x, 4, exclude=np.arange(30), chunk_size=7)
    cos = unit(x) @ unit(x).T
    np.fill_diagonal(cos, -np.inf)
    want = np.argsort(-cos, axis=1)[:, :4]
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(sims, np.take_along_axis(cos, want, axis=1), rtol=1e-5)
    assert not (idx == np.arange(30)[:, None]).any()


def test_expand_by_hand():
    x = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    idx, sims = np.array([[1, 2]]), np.array([[0.6, -0.2]], dtype=np.float32)
    # alpha 1: x0 + 0.6 x1 + 0 x2 (negative similarities weigh nothing) = (1.36, 0.48)
    want = np.array([1.36, 0.48]) / np.hypot(1.36, 0.48)
    np.testing.assert_allclose(expand(x[:1], x[idx], sims, 1.0)[0], want, rtol=1e-6)
    # alpha 0: every positive neighbour weighs 1: x0 + x1 = (1.6, 0.8)
    want0 = np.array([1.6, 0.8]) / np.hypot(1.6, 0.8)
    np.testing.assert_allclose(expand(x[:1], x[idx[:, :1]], sims[:, :1], 0.0)[0], want0,
                               rtol=1e-6)


def test_augment_k0_only_normalises():
    x = np.array([[3.0, 4.0], [0.0, 2.0]])
    np.testing.assert_allclose(augment(x, 0, 1.0, CHUNK), [[0.6, 0.8], [0.0, 1.0]], rtol=1e-6)


def test_augment_pulls_versions_together():
    x, work = chains()
    plain = retrieval_metrics_from_embeddings(x, work, chunk_size=CHUNK)["map"]
    expanded = retrieval_metrics_from_embeddings(augment(x, 2, 1.0, CHUNK), work, chunk_size=CHUNK)["map"]
    assert expanded > plain + 0.05


def test_select_expansion_picks_on_map():
    x, work = chains()
    best = select_expansion(x, work, "euclidean", None, {"k": [0, 1, 2], "alpha": [0.0, 1.0]}, CHUNK)
    assert best["k"] > 0 and best["val_map"] > best["val_map_plain"]
    want = retrieval_metrics_from_embeddings(augment(x, best["k"], best["alpha"], CHUNK), work, chunk_size=CHUNK)["map"]
    assert best["val_map"] == pytest.approx(want)
    # Two tight, far-apart works: nothing to gain, so the plain ranking (k = 0) is kept.
    y = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.14, 0.99]])
    tie = select_expansion(y, np.array(["A", "A", "B", "B"]), "euclidean", None,
                           {"k": [0, 1], "alpha": [1.0]}, CHUNK)
    assert tie["k"] == 0 and tie["val_map"] == tie["val_map_plain"] == 1.0
    # The BCE head's distance cannot be expanded: always the plain ranking.
    head = (np.ones(16, dtype=np.float32), 0.0)
    assert select_expansion(x, work, "bce", head, {"k": [1, 2], "alpha": [1.0]}, CHUNK)["k"] == 0


def test_check_expansion_errors():
    assert expansion_of(None) == expansion_of({"expansion": None}) == {"k": 0, "alpha": 0.0}
    assert expansion_of({"expansion": {"k": 3}}) == {"k": 3, "alpha": 0.0}
    assert check_expansion(expansion_of({}), "bce") == (0, 0.0)
    assert check_expansion({"k": 2, "alpha": 1}, "cosine") == (2, 1.0)
    with pytest.raises(CoveridError, match="k >= 0"):
        check_expansion({"k": -1, "alpha": 0.0}, "euclidean")
    with pytest.raises(CoveridError, match="'bce'"):
        check_expansion({"k": 1, "alpha": 0}, "bce")
