"""The generated corpus: determinism, layout, atomicity; key and tempo heard in the audio."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from coverid.core.errors import CoveridError
from coverid.data import synth

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
SR = 22050
TINY = dict(n_works=3, versions_per_work=3, n_noise=2, duration_s=6.0, sample_rate=SR,
            max_offset_s=2.0, n_sections=2, bars_per_section=2, workers=1)


@pytest.fixture(scope="module")
def cfg() -> dict:
    """params.yaml's data.synth (so its keys are checked too), shrunk to a tiny corpus."""
    return {**yaml.safe_load(PARAMS.read_text())["data"]["synth"], **TINY}


@pytest.fixture(scope="module")
def corpus(cfg: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One tiny corpus (seed 7) shared by the read-only tests."""
    out = tmp_path_factory.mktemp("synth") / "raw"
    return out, synth.generate_corpus(out, cfg, seed=7)


def _files(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under root."""
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ determinism, layout

def test_same_seed_same_bytes_other_seed_other_audio(cfg, corpus, tmp_path):
    out, _ = corpus
    again = synth.generate_corpus(tmp_path / "again", cfg, seed=7)
    assert _files(tmp_path / "again") == _files(out)
    assert again == synth.generate_corpus(tmp_path / "again2", cfg, seed=7)
    synth.generate_corpus(tmp_path / "other", cfg, seed=8)
    a, b = _files(out), _files(tmp_path / "other")
    assert a.keys() == b.keys()
    wavs = [k for k in a if k.endswith(".wav")]
    assert all(a[k] != b[k] for k in wavs)


def test_worker_processes_write_the_same_corpus(cfg, corpus, tmp_path):
    out, meta = corpus
    assert synth.generate_corpus(tmp_path / "two", {**cfg, "workers": 2}, seed=7) == meta
    assert _files(tmp_path / "two") == _files(out)


def test_noise_count_does_not_change_the_works(cfg, corpus, tmp_path):
    out, meta = corpus
    synth.generate_corpus(tmp_path / "fewer", {**cfg, "n_noise": 0}, seed=7)
    fewer = _files(tmp_path / "fewer")
    full = _files(out)
    work_files = [k for k in fewer if k.endswith(".wav")]
    assert len(work_files) == cfg["n_works"] * cfg["versions_per_work"]
    assert all(fewer[k] == full[k] for k in work_files)


def test_metadata_schema_counts_and_files(cfg, corpus):
    out, meta = corpus
    assert json.loads((out / "metadata.json").read_text()) == meta
    n_works, n_v, n_noise = cfg["n_works"], cfg["versions_per_work"], cfg["n_noise"]
    assert list(meta) == [f"W_{i}" for i in range(1, n_works + n_noise + 1)]
    sizes = [len(meta[w]) for w in meta]
    assert sizes == [n_v] * n_works + [1] * n_noise
    perf_ids = [p for w in meta for p in meta[w]]
    assert perf_ids == [f"P_{i}" for i in range(1, len(perf_ids) + 1)]
    required = {"work_title", "work_artist", "perf_title", "perf_artist", "release_year", "work_id",
                "perf_id", "instrumental", "key_shift", "tempo_ratio", "snr_db", "section_edit",
                "offset_s", "timbre"}
    peak = 10 ** (cfg["peak_dbfs"] / 20)
    for w, perfs in meta.items():
        for p, m in perfs.items():
            assert required <= m.keys()
            assert (m["work_id"], m["perf_id"]) == (w, p)
            assert m["noise_song"] == (int(w[2:]) > n_works)
            assert 0 <= m["key_shift"] < 12
            assert 1 - cfg["tempo_range"] <= m["tempo_ratio"] <= 1 + cfg["tempo_range"]
            assert cfg["snr_db"][0] <= m["snr_db"] <= cfg["snr_db"][1]
            assert 0 <= m["offset_s"] <= cfg["max_offset_s"]
            assert set(m["timbre"]) == {"bass", "chords", "melody"}
            info = sf.info(out / w / f"{p}.wav")
            assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
            assert info.frames == round(cfg["duration_s"] * SR)
            x, _ = sf.read(out / w / f"{p}.wav")
            assert np.max(np.abs(x)) == pytest.approx(peak, abs=1e-3)


def test_section_edits_drop_or_repeat_one_section():
    structure = ("verse", "chorus", "verse", "bridge")
    seen = set()
    for i in range(30):
        s, edit = synth._edit_structure(np.random.default_rng(i), structure, 1.0)
        kind, at = edit.split(":")
        seen.add(kind)
        assert len(s) == len(structure) + (1 if kind == "repeat" else -1)
        i = int(at)
        if kind == "repeat":
            assert s == structure[:i + 1] + structure[i:]
        else:
            assert s == structure[:i] + structure[i + 1:]
    assert seen == {"drop", "repeat"}
    assert synth._edit_structure(np.random.default_rng(0), structure, 0.0) == (structure, None)


def test_one_aspect_version_changes_only_that_aspect(cfg):
    work = synth.make_work(synth.song_rng(3, 0, 0, 0), cfg)
    ref, other = (synth.make_version(synth.song_rng(3, 0, 0, v), work, cfg) for v in (1, 2))
    fields = {f.name for f in dataclasses.fields(synth.Version)}
    assert set().union(*synth.ASPECTS.values()) <= fields
    for aspect, changed in synth.ASPECTS.items():
        v = synth.one_aspect_version(ref, other, aspect)
        for f in fields:
            assert getattr(v, f) == getattr(other if f in changed else ref, f), (aspect, f)
    with pytest.raises(CoveridError, match="unknown aspect"):
        synth.one_aspect_version(ref, other, "mood")


def test_noise_is_added_at_the_requested_snr():
    x = np.sin(2 * np.pi * 440 * np.arange(SR) / SR)
    for color in ("white", "pink"):
        y = synth._add_noise(x, 20.0, color, seed=3)
        snr = 10 * np.log10(np.mean(x ** 2) / np.mean((y - x) ** 2))
        assert snr == pytest.approx(20.0, abs=1e-6)


def test_bad_config_is_one_line_error(cfg, tmp_path):
    with pytest.raises(CoveridError, match="versions_per_work"):
        synth.generate_corpus(tmp_path / "x", {**cfg, "versions_per_work": 1}, seed=0)
    with pytest.raises(CoveridError, match="missing keys n_sections"):
        partial = {k: v for k, v in cfg.items() if k != "n_sections"}
        synth.generate_corpus(tmp_path / "x", partial, seed=0)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------- atomicity

def test_failure_midway_leaves_previous_corpus_and_no_partial(cfg, corpus, tmp_path, monkeypatch):
    out = tmp_path / "raw"
    synth.generate_corpus(out, cfg, seed=7)
    before = _files(out)
    calls = {"n": 0}
    real = synth.render_version

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "render_version", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        synth.generate_corpus(out, cfg, seed=8)
    assert _files(out) == before
    with pytest.raises(RuntimeError):
        calls["n"] = 0
        synth.generate_corpus(tmp_path / "fresh", cfg, seed=8)
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]   # no temp dirs left behind


