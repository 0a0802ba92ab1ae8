"""Query expansion in the song index agrees with coverid.eval.expansion and survives add/reload."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CHUNK, chains

from coverid.core.errors import BadInputError
from coverid.eval.distance import pairwise
from coverid.eval.expansion import augment, unit
from coverid.search.index import EXPANDED_FILE, Song, add_songs, build_index, load_index

ICFG = {"exact_max": 1000, "approx": "pqfs", "pq_dims": 2, "train_max": 1000, "candidates": 1000,
        "hnsw_m": 8, "ef_construction": 40, "ef_search": 64}
MODEL = {"metric": "euclidean", "dim": 16, "source": "m", "params_hash": "h"}
THRESHOLD = {"value": 0.5, "metric": "euclidean", "expansion": {"k": 2, "alpha": 1.0}}


def songs_of(work: np.ndarray) -> list[Song]:
    return [Song(f"P{i}", str(w)) for i, w in enumerate(work)]


@pytest.fixture
def data():
    x, work = chains()
    return unit(x), work  # unit vectors: euclidean neighbours are cosine neighbours


def test_search_ranks_like_augment_and_reports_plain_distances(tmp_path, data):
    x, work = data
    index = build_index(tmp_path / "i", x, songs_of(work), MODEL, {}, ICFG, THRESHOLD)
    assert index.expansion == (2, 1.0)
    np.testing.assert_allclose(index.expanded, augment(x, 2, 1.0, CHUNK), atol=1e-6)
    want = augment(x, 2, 1.0, CHUNK)
    for i in (0, 7, 30):
        hits = index.search(x[i], len(x) - 1, [{i}])[0]
        rows = [h.row for h in hits]
        d = pairwise(want[i:i + 1], want)[0]
        d[i] = np.inf
        np.testing.assert_array_equal(rows, np.lexsort((np.arange(len(x)), d))[:len(x) - 1])
        np.testing.assert_allclose([h.distance for h in hits], pairwise(x[i:i + 1], x[rows])[0],
                                   rtol=1e-5)
    plain = index.search(x[0], len(x) - 1, [{0}], expanded=False)[0]
    assert [h.row for h in plain] != [h.row for h in index.search(x[0], len(x) - 1, [{0}])[0]]


def test_no_expansion_without_a_tuned_setting(tmp_path, data):
    x, work = data
    index = build_index(tmp_path / "i", x, songs_of(work), MODEL, {}, ICFG, {"value": 0.5})
    assert index.expansion == (0, 0.0) and index.expanded is None
    assert not (tmp_path / "i" / EXPANDED_FILE).exists()


def test_add_songs_expands_every_song_again(tmp_path, data):
    x, work = data
    songs = songs_of(work)
    build_index(tmp_path / "i", x[:30], songs[:30], MODEL, {}, ICFG, THRESHOLD)
    grown, _ = add_songs(tmp_path / "i", x[30:], songs[30:], MODEL, {})
    np.testing.assert_allclose(grown.expanded, augment(x, 2, 1.0, CHUNK), atol=1e-6)
    assert load_index(tmp_path / "i").expansion == (2, 1.0)


def test_missing_or_wrong_expanded_file_is_one_line_error(tmp_path, data):
    x, work = data
    build_index(tmp_path / "i", x, songs_of(work), MODEL, {}, ICFG, THRESHOLD)
    np.save(tmp_path / "i" / EXPANDED_FILE, np.zeros((3, 16), np.float32))
    with pytest.raises(BadInputError, match="expected float32"):
        load_index(tmp_path / "i")
    (tmp_path / "i" / EXPANDED_FILE).unlink()
    with pytest.raises(BadInputError, match="expanded embeddings missing"):
        load_index(tmp_path / "i")


def test_threshold_file_carries_the_expansion(tmp_path, data):
    from coverid.search.identify import read_threshold_file

    path = tmp_path / "threshold.json"
    path.write_text('{"threshold": 0.5, "metric": "euclidean", "expansion": {"k": 3, "alpha": 0.0}}')
    threshold = read_threshold_file(path)
    x, work = data
    index = build_index(tmp_path / "i", x, songs_of(work), MODEL, {}, ICFG, threshold)
    assert index.expansion == (3, 0.0)
    np.testing.assert_allclose(index.expanded, augment(x, 3, 0.0, CHUNK), atol=1e-6)


class CountingIndex:
    """A FAISS index proxy that counts its searches."""

    def __init__(self, index) -> None:
        self.index, self.searches = index, 0

    def search(self, x, k):
        self.searches += 1
        return self.index.search(x, k)


def test_an_approximate_index_expands_within_one_candidate_search(tmp_path, data):
    """pqfs with query expansion: one scan of the codes per search (the expanded query re-ranks
    the query's own candidates); with every song a candidate it ranks as the exact index does,
    and with fewer its answers are among the query's candidates."""
    x, work = data
    exact = build_index(tmp_path / "flat", x, songs_of(work), MODEL, {}, ICFG, THRESHOLD)
    cfg = {**ICFG, "exact_max": 10, "storage": "float32"}
    approx = build_index(tmp_path / "pq", x, songs_of(work), MODEL, {}, cfg, THRESHOLD)
    assert approx.kind == "pqfs"
    np.testing.assert_allclose(approx.expanded, exact.expanded, atol=1e-6)  # every song re-ranked
    approx.faiss_index = counter = CountingIndex(approx.faiss_index)
    for i in (0, 7, 30):
        got = approx.search(x[i], 10, [{i}])[0]
        assert [h.row for h in got] == [h.row for h in exact.search(x[i], 10, [{i}])[0]]
    assert counter.searches == 0  # every song is a candidate: nothing to scan
    approx.meta["index"]["candidates"] = 12
    _, cand = counter.index.search(x[:1].astype(np.float32), 12)
    hits = approx.search(x[0], 5, [{0}])[0]
    assert counter.searches == 1 and len(hits) == 5  # one scan, though the query is expanded
    assert {h.row for h in hits} <= set(cand[0].tolist()) - {0}
    d = pairwise(x[:1], x)[0]
    near = [r for r in np.argsort(d) if r != 0 and r in set(cand[0].tolist())][:2]
    q = unit(unit(x[:1]) + sum(max((unit(x[:1]) @ unit(x[r:r + 1]).T).item(), 0) * unit(x[r:r + 1])
                               for r in near))  # expansion.expand with alpha 1
    rows = np.array(sorted(set(cand[0].tolist()) - {0}))
    key = pairwise(q, approx.expanded[rows])[0]
    assert [h.row for h in hits] == rows[np.lexsort((rows, key))][:5].tolist()
