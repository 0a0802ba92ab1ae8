"""Audio loading and HPCP / chroma CENS extraction (coverid.features.extract)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from conftest import repo_params

from coverid.core.errors import BadInputError, CoveridError
from coverid.features import extract as F

SR = 44100
CFG = repo_params()["preprocess"]["audio"]
C4 = 261.6256
# HPCP bin 0 is A (440 Hz): C, E, G of C major are bins 3, 7, 10
C_MAJOR_BINS = {3, 7, 10}


def tone(midi_offsets: list[float], seconds: float = 3.0, base: float = C4, seed: int = 0,
         noise: float = 0.0) -> np.ndarray:
    """A chord of harmonic tones `midi_offsets` semitones above `base`."""
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros_like(t)
    for k in midi_offsets:
        f0 = base * 2 ** (k / 12)
        for h in range(1, 4):
            x += 0.2 / h * np.sin(2 * np.pi * f0 * h * t)
    x += noise * np.random.default_rng(seed).standard_normal(len(t))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def test_hpcp_shape_range_and_frame_count():
    x = F.compute_hpcp(tone([0, 4, 7]), SR, CFG)
    assert x.dtype == np.float32
    assert x.shape == (F.n_frames(3 * SR, 512), 12)
    assert np.all(np.isfinite(x)) and x.min() >= 0 and x.max() <= 1 + 1e-6
    np.testing.assert_allclose(x.max(axis=1), 1.0, atol=1e-6)  # unitMax per frame


def test_c_major_peaks_at_c_e_g():
    profile = F.compute_hpcp(tone([0, 4, 7]), SR, CFG).mean(axis=0)
    assert set(np.argsort(profile)[-3:]) == C_MAJOR_BINS


def test_transposed_chord_is_circular_shift():
    c = F.compute_hpcp(tone([0, 4, 7]), SR, CFG).mean(axis=0)
    d = F.compute_hpcp(tone([2, 6, 9]), SR, CFG).mean(axis=0)
    assert set(np.argsort(d)[-3:]) == {(b + 2) % 12 for b in C_MAJOR_BINS}
    np.testing.assert_allclose(d, np.roll(c, 2), atol=0.05)
    assert np.corrcoef(d, np.roll(c, 2))[0, 1] > 0.99


@pytest.mark.parametrize("n", [1, 511, 512, 513, 4096, 30000])
def test_frame_count_matches_essentia(n):
    import essentia.standard as es

    frames = list(es.FrameGenerator(np.zeros(n, np.float32), frameSize=4096, hopSize=512))
    assert F.n_frames(n, 512) == len(frames)


def test_numpy_hpcp_matches_essentia_chain():
    rng = np.random.default_rng(1)
    x = tone([0, 3, 7, 10], seconds=2.0, noise=0.02)
    x[SR // 2:SR // 2 + 8000] = 0  # digital silence
    x[-6000:] = (0.1 * rng.standard_normal(6000)).astype(np.float32)
    ours = F.compute_hpcp(x, SR, CFG)
    ref = F.compute_hpcp_essentia(x, SR, CFG)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-3


def test_numpy_hpcp_matches_essentia_without_whitening():
    cfg = {**CFG, "whitening": False}
    x = tone([0, 5, 9], seconds=1.0, noise=0.01)
    assert np.abs(F.compute_hpcp(x, SR, cfg) - F.compute_hpcp_essentia(x, SR, cfg)).max() < 1e-3


def test_cens_definition():
    onehot = np.zeros((100, 12))
    onehot[:, 4] = 1.0
    cens = F.cens_from_chroma(onehot, 41)
    np.testing.assert_allclose(cens[:, 4], 1.0, atol=1e-6)
    assert np.abs(np.delete(cens, 4, axis=1)).max() == 0
    rng = np.random.default_rng(0)
    c = F.cens_from_chroma(rng.random((200, 12)) ** 4, 41)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)
    assert c.min() >= 0
    # quantisation: 0.5 of the L1 mass -> 1.0 (above all four steps), 0.07 -> 0.25
    q = F.cens_from_chroma(np.array([[0.5, 0.07, 0.43] + [0] * 9]), 0)
    np.testing.assert_allclose(q[0, :3] / q[0, 0], [1.0, 0.25, 1.0])


def test_chroma_cens_from_audio():
    x = F.compute_chroma_cens(tone([0, 4, 7]), SR, CFG)
    assert x.shape == (F.n_frames(3 * SR, 512), 12)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_extract_file_and_resampling(tmp_path):
    path = tmp_path / "low.flac"
    sf.write(path, tone([0, 4, 7])[::2], SR // 2)  # 22.05 kHz: loaded resampled to 44.1 kHz
    pcfg = repo_params()["preprocess"]
    x = F.extract_file(path, pcfg)
    assert abs(len(x) - F.n_frames(3 * SR, 512)) <= 2
    assert set(np.argsort(x.mean(axis=0))[-3:]) == C_MAJOR_BINS
    both = F.extract_features(path, pcfg, ["hpcp", "chroma_cens"])
    np.testing.assert_array_equal(both["hpcp"], x)
    melody = F.extract_features(path, pcfg, ["melody"])["melody"]
    assert abs(len(melody) - len(x)) <= 2 and melody.shape[1] == 12
    with pytest.raises(CoveridError, match="unknown audio feature"):
        F.extract_file(path, pcfg, "crema")


def test_melody_chroma_maps_pitch_to_its_class():
    # bin 0 is A (the reference frequency), C is bin 3; 0 Hz (unvoiced) is a zero row
    x = F.melody_chroma(np.array([440.0, 880.0, C4, 0.0, C4 * 2 ** (1 / 12), 220.0 * 2 ** (0.4 / 12)]),
                        440.0, 12)
    assert x.dtype == np.float32 and x.shape == (6, 12)
    assert [int(r.argmax()) for r in x[[0, 1, 2, 4, 5]]] == [0, 0, 3, 4, 0]
    np.testing.assert_array_equal(x.sum(1), [1, 1, 1, 0, 1, 1])


def test_melody_follows_the_tune_over_its_chords():
    # C4, E4, G4, then A4 (1 s each) over a quieter, sustained F major chord an octave below
    notes = [0, 4, 7, 9]
    tune = np.concatenate([tone([k], seconds=1.0) for k in notes])
    chord = tone([5 - 12, 9 - 12, 12 - 12], seconds=4.0)
    x = F.compute_melody(0.8 * tune + 0.3 * chord, SR, CFG)
    assert abs(len(x) - F.n_frames(4 * SR, 512)) <= 2
    assert set(np.unique(x)) <= {0.0, 1.0} and x.sum(1).max() == 1
    per_second = [x[int(i * SR / 512) + 10:int((i + 1) * SR / 512) - 10].sum(0).argmax() for i in range(4)]
    assert per_second == [(k + 3) % 12 for k in notes]  # C is bin 3
    feats = F.compute_feature(tune, SR, "melody", CFG)
    assert feats.shape[1] == 12


@pytest.mark.parametrize("name, content, problem", [
    ("junk.mp3", b"\x00\x01not audio" * 50, "cannot decode audio"),
    ("empty.wav", b"", "empty file"),
    ("song.wma", b"x" * 100, "unsupported audio extension"),
    ("missing.wav", None, "not found"),
])
def test_load_audio_bad_files(tmp_path, name, content, problem):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadInputError, match=problem) as e:
        F.load_audio(path, SR, 0.0, 0.0, extensions=["wav", "mp3"])
    assert str(path) in str(e.value)


def test_load_audio_silent_and_short(tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(3 * SR, np.float32), SR)
    sf.write(tmp_path / "short.wav", tone([0], seconds=0.5), SR)
    with pytest.raises(BadInputError, match="silent"):
        F.load_audio(tmp_path / "silent.wav", SR, min_duration_s=0.0, silence_rms=1e-4)
    with pytest.raises(BadInputError, match="too short"):
        F.load_audio(tmp_path / "short.wav", SR, min_duration_s=2.0, silence_rms=0.0)
    assert len(F.load_audio(tmp_path / "short.wav", SR, min_duration_s=0.1, silence_rms=0.0)) == SR // 2


def test_spectral_peaks_match_essentia_incl_plateaus_and_peak_limit():
    import essentia.standard as es

    rng = np.random.default_rng(3)
    spec = rng.random((4, 2049)).astype(np.float32)  # ~1 peak per 3 bins: more than 100 in range
    spec[1, 40:43] = spec[1, 39] + 1  # a plateau peak
    spec[2, 10:12] = 2.0  # a plateau at the first bin of the range
    spec[3, :] = 0  # silence: no peaks
    freqs, mags, valid = F.spectral_peaks(spec, 2049, SR, 100.0, 3500.0, 100)
    algo = es.SpectralPeaks(magnitudeThreshold=0.0, minFrequency=100.0, maxFrequency=3500.0,
                            maxPeaks=100, orderBy="frequency", sampleRate=SR)
    for row in range(4):
        f, m = algo(spec[row])
        assert valid[row].sum() == len(f)
        np.testing.assert_allclose(freqs[row, :len(f)], f, rtol=1e-5)
        np.testing.assert_allclose(mags[row, :len(f)], m, rtol=1e-5)
    assert valid[0].sum() == 100 and valid[3].sum() == 0
