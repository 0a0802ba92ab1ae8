"""`coverid index | identify | compare` through coverid.cli.main: output shapes, exit codes, and
one-line errors without tracebacks. Fakes (embedder, feature extractor) come from test_index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import model_config, repo_params
from test_index import (
    DIM,
    ICFG,
    FakeEmbedder,
    fake_features,
    fake_open_model,
    features_interrupted_at,
    make_audio_dir,
    write_song,
)

import coverid.search.identify as ident
from coverid.cli import main


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A working dir with params.yaml (index section), an audio folder and fakes wired in."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ident, "open_model", fake_open_model)
    monkeypatch.setattr(ident, "load_features", fake_features)
    monkeypatch.setattr(ident, "THRESHOLD_FILE", Path("reports/threshold.json"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(index_params()))
    make_audio_dir(tmp_path / "audio")
    return tmp_path


def index_params() -> dict:
    """params.yaml with the test index section."""
    return repo_params({f"index.{k}": v for k, v in ICFG.items()}).to_dict()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """main(argv) -> (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    """Exit 1 and a single `coverid: error:` line naming the problem, no traceback."""
    assert code == 1
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("coverid: error:")]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], lines[0]


def build(capsys, *extra: str) -> None:
    """coverid index build with model A over ./audio into ./idx."""
    code, out, err = run(capsys, "index", "build", "--audio-dir", "audio", "--model", "modelA", "--out", "idx", *extra)
    assert code == 0, err
    assert "indexed 14 songs" in out


def test_build_identify_json_shape(project, capsys):
    meta = {"W_2": {"P_2_1": {"perf_title": "Yesterday", "perf_artist": "The Band"}}}
    (project / "audio" / "metadata.json").write_text(json.dumps(meta))
    build(capsys)
    q1 = write_song(project / "q1.wav", 2, 8)
    q2 = project / "audio" / "W_3" / "P_3_0.wav"  # already indexed
    code, out, err = run(capsys, "identify", str(q1), str(q2), "--index", "idx", "-k", "4", "--json",
                         "--threshold", "1.0")
    assert code == 0, err
    doc = json.loads(out)
    assert isinstance(doc, list) and [d["query"] for d in doc] == [str(q1), str(q2)]
    for d in doc:
        assert d["threshold"] == 1.0 and len(d["results"]) == 4
        dist = [r["distance"] for r in d["results"]]
        assert dist == sorted(dist)
        for r in d["results"]:
            assert {"perf_id", "work_id", "distance", "is_cover"} <= set(r)
            assert r["is_cover"] == (r["distance"] <= 1.0)
    assert doc[0]["results"][0]["work_id"] == "W_2"
    named = [r for r in doc[0]["results"] if r["perf_id"] == "P_2_1"]
    assert named and named[0]["title"] == "Yesterday" and named[0]["artist"] == "The Band"
    assert all("title" not in r for r in doc[0]["results"] if r["perf_id"] != "P_2_1")
    assert "P_3_0" not in [r["perf_id"] for r in doc[1]["results"]]
    assert doc[1]["results"][0]["work_id"] == "W_3"


def test_identify_human_table_and_stored_threshold(project, capsys):
    (project / "t.json").write_text(json.dumps({"threshold": 0.8, "metric": "euclidean"}))
    build(capsys, "--threshold-file", "t.json")
    q = write_song(project / "q.wav", 1, 9)
    code, out, err = run(capsys, "identify", str(q), "--index", "idx", "-k", "3")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == f"{q}  (threshold 0.8)"
    assert lines[1].split()[:5] == ["rank", "distance", "cover", "work_id", "perf_id"]
    assert len(lines) == 5 and all(ln.split()[3] == "W_1" for ln in lines[2:])
    assert lines[2].split()[2] in ("yes", "no")


