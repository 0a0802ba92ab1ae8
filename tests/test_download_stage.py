"""stages/download.py run in a tmp project: the synth and audio sources."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from coverid.core.errors import CoveridError

ROOT = Path(__file__).resolve().parents[1]


def _stage():
    spec = importlib.util.spec_from_file_location("stage_download", ROOT / "stages" / "download.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _project(tmp_path, monkeypatch, **data) -> dict:
    """Write params.yaml (the repo's, with `data` keys replaced) in tmp and chdir there."""
    params = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))
    params["data"]["extra"]["source"] = None  # one corpus at a time here (test_corpora.py: both)
    params["data"].update(data)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    return params


def test_audio_source_writes_manifest_that_tracks_changes(tmp_path, monkeypatch):
    audio = tmp_path / "music"
    for rel in ("W_a/one.wav", "W_a/two.MP3", "W_b/three.flac", "loose.ogg"):
        (audio / rel).parent.mkdir(parents=True, exist_ok=True)
        (audio / rel).write_bytes(b"x" * len(rel))
    (audio / "W_b" / "cover.jpg").write_bytes(b"jpg")
    (audio / "W_b" / "._three.flac").write_bytes(b"resource fork")
    (audio / "metadata.json").write_text("{}")
    params = _project(tmp_path, monkeypatch, source="audio")
    params["data"]["audio"]["dir"] = "music"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    stage = _stage()
    stage.main()
    manifest_path = tmp_path / "data" / "raw" / "audio" / "manifest.json"
    first = json.loads(manifest_path.read_text())
    assert [f["path"] for f in first["files"]] == [
        "W_a/one.wav", "W_a/two.MP3", "W_b/three.flac", "loose.ogg", "metadata.json"]
    assert first["files"][0]["size"] == len("W_a/one.wav")

    (audio / "W_b" / "three.flac").write_bytes(b"changed content")
    stage.main()
    second = json.loads(manifest_path.read_text())
    assert second != first and second["files"][2]["size"] == len(b"changed content")


def test_audio_source_missing_folder_is_a_clear_error(tmp_path, monkeypatch):
    params = _project(tmp_path, monkeypatch, source="audio")
    params["data"]["audio"]["dir"] = "nowhere"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(CoveridError, match="nowhere: audio folder not found"):
        _stage().main()
    assert not (tmp_path / "data" / "raw" / "audio" / "manifest.json").exists()


def test_synth_source_generates_corpus(tmp_path, monkeypatch):
    params = _project(tmp_path, monkeypatch, source="synth")
    synth = params["data"]["synth"]
    synth.update(n_works=2, versions_per_work=2, n_noise=1, duration_s=4.0, sample_rate=8000)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    _stage().main()
    raw = tmp_path / "data" / "raw" / "synth"
    meta = json.loads((raw / "metadata.json").read_text())
    assert sum(len(p) for p in meta.values()) == 2 * 2 + 1
    assert len(meta) == 3


def test_unknown_source(tmp_path, monkeypatch):
    _project(tmp_path, monkeypatch, source="cd-rom")
    with pytest.raises(CoveridError, match="params.yaml: data.source must be one of synth, melodies, datacos, audio; "
                                           "got 'cd-rom'"):
        _stage().main()
