"""Audio folder scanning, the parallel feature map, the preprocess stage and CLI."""

from __future__ import annotations

import json
import runpy
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import repo_params

from coverid.cli import main as cli_main
from coverid.core.config import with_overrides
from coverid.core.errors import BadInputError, CoveridError
from coverid.core.skips import SkipLog
from coverid.data.audio_dir import scan_audio_dir
from coverid.data.sources import features_for_source
from coverid.data.splits import read_splits
from coverid.data.store import read_features
from coverid.features.collection import build_feature_set, extract_audio_dir

ROOT = Path(__file__).resolve().parents[1]
SR = 44100


def chord_wav(path: Path, semitones: list[int], seconds: float = 3.0, sr: int = SR) -> Path:
    """Write a chord of sine tones `semitones` above C4."""
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * 261.6256 * 2 ** (k / 12) * t) for k in semitones)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.2 * x).astype(np.float32), sr)
    return path


def pcfg(**over):
    """params.yaml's preprocess section with overrides, small spect_len for speed."""
    over = {"spect_len": 50, "scheduler": "single", **over}
    return repo_params({f"preprocess.{k}": v for k, v in over.items()})["preprocess"]


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    """Two works of two versions and one loose song (unknown work)."""
    d = tmp_path_factory.mktemp("audio")
    chord_wav(d / "W_a" / "P_1.wav", [0, 4, 7])
    chord_wav(d / "W_a" / "P_2.wav", [2, 6, 9], seconds=2.5)
    chord_wav(d / "W_b" / "P_3.wav", [0, 3, 7])
    chord_wav(d / "W_b" / "P_4.wav", [5, 9, 12])
    chord_wav(d / "loose.wav", [7, 11, 14])
    (d / "README.txt").write_text("not audio")
    return d


# ---------------------------------------------------------------- scanning


def test_scan_folders_loose_files_and_non_audio(tmp_path):
    for p in ["A/x.wav", "A/y.mp3", "B/x.flac", "loose.ogg", "B/cover.jpg", "notes.txt", "A/z.wma", ".hidden.wav"]:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_bytes(b"x")
    items = scan_audio_dir(tmp_path)
    got = [(it.path.relative_to(tmp_path).as_posix(), it.work_id, it.perf_id, it.known_work) for it in items]
    assert got == [
        ("A/x.wav", "A", "A/x", True),  # stem x is used twice: prefixed with its folder
        ("A/y.mp3", "A", "y", True),
        ("A/z.wma", "A", "z", True),
        ("B/x.flac", "B", "B/x", True),
        ("loose.ogg", "W_unknown_loose", "loose", False),
    ]
    skips = {it.path.name: it.skip for it in items if it.skip}
    assert list(skips) == ["z.wma"] and "unsupported audio extension '.wma'" in skips["z.wma"]


def test_scan_metadata_overrides_ids(tmp_path):
    for p in ["W_1/P_1.wav", "W_1/P_2.wav", "myfolder/take1.wav", "P_9.wav", "stray.wav"]:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_bytes(b"x")
    meta = {
        "W_1": {"P_1": {"work_title": "Song", "perf_artist": "Band"}, "P_2": {}, "P_9": {"perf_title": "Live"}},
        "myfolder": {"take1": {"work_id": "W_7", "perf_id": "P_70", "work_artist": "X"}},
    }
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    by_name = {it.path.name: it for it in scan_audio_dir(tmp_path)}
    assert (by_name["P_1.wav"].work_id, by_name["P_1.wav"].perf_id) == ("W_1", "P_1")
    assert (by_name["P_1.wav"].title, by_name["P_1.wav"].artist) == ("Song", "Band")
    assert (by_name["take1.wav"].work_id, by_name["take1.wav"].perf_id) == ("W_7", "P_70")
    # a loose file listed in the metadata joins its work; one that is not stays unknown
    assert (by_name["P_9.wav"].work_id, by_name["P_9.wav"].known_work) == ("W_1", True)
    assert (by_name["stray.wav"].work_id, by_name["stray.wav"].known_work) == ("W_unknown_stray", False)