def test_index_add_and_info(project, capsys):
    build(capsys)
    make_audio_dir(project / "more", n_works=1, versions=2, n_noise=0, start=20)
    code, out, err = run(capsys, "index", "add", "--index", "idx", "--audio-dir", "more")
    assert code == 0, err
    assert "added 2 songs" in out and "16 in all" in out
    code, out, err = run(capsys, "index", "add", "--index", "idx", "--audio-dir", "more")
    assert_one_line_error(code, err, "2 perf ids already indexed", "--skip-existing")
    code, out, err = run(capsys, "index", "info", "--index", "idx", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["count"] == 16 and info["kind"] == "flat" and info["dim"] == DIM and info["works"] == 7
    files = sum(f.stat().st_size for f in (project / "idx").iterdir())
    assert info["storage"] == "float16" and info["disk_mb"] == round(files / 1e6, 1)


def test_compare(project, capsys):
    a, b, c = (write_song(project / f"{n}.wav", w, v) for n, w, v in (("a", 1, 1), ("b", 1, 2), ("c", 2, 1)))
    code, out, err = run(capsys, "compare", str(a), str(b), "--model", "modelA", "--json", "--threshold", "1.0")
    assert code == 0, err
    same = json.loads(out)
    assert same["metric"] == "euclidean" and same["is_cover"] is True
    emb = FakeEmbedder(0)
    want = np.linalg.norm(np.diff(ident.embed_files([a, b], emb), axis=0))
    assert same["distance"] == pytest.approx(float(want), rel=1e-4)
    code, out, err = run(capsys, "compare", str(a), str(c), "--model", "modelA", "--json", "--threshold", "1.0")
    assert json.loads(out)["is_cover"] is False and json.loads(out)["distance"] > same["distance"]
    code, out, err = run(capsys, "compare", str(a), str(c), "--model", "modelA")
    assert code == 0 and "no threshold: no decision" in out
    # reports/threshold.json (tuned on cosine) picks both the distance and the threshold
    (project / "reports").mkdir()
    (project / "reports" / "threshold.json").write_text(json.dumps({"threshold": 0.05, "metric": "cosine"}))
    code, out, err = run(capsys, "compare", str(a), str(b), "--model", "modelA")
    assert code == 0 and out.startswith("cosine distance") and "(threshold 0.05)" in out


@pytest.mark.parametrize("argv, words", [
    (["identify", "missing.wav", "--index", "idx"], ["missing.wav", "audio file not found"]),
    (["identify", "garbage.wav", "--index", "idx"], ["garbage.wav", "cannot decode audio"]),
    (["identify", "q.wav", "--index", "nowhere"], ["nowhere", "index directory not found"]),
    (["identify", "q.wav", "--index", "idx", "--model", "modelB"], ["weights differ", "rebuild"]),
    (["identify", "q.wav", "--index", "idx", "--model", "modelS"], ["another model", "config_hash"]),
    (["identify", "q.wav", "--index", "idx", "--model", "nomodel"], ["nomodel", "model directory not found"]),
    (["identify", "q.wav", "--index", "idx", "-k", "0"], ["-k must be at least 1"]),
    (["compare", "q.wav", "missing.wav", "--model", "modelA"], ["missing.wav", "audio file not found"]),
    (["compare", "q.wav", "garbage.wav", "--model", "modelA"], ["garbage.wav", "cannot decode audio"]),
    (["index", "build", "--audio-dir", "nowhere", "--model", "modelA", "--out", "idx2"], ["nowhere"]),
    (["index", "build", "--features", "nofile.h5", "--model", "modelA", "--out", "idx2"], ["nofile.h5", "not found"]),
    (["index", "build", "--audio-dir", "audio", "--model", "modelA", "--out", "idx2", "--params", "no.yaml"],
     ["no.yaml", "not found"]),
    (["index", "add", "--index", "idx", "--audio-dir", "audio", "--model", "modelC"], ["another model"]),
])
def test_bad_input_is_one_line(project, capsys, argv, words):
    build(capsys)
    write_song(project / "q.wav", 1, 5)
    (project / "garbage.wav").write_bytes(b"\xff\xfbnot audio")
    code, out, err = run(capsys, *argv)
    assert_one_line_error(code, err, *words)
    assert not (project / "idx2").exists()


@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / "index.faiss").write_bytes((d / "index.faiss").read_bytes()[:64]),
     ["index.faiss", "corrupt FAISS"]),
    (lambda d: (d / "meta.json").write_text('{"format": 1, "songs": ['), ["meta.json", "not valid JSON"]),
    (lambda d: (d / "meta.json").write_text('{"format": 1}'), ["meta.json", "missing or incomplete"]),
])
def test_corrupt_index_via_cli(project, capsys, damage, words):
    build(capsys)
    damage(project / "idx")
    q = write_song(project / "q.wav", 1, 5)
    code, out, err = run(capsys, "identify", str(q), "--index", "idx")
    assert_one_line_error(code, err, *words)


