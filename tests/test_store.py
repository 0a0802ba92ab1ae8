import time

import h5py
import numpy as np
import pytest

from coverid.core.errors import BadInputError
from coverid.data.store import read_features, write_features


def test_round_trip_sorted_and_attrs(tmp_path, feature_set):
    shuffled = feature_set.take(np.random.default_rng(1).permutation(len(feature_set)))
    path = tmp_path / "synth.h5"
    write_features(path, shuffled)
    back = read_features(path)
    expected = feature_set.sorted()
    np.testing.assert_array_equal(back.features, expected.features)
    assert list(back.work_id) == list(expected.work_id)
    assert list(back.perf_id) == list(expected.perf_id)
    assert back.features.dtype == np.float32 and back.length_frames.dtype == np.int32
    with h5py.File(path) as f:
        assert f.attrs["spect_len"] == 40 and f.attrs["source"] == "synth"
        assert f.attrs["feature"] == "hpcp" and "coverid" in f.attrs["created_by"]
        assert f["work_id"].dtype.kind == "O"


def test_same_features_give_the_same_bytes(tmp_path, feature_set):
    """No creation time in the file: DVC's hash of data/processed reproduces."""
    write_features(tmp_path / "a.h5", feature_set)
    time.sleep(1.1)  # HDF5 times have one-second resolution
    write_features(tmp_path / "b.h5", feature_set)
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    with h5py.File(tmp_path / "a.h5") as f:
        assert list(f) == ["features", "work_id", "perf_id", "length_frames"]  # creation order
        assert h5py.h5o.get_info(f.id).ctime == 0


def test_write_is_deterministic(tmp_path, feature_set):
    write_features(tmp_path / "a.h5", feature_set)
    write_features(tmp_path / "b.h5", feature_set.take(np.arange(len(feature_set))[::-1]))
    a, b = read_features(tmp_path / "a.h5"), read_features(tmp_path / "b.h5")
    assert list(a.perf_id) == list(b.perf_id)
    np.testing.assert_array_equal(a.features, b.features)


def test_failed_write_leaves_previous_file(tmp_path, feature_set, monkeypatch):
    path = tmp_path / "x.h5"
    write_features(path, feature_set)
    before = path.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(h5py.File, "create_dataset", boom)
    with pytest.raises(RuntimeError):
        write_features(path, feature_set)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.h5"]


def test_read_errors_name_the_file(tmp_path, feature_set):
    with pytest.raises(BadInputError, match="missing.h5: feature file not found"):
        read_features(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(BadInputError, match="junk.h5: not a readable HDF5"):
        read_features(junk)
    path = tmp_path / "x.h5"
    write_features(path, feature_set)
    with pytest.raises(BadInputError, match="no dataset 'features/crema'"):
        read_features(path, feature="crema")