def test_scan_errors(tmp_path):
    with pytest.raises(CoveridError, match="not found"):
        scan_audio_dir(tmp_path / "nope")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(CoveridError, match="no audio files"):
        scan_audio_dir(tmp_path)
    (tmp_path / "s.wav").write_bytes(b"x")
    (tmp_path / "metadata.json").write_text("[1, 2]")
    with pytest.raises(BadInputError, match="metadata.json: expected the Da-TACOS schema"):
        scan_audio_dir(tmp_path)


# ---------------------------------------------------------------- extraction


def test_extract_audio_dir(audio_dir):
    skips = SkipLog()
    fs = extract_audio_dir(audio_dir, pcfg(fusion=[]), "audio", skips)
    assert fs.features.shape == (5, 23, 50) and fs.feature == "hpcp" and fs.source == "audio"
    assert list(fs.work_id) == ["W_a", "W_a", "W_b", "W_b", "W_unknown_loose"]
    assert list(fs.perf_id) == ["P_1", "P_2", "P_3", "P_4", "loose"]
    assert fs.length_frames[1] < fs.length_frames[0]  # 2.5 s vs 3 s
    assert fs.params["spect_len"] == 50 and fs.frame_rate_hz == pytest.approx(44100 / 512)
    assert skips.total == 5 and not skips.skipped
    untiled = extract_audio_dir(audio_dir, pcfg(tile=False, feature="chroma_cens", fusion=[]), "audio",
                                SkipLog())
    assert untiled.features.shape == (5, 12, 50) and untiled.feature == "chroma_cens"
    # chords of pure sines: the melody tracker hears a voice in each, in processes as in one
    melody = extract_audio_dir(audio_dir, pcfg(feature="melody", fusion=[], scheduler="processes",
                                               workers=2), "audio", SkipLog())
    assert melody.features.shape == (5, 23, 50) and melody.feature == "melody"
    assert melody.features.min() >= 0 and melody.features.max() <= 1 and melody.features.any()
    # preprocess.fusion: each song's HPCP rows, then its melody rows, from one decode
    stacked = extract_audio_dir(audio_dir, pcfg(fusion=["melody"]), "audio", SkipLog())
    assert stacked.features.shape == (5, 46, 50) and stacked.feature == "hpcp+melody"
    assert stacked.parts() == ["hpcp", "melody"]
    np.testing.assert_array_equal(stacked.part("hpcp").features, fs.features)
    np.testing.assert_array_equal(stacked.part("melody").features, melody.features)
    np.testing.assert_array_equal(stacked.length_frames, fs.length_frames)
    with pytest.raises(CoveridError, match="repeats a feature"):
        extract_audio_dir(audio_dir, pcfg(fusion=["hpcp"]), "audio", SkipLog())


def test_bad_files_are_skipped_and_the_rest_goes_on(tmp_path):
    good = [chord_wav(tmp_path / "W_g" / f"P_{i}.wav", [i, i + 4, i + 7]) for i in range(6)]
    bad = {
        "junk.mp3": lambda p: p.write_bytes(b"\x00garbage" * 100),
        "empty.wav": lambda p: p.write_bytes(b""),
        "silent.wav": lambda p: sf.write(p, np.zeros(3 * SR, np.float32), SR),
        "short.wav": lambda p: chord_wav(p, [0], seconds=0.5),
        "odd.aiff": lambda p: p.write_bytes(b"FORM"),
    }
    (tmp_path / "W_b").mkdir()
    for name, make in bad.items():
        make(tmp_path / "W_b" / name)
    skips = SkipLog()
    fs = extract_audio_dir(tmp_path, pcfg(max_failed_fraction=0.5), "audio", skips)
    assert len(fs) == len(good) and skips.total == len(good) + len(bad)
    reasons = {Path(s["path"]).name: s["reason"] for s in skips.skipped}
    assert set(reasons) == set(bad)
    assert "cannot decode" in reasons["junk.mp3"] and "empty" in reasons["empty.wav"]
    assert "silent" in reasons["silent.wav"] and "too short" in reasons["short.wav"]
    assert "unsupported audio extension" in reasons["odd.aiff"]
    with pytest.raises(CoveridError, match=r"5 of 11 inputs failed .*first: .*"):
        extract_audio_dir(tmp_path, pcfg(max_failed_fraction=0.2), "audio", SkipLog())


