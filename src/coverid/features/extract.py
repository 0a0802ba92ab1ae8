"""Audio loading and chroma features: HPCP as Da-TACOS/acoss compute it, and chroma CENS.

HPCP follows the Da-TACOS (acoss `AudioFeatures.hpcp`) chain of essentia algorithms:
FrameCutter -> Windowing -> Spectrum -> SpectralPeaks -> SpectralWhitening -> HPCP.
`compute_hpcp` re-implements that chain with whole-file numpy array operations (the
per-frame Python loop over essentia calls is the bottleneck); `compute_hpcp_essentia`
runs the essentia algorithms themselves and is kept as the reference the numpy version
is tested against. HPCP bin 0 is the reference frequency (A = 440 Hz), so C is bin 3.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np

from coverid.core.errors import BadInputError, CoveridError

FEATURES = ("hpcp", "chroma_cens", "melody")
HPCP_PRECISION = 1e-5  # essentia HPCP: semitone equality tolerance of the harmonic table
SPLIT_FREQUENCY = 500.0  # essentia HPCP bandPreset default: low/high bands normalised apart
ENVELOPE_STEP_HZ = 100.0  # essentia SpectralWhitening break-point spacing
BLOCK_FRAMES = 1024  # frames per FFT block: bounds memory for long songs (~16 MB per block)
CENS_STEPS = (0.4, 0.2, 0.1, 0.05)  # librosa chroma_cens quantisation thresholds
CENS_WEIGHTS = (0.25, 0.25, 0.25, 0.25)


def _essentia() -> Any:
    """Import essentia with its info/warning chatter off."""
    import essentia

    essentia.log.infoActive = False
    essentia.log.warningActive = False
    return essentia


# ---------------------------------------------------------------- loading


def load_audio(path: str | Path, sample_rate: int, min_duration_s: float, silence_rms: float,
               extensions: list[str] | None = None) -> np.ndarray:
    """Decode `path` to mono float32 at `sample_rate`; BadInputError when it is unusable."""
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    if extensions is not None and ext not in {e.lower().lstrip(".") for e in extensions}:
        raise BadInputError(path, f"unsupported audio extension '.{ext}' (supported: {', '.join(extensions)})")
    if not path.is_file():
        raise BadInputError(path, "audio file not found")
    if path.stat().st_size == 0:
        raise BadInputError(path, "empty file")
    _essentia()
    import essentia.standard as es

    try:
        audio = es.MonoLoader(filename=str(path), sampleRate=float(sample_rate))()
    except RuntimeError as e:
        reason = str(e).split("error = ")[-1].strip() or "unknown decoder error"
        raise BadInputError(path, f"cannot decode audio ({reason})") from None
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0:
        raise BadInputError(path, "no audio samples decoded")
    if not np.all(np.isfinite(audio)):
        raise BadInputError(path, "decoded audio holds NaN or infinite samples")
    duration = audio.size / sample_rate
    if duration < min_duration_s:
        raise BadInputError(path, f"too short ({duration:.2f} s < min_duration_s {min_duration_s} s)")
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if rms < silence_rms:
        raise BadInputError(path, f"silent (RMS {rms:.2e} < silence_rms {silence_rms:.0e})")
    return audio


# ---------------------------------------------------------------- framing and spectrum


def n_frames(n_samples: int, hop_size: int) -> int:
    """Frames essentia's FrameCutter (startFromZero=False) yields: centres at k*hop < n + hop."""
    return -(-n_samples // hop_size) + 1


@functools.lru_cache(maxsize=8)
def analysis_window(window: str, frame_size: int) -> np.ndarray:
    """essentia's Windowing of the given type (normalised, symmetric), as a float32 array."""
    _essentia()
    import essentia.standard as es

    ones = np.ones(frame_size, dtype=np.float32)
    return np.asarray(es.Windowing(type=window, size=frame_size, zeroPhase=False)(ones), dtype=np.float32)


def spectrum_blocks(audio: np.ndarray, frame_size: int, hop_size: int, window: str, n_bins: int):
    """Yield |rfft| of windowed frames, (block, n_bins) float32, BLOCK_FRAMES frames at a time.

    Frames are centred on k * hop_size with zero padding at both ends, as FrameCutter does.
    """
    import scipy.fft

    audio = np.asarray(audio, dtype=np.float32)
    total = n_frames(len(audio), hop_size)
    half = frame_size // 2
    padded = np.concatenate([np.zeros(half, np.float32), audio,
                             np.zeros(frame_size + hop_size, np.float32)])
    view = np.lib.stride_tricks.sliding_window_view(padded, frame_size)[::hop_size]
    win = analysis_window(window, frame_size)
    for start in range(0, total, BLOCK_FRAMES):
        frames = view[start:min(start + BLOCK_FRAMES, total)] * win
        yield np.abs(scipy.fft.rfft(frames, axis=1, workers=1)[:, :n_bins])


# ---------------------------------------------------------------- spectral peaks


def spectral_peaks(spec: np.ndarray, spec_size: int, sample_rate: float, min_frequency: float,
                   max_frequency: float, max_peaks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """essentia SpectralPeaks (orderBy frequency, threshold 0) for every frame of `spec`.

    Returns dense (T, max_peaks) frequencies, magnitudes and a validity mask. Frames with an
    exact plateau (rare in real spectra) are handed to essentia itself so results match.
    """
    t = len(spec)
    scale = (sample_rate / 2.0) / (spec_size - 1)
    i0 = max(0, math.ceil(min_frequency / scale))
    hi = min(spec.shape[1] - 2, int(max_frequency / scale) + 1)  # last bin that can peak
    freqs = np.zeros((t, max_peaks), np.float32)
    mags = np.zeros((t, max_peaks), np.float32)
    valid = np.zeros((t, max_peaks), bool)
    if hi <= i0:
        return freqs, mags, valid
    a = spec[:, i0:hi + 2].astype(np.float64)  # column k is bin i0 + k
    mid = a[:, 1:-1]
    left, right = a[:, :-2], a[:, 2:]
    is_peak = (mid > left) & (mid > right) & (mid > 0)
    denom = left - 2 * mid + right
    delta = np.where(is_peak, 0.5 * (left - right) / np.where(denom == 0, 1, denom), 0.0)
    pos = (np.arange(i0 + 1, hi + 1) + delta) * scale
    val = mid - 0.25 * (left - right) * delta
    is_peak &= pos <= max_frequency
    # the first bin of the range counts as a peak when the spectrum falls after it
    first = (a[:, 0] > a[:, 1]) & (a[:, 0] > 0) & (i0 * scale <= max_frequency)
    pos = np.concatenate([np.full((t, 1), i0 * scale), pos], axis=1)
    val = np.concatenate([a[:, :1], val], axis=1)
    is_peak = np.concatenate([first[:, None], is_peak], axis=1)
    rank = np.cumsum(is_peak, axis=1)
    keep = is_peak & (rank <= max_peaks)
    rows, cols = np.nonzero(keep)
    slots = rank[rows, cols] - 1
    freqs[rows, slots] = pos[rows, cols]
    mags[rows, slots] = val[rows, cols]
    valid[rows, slots] = True
    plateau = np.any((a[:, 1:] == a[:, :-1]) & (a[:, 1:] > 0), axis=1)
    if plateau.any():
        _essentia_peaks(spec, np.nonzero(plateau)[0], freqs, mags, valid,
                        sample_rate, min_frequency, max_frequency, max_peaks, spec_size)
    return freqs, mags, valid


def _essentia_peaks(spec, rows, freqs, mags, valid, sample_rate, min_frequency, max_frequency,
                    max_peaks, spec_size) -> None:
    """Fill rows `rows` of the peak arrays with essentia SpectralPeaks' own answer."""
    _essentia()
    import essentia.standard as es

    algo = es.SpectralPeaks(magnitudeThreshold=0.0, minFrequency=min_frequency,
                            maxFrequency=max_frequency, maxPeaks=max_peaks,
                            orderBy="frequency", sampleRate=sample_rate)
    full = np.zeros(spec_size, np.float32)
    for r in rows:
        full[:spec.shape[1]] = spec[r]
        f, m = algo(full)
        freqs[r], mags[r], valid[r] = 0, 0, False
        freqs[r, :len(f)], mags[r, :len(f)], valid[r, :len(f)] = f, m, True


# ---------------------------------------------------------------- spectral whitening


def _lin2db(x: np.ndarray) -> np.ndarray:
    """essentia lin2db: 10 log10(x), -100 dB below 1e-10."""
    return np.where(x < 1e-10, -100.0, 10.0 * np.log10(np.maximum(x, 1e-30)))


@functools.lru_cache(maxsize=8)
def _envelope_kernel(spec_size: int, sample_rate: float, max_frequency: float) -> tuple[np.ndarray, np.ndarray]:
    """Break-point frequencies and the (bins, points) triangular^4 weights of SpectralWhitening."""
    max_freq = max_frequency * 1.2  # essentia's own margin above the peak range
    spectral_range = sample_rate / 2.0
    points = np.arange(0.0, min(max_freq, spectral_range) + 1e-9, ENVELOPE_STEP_HZ)
    kernel = np.zeros((spec_size, len(points)))
    for p, freq in enumerate(points):
        bf = freq - max(50.0, freq * 0.34)
        ef = freq + max(50.0, freq * 0.58)
        b = min(spec_size - 1, max(int(bf / spectral_range * (spec_size - 1.0) + 0.5), 0))
        e = min(spec_size, max(int(ef / spectral_range * (spec_size - 1.0) + 0.5), b + 1))
        c = b / 2.0 + e / 2.0
        i = np.arange(b, e)
        kernel[b:e, p] = (1.0 - np.abs(i - c) / (e - c)) ** 4
    last = int(np.nonzero(kernel.any(axis=1))[0].max()) + 1
    return points, kernel[:last].astype(np.float32)


def spectral_whitening(spec: np.ndarray, spec_size: int, freqs: np.ndarray, mags: np.ndarray,
                       sample_rate: float, max_frequency: float) -> np.ndarray:
    """essentia SpectralWhitening of every frame's peaks: magnitudes relative to the envelope."""
    points, kernel = _envelope_kernel(spec_size, float(sample_rate), float(max_frequency))
    energy = np.square(spec[:, :len(kernel)], dtype=np.float32)  # float32 as essentia's Real
    num = (np.square(energy) @ kernel).astype(np.float64)
    den = (energy @ kernel).astype(np.float64)
    wavg = np.divide(num, den, out=np.zeros_like(num), where=den != 0)
    wavg[:, -1] = wavg[:, -2]
    env_db = 2.0 * _lin2db(np.sqrt(wavg))
    # linear interpolation of the envelope at each peak (points are evenly spaced)
    x = freqs.astype(np.float64) / ENVELOPE_STEP_HZ
    k = np.clip(np.floor(x).astype(int), 0, len(points) - 2)
    frac = x - k
    env = np.take_along_axis(env_db, k, 1) * (1 - frac) + np.take_along_axis(env_db, k + 1, 1) * frac
    amp = 2.0 * _lin2db(mags.astype(np.float64))
    white = np.where(amp > env, 0.0, np.where(amp > env - 30.0, amp - env, -200.0))
    white -= 20.0 * freqs / 4000.0
    white = np.where(freqs > max_frequency * 1.2 - ENVELOPE_STEP_HZ, amp, white)
    return (10.0 ** (white / 20.0)).astype(np.float32)


# ---------------------------------------------------------------- HPCP


@functools.lru_cache(maxsize=8)
def harmonic_table(harmonics: int) -> tuple[tuple[float, float], ...]:
    """(semitone offset, strength) of each distinct pitch class among the first harmonics."""
    table: list[list[float]] = []
    for i in range(harmonics + 1):
        semitone = 12.0 * math.log2(i + 1.0)
        octweight = max(1.0, semitone / 12.0 * 0.5)
        while semitone >= 12.0 - HPCP_PRECISION:
            semitone -= 12.0
        for entry in table:
            if abs(entry[0] - semitone) < HPCP_PRECISION:
                entry[1] += 1.0 / octweight
                break
        else:
            table.append([semitone, 1.0 / octweight])
    return tuple((s, w) for s, w in table)


def _unit_max(x: np.ndarray) -> np.ndarray:
    """Divide each row by its maximum (rows of zeros stay zero)."""
    peak = x.max(axis=-1, keepdims=True)
    return np.divide(x, peak, out=np.zeros_like(x), where=peak > 0)


def hpcp_from_peaks(freqs: np.ndarray, mags: np.ndarray, valid: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    """essentia HPCP (squared-cosine window of one semitone, band preset, unitMax) per frame."""
    size = int(cfg["bins"])
    ref = float(cfg["reference_frequency"])
    resolution = size // 12
    t = len(freqs)
    ok = valid & (freqs >= cfg["min_frequency"]) & (freqs <= cfg["max_frequency"])
    rows, cols = np.nonzero(ok)
    table = np.array(harmonic_table(int(cfg["harmonics"])))
    # pcp bin of each hypothesised fundamental: (harmonics, peaks)
    x = np.log2(freqs[rows, cols].astype(np.float64) / ref)[None, :] * size - table[:, :1] * (size / 12.0)
    power = (mags[rows, cols].astype(np.float64) ** 2)[None, :] * table[:, 1:] ** 2
    base = ((rows * 2 + (freqs[rows, cols] >= SPLIT_FREQUENCY)) * size)[None, :]
    lo = np.ceil(x - resolution / 2.0).astype(np.int64)
    hi = np.floor(x + resolution / 2.0).astype(np.int64)
    acc = np.zeros(t * 2 * size)
    for off in range(resolution + 1):
        i = lo + off
        if off:  # further bins only where the window reaches them (x - 1/2 on a bin edge)
            use = i <= hi
            if not use.any():
                continue
            i, xs, ps, bs = i[use], x[use], power[use], np.broadcast_to(base, x.shape)[use]
        else:
            xs, ps, bs = x, power, base
        weight = np.cos(np.pi / resolution * np.abs(xs - i)) ** 2
        acc += np.bincount((bs + np.mod(i, size)).ravel(), (weight * ps).ravel(), minlength=len(acc))
    bands = acc.reshape(t, 2, size)
    return _unit_max(_unit_max(bands).sum(axis=1)).astype(np.float32)


def compute_hpcp(audio: np.ndarray, sample_rate: int, cfg: dict[str, Any]) -> np.ndarray:
    """HPCP of a mono signal, (T, bins) float32 in [0, 1], one frame per hop (Da-TACOS chain)."""
    frame_size, hop = int(cfg["frame_size"]), int(cfg["hop_size"])
    spec_size = frame_size // 2 + 1
    sr = float(sample_rate)
    fmax = float(cfg["max_frequency"])
    _, kernel = _envelope_kernel(spec_size, sr, fmax)
    n_bins = min(spec_size, max(len(kernel), int(fmax / (sr / 2) * (spec_size - 1)) + 3))
    out = []
    for spec in spectrum_blocks(audio, frame_size, hop, cfg["window"], n_bins):
        freqs, mags, valid = spectral_peaks(spec, spec_size, sr, float(cfg["min_frequency"]), fmax,
                                            int(cfg["max_peaks"]))
        if cfg["whitening"]:
            mags = spectral_whitening(spec, spec_size, freqs, mags, sr, fmax)
        out.append(hpcp_from_peaks(freqs, mags, valid, cfg))
    return np.concatenate(out) if out else np.zeros((0, int(cfg["bins"])), np.float32)


def compute_hpcp_essentia(audio: np.ndarray, sample_rate: int, cfg: dict[str, Any]) -> np.ndarray:
    """The same HPCP through essentia's own algorithms frame by frame (reference; slower)."""
    _essentia()
    import essentia.standard as es

    sr = float(sample_rate)
    window = es.Windowing(type=cfg["window"])
    spectrum = es.Spectrum()
    peaks = es.SpectralPeaks(magnitudeThreshold=0.0, minFrequency=cfg["min_frequency"],
                             maxFrequency=cfg["max_frequency"], maxPeaks=cfg["max_peaks"],
                             orderBy="frequency", sampleRate=sr)
    whitening = es.SpectralWhitening(maxFrequency=cfg["max_frequency"], sampleRate=sr)
    hpcp = es.HPCP(size=cfg["bins"], harmonics=cfg["harmonics"], minFrequency=cfg["min_frequency"],
                   maxFrequency=cfg["max_frequency"], referenceFrequency=cfg["reference_frequency"],
                   nonLinear=False, sampleRate=sr)
    out = []
    frames = es.FrameGenerator(np.asarray(audio, np.float32), frameSize=cfg["frame_size"], hopSize=cfg["hop_size"])
    for frame in frames:
        spec = spectrum(window(frame))
        f, m = peaks(spec)
        if cfg["whitening"]:
            m = whitening(spec, f, m)
        out.append(hpcp(f, m))
    return np.array(out, dtype=np.float32).reshape(-1, cfg["bins"])


# ---------------------------------------------------------------- CENS


def cens_from_chroma(chroma: np.ndarray, win_len_smooth: int) -> np.ndarray:
    """librosa's chroma_cens steps on (T, 12) chroma: L1 norm, quantise, Hann smoothing, L2 norm."""
    from scipy.ndimage import convolve1d
    from scipy.signal import get_window

    x = np.asarray(chroma, dtype=np.float64)
    l1 = x.sum(axis=1, keepdims=True)
    x = np.divide(x, l1, out=np.zeros_like(x), where=l1 > np.finfo(float).tiny)
    quant = sum(w * (x > s) for s, w in zip(CENS_STEPS, CENS_WEIGHTS))
    if win_len_smooth:
        win = get_window("hann", win_len_smooth + 2, fftbins=False)
        quant = convolve1d(quant, win / win.sum(), axis=0, mode="constant")
    l2 = np.sqrt((quant ** 2).sum(axis=1, keepdims=True))
    return np.divide(quant, l2, out=np.zeros_like(quant), where=l2 > np.finfo(float).tiny).astype(np.float32)


def compute_chroma_cens(audio: np.ndarray, sample_rate: int, cfg: dict[str, Any]) -> np.ndarray:
    """Chroma CENS (librosa definition) over this module's HPCP frames, (T, 12) float32.

    Da-TACOS took CENS from librosa's CQT chroma; librosa is not a dependency here, so the
    chroma under the CENS steps is the HPCP (whose per-frame scale the L1 step removes).
    """
    return cens_from_chroma(compute_hpcp(audio, sample_rate, cfg), int(cfg["cens_win_len"]))


# ---------------------------------------------------------------- predominant melody


def melody_chroma(pitch_hz: np.ndarray, reference_frequency: float, bins: int) -> np.ndarray:
    """(T,) pitch contour in Hz (<= 0: unvoiced) -> (T, bins) one-hot pitch class per frame, bin 0
    at the reference frequency as HPCP's; unvoiced frames are all zero."""
    f0 = np.asarray(pitch_hz, np.float64)
    out = np.zeros((len(f0), bins), np.float32)
    voiced = np.flatnonzero(f0 > 0)
    pcs = np.round(bins * np.log2(f0[voiced] / reference_frequency)).astype(np.int64) % bins
    out[voiced, pcs] = 1.0
    return out


def compute_melody(audio: np.ndarray, sample_rate: int, cfg: dict[str, Any]) -> np.ndarray:
    """Pitch classes of the predominant melody (essentia's PredominantPitchMelodia, Salamon and
    Gomez 2012, after EqualLoudness), one frame per hop as HPCP's: (T, bins) float32 in {0, 1}.
    The bare tune, without the chords that dominate a mix's HPCP (docs/results.md)."""
    _essentia()
    import essentia.standard as es

    x = np.asarray(audio, np.float32)
    sr = float(sample_rate)
    melodia = es.PredominantPitchMelodia(frameSize=int(cfg["melody_frame_size"]),
                                        hopSize=int(cfg["hop_size"]), sampleRate=sr)
    pitch, _ = melodia(es.EqualLoudness(sampleRate=sr)(x))
    return melody_chroma(pitch, float(cfg["reference_frequency"]), int(cfg["bins"]))


# ---------------------------------------------------------------- one file


def compute_feature(audio: np.ndarray, sample_rate: int, feature: str, cfg: dict[str, Any]) -> np.ndarray:
    """Dispatch to the feature named `feature` (hpcp | chroma_cens | melody)."""
    if feature == "hpcp":
        return compute_hpcp(audio, sample_rate, cfg)
    if feature == "melody":
        return compute_melody(audio, sample_rate, cfg)
    if feature == "chroma_cens":
        return compute_chroma_cens(audio, sample_rate, cfg)
    raise CoveridError(f"unknown audio feature {feature!r} (choose from {', '.join(FEATURES)})")


def extract_features(path: str | Path, pcfg: dict[str, Any], features: list[str] | tuple[str, ...],
                     extensions: list[str] | None = None) -> dict[str, np.ndarray]:
    """Load one audio file once and compute each named feature: {feature: (T, 12) float32}.

    `pcfg` is the whole `preprocess` params section; `extensions`, when given, are the only
    file extensions accepted.
    """
    cfg = pcfg["audio"]
    for feature in features:
        if feature not in FEATURES:
            raise CoveridError(f"unknown audio feature {feature!r} (choose from {', '.join(FEATURES)})")
    sr = int(cfg["sample_rate"])
    audio = load_audio(path, sr, float(cfg["min_duration_s"]), float(cfg["silence_rms"]), extensions)
    # chroma_cens is derived from the HPCP
    hpcp = compute_hpcp(audio, sr, cfg) if {"hpcp", "chroma_cens"} & set(features) else None
    out = {}
    for feature in features:
        if feature == "hpcp":
            x = hpcp
        elif feature == "chroma_cens":
            x = cens_from_chroma(hpcp, int(cfg["cens_win_len"]))
        else:
            x = compute_melody(audio, sr, cfg)
        if not np.all(np.isfinite(x)):
            raise BadInputError(path, f"{feature} holds non-finite values")
        out[feature] = x
    return out


def extract_file(path: str | Path, pcfg: dict[str, Any], feature: str | None = None,
                 extensions: list[str] | None = None) -> np.ndarray:
    """Load one audio file and compute the chosen feature (default pcfg["feature"]): (T, 12)."""
    feature = feature or pcfg["feature"]
    return extract_features(path, pcfg, [feature], extensions)[feature]
