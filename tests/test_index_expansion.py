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