def test_parallel_equals_single(audio_dir):
    single = extract_audio_dir(audio_dir, pcfg(), "audio", SkipLog())
    parallel = extract_audio_dir(audio_dir, pcfg(scheduler="processes", workers=2), "audio", SkipLog())
    np.testing.assert_array_equal(parallel.features, single.features)
    assert list(parallel.perf_id) == list(single.perf_id)
    np.testing.assert_array_equal(parallel.length_frames, single.length_frames)


def test_dask_cluster(audio_dir):
    distributed = pytest.importorskip("distributed")
    single = extract_audio_dir(audio_dir, pcfg(), "audio", SkipLog())
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        fs = extract_audio_dir(audio_dir, pcfg(scheduler=cluster.scheduler_address), "audio", SkipLog())
    np.testing.assert_allclose(fs.features, single.features, atol=1e-6)
    assert list(fs.perf_id) == list(single.perf_id)


def test_unknown_scheduler(audio_dir):
    with pytest.raises(CoveridError, match="scheduler"):
        extract_audio_dir(audio_dir, pcfg(scheduler="threads", workers=2), "audio", SkipLog())


def _load_npy(path: Path) -> np.ndarray:
    """A load_fn over saved arrays (the Da-TACOS reader is of this kind)."""
    return np.load(path)


def test_build_feature_set_with_any_loader(tmp_path):
    rng = np.random.default_rng(0)
    items = []
    for i, shape in enumerate([(300, 12), (40, 12), (100, 7), (200, 12)]):
        np.save(tmp_path / f"{i}.npy", rng.random(shape).astype(np.float32))
        items.append((tmp_path / f"{i}.npy", f"W_{i % 2}", f"P_{i}"))
    items.append((tmp_path / "missing.npy", "W_9", "P_9"))
    skips = SkipLog()
    fs = build_feature_set(items, _load_npy, pcfg(max_failed_fraction=0.5, tile=False), "datacos", "crema", skips)
    assert list(fs.perf_id) == ["P_0", "P_1", "P_3"] and list(fs.length_frames) == [300, 40, 200]
    assert fs.features.shape == (3, 12, 50) and fs.source == "datacos"
    reasons = {Path(s["path"]).name: s["reason"] for s in skips.skipped}
    assert "expected (T, 12)" in reasons["2.npy"] and "FileNotFoundError" in reasons["missing.npy"]
    loose = build_feature_set(items[:2], partial(_load_npy), pcfg(scheduler="processes"), "datacos", "crema",
                              SkipLog())
    np.testing.assert_array_equal(loose.features[:, :12], fs.features[:2])


def test_cli_needs_a_params_file(audio_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: nothing to take the settings from
    rc = cli_main(["preprocess", "from-audio-dir", "-a", str(audio_dir), "-o", "out"])
    assert rc == 1 and capsys.readouterr().err == ("coverid: error: params.yaml not found: run inside a "
                                                   "coverid project or pass --params FILE\n")
    assert not (tmp_path / "out").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "params.yaml").read_text().replace("spect_len:", "spect_lenn:"))
    rc = cli_main(["preprocess", "from-audio-dir", "-a", str(audio_dir), "-o", "out", "--params", str(bad)])
    assert rc == 1 and capsys.readouterr().err == (f"coverid: error: {bad}: unknown key preprocess.spect_lenn "
                                                   "(did you mean preprocess.spect_len?)\n")


