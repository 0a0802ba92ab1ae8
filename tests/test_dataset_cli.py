"""`coverid dataset ...` over a tmp metadata JSON and a tiny processed feature file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import repo_params

from coverid.cli import main
from coverid.data import dataset
from coverid.data.store import FeatureSet, write_features

META = {
    "W_1": {"P_10": {"work_title": "Yesterday", "work_artist": "The Beatles",
                     "perf_title": "Yesterday", "perf_artist": "The Beatles"},
            "P_11": {"work_title": "Yesterday", "work_artist": "The Beatles",
                     "perf_title": "Yesterday (live)", "perf_artist": "Ray Charles"}},
    "W_2": {"P_20": {"work_title": "Hallelujah", "work_artist": "Leonard Cohen",
                     "perf_title": "Hallelujah", "perf_artist": "Jeff Buckley"},
            "P_21": {"work_title": "Hallelujah", "work_artist": "Leonard Cohen",
                     "perf_title": "Hallelujah", "perf_artist": "k.d. lang"},
            "P_22": {"work_title": "Hallelujah", "work_artist": "Leonard Cohen",
                     "perf_title": "Halleluja", "perf_artist": "Rufus Wainwright"}},
    "W_3": {"P_30": {"work_title": "Noise", "work_artist": "Nobody",
                     "perf_title": "Noise", "perf_artist": "Nobody"}},
}


@pytest.fixture
def meta_file(tmp_path):
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(META))
    return path


@pytest.fixture
def features_file(tmp_path):
    rng = np.random.default_rng(0)
    perfs = [(w, p) for w, ps in META.items() for p in ps]
    fs = FeatureSet(rng.random((len(perfs), 23, 30)).astype(np.float32), [w for w, _ in perfs],
                    [p for _, p in perfs], np.array([860, 1720, 2580, 3440, 4300, 8600]),
                    feature="crema", source="datacos", frame_rate_hz=86.0)
    path = tmp_path / "benchmark.h5"
    write_features(path, fs)
    return path


def test_stats_json_and_table(meta_file, features_file, capsys):
    assert main(["dataset", "stats", "--metadata", str(meta_file), "--features", str(features_file),
                 "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["works"], s["performances"], s["noise_songs"], s["works_with_covers"]) == (3, 6, 1, 2)
    assert s["versions_per_work"] == {"1": 1, "2": 1, "3": 1}
    d = s["durations"]
    assert d["count"] == 6 and d["min_s"] == pytest.approx(10.0) and d["max_s"] == pytest.approx(100.0)
    assert d["median_s"] == pytest.approx(35.0)

    assert main(["dataset", "stats", "--metadata", str(meta_file), "--params", "none.yaml"]) == 0
    out = capsys.readouterr().out
    assert "noise songs" in out and "durations" not in out


def test_stats_default_metadata_from_params(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(repo_params({
        "data.source": "datacos", "data.raw_dir": "raw", "data.processed_dir": "proc",
        "data.datacos.subset": "benchmark"}).to_dict()))
    assert main(["dataset", "stats"]) == 1
    assert "da-tacos_benchmark_subset_metadata.json: metadata file not found" in capsys.readouterr().err
    meta = tmp_path / "raw" / "datacos" / "da-tacos_metadata" / "da-tacos_benchmark_subset_metadata.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps(META))
    assert main(["dataset", "stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["performances"] == 6


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected the Da-TACOS schema"),
    ("{}", "expected a non-empty object"),
    ('{"W_1": {"P_1": 3}}', "W_1/P_1: expected an object of fields"),
])
def test_bad_metadata_is_one_line(tmp_path, capsys, content, problem):
    path = tmp_path / "m.json"
    path.write_text(content)
    assert main(["dataset", "stats", "--metadata", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("coverid: error:") and problem in err and "\n" not in err


def test_search_artist_and_title(meta_file, capsys):
    assert main(["dataset", "search", "--metadata", str(meta_file), "--artist", "BEATLES", "--json"]) == 0
    assert [r["perf_id"] for r in json.loads(capsys.readouterr().out)] == ["P_10", "P_11"]
    assert main(["dataset", "search", "--metadata", str(meta_file), "--title", "hallelujah",
                 "--artist", "lang"]) == 0
    out = capsys.readouterr().out
    assert "P_21" in out and "P_20" not in out and "1 performance(s)" in out
    assert main(["dataset", "search", "--metadata", str(meta_file)]) == 1
    assert "--artist and/or --title" in capsys.readouterr().err


def test_covers_map(meta_file, tmp_path):
    out = tmp_path / "maps" / "cover_map.json"
    assert main(["dataset", "covers", "--metadata", str(meta_file), "--out", str(out)]) == 0
    covers = json.loads(out.read_text())
    assert list(covers) == ["W_1", "W_2", "W_3"]
    assert covers["W_2"]["work_artist"] == "Leonard Cohen"
    assert [p["perf_artist"] for p in covers["W_2"]["performances"]] == \
        ["Jeff Buckley", "k.d. lang", "Rufus Wainwright"]
    assert not list(out.parent.glob(".*.tmp"))


def test_chromagram_png_names_the_notes(meta_file, features_file, tmp_path, monkeypatch):
    import matplotlib.figure

    saved = []
    real = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: (saved.append(fig), real(fig, *a, **k))[1])
    out = tmp_path / "fig.png"
    assert main(["dataset", "chromagram", "P_21", "--out", str(out), "--features", str(features_file),
                 "--metadata", str(meta_file)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = [t.get_text() for t in saved[0].axes[0].get_yticklabels()]
    assert labels == ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]  # crema


def test_chromagram_unknown_performance(features_file, tmp_path, capsys):
    assert main(["dataset", "chromagram", "P_99", "--out", str(tmp_path / "f.png"),
                 "--features", str(features_file), "--params", "none.yaml"]) == 1
    assert "no performance 'P_99'" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()


def test_search_and_cover_map_are_pure():
    assert dataset.search(META, title="noise")[0]["perf_id"] == "P_30"
    assert dataset.search(META, artist="zzz") == []
    assert len(dataset.cover_map(META)["W_1"]["performances"]) == 2
    assert dataset.stats(META)["durations"] is None
