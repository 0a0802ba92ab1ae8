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


def test_stacked_features_are_one_dataset_per_feature(tmp_path, feature_set):
    """A fused model's input ('hpcp+melody', 46 rows) is stored as features/hpcp and
    features/melody (SPEC.md section 3), read back stacked, or one feature alone."""
    from dataclasses import replace

    melody = np.random.default_rng(3).random(feature_set.features.shape).astype(np.float32)
    stacked = replace(feature_set, features=np.concatenate([feature_set.features, melody], axis=1),
                      feature="hpcp+melody")
    assert stacked.parts() == ["hpcp", "melody"]
    np.testing.assert_array_equal(stacked.part("melody").features, melody)
    assert stacked.part("hpcp").feature == "hpcp"
    with pytest.raises(ValueError, match="no 'crema' rows"):
        stacked.part("crema")
    write_features(tmp_path / "s.h5", stacked)
    with h5py.File(tmp_path / "s.h5") as f:
        assert sorted(f["features"]) == ["hpcp", "melody"] and f["features/melody"].shape[1] == 23
        assert f.attrs["feature"] == "hpcp+melody"
    back = read_features(tmp_path / "s.h5")
    assert back.feature == "hpcp+melody"
    np.testing.assert_array_equal(back.features, stacked.sorted().features)
    alone = read_features(tmp_path / "s.h5", "melody")
    np.testing.assert_array_equal(alone.features, stacked.sorted().features[:, 23:])
    with pytest.raises(BadInputError, match="crema"):
        read_features(tmp_path / "s.h5", "hpcp+crema")


def test_stack_sets_keeps_the_songs_every_set_holds(feature_set):
    """Da-TACOS features come in one folder per feature: a song missing from one is dropped,
    the rest are stacked row by row whatever each set's order."""
    from dataclasses import replace

    from coverid.data.store import stack_sets

    crema = replace(feature_set, features=feature_set.features + 1.0, feature="crema")
    crema = crema.take(np.arange(len(crema))[::-1][1:])  # reversed, one song missing
    both = stack_sets([feature_set, crema])
    assert both.feature == "hpcp+crema" and len(both) == len(feature_set) - 1
    assert feature_set.perf_id[-1] not in set(both.perf_id)
    for i, perf in enumerate(both.perf_id):
        j = list(feature_set.perf_id).index(perf)
        np.testing.assert_array_equal(both.features[i, :23], feature_set.features[j])
        np.testing.assert_array_equal(both.features[i, 23:], feature_set.features[j] + 1.0)
    assert stack_sets([feature_set]) is feature_set