# ---------------------------------------------------------------- stage and CLI


def test_stage_round_trip(audio_dir, tmp_path, monkeypatch):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["source"] = "audio"
    params["data"]["extra"]["source"] = None  # one corpus (test_corpora.py: two)
    params["data"]["audio"]["dir"] = str(audio_dir)
    params["preprocess"].update({"spect_len": 40, "scheduler": "single"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(ROOT / "stages" / "preprocess.py"), run_name="__main__")
    # preprocess.fusion [melody]: one dataset per feature (SPEC.md section 3), read back stacked
    fs = read_features(tmp_path / "data" / "processed" / "audio.h5")
    assert fs.features.shape == (5, 46, 40) and fs.source == "audio" and fs.params["spect_len"] == 40
    assert fs.feature == "hpcp+melody"
    hpcp = read_features(tmp_path / "data" / "processed" / "audio.h5", "hpcp")
    np.testing.assert_array_equal(hpcp.features, fs.features[:, :23])
    splits = read_splits(tmp_path / "data" / "processed" / "splits.json")
    assert set(splits) == {"W_a", "W_b", "W_unknown_loose"}
    report = json.loads((tmp_path / "reports" / "preprocess_skipped.json").read_text())
    assert report["total"] == 5 and report["skipped"] == 0


def test_cli_from_audio_dir(audio_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    out = tmp_path / "out"
    rc = cli_main(["preprocess", "from-audio-dir", "-a", str(audio_dir), "-o", str(out), "-p", "hpcp",
                   "-r", "single", "-s", "30", "--no-tile"])
    assert rc == 0
    fs = read_features(out / "audio.h5")
    assert fs.features.shape == (5, 12, 30) and fs.feature == "hpcp"
    assert json.loads((out / "preprocess_skipped.json").read_text())["skipped"] == 0
    assert "audio.h5: 5 performances of 3 works" in capsys.readouterr().out
    rc = cli_main(["preprocess", "from-audio-dir", "-a", str(audio_dir), "-o", str(out), "-p", "hpcp",
                   "-p", "chroma_cens", "-r", "parallel", "-n", "2", "-s", "30", "--max-frames", "100"])
    assert rc == 0
    cens = read_features(out / "audio_chroma_cens.h5")
    hpcp = read_features(out / "audio_hpcp.h5")
    assert cens.features.shape == hpcp.features.shape == (5, 23, 30)
    assert list(cens.perf_id) == list(hpcp.perf_id) and cens.params["max_frames"] == 100
    # no -p: what the params' model takes, preprocess.feature stacked with preprocess.fusion
    rc = cli_main(["preprocess", "from-audio-dir", "-a", str(audio_dir), "-o", str(out / "fused"),
                   "-r", "single", "-s", "30"])
    fused = read_features(out / "fused" / "audio.h5")
    assert rc == 0 and fused.feature == "hpcp+melody" and fused.features.shape == (5, 46, 30)


def test_cli_errors(audio_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    rc = cli_main(["preprocess", "from-audio-dir", "-a", str(audio_dir), "-o", "o", "-p", "crema"])
    assert rc == 1 and "coverid: error: feature 'crema' cannot be computed from audio" in capsys.readouterr().err
    rc = cli_main(["preprocess", "from-audio-dir", "-a", str(tmp_path / "none"), "-o", "o"])
    assert rc == 1 and "audio folder not found" in capsys.readouterr().err


def test_melody_is_refused_for_datacos_in_one_line():
    for over in ({"preprocess.feature": "melody", "preprocess.fusion": []},
                 {"preprocess.feature": "hpcp", "preprocess.fusion": ["melody"]}):
        params = with_overrides(repo_params(), {"data.source": "datacos", **over})
        with pytest.raises(CoveridError, match="'melody' is extracted from audio"):
            features_for_source(params, SkipLog())
