"""The extra corpus (data.extra): fetched and processed beside data.source, its train and val
works joined to training, its test works kept apart as the hold-out."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import make_feature_set, repo_params

from coverid.core import paths
from coverid.core.errors import CoveridError
from coverid.data.splits import (
    HOLDOUT,
    extra_params,
    extra_splits_file,
    load_dataset,
    load_split,
    read_splits,
    write_splits,
)
from coverid.data.store import concat, write_features
from coverid.eval.evaluate import baseline_seconds

ROOT = Path(__file__).resolve().parents[1]


def test_concat_keeps_rows_in_order_and_refuses_other_features():
    a = make_feature_set(n_works=2, versions=2, n_noise=0, spect_len=10, rows=12)
    b = make_feature_set(n_works=1, versions=3, n_noise=1, spect_len=10, rows=12)
    both = concat([a, b])
    assert len(both) == len(a) + len(b)
    assert both.work_id.tolist() == a.work_id.tolist() + b.work_id.tolist()
    np.testing.assert_array_equal(both.features[len(a):], b.features)
    other = make_feature_set(n_works=1, versions=2, n_noise=0, spect_len=12, rows=12)
    with pytest.raises(ValueError, match="cannot join"):
        concat([a, other])


def test_extra_params_are_the_extra_corpus_as_its_own_source():
    params = repo_params({"data.source": "synth", "data.extra.source": "melodies"})
    extra = extra_params(params)
    assert extra["data"]["source"] == "melodies"
    assert extra["data"]["split"] == params["data"]["extra"]["split"]
    assert paths.processed_file(extra).name == "melodies.h5"
    assert extra_splits_file(params).name == "splits_melodies.json"
    assert extra_params(repo_params({"data.extra.source": None})) is None
    with pytest.raises(CoveridError, match="data.extra.source: 'synth' is data.source already"):
        extra_params(repo_params({"data.source": "synth", "data.extra.source": "synth"}))


def test_load_dataset_joins_the_corpora_and_holds_out_the_extra_test_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = repo_params({"data.source": "synth", "data.extra.source": "melodies"})
    main = make_feature_set(n_works=3, versions=2, n_noise=0, spect_len=10, rows=12)
    more = make_feature_set(n_works=3, versions=2, n_noise=0, spect_len=10, rows=12)
    write_features(paths.processed_file(params), main)
    write_features(paths.processed_file(extra_params(params)), more)
    works = sorted(set(main.work_id))  # the same ids in both corpora: they must not merge
    write_splits(paths.splits_file(params), dict(zip(works, ["train", "val", "test"])))
    write_splits(extra_splits_file(params), dict(zip(works, ["train", "val", "test"])))

    fs, splits = load_dataset(params)
    assert len(fs) == len(main) + len(more)
    assert set(fs.work_id) == set(works) | {f"melodies/{w}" for w in works}
    assert splits[f"melodies/{works[2]}"] == HOLDOUT and splits[works[2]] == "test"
    train = load_split(params, "train")
    assert sorted(set(train.work_id)) == sorted([works[0], f"melodies/{works[0]}"])
    assert set(load_split(params, "test").work_id) == {works[2]}  # the main corpus' test only
    held = load_split(params, HOLDOUT)
    assert set(held.work_id) == {f"melodies/{works[2]}"}
    assert all(p.startswith("melodies/") for p in held.perf_id)
    # without an extra corpus: the main one as it is, and no hold-out split
    alone = repo_params({"data.source": "synth", "data.extra.source": None})
    assert len(load_dataset(alone)[0]) == len(main)
    with pytest.raises(CoveridError, match="no performance in the holdout split"):
        load_split(alone, HOLDOUT)


def test_read_splits_accepts_the_holdout_and_nothing_else(tmp_path):
    write_splits(tmp_path / "s.json", {"W_1": "train", "W_2": HOLDOUT})
    assert read_splits(tmp_path / "s.json")["W_2"] == HOLDOUT
    (tmp_path / "bad.json").write_text(json.dumps({"W_1": "later"}))
    with pytest.raises(CoveridError, match="unknown split names"):
        read_splits(tmp_path / "bad.json")


def test_baseline_seconds_keep_test_and_holdout_apart():
    timings = {"qmax_seconds_per_query": 1.5, "dtw_seconds_per_query": 0.5,
               "holdout_qmax_seconds_per_query": 2.0, "seconds": 60.0}
    assert baseline_seconds(timings, "") == {"qmax": 1.5, "dtw": 0.5}
    assert baseline_seconds(timings, "holdout_") == {"qmax": 2.0}


def test_download_stage_fetches_the_extra_corpus_too(tmp_path, monkeypatch):
    audio = tmp_path / "music"
    for rel in ("W_a/one.wav", "W_a/two.wav"):
        (audio / rel).parent.mkdir(parents=True, exist_ok=True)
        (audio / rel).write_bytes(b"x")
    params = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))
    params["data"].update(source="synth", extra={"source": "audio", "split": params["data"]["split"]})
    params["data"]["synth"].update(n_works=2, versions_per_work=2, n_noise=0, duration_s=2.0,
                                   sample_rate=8000, workers=1)
    params["data"]["audio"]["dir"] = str(audio)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("stage_download", ROOT / "stages" / "download.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    stage.main()
    assert len(list(Path("data/raw/synth").rglob("*.wav"))) == 4
    manifest = json.loads(Path("data/raw/audio/manifest.json").read_text())
    assert [f["path"] for f in manifest["files"]] == ["W_a/one.wav", "W_a/two.wav"]
