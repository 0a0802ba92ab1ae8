"""Classical baselines: key-shifted banded DTW, essentia Qmax, and their retrieval run."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_feature_set

from coverid.core.errors import CoveridError
from coverid.eval.baselines import (
    Qmax,
    band_mask,
    distance_rows,
    dtw,
    dtw_distance,
    run_baselines,
    select_queries,
    to_chroma,
)
from coverid.features.transform import resize_time

QMAX_CFG = {"frame_stack_size": 9, "frame_stack_stride": 1, "binarize_percentile": 0.095,
            "dis_onset": 0.5, "dis_extension": 0.5, "distance_type": "asymmetric"}


def chroma(seed: int, frames: int = 60) -> np.ndarray:
    """A smooth random (12, frames) chroma-like sequence."""
    rng = np.random.default_rng(seed)
    x = rng.random((12, frames // 4 + 1))
    return np.repeat(x, 4, axis=1)[:, :frames].astype(np.float32)


def stretch(x: np.ndarray, frames: int) -> np.ndarray:
    """Time-stretch (12, T) to (12, frames)."""
    return resize_time(x.T, frames).T


def reference_dtw(cost: np.ndarray, mask: np.ndarray) -> float:
    """The same recursion as a plain double loop."""
    n, m = cost.shape
    acc = np.full((n, m), np.inf)
    for i in range(n):
        for j in range(m):
            if not mask[i, j]:
                continue
            if i == 0 and j == 0:
                acc[i, j] = 2 * cost[0, 0]
                continue
            best = min(acc[i - 1, j] + cost[i, j] if i else np.inf,
                       acc[i, j - 1] + cost[i, j] if j else np.inf,
                       acc[i - 1, j - 1] + 2 * cost[i, j] if i and j else np.inf)
            acc[i, j] = best
    return acc[-1, -1] / (n + m)


@pytest.mark.parametrize("n,m,band", [(9, 9, 1.0), (9, 9, 0.2), (7, 11, 0.3), (12, 5, 0.0)])
def test_dtw_matches_double_loop(n, m, band):
    rng = np.random.default_rng(n * m)
    cost = rng.random((n, m)).astype(np.float32)
    mask = band_mask(n, m, band)
    assert dtw(cost, mask) == pytest.approx(reference_dtw(cost, mask), rel=1e-5)
    # Batched over leading axes gives the same per item.
    batch = np.stack([cost, cost[::-1].copy()])
    got = dtw(batch, mask)
    assert got[0] == pytest.approx(reference_dtw(cost, mask), rel=1e-5)
    assert got[1] == pytest.approx(reference_dtw(cost[::-1], mask), rel=1e-5)


def test_band_mask_allows_a_path_for_any_band():
    for n, m in ((10, 10), (10, 4), (4, 10)):
        mask = band_mask(n, m, 0.0)
        assert mask[0, 0] and mask[-1, -1]
        assert np.isfinite(dtw(np.ones((n, m), np.float32), mask))
    wide = band_mask(20, 20, 0.25)
    assert wide[0, 4] and not wide[0, 6]


def test_dtw_transposed_copy_is_near_zero_with_the_right_shift():
    a = chroma(0)
    b = np.roll(a, 5, axis=0)
    d, shift = dtw_distance(a, b, band=0.25)
    assert d == pytest.approx(0.0, abs=1e-6)
    assert shift == 7  # np.roll(b, 7) == np.roll(a, 12) == a
    np.testing.assert_allclose(np.roll(b, shift, axis=0), a)
    d_other, _ = dtw_distance(a, chroma(1), band=0.25)
    assert d_other > 0.05
    # A transposed and time-stretched copy stays much closer than an unrelated song.
    d_stretched, shift = dtw_distance(a, stretch(np.roll(a, 2, axis=0), 75), band=0.25)
    assert shift == 10 and d_stretched < d_other / 3


def test_qmax_transposed_stretched_copy_scores_closer():
    pytest.importorskip("essentia")
    qmax = Qmax(QMAX_CFG)
    a = chroma(2)
    cover = stretch(np.roll(a, 4, axis=0), 70)
    assert qmax(a, cover) < qmax(a, chroma(3))
    assert qmax(a, np.roll(a, 3, axis=0)) == pytest.approx(qmax(a, a))


def test_to_chroma_takes_untiled_rows_and_averages_frames():
    x = np.arange(2 * 23 * 8, dtype=np.float32).reshape(2, 23, 8)
    c = to_chroma(x, 4)
    assert c.shape == (2, 12, 2)
    np.testing.assert_allclose(c[0, 0], [x[0, 0, :4].mean(), x[0, 0, 4:].mean()])
    assert to_chroma(x, 1).shape == (2, 12, 8)


def test_select_queries_only_with_relevant_candidates():
    work = np.array(["A", "A", "N", "B", "B", "B", "M"])
    assert select_queries(work, None, 0).tolist() == [0, 1, 3, 4, 5]
    picked = select_queries(work, 3, seed=1)
    assert len(picked) == 3 and set(picked) <= {0, 1, 3, 4, 5}
    np.testing.assert_array_equal(picked, select_queries(work, 3, seed=1))


@pytest.mark.parametrize("method", ["dtw", "qmax"])
def test_run_baselines_on_a_tiny_set_is_sane(method):
    if method == "qmax":
        pytest.importorskip("essentia")
    fs = make_feature_set(n_works=3, versions=3, n_noise=2, spect_len=48, seed=1)
    cfg = {"methods": [method], "max_queries": 6, "workers": 1, "downsample": 2,
           "dtw_band": 0.25, "qmax": QMAX_CFG}
    result, seconds = run_baselines(fs.features, fs.work_id, cfg, seed=0)
    out = result[method]
    assert set(out) == {"map", "map_se", "mr1", "p10", "n_queries"}  # quality only: no timings
    assert out["n_queries"] == 6
    # Versions share a base pattern: the first hit is a version, MAP near 1.
    assert out["map"] > 0.9 and out["mr1"] == pytest.approx(1.0)
    assert out["p10"] == pytest.approx(0.2)  # two relevant candidates in the top 10
    assert seconds[method] > 0


def test_process_pool_gives_the_same_rows():
    fs = make_feature_set(n_works=2, versions=2, n_noise=1, spect_len=24, seed=2)
    c = to_chroma(fs.features, 2)
    queries = np.array([0, 3])
    cfg = {"dtw_band": 0.25}
    serial, _ = distance_rows("dtw", c, queries, cfg, workers=1)
    pooled, secs = distance_rows("dtw", c, queries, cfg, workers=2)
    np.testing.assert_allclose(serial, pooled)
    assert serial.shape == (2, len(c)) and np.all(secs > 0)


def test_bad_methods_and_no_queries():
    fs = make_feature_set(n_works=0, versions=1, n_noise=3, spect_len=24)
    cfg = {"methods": ["dtw"], "max_queries": 2, "workers": 1, "downsample": 1, "dtw_band": 0.2}
    with pytest.raises(CoveridError, match="nothing to query"):
        run_baselines(fs.features, fs.work_id, cfg, seed=0)
    with pytest.raises(CoveridError, match="unknown"):
        run_baselines(fs.features, fs.work_id, {**cfg, "methods": ["svm"]}, seed=0)


def test_qmax_too_few_frames_is_a_clear_error():
    fs = make_feature_set(n_works=2, versions=2, n_noise=0, spect_len=40)
    cfg = {"methods": ["qmax"], "max_queries": 2, "workers": 1, "downsample": 4,
           "dtw_band": 0.2, "qmax": QMAX_CFG}
    with pytest.raises(CoveridError, match="at least 11 frames"):
        run_baselines(fs.features, fs.work_id, cfg, seed=0)