# ------------------------------------------------- transposition and tempo, from the audio

def _stft_mag(x: np.ndarray, n_fft: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """|STFT| frames (T, n_fft // 2 + 1) with a Hann window, and the bin frequencies."""
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    return np.abs(np.fft.rfft(frames, axis=1)), np.fft.rfftfreq(n_fft, 1 / SR)


def _mean_chroma(x: np.ndarray) -> np.ndarray:
    """Mean chroma (12,) from a plain STFT: energy of 80-2000 Hz bins folded to pitch classes."""
    mag, freqs = _stft_mag(x, 4096, 1024)
    sel = (freqs >= 80) & (freqs <= 2000)
    pc = np.round(12 * np.log2(freqs[sel] / 440.0)).astype(int) % 12
    chroma = np.bincount(pc, weights=(mag[:, sel] ** 2).sum(0), minlength=12)
    return chroma / np.linalg.norm(chroma)


def _onset_envelope(x: np.ndarray) -> np.ndarray:
    """Half-wave rectified log-spectral flux, lightly smoothed, zero mean."""
    mag, _ = _stft_mag(x, 1024, 256)
    flux = np.maximum(np.diff(np.log1p(100 * mag), axis=0), 0).sum(1)
    flux = np.convolve(flux, np.hanning(5) / np.hanning(5).sum(), mode="same")
    return flux - flux.mean()


def _clean_pair(cfg: dict, seed: int) -> tuple[synth.Work, synth.Version]:
    """A work at 100 BPM and one clean version of it (no noise, offset, key or tempo change)."""
    work = synth.make_work(np.random.default_rng(seed), cfg)
    work = dataclasses.replace(work, tempo_bpm=100.0)
    version = synth.make_version(np.random.default_rng(seed + 100), work, cfg)
    clean = dataclasses.replace(version, key_shift=0, tempo_ratio=1.0, offset_s=0.0, snr_db=None)
    return work, clean


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_key_shift_is_the_best_chroma_rotation(cfg, seed):
    work, ref = _clean_pair(cfg, seed)
    c_ref = _mean_chroma(synth.render_version(work, ref, SR, 6.0, -1.0))
    for shift in (1, 4, 7, 11):
        v = dataclasses.replace(ref, key_shift=shift)
        c = _mean_chroma(synth.render_version(work, v, SR, 6.0, -1.0))
        corr = [float(np.roll(c_ref, s) @ c) for s in range(12)]
        assert int(np.argmax(corr)) == shift
        assert max(corr) > 0.9


@pytest.mark.parametrize("seed,ratio", [(0, 0.8), (1, 1.2), (2, 0.9)])
def test_tempo_ratio_is_the_best_onset_time_stretch(cfg, seed, ratio):
    work, ref = _clean_pair(cfg, seed)
    duration = 6.0
    env_ref = _onset_envelope(synth.render_version(work, ref, SR, duration * 1.5, -1.0))
    faster = dataclasses.replace(ref, tempo_ratio=ratio)
    env_v = _onset_envelope(synth.render_version(work, faster, SR, duration, -1.0))
    # A version at tempo ratio r plays the reference's time t*r at time t: env_v(t) ~ env_ref(t*r).
    t = np.arange(len(env_v))
    stretches = np.arange(0.7, 1.4, 0.005)
    scores = []
    for c in stretches:
        warped = np.interp(t * c, np.arange(len(env_ref)), env_ref)
        scores.append(float(np.corrcoef(warped, env_v)[0, 1]))
    best = stretches[int(np.argmax(scores))]
    assert best == pytest.approx(ratio, abs=0.01)
    assert max(scores) > 0.5


def test_nuisance_songs_share_the_reference_and_differ_in_one_aspect(cfg):
    pcfg = yaml.safe_load(PARAMS.read_text())["preprocess"]
    pcfg = {**pcfg, "audio": {**pcfg["audio"], "sample_rate": SR}}
    sets = synth.nuisance_songs(cfg, pcfg, n_works=1, seed=5, workers=1)
    assert list(sets) == [*synth.ASPECTS, "all"]
    refs = [songs[0] for songs, _ in sets.values()]
    for songs, works in sets.values():
        assert len(songs) == 2 and works.tolist() == [0, 0]
        assert songs[0].shape[1] == 12
        np.testing.assert_array_equal(songs[0], refs[0])  # one reference version for all
    key_ref, key_other = sets["key"][0]
    rng = lambda part: synth.song_rng(5, synth.WORK, synth.NUISANCE_INDEX, part)  # noqa: E731
    work = synth.make_work(rng(0), cfg)
    ref_shift, shift = (synth.make_version(rng(v), work, cfg).key_shift for v in (1, 2))
    rel = (shift - ref_shift) % 12
    assert rel != 0  # this seed's two versions are in different keys
    profile = lambda h: h.mean(axis=0)  # noqa: E731
    best = np.argmax([np.dot(np.roll(profile(key_ref), s), profile(key_other)) for s in range(12)])
    assert best == rel  # the only difference is the transposition


def test_a_solo_version_plays_the_melody_alone_and_changes_no_other_draw(cfg):
    work = synth.make_work(synth.song_rng(5, 0, 0, 0), cfg)
    solo_cfg = {**cfg, "p_solo": 1.0}
    for v in range(1, 6):
        band = synth.make_version(synth.song_rng(5, 0, 0, v), work, {**cfg, "p_solo": 0.0})
        solo = synth.make_version(synth.song_rng(5, 0, 0, v), work, solo_cfg)
        assert not band.solo and solo.solo
        assert dataclasses.replace(solo, solo=False) == band
        parts = {e[0] for e in synth._events(work, solo, 64.0)}
        assert parts == {"melody"}
        assert {"chords", "bass"} <= {e[0] for e in synth._events(work, band, 64.0)}
        assert synth.perf_metadata(work, solo, "W_1", "P_1", False, SR, 6.0)["accompaniment"] is None
    with pytest.raises(CoveridError, match="p_solo"):
        synth._check_cfg({**cfg, "p_solo": 1.5})
