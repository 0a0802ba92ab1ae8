"""Retrieval and verification metrics against plain-loop references, hand cases and sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from coverid.eval.distance import pairwise
from coverid.eval.metrics import (
    ThresholdScorer,
    average_precision,
    per_query_ap,
    pr_curve,
    query_stats,
    retrieval_metrics,
    retrieval_metrics_from_embeddings,
    roc_auc,
    roc_curve,
    sample_pairs,
    verification_metrics,
)


def reference_retrieval(dist: np.ndarray, work: np.ndarray) -> dict[str, float]:
    """SPEC section 4 written as plainly as possible."""
    n = len(work)
    aps, r1s, p10s = [], [], []
    for q in range(n):
        cands = sorted((j for j in range(n) if j != q), key=lambda j: (dist[q, j], j))
        rel = [work[j] == work[q] for j in cands]
        if not any(rel):
            continue
        hits, precs = 0, []
        for k, r in enumerate(rel, start=1):
            if r:
                hits += 1
                precs.append(hits / k)
        aps.append(sum(precs) / sum(rel))
        r1s.append(rel.index(True) + 1)
        p10s.append(sum(rel[:10]) / 10)
    return {"map": np.mean(aps), "mr1": np.mean(r1s), "p10": np.mean(p10s), "n": len(aps),
            "aps": np.array(aps)}


def random_case(seed: int, n_works: int = 7, n_noise: int = 5, levels: int | None = None):
    """Random labels (works of 1-5 versions plus noise) and a random distance matrix."""
    rng = np.random.default_rng(seed)
    work = [f"W{w}" for w in range(n_works) for _ in range(rng.integers(1, 6))]
    work += [f"N{k}" for k in range(n_noise)]
    work = np.array(work)[rng.permutation(len(work))]
    n = len(work)
    dist = rng.random((n, n))
    if levels:  # few distinct values: many ties
        dist = np.floor(dist * levels) / levels
    return dist, work


@pytest.mark.parametrize("seed,levels", [(0, None), (1, None), (2, 3), (3, 2), (4, 1)])
def test_matches_plain_loop_reference(seed, levels):
    dist, work = random_case(seed, levels=levels)
    ref = reference_retrieval(dist, work)
    got = retrieval_metrics(dist, work)
    assert got["n_queries"] == ref["n"]
    assert got["n_candidates"] == len(work) - 1
    for key in ("map", "mr1", "p10"):
        assert got[key] == pytest.approx(ref[key], abs=1e-12)
    np.testing.assert_allclose(per_query_ap(dist, work), ref["aps"], atol=1e-12)


def test_hand_made_ranking():
    # Query 0 (work A): candidates by distance 1 (B), 2 (A), 3 (noise N) -> AP 1/2, rank 2.
    # Query 2 (work A): 0 (A) at 0.5 first -> AP 1, rank 1. Queries 1 and 3 are noise.
    work = np.array(["A", "B", "A", "N"])
    dist = np.array([
        [0.0, 1.0, 2.0, 3.0],
        [0.1, 0.0, 0.9, 0.9],
        [0.5, 0.6, 0.0, 0.7],
        [0.3, 0.9, 0.7, 0.0],
    ])
    stats = query_stats(dist, work)
    assert stats["query"].tolist() == [0, 2]
    np.testing.assert_allclose(stats["ap"], [0.5, 1.0])
    assert stats["rank1"].tolist() == [2, 1]
    np.testing.assert_allclose(stats["p10"], [0.1, 0.1])
    m = retrieval_metrics(dist, work)
    assert m["map"] == pytest.approx(0.75) and m["mr1"] == pytest.approx(1.5)
    assert m["n_queries"] == 2 and m["n_candidates"] == 3


def test_ties_broken_by_candidate_index():
    # All distances equal: the order is the candidate index. Query 3's relevant item (0)
    # comes first; query 0's relevant item (3) comes after 1 and 2 -> rank 3.
    work = np.array(["A", "B", "C", "A"])
    dist = np.ones((4, 4))
    stats = query_stats(dist, work)
    assert dict(zip(stats["query"].tolist(), stats["rank1"].tolist())) == {0: 3, 3: 1}
    np.testing.assert_allclose(stats["ap"], [1 / 3, 1.0])


def test_noise_songs_are_candidates_not_queries():
    # The noise song N sits nearer to query 0 than its version does, so it pushes rank down.
    work = np.array(["A", "N", "A"])
    dist = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]], dtype=float)
    stats = query_stats(dist, work)
    assert 1 not in stats["query"]
    assert stats["rank1"].tolist() == [2, 2]


def test_self_distance_is_ignored():
    # A large self distance must not change anything (the query is not a candidate).
    dist, work = random_case(5)
    other = dist.copy()
    np.fill_diagonal(other, 100.0)
    assert retrieval_metrics(dist, work) == retrieval_metrics(other, work)


def test_query_mask_and_row_blocks():
    dist, work = random_case(6)
    mask = np.zeros(len(work), bool)
    mask[::2] = True
    full = query_stats(dist, work)
    masked = query_stats(dist, work, query_mask=mask)
    assert set(masked["query"]) == {q for q in full["query"] if mask[q]}
    # The same queries given as (Q, N) rows with their own column indices.
    rows = np.flatnonzero(mask)
    blocked = query_stats(dist[rows], work, query_idx=rows)
    np.testing.assert_array_equal(blocked["ap"], masked["ap"])


def test_chunked_from_embeddings_equals_full_matrix():
    rng = np.random.default_rng(7)
    work = np.array([f"W{k // 3}" for k in range(30)] + [f"N{k}" for k in range(6)])
    emb = rng.standard_normal((len(work), 8)).astype(np.float32)
    for metric in ("euclidean", "cosine"):
        full = retrieval_metrics(pairwise(emb, emb, metric), work)
        for chunk in (1, 5, 1000):
            assert retrieval_metrics_from_embeddings(emb, work, metric, chunk_size=chunk) == full


def test_perfect_embedding_scores_one():
    work = np.repeat(np.arange(5), 4).astype(str)
    emb = np.eye(5, dtype=np.float32)[np.repeat(np.arange(5), 4)] * 10
    m = retrieval_metrics_from_embeddings(emb, work, "euclidean", chunk_size=3)
    assert m["map"] == 1.0 and m["mr1"] == 1.0 and m["p10"] == pytest.approx(0.3)


def test_no_query_gives_nan_and_bad_input_raises():
    work = np.array(["A", "B", "C"])
    m = retrieval_metrics(np.ones((3, 3)), work)
    assert m["n_queries"] == 0 and np.isnan(m["map"])
    with pytest.raises(ValueError, match="finite"):
        retrieval_metrics(np.array([[0, np.nan], [1, 0]]), np.array(["A", "A"]))
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(np.ones((2, 3)), np.array(["A", "A", "B"]))


# ------------------------------------------------------------------------ verification

def test_verification_hand_counts():
    d = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    y = np.array([1, 1, 0, 1, 0, 0])
    m = verification_metrics(d, y, threshold=0.3)  # predicted cover: first three
    # TP 2, FP 1, FN 1, TN 2
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    # Threshold is inclusive: d <= t is a cover.
    assert verification_metrics(d, y, threshold=0.1)["precision"] == 1.0
    assert verification_metrics(d, y, threshold=0.0)["f1"] == 0.0


@pytest.mark.parametrize("seed,levels", [(0, None), (1, 4)])
def test_verification_matches_sklearn(seed, levels):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    d = rng.random(300) + 0.5 * (1 - y)
    if levels:
        d = np.round(d * levels) / levels
    t = float(np.median(d))
    pred = (d <= t).astype(int)
    m = verification_metrics(d, y, t)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, -d))
    assert m["average_precision"] == pytest.approx(skm.average_precision_score(y, -d))
    assert roc_auc(d, y) == m["roc_auc"] and average_precision(d, y) == m["average_precision"]


def test_curves_match_sklearn_points():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    d = np.round(rng.random(200) + 0.3 * (1 - y), 1)
    fpr, tpr, thr = roc_curve(d, y)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(y, -d, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], -sk_thr[1:])
    prec, rec, _ = pr_curve(d, y)
    sk_p, sk_r, _ = skm.precision_recall_curve(y, -d)
    np.testing.assert_allclose(prec, sk_p[::-1])
    np.testing.assert_allclose(rec, sk_r[::-1])


def test_threshold_scorer_agrees_with_verification_metrics():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 100)
    d = np.round(rng.random(100), 2)
    scorer = ThresholdScorer(d, y)
    for t in (-1.0, 0.0, 0.25, 0.5, d[7], 2.0):
        m = verification_metrics(d, y, t)
        assert scorer(t, "f1") == pytest.approx(m["f1"])
        assert scorer(t, "balanced_accuracy") == pytest.approx(m["balanced_accuracy"])


def test_verification_rejects_one_class_and_bad_labels():
    with pytest.raises(ValueError, match="both"):
        verification_metrics(np.array([0.1, 0.2]), np.array([1, 1]), 0.5)
    with pytest.raises(ValueError, match="labels"):
        verification_metrics(np.array([0.1, 0.2]), np.array([1, 2]), 0.5)


# ------------------------------------------------------------------------------- pairs

@pytest.mark.parametrize("n_neg", [5, 10_000])
def test_sample_pairs(n_neg):
    work = np.array(["A", "A", "A", "B", "B", "N", "M"])
    i, j, y = sample_pairs(work, n_neg, seed=0)
    assert np.all(i < j)
    assert len(set(zip(i.tolist(), j.tolist()))) == len(i)
    np.testing.assert_array_equal(y, (work[i] == work[j]).astype(int))
    assert y.sum() == 4  # 3 pairs in A, 1 in B
    n_all_neg = 21 - 4
    assert (1 - y).sum() == min(n_neg, n_all_neg)
    i2, j2, _ = sample_pairs(work, n_neg, seed=0)
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_array_equal(j, j2)


def test_sample_pairs_large_path():
    # Beyond the triangle limit the negatives come from rejection sampling.
    work = np.repeat(np.arange(2100), 2).astype(str)
    i, j, y = sample_pairs(work, 500, seed=1)
    assert y.sum() == 2100 and (1 - y).sum() == 500
    assert np.all(i < j)
    assert len(set(zip(i.tolist(), j.tolist()))) == len(i)
    np.testing.assert_array_equal(y, (work[i] == work[j]).astype(int))


def test_map_standard_error_resamples_works():
    from coverid.eval.metrics import map_standard_error

    # Every work the same AP: no spread.
    assert map_standard_error(np.full(6, 0.5), np.repeat(["a", "b", "c"], 2)) == 0.0
    # Two works of two queries, AP 0 and 1: resampled MAP is 0, 1/2 or 1 with probabilities
    # 1/4, 1/2, 1/4, so its standard deviation is sqrt(1/8).
    se = map_standard_error(np.array([0.0, 0.0, 1.0, 1.0]), np.array(["a", "a", "b", "b"]),
                            n_boot=20000)
    assert se == pytest.approx(np.sqrt(1 / 8), abs=0.01)
    # MAP weights queries: a work of 3 queries at AP 1 and one of 1 query at AP 0 gives
    # 3/4 on the full set; resampling both works twice gives 1 or 0.
    rng_free = map_standard_error(np.array([1.0, 1.0, 1.0, 0.0]), np.array(["a", "a", "a", "b"]),
                                  n_boot=20000)
    p = {1.0: 0.25, 0.75: 0.5, 0.0: 0.25}  # (a, a), (a, b) or (b, a), (b, b)
    mean = sum(v * w for v, w in p.items())
    assert rng_free == pytest.approx(np.sqrt(sum(w * (v - mean) ** 2 for v, w in p.items())), abs=0.01)
    assert np.isnan(map_standard_error(np.array([1.0]), np.array(["a"])))
