import numpy as np
import pytest

from coverid.eval.distance import paired, pairwise


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "bce"])
def test_pairwise_matches_paired_and_loops(metric):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 8)), rng.standard_normal((7, 8))
    head = (rng.standard_normal(8), 0.3)
    d = pairwise(a, b, metric, head)
    for i in range(5):
        for j in range(7):
            if metric == "euclidean":
                ref = np.sqrt(((a[i] - b[j]) ** 2).sum())
            elif metric == "cosine":
                ref = 1 - a[i] @ b[j] / np.linalg.norm(a[i]) / np.linalg.norm(b[j])
            else:
                ref = 1 - 1 / (1 + np.exp(-(head[0] @ np.abs(a[i] - b[j]) + head[1])))
            assert d[i, j] == pytest.approx(ref, abs=1e-4)
    np.testing.assert_allclose(paired(a[:5], b[:5], metric, head), np.diag(d[:, :5]), atol=1e-5)


def test_unknown_metric_and_missing_head():
    with pytest.raises(ValueError, match="unknown metric"):
        pairwise(np.ones((1, 2)), np.ones((1, 2)), "manhattan")
    with pytest.raises(ValueError, match="needs the head"):
        paired(np.ones((1, 2)), np.ones((1, 2)), "bce")
