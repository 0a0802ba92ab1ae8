"""Pure numpy transforms from a (T, 12) chroma-like matrix to a fixed-size model input."""

from __future__ import annotations

from typing import Any

import numpy as np

from coverid.core.errors import CoveridError

PITCH = 12  # chroma bins
TILED_ROWS = 2 * PITCH - 1  # rows of a tiled input (tile_pitch)


NOTES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def pitch_names(source: str, feature: str) -> list[str]:
    """The note of each of the 12 pitch rows: essentia's HPCP (ours, and Da-TACOS' hpcp) starts
    at its reference frequency, A = 440 Hz; Da-TACOS' crema and librosa chroma_cens start at C."""
    first = "C" if source == "datacos" and feature in ("crema", "chroma_cens") else "A"
    start = NOTES.index(first)
    return [NOTES[(start + i) % PITCH] for i in range(PITCH)]


def feature_parts(feature: str) -> list[str]:
    """The features a model input stacks, top to bottom: 'hpcp+melody' -> ['hpcp', 'melody']."""
    return feature.split("+")


def input_feature(pcfg: Any) -> str:
    """The model input's feature name: preprocess.feature, then each of preprocess.fusion,
    joined by '+'; a feature named twice is a one-line error."""
    parts = [pcfg["feature"], *pcfg["fusion"]]
    if len(set(parts)) != len(parts):
        raise CoveridError(f"preprocess.fusion {list(pcfg['fusion'])} repeats a feature "
                           f"(preprocess.feature is {pcfg['feature']!r})")
    return "+".join(parts)


def feature_rows(tile: bool) -> int:
    """Pitch rows of one feature of a model input: 12, or 23 when tiled."""
    return TILED_ROWS if tile else PITCH


def input_rows(feature: str, tile: bool) -> int:
    """Pitch rows of a model input of `feature`: feature_rows per stacked feature."""
    return feature_rows(tile) * len(feature_parts(feature))


def part_rows(n_rows: int, n_parts: int) -> int:
    """Pitch rows of each of `n_parts` stacked features in an `n_rows`-row input (12 or 23)."""
    if n_parts < 1 or n_rows % n_parts or n_rows // n_parts not in (PITCH, TILED_ROWS):
        raise CoveridError(f"model inputs of {n_parts} stacked features need {PITCH} or "
                           f"{TILED_ROWS} pitch rows each, got {n_rows} rows")
    return n_rows // n_parts


def is_tiled(n_rows: int) -> bool:
    """Whether model inputs of `n_rows` pitch rows are tiled (23) or plain chroma (12);
    any other count is a one-line error."""
    if n_rows not in (PITCH, TILED_ROWS):
        raise CoveridError(f"model inputs need {PITCH} or {TILED_ROWS} pitch rows, got {n_rows}")
    return n_rows == TILED_ROWS


def crop_or_wrap(x: np.ndarray, max_frames: int | None) -> np.ndarray:
    """Crop (T, F) to `max_frames` or wrap-pad it up to that length (None: unchanged)."""
    if max_frames is None or len(x) == max_frames:
        return x
    return x[:max_frames] if len(x) > max_frames else wrap_pad(x, max_frames)


def wrap_pad(x: np.ndarray, n_frames: int) -> np.ndarray:
    """Repeat (T, F) along time until it has exactly `n_frames` rows."""
    reps = int(np.ceil(n_frames / len(x)))
    return np.tile(x, (reps, 1))[:n_frames]


def resize_time(x: np.ndarray, length: int) -> np.ndarray:
    """Resize (T, F) to (length, F) along time with area interpolation (box averaging).

    Each output frame averages the input over its exact [i*T/L, (i+1)*T/L) span,
    with fractional weights at the span ends; when T < L this reduces to
    nearest-neighbour upsampling, as cv2.INTER_AREA does.
    """
    x = np.asarray(x, dtype=np.float64)
    t = len(x)
    if t == length:
        return x.astype(np.float32)
    if t < length:
        idx = np.minimum((np.arange(length) * t) // length, t - 1)
        return x[idx].astype(np.float32)
    edges = np.arange(length + 1) * (t / length)
    lo = np.floor(edges).astype(np.int64)
    lo[-1] = t  # the last edge is exactly t (float rounding may put it just below)
    frac = (edges - lo)[:, None]
    frac[-1] = 0.0
    # bin i = sum x[lo_i:lo_(i+1)] + frac_(i+1) * x[lo_(i+1)] - frac_i * x[lo_i]
    part = frac * x[np.minimum(lo, t - 1)]
    out = np.add.reduceat(x, lo[:-1], axis=0) + part[1:] - part[:-1]
    return (out / (t / length)).astype(np.float32)


def tile_pitch(x: np.ndarray) -> np.ndarray:
    """MOVE-style tiling of (12, L) to (TILED_ROWS, L): np.tile(x, (2, 1))[:-1]."""
    return np.tile(x, (2, 1))[:-1]


def to_model_input(x: np.ndarray, spect_len: int, max_frames: int | None, tile: bool) -> np.ndarray:
    """(T, 12) features -> (F, spect_len) float32, F = 23 when tiled, else 12."""
    x = crop_or_wrap(np.asarray(x, dtype=np.float32), max_frames)
    y = resize_time(x, spect_len).T
    return (tile_pitch(y) if tile else y).astype(np.float32)


def stacked_input(xs: dict[str, np.ndarray], feature: str, spect_len: int, max_frames: int | None,
                  tile: bool) -> np.ndarray:
    """{part: (T, 12)} -> the (F, spect_len) input of `feature`: each part's to_model_input,
    stacked top to bottom in the name's order (F = 12 or 23 per part)."""
    return np.concatenate([to_model_input(xs[p], spect_len, max_frames, tile)
                           for p in feature_parts(feature)])
