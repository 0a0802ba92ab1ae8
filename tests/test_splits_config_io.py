import json

import numpy as np
import pytest

from coverid.core.config import flatten, load_params, params_hash, with_overrides
from coverid.core.errors import BadInputError, CoveridError
from coverid.core.io import atomic_path, write_json
from coverid.data.splits import read_splits, split_mask, split_works, write_splits


def test_split_by_work_seeded_and_complete():
    works = [f"W_{i}" for i in range(50) for _ in range(3)] + [f"N_{i}" for i in range(20)]
    fr = {"train": 0.6, "val": 0.2, "test": 0.2}
    a = split_works(works, fr, seed=1)
    assert a == split_works(list(reversed(works)), fr, seed=1)
    assert a != split_works(works, fr, seed=2)
    assert set(a) == set(works)
    multi = [w for w in a if w.startswith("W_")]
    assert [sum(a[w] == s for w in multi) for s in ("train", "val", "test")] == [30, 10, 10]
    noise = [w for w in a if w.startswith("N_")]
    assert [sum(a[w] == s for w in noise) for s in ("train", "val", "test")] == [12, 4, 4]


def test_split_file_round_trip_and_mask(tmp_path):
    s = {"W_1": "train", "W_2": "test"}
    write_splits(tmp_path / "s.json", s)
    assert read_splits(tmp_path / "s.json") == s
    np.testing.assert_array_equal(split_mask(np.array(["W_2", "W_1", "W_3"]), s, "test"), [1, 0, 0])
    (tmp_path / "bad.json").write_text(json.dumps({"W_1": "later"}))
    with pytest.raises(BadInputError, match="bad.json: unknown split"):
        read_splits(tmp_path / "bad.json")


def test_flatten_and_hash():
    p = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    assert flatten(p) == {"a.b": 1, "a.c": "[1, 2]", "d": "x"}
    assert params_hash(p) == params_hash({"d": "x", "a": {"c": [1, 2], "b": 1}})
    assert params_hash(p) != params_hash({**p, "d": "y"})


def test_load_params_errors(tmp_path):
    with pytest.raises(CoveridError, match="nope.yaml: params file not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(CoveridError, match="bad.yaml: not valid YAML"):
        load_params(tmp_path / "bad.yaml")


def test_repo_params_load():
    p = load_params()
    assert p["data"]["source"] == "synth" and p["train"]["loss"] in {"contrastive", "bce", "triplet"}


def test_atomic_path_cleans_up_on_error(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": np.float32(1.5)})
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise ValueError("interrupted")
    assert json.loads(target.read_text()) == {"a": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_load_split_takes_rows_of_one_split(tmp_path, monkeypatch, feature_set):
    from coverid.core import paths
    from coverid.data.splits import load_split
    from coverid.data.store import write_features

    params = with_overrides(load_params(), {"data.extra.source": None})  # one corpus (test_corpora.py: two)
    monkeypatch.chdir(tmp_path)
    write_features(paths.processed_file(params), feature_set)
    write_splits(paths.splits_file(params), {"W_0": "test", "W_1": "train", "W_2": "train",
                                             "W_3": "val", "W_4": "test", "W_5": "val"})
    test = load_split(params, "test")
    assert sorted(set(test.work_id)) == ["W_0", "W_4"] and len(test) == 4
    write_splits(paths.splits_file(params), {w: "train" for w in feature_set.work_id})
    with pytest.raises(CoveridError, match="no performance in the test split"):
        load_split(params, "test")


def test_atomic_files_are_not_private(tmp_path):
    write_json(tmp_path / "r.json", {"a": 1})
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


def test_atomic_dir_swaps_and_keeps_the_old_one_on_failure(tmp_path):
    from coverid.core.io import atomic_dir, read_json

    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.json").write_text('{"v": 1}')
    assert read_json(target / "a.json") == {"v": 1}
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.json").write_text('{"v": 2}')
            raise RuntimeError("interrupted")
    assert read_json(target / "a.json") == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(BadInputError, match="nope.json: thing not found"):
        read_json(tmp_path / "nope.json", "thing")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BadInputError, match="bad.json: not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_npz_and_zip_bytes_do_not_depend_on_the_clock(tmp_path, monkeypatch):
    import time
    import zipfile

    import numpy as np

    from coverid.core.io import restamp_zip, write_npz

    arrays = {"embeddings": np.arange(6, dtype=np.float32).reshape(2, 3), "ids": np.array(["a", "b"])}
    write_npz(tmp_path / "a.npz", **arrays)
    time.sleep(1.1)  # zip times have two-second resolution at most
    time.sleep(1.1)
    write_npz(tmp_path / "b.npz", **arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as z:
        np.testing.assert_array_equal(z["embeddings"], arrays["embeddings"])
        assert z["ids"].tolist() == ["a", "b"]
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as z:
        z.writestr("b.txt", "B")
        z.writestr("a.txt", "A")
    restamp_zip(tmp_path / "c.zip", {"b.txt": b"new"})
    with zipfile.ZipFile(tmp_path / "c.zip") as z:
        assert [i.filename for i in z.infolist()] == ["a.txt", "b.txt"]
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert z.read("b.txt") == b"new"
