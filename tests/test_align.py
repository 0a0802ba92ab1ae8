"""The numpy Qmax (coverid.eval.align) against essentia's, which it re-implements for batches."""

from __future__ import annotations

import numpy as np
import pytest

from coverid.eval.align import alignment_score, cross_similarity, qmax_distances

es = pytest.importorskip("essentia.standard")

CFG = {"frame_stack_size": 9, "frame_stack_stride": 1, "binarize_percentile": 0.095,
       "dis_onset": 0.5, "dis_extension": 0.5, "distance_type": "asymmetric"}


def chroma_pairs(n_pairs: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, 12, L) pairs: each even pair a transposed noisy copy with a shifted start, odd ones unrelated."""
    rng = np.random.default_rng(seed)
    a = rng.random((n_pairs, 12, length)).astype(np.float32)
    b = rng.random((n_pairs, 12, length)).astype(np.float32)
    for i in range(0, n_pairs, 2):
        b[i] = np.roll(np.roll(a[i], 1 + i % 11, axis=0), 3, axis=1) + 0.3 * b[i]
    return a, b


def essentia_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """essentia's ChromaCrossSimilarity (oti) of one pair, as coverid.eval.baselines.Qmax runs it."""
    csm = es.ChromaCrossSimilarity(frameStackSize=CFG["frame_stack_size"], frameStackStride=1,
                                   binarizePercentile=CFG["binarize_percentile"], oti=True)
    return np.array(csm(np.ascontiguousarray(a.T), np.ascontiguousarray(b.T))).astype(bool)


@pytest.mark.parametrize("onset,extension", [(0.5, 0.5), (0.5, 0.7), (1.0, 0.2)])
def test_alignment_score_equals_essentias_serra09(onset: float, extension: float) -> None:
    rng = np.random.default_rng(3)
    c = rng.random((12, 30, 37)) < 0.25
    sw = es.CoverSongSimilarity(alignmentType="serra09", disOnset=onset, disExtension=extension)
    expected = [float(np.max(sw(x.astype(np.float32))[0])) for x in c]
    np.testing.assert_allclose(alignment_score(c, onset, extension), expected, rtol=0, atol=1e-5)


def test_alignment_score_by_hand() -> None:
    c = np.zeros((1, 9, 9), bool)
    for i in (2, 3, 4, 6, 7, 8):  # a diagonal run of 3, one mismatch, a run of 3
        c[0, i, i] = True
    # 1, 2, 3; the mismatch leaves a match: 3 - onset; then + 1 three times
    assert alignment_score(c, 0.5, 0.2)[0] == pytest.approx(3 - 0.5 + 3)
    c[0, 2:5] = False  # the first run gone: the second alone
    assert alignment_score(c, 0.5, 0.2)[0] == pytest.approx(3)
    assert alignment_score(np.zeros((2, 9, 9), bool), 0.5, 0.5).tolist() == [0, 0]


def test_cross_similarity_equals_essentias() -> None:
    a, b = chroma_pairs(6, 60, seed=1)
    ours = cross_similarity(a, b, CFG["frame_stack_size"], CFG["binarize_percentile"])
    for i in range(len(a)):
        np.testing.assert_array_equal(ours[i], essentia_matrix(a[i], b[i]))


def test_qmax_distances_equal_essentias_qmax() -> None:
    from coverid.eval.baselines import Qmax

    a, b = chroma_pairs(8, 70, seed=2)
    qmax = Qmax(CFG)
    expected = np.array([qmax(x, y) for x, y in zip(a, b)])
    ours = qmax_distances(a, b, CFG)
    np.testing.assert_allclose(ours, expected, rtol=1e-5)
    assert ours[::2].max() < ours[1::2].min()  # the related pairs are nearer


def test_qmax_distances_ignore_transposition_and_batching() -> None:
    a, b = chroma_pairs(4, 50, seed=4)
    whole = qmax_distances(a, b, CFG)
    one_by_one = np.concatenate([qmax_distances(a[i:i + 1], b[i:i + 1], CFG) for i in range(len(a))])
    np.testing.assert_array_equal(whole, one_by_one)
    np.testing.assert_allclose(qmax_distances(a, np.roll(b, 5, axis=1), CFG), whole, rtol=1e-6)


@pytest.mark.parametrize("change", [{"frame_stack_stride": 2}, {"distance_type": "symmetric"}])
def test_unsupported_settings_are_refused(change: dict) -> None:
    from coverid.core.errors import CoveridError

    a, b = chroma_pairs(2, 40, seed=5)
    with pytest.raises(CoveridError, match="numpy Qmax supports"):
        qmax_distances(a, b, {**CFG, **change})


def test_too_short_chroma_is_refused() -> None:
    from coverid.core.errors import CoveridError

    a, b = chroma_pairs(2, 11, seed=6)
    with pytest.raises(CoveridError, match="at least 12 frames, got 11"):
        qmax_distances(a, b, CFG)
    assert qmax_distances(*chroma_pairs(2, 12, seed=6), CFG).shape == (2,)