def test_interrupted_cli_build_keeps_previous_index(project, capsys, monkeypatch):
    build(capsys)
    before = {p.name: p.read_bytes() for p in (project / "idx").iterdir()}
    make_audio_dir(project / "audio", n_works=6)  # more songs; the rebuild is interrupted
    monkeypatch.setattr(ident, "load_features", features_interrupted_at(10))
    code, out, err = run(capsys, "index", "build", "--audio-dir", "audio", "--model", "modelA", "--out", "idx")
    assert code == 130 and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in (project / "idx").iterdir()} == before
    assert not [p for p in project.iterdir() if p.name.startswith(".idx")]


@pytest.mark.slow
@pytest.mark.parametrize("fused", [False, True], ids=["hpcp", "hpcp+melody"])
def test_real_encoder_and_essentia_end_to_end(tmp_path, monkeypatch, capsys, fused):
    """A tiny real Keras encoder (save_embedder) and real essentia HPCP on generated WAVs; fused:
    two encoders joined, each song's HPCP and predominant melody extracted and stacked."""
    import soundfile as sf

    from coverid.model.embedder import save_embedder
    from coverid.model.encoders import move_encoder

    monkeypatch.chdir(tmp_path)
    sr, t = 44100, np.arange(int(44100 * 2.5)) / 44100
    chords = {"W_a": (261.63, 329.63, 392.0), "W_b": (293.66, 369.99, 440.0)}
    rng = np.random.default_rng(0)
    for work, freqs in chords.items():
        for v in range(2):
            y = sum(np.sin(2 * np.pi * f * t * (1 + 0.002 * v)) for f in freqs) / 4
            path = tmp_path / "audio" / work / f"{work}_{v}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, (y + 0.01 * rng.standard_normal(len(t))).astype(np.float32), sr)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....not really a wav")
    encoder = move_encoder((23, 40), 16, 8, 12, 3, [1], "mean", True, 0.0, 1, 1, "early")
    pre = {"scheduler": "single", "spect_len": 40, "max_frames": None, "fusion": []}
    config = model_config(pre, arch="move", loss="contrastive", params_hash="test")
    if fused:
        from coverid.model.encoders import fuse_encoders

        melody = move_encoder((23, 40), 16, 8, 12, 3, [1], "mean", True, 0.0, 1, 1, "early")
        encoder = fuse_encoders({"hpcp": encoder, "melody": melody}, [1.0, 1.0], (46, 40))
        config = model_config({**pre, "fusion": ["melody"]}, arch="move", loss="contrastive",
                              params_hash="test", feature="hpcp+melody", embedding_dim=32)
    save_embedder(tmp_path / "model", encoder, config)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(index_params()))

    code, out, err = run(capsys, "index", "build", "--audio-dir", "audio", "--model", "model", "--out", "idx")
    assert code == 0, err
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert meta["features"]["feature"] == ("hpcp+melody" if fused else "hpcp")
    assert meta["model"]["dim"] == (32 if fused else 16)
    query = tmp_path / "audio" / "W_a" / "W_a_0.wav"
    code, out, err = run(capsys, "identify", str(query), "--index", "idx", "-k", "3", "--json")
    assert code == 0, err
    res = json.loads(out)[0]["results"]
    assert len(res) == 3 and "W_a_0" not in [r["perf_id"] for r in res]
    code, out, err = run(capsys, "compare", str(query), str(tmp_path / "audio" / "W_a" / "W_a_1.wav"),
                         "--model", "model", "--json")
    assert code == 0, err
    assert json.loads(out)["distance"] >= 0
    code, out, err = run(capsys, "identify", "bad.wav", "--index", "idx")
    assert_one_line_error(code, err, "bad.wav")
