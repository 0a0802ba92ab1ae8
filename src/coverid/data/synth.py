"""The generated corpus: tonal works rendered as cover versions (WAV) with Da-TACOS metadata.

A work is a key, a tempo, a section structure and, per section type, a diatonic chord
progression and a melody. A version transposes it, changes its tempo, timbres and
accompaniment, may drop or repeat a section, varies some melody notes and chords, starts at
an offset and gets additive noise. Rendering is wavetable additive synthesis in numpy: each
distinct (part, pitch, length) note is synthesised once per version and overlap-added.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from coverid.core.errors import CoveridError
from coverid.core.io import atomic_dir, write_json
from coverid.features.extract import compute_hpcp

log = logging.getLogger(__name__)

# --- the musical model -------------------------------------------------------------------
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
P_MAJOR = 0.6
BEATS_PER_BAR = 4
SECTION_NEXT = {  # section label -> (next labels, probabilities)
    "verse": (("verse", "chorus", "bridge"), (0.3, 0.6, 0.1)),
    "chorus": (("verse", "chorus", "bridge"), (0.5, 0.2, 0.3)),
    "bridge": (("verse", "chorus"), (0.2, 0.8)),
}
SECTION_FIRST_CHORD = {"verse": (0, 5), "chorus": (0, 3, 5), "bridge": (3, 5, 1)}
# Functional-harmony transitions between scale degrees I..vii (rows: from, columns: to).
CHORD_NEXT = np.array([
    [0.00, 0.15, 0.05, 0.30, 0.25, 0.20, 0.05],
    [0.05, 0.00, 0.05, 0.10, 0.55, 0.10, 0.15],
    [0.05, 0.05, 0.00, 0.30, 0.05, 0.50, 0.05],
    [0.25, 0.15, 0.05, 0.00, 0.35, 0.10, 0.10],
    [0.45, 0.05, 0.05, 0.10, 0.00, 0.30, 0.05],
    [0.05, 0.25, 0.10, 0.35, 0.20, 0.00, 0.05],
    [0.60, 0.00, 0.15, 0.00, 0.15, 0.10, 0.00],
])
# Stock pop progressions (I-V-vi-IV, vi-IV-I-V, ...): many works share them, as in real music.
COMMON_PROGRESSIONS = ((0, 4, 5, 3), (5, 3, 0, 4), (0, 5, 3, 4), (0, 3, 4, 3),
                       (1, 4, 0, 0), (0, 3, 5, 4), (0, 3, 0, 4), (5, 4, 3, 4))
SUBSTITUTE = (5, 3, 0, 1, 6, 0, 4)  # diatonic substitutes sharing two notes: I->vi, ii->IV, ...
P_TWO_CHORDS_PER_BAR = 0.25
RHYTHM_CELLS = ((1, 1, 1, 1), (2, 1, 1), (1, 1, 2), (0.5, 0.5, 1, 1, 1), (1.5, 0.5, 2),
                (1, 0.5, 0.5, 2), (0.5,) * 8, (3, 1), (2, 2), (1, 1, 0.5, 0.5, 1),
                (0.5, 1, 0.5, 2), (1.5, 1.5, 1))
P_REST = 0.08
MELODY_STEPS, MELODY_STEP_P = (-2, -1, 1, 2), (0.15, 0.35, 0.35, 0.15)
MELODY_RANGE = (-3, 10)        # scale steps around the tonic
VARIATION_STEPS = (-2, -1, 1, 2)
# Registers (MIDI): the lowest note each part's pitch classes are folded into.
MELODY_BASE, CHORD_LOW, BASS_LOW = 57, 53, 36

# --- the performance model ---------------------------------------------------------------
PARTS = ("bass", "chords", "melody")
PART_GAIN = {"bass": 0.5, "chords": 0.28}
MELODY_GAIN_RANGE = (0.7, 1.3)
ACCOMPANIMENTS = ("block", "pulse", "arpeggio", "offbeat")
NOISE_COLORS = ("white", "pink")
RELEASE_YEARS = (1955, 2021)
PRESETS = {  # name -> (harmonic amplitudes, attack s, decay s, sustain level, release s)
    "piano": ((1, .5, .3, .2, .12, .08, .05, .03), .005, .6, .25, .25),
    "organ": ((1, .9, 0, .6, 0, .4, 0, .3), .02, .05, .9, .08),
    "strings": ((1, .5, .33, .25, .2, .17, .14, .12), .12, .2, .85, .3),
    "clarinet": ((1, .05, .5, .05, .3, .05, .2, .05), .04, .1, .85, .1),
    "flute": ((1, .35, .12, .05, .02), .06, .1, .8, .12),
    "brass": ((1, .85, .7, .55, .45, .35, .25, .2), .05, .15, .75, .12),
    "guitar": ((1, .7, .35, .25, .15, .1, .06, .04), .003, .4, .15, .15),
    "synth": ((1, 0, .33, 0, .2, 0, .14, 0), .01, .2, .7, .1),
}
PART_PRESETS = {"bass": ("guitar", "organ", "piano", "strings", "synth"),
                "chords": tuple(sorted(PRESETS)), "melody": tuple(sorted(PRESETS))}
TABLE_SIZE = 8192              # wavetable length (a power of two: the phase wraps with a mask)
NYQUIST_MARGIN = 0.45          # highest partial kept, as a fraction of the sample rate
# Pink (1/f) noise: J. O. Smith's 3-pole/3-zero approximation, applied to white noise.
PINK_B = (0.049922035, -0.095993537, 0.050612699, -0.004408786)
PINK_A = (1.0, -2.494956002, 2.017265875, -0.522189400)

WORK, NOISE_SONG = 0, 1        # first spawn_key element: a work's RNGs never depend on n_noise
REQUIRED_KEYS = ("n_works", "versions_per_work", "n_noise", "duration_s", "sample_rate",
                 "tempo_bpm", "tempo_range", "snr_db", "p_section_edit", "max_offset_s",
                 "p_melody_variation", "p_chord_substitution", "p_common_progression",
                 "p_solo", "timbre_jitter", "n_sections", "bars_per_section", "peak_dbfs", "workers")


@dataclass(frozen=True)
class Section:
    """A section type: chords (degree 0-6, start beat, beats), melody (scale step, start, beats)."""

    label: str
    chords: tuple[tuple[int, float, float], ...]
    melody: tuple[tuple[int, float, float], ...]
    beats: float


@dataclass(frozen=True)
class Work:
    """A composition: key, tempo, section order and the content of each section type."""

    tonic: int
    mode: str
    tempo_bpm: float
    structure: tuple[str, ...]
    sections: dict[str, Section]


@dataclass(frozen=True)
class Timbre:
    """An instrument: harmonic amplitudes and phases plus an ADSR envelope (seconds, level)."""

    name: str
    amps: tuple[float, ...]
    phases: tuple[float, ...]
    attack: float
    decay: float
    sustain: float
    release: float


@dataclass(frozen=True)
class Version:
    """A performance of a work: everything needed to render it, deterministically."""

    key_shift: int
    tempo_ratio: float
    structure: tuple[str, ...]
    sections: dict[str, Section]
    timbres: dict[str, Timbre]
    accompaniment: str
    melody_gain: float
    section_edit: str | None
    offset_s: float
    snr_db: float | None
    noise_color: str
    noise_seed: int
    melody_variations: int
    chord_substitutions: int
    release_year: int
    solo: bool = False  # the melody alone: no chords, no bass


Event = tuple[str, int, float, float, float]   # part, MIDI pitch, start beat, beats, gain


# --- works -------------------------------------------------------------------------------
def make_work(rng: np.random.Generator, cfg: dict[str, Any]) -> Work:
    """Draw a work: key, tempo, structure, and per section type a progression and a melody."""
    tonic = int(rng.integers(12))
    mode = "major" if rng.random() < P_MAJOR else "minor"
    lo, hi = cfg["tempo_bpm"]
    tempo = round(float(rng.uniform(lo, hi)), 2)
    structure = _structure(rng, cfg["n_sections"])
    sections = {label: _section(rng, label, cfg["bars_per_section"], cfg["p_common_progression"])
                for label in dict.fromkeys(structure)}
    return Work(tonic, mode, tempo, structure, sections)


def _structure(rng: np.random.Generator, n: int) -> tuple[str, ...]:
    """A section order starting with a verse, following SECTION_NEXT."""
    labels = ["verse"]
    while len(labels) < n:
        nxt, p = SECTION_NEXT[labels[-1]]
        labels.append(str(rng.choice(nxt, p=p)))
    return tuple(labels)


def _section(rng: np.random.Generator, label: str, bars: int, p_common: float) -> Section:
    """One section type: a chord progression and a melody over it."""
    per_bar = 2 if rng.random() < P_TWO_CHORDS_PER_BAR else 1
    dur = BEATS_PER_BAR / per_bar
    degrees = _progression(rng, label, bars * per_bar, p_common)
    chords = tuple((d, i * dur, dur) for i, d in enumerate(degrees))
    return Section(label, chords, _melody(rng, chords, bars), float(bars * BEATS_PER_BAR))


def _progression(rng: np.random.Generator, label: str, n: int, p_common: float) -> list[int]:
    """Scale degrees: a stock progression (tiled) or a functional-harmony Markov chain."""
    use_common = rng.random() < p_common
    stock = COMMON_PROGRESSIONS[rng.integers(len(COMMON_PROGRESSIONS))]
    if use_common:
        return [stock[i % len(stock)] for i in range(n)]
    degrees = [int(rng.choice(SECTION_FIRST_CHORD[label]))]
    while len(degrees) < n:
        degrees.append(int(rng.choice(7, p=CHORD_NEXT[degrees[-1]])))
    return degrees


def _melody(rng: np.random.Generator, chords: tuple, bars: int) -> tuple:
    """A melody in two alternating rhythm cells: chord tones on strong beats, steps between."""
    cells = [RHYTHM_CELLS[i] for i in rng.integers(len(RHYTHM_CELLS), size=2)]
    prev = int(rng.choice((0, 2, 4)))
    notes = []
    for bar in range(bars):
        t = float(bar * BEATS_PER_BAR)
        for dur in cells[bar % 2]:
            rest = rng.random() < P_REST
            if t % 2 == 0:
                step = _near_chord_tone(rng, prev, _chord_at(chords, t))
            else:
                step = prev + int(rng.choice(MELODY_STEPS, p=MELODY_STEP_P))
            step = int(np.clip(step, *MELODY_RANGE))
            if not rest:
                notes.append((step, t, float(dur)))
                prev = step
            t += dur
    return tuple(notes)


def _chord_at(chords: tuple, t: float) -> int:
    """The degree of the chord sounding at beat t."""
    for degree, start, dur in chords:
        if start <= t < start + dur:
            return degree
    return chords[-1][0]


def _near_chord_tone(rng: np.random.Generator, prev: int, degree: int) -> int:
    """A tone of the chord on `degree`, preferring ones close to the previous note."""
    steps = np.arange(MELODY_RANGE[0], MELODY_RANGE[1] + 1)
    steps = steps[np.isin((steps - degree) % 7, (0, 2, 4))]
    w = np.exp(-np.abs(steps - prev) / 2.0)
    return int(rng.choice(steps, p=w / w.sum()))


# --- versions ----------------------------------------------------------------------------
def make_version(rng: np.random.Generator, work: Work, cfg: dict[str, Any]) -> Version:
    """Draw a performance of `work`; every draw is made whatever the knobs, so each knob only
    changes its own aspect."""
    key_shift = int(rng.integers(12))
    r = cfg["tempo_range"]
    tempo_ratio = round(float(rng.uniform(1 - r, 1 + r)), 4)
    structure, edit = _edit_structure(rng, work.structure, cfg["p_section_edit"])
    sections, n_var, n_sub = _vary_sections(rng, work, cfg["p_melody_variation"],
                                            cfg["p_chord_substitution"])
    timbres = {part: _timbre(rng, PART_PRESETS[part], cfg["timbre_jitter"]) for part in PARTS}
    accompaniment = str(rng.choice(ACCOMPANIMENTS))
    melody_gain = round(float(rng.uniform(*MELODY_GAIN_RANGE)), 3)
    offset_s = round(float(rng.uniform(0, cfg["max_offset_s"])), 3)
    snr = float(rng.uniform(*cfg["snr_db"])) if cfg["snr_db"] is not None else float("nan")
    noise_color = str(rng.choice(NOISE_COLORS))
    noise_seed = int(rng.integers(2**32))
    year = int(rng.integers(*RELEASE_YEARS))
    # drawn last, so that p_solo 0 leaves every other draw (and the corpus) as it was
    solo = bool(rng.random() < cfg["p_solo"])
    return Version(key_shift, tempo_ratio, structure, sections, timbres, accompaniment,
                   melody_gain, edit, offset_s, None if np.isnan(snr) else round(snr, 2),
                   noise_color, noise_seed, n_var, n_sub, year, solo)


def _edit_structure(rng: np.random.Generator, structure: tuple[str, ...],
                    p: float) -> tuple[tuple[str, ...], str | None]:
    """With probability p drop or repeat one section instance; returns (structure, 'drop:i')."""
    u, i = rng.random(), int(rng.integers(len(structure)))
    kind = str(rng.choice(("drop", "repeat")))
    if u >= p or (kind == "drop" and len(structure) < 2):
        return structure, None
    s = list(structure)
    if kind == "drop":
        del s[i]
    else:
        s.insert(i, s[i])
    return tuple(s), f"{kind}:{i}"


def _vary_sections(rng: np.random.Generator, work: Work, p_note: float,
                   p_chord: float) -> tuple[dict[str, Section], int, int]:
    """Move weak-beat melody notes by a scale step or two (p_note each; the chord tones on
    strong beats stay, as a singer's variations do) and substitute chords (p_chord)."""
    out, n_var, n_sub = {}, 0, 0
    for label, sec in work.sections.items():
        u = rng.random(len(sec.melody))
        delta = rng.choice(VARIATION_STEPS, size=len(sec.melody))
        melody = tuple((int(np.clip(s + d, *MELODY_RANGE)) if v < p_note and t % 2 else s, t, dur)
                       for (s, t, dur), v, d in zip(sec.melody, u, delta))
        uc = rng.random(len(sec.chords))
        chords = tuple((SUBSTITUTE[d] if v < p_chord else d, t, dur)
                       for (d, t, dur), v in zip(sec.chords, uc))
        n_var += sum(a[0] != b[0] for a, b in zip(melody, sec.melody))
        n_sub += int(np.sum(uc < p_chord))
        out[label] = Section(label, chords, melody, sec.beats)
    return out, n_var, n_sub


def _timbre(rng: np.random.Generator, names: tuple[str, ...], jitter: float) -> Timbre:
    """One of the preset instruments `names`, its harmonic amplitudes and envelope perturbed."""
    name = names[int(rng.integers(len(names)))]
    amps, attack, decay, sustain, release = PRESETS[name]
    amps = np.asarray(amps, dtype=float) * np.exp(jitter * rng.standard_normal(len(amps)))
    phases = rng.uniform(0, 2 * np.pi, len(amps))
    a, d, r, s = (np.array([attack, decay, release, sustain])
                  * np.exp(jitter * rng.standard_normal(4)))
    return Timbre(name, tuple(np.round(amps, 4)), tuple(np.round(phases, 4)),
                  float(a), float(d), float(np.clip(s, 0.05, 1.0)), float(r))


# What a version changes, by aspect: the Version fields that carry it (benchmarks/
# bench_nuisance.py renders versions that differ from a reference in one aspect only).
ASPECTS = {
    "key": ("key_shift",),
    "tempo": ("tempo_ratio",),
    "structure": ("structure", "section_edit", "offset_s"),
    "arrangement": ("timbres", "accompaniment", "melody_gain", "solo"),
    "noise": ("snr_db", "noise_color", "noise_seed"),
    "content": ("sections", "melody_variations", "chord_substitutions"),
}


def one_aspect_version(reference: Version, other: Version, aspect: str) -> Version:
    """`reference` with the fields of one aspect (ASPECTS) taken from `other`."""
    if aspect not in ASPECTS:
        raise CoveridError(f"unknown aspect {aspect!r}; expected one of {', '.join(ASPECTS)}")
    return replace(reference, **{f: getattr(other, f) for f in ASPECTS[aspect]})


# --- rendering ---------------------------------------------------------------------------
def render_version(work: Work, version: Version, sr: int, duration_s: float,
                   peak_dbfs: float) -> np.ndarray:
    """The version's audio: float64 mono, `duration_s` long, peak at `peak_dbfs`."""
    spb = 60.0 / (work.tempo_bpm * version.tempo_ratio)   # seconds per beat
    n = int(round(duration_s * sr))
    end_beat = (version.offset_s + duration_s) / spb
    out = np.zeros(n)
    off = version.offset_s * sr
    notes: dict[tuple[str, int, int], np.ndarray] = {}
    tables: dict[tuple[str, int], np.ndarray] = {}
    for part, midi, start, beats, gain in _events(work, version, end_beat):
        timbre = version.timbres[part]
        gate = max(1, int(round(beats * spb * sr)))
        a = int(round(start * spb * sr - off))
        if a >= n or a + gate + _release_samples(timbre, sr) <= 0:
            continue
        key = (part, midi, gate)
        if key not in notes:
            notes[key] = _note(timbre, part, midi, gate, sr, tables)
        wave = notes[key]
        lo, hi = max(a, 0), min(a + wave.size, n)
        out[lo:hi] += gain * wave[lo - a:hi - a]
    if version.snr_db is not None:
        out = _add_noise(out, version.snr_db, version.noise_color, version.noise_seed)
    peak = np.max(np.abs(out))
    return out * (10 ** (peak_dbfs / 20) / peak) if peak > 0 else out


def _events(work: Work, version: Version, end_beat: float) -> list[Event]:
    """(part, midi, start beat, beats, gain) of every note before end_beat; the song loops."""
    tonic = (work.tonic + version.key_shift) % 12
    shift = version.key_shift if version.key_shift <= 5 else version.key_shift - 12
    melody_base = MELODY_BASE + (work.tonic - MELODY_BASE) % 12 + shift
    events: list[Event] = []
    b0 = 0.0
    while b0 < end_beat:
        for label in version.structure:
            sec = version.sections[label]
            for degree, t, dur in () if version.solo else sec.chords:
                pcs = _chord_pcs(degree, tonic, work.mode)
                events += _accompaniment(version.accompaniment, pcs, b0 + t, dur)
            for step, t, dur in sec.melody:
                midi = melody_base + _step_semitones(step, work.mode)
                events.append(("melody", midi, b0 + t, dur, version.melody_gain))
            b0 += sec.beats
            if b0 >= end_beat:
                break
    return events


def _chord_pcs(degree: int, tonic: int, mode: str) -> tuple[int, int, int]:
    """Pitch classes of the diatonic triad on `degree` (the minor key's V is major)."""
    scale = SCALES[mode]
    pcs = [tonic + scale[(degree + 2 * i) % 7] for i in range(3)]
    if mode == "minor" and degree == 4:
        pcs[1] += 1   # the leading tone (harmonic minor)
    return pcs[0] % 12, pcs[1] % 12, pcs[2] % 12


def _step_semitones(step: int, mode: str) -> int:
    """Semitones above the tonic of scale step `step` (negative steps go below)."""
    return 12 * (step // 7) + SCALES[mode][step % 7]


def _accompaniment(style: str, pcs: tuple[int, int, int], start: float,
                   dur: float) -> list[Event]:
    """Bass and chord notes for one chord in the version's accompaniment style."""
    chord = [CHORD_LOW + (pc - CHORD_LOW) % 12 for pc in pcs]
    root = BASS_LOW + (pcs[0] - BASS_LOW) % 12
    g_b, g_c = PART_GAIN["bass"], PART_GAIN["chords"]
    beats = np.arange(start, start + dur, 1.0)
    ev: list[Event] = []
    if style == "block":
        ev += [("chords", m, start, dur, g_c) for m in chord] + [("bass", root, start, dur, g_b)]
    elif style == "pulse":
        ev += [("chords", m, t, 0.9, g_c) for t in beats for m in chord]
        ev += [("bass", root, t, min(2.0, start + dur - t), g_b) for t in beats[::2]]
    elif style == "arpeggio":
        order = (0, 1, 2, 1)
        ev += [("chords", chord[order[k % 4]], t, 0.75, 1.5 * g_c)
               for k, t in enumerate(np.arange(start, start + dur, 0.5))]
        ev.append(("bass", root, start, dur, g_b))
    elif style == "offbeat":
        ev += [("chords", m, t + 0.5, 0.4, g_c) for t in beats for m in chord]
        ev += [("bass", root + 7 * (k % 2), t, 0.9, g_b) for k, t in enumerate(beats)]
    else:
        raise CoveridError(f"unknown accompaniment style {style!r}")
    return [(p, int(m), float(t), float(d), g) for p, m, t, d, g in ev]


def _release_samples(timbre: Timbre, sr: int) -> int:
    """Length of the release tail in samples."""
    return max(1, int(round(timbre.release * sr)))


def _envelope(timbre: Timbre, gate: int, sr: int) -> np.ndarray:
    """ADSR over `gate` samples plus a linear release tail."""
    a = max(1, int(round(timbre.attack * sr)))
    d = max(1, int(round(timbre.decay * sr)))
    r = _release_samples(timbre, sr)
    t = np.minimum(np.arange(gate + r), gate)
    env = np.interp(t, (0, a, a + d), (0.0, 1.0, timbre.sustain))
    env[gate:] *= np.linspace(1.0, 0.0, r, endpoint=False)
    return env


def _wavetable(timbre: Timbre, n_harm: int) -> np.ndarray:
    """One period of the timbre's first n_harm partials, at unit RMS."""
    amps = np.asarray(timbre.amps[:n_harm])
    k = np.arange(1, n_harm + 1)[:, None]
    x = np.arange(TABLE_SIZE) / TABLE_SIZE
    phases = np.asarray(timbre.phases[:n_harm])[:, None]
    table = (amps[:, None] * np.sin(2 * np.pi * k * x + phases)).sum(0)
    return table / np.sqrt(0.5 * np.sum(amps ** 2))


def _note(timbre: Timbre, part: str, midi: int, gate: int, sr: int,
          tables: dict[tuple[str, int], np.ndarray]) -> np.ndarray:
    """One enveloped note, band-limited to below NYQUIST_MARGIN * sr."""
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    n_harm = max(1, min(len(timbre.amps), int(NYQUIST_MARGIN * sr / f0)))
    if (part, n_harm) not in tables:
        tables[part, n_harm] = _wavetable(timbre, n_harm)
    env = _envelope(timbre, gate, sr)
    idx = (np.arange(env.size) * (f0 * TABLE_SIZE / sr)).astype(np.int64) & (TABLE_SIZE - 1)
    return tables[part, n_harm][idx] * env


def _add_noise(x: np.ndarray, snr_db: float, color: str, seed: int) -> np.ndarray:
    """x plus white or pink noise at `snr_db` below its mean power."""
    noise = np.random.default_rng(seed).standard_normal(x.size)
    if color == "pink":
        from scipy.signal import lfilter
        noise = lfilter(PINK_B, PINK_A, noise)
    p_sig, p_noise = np.mean(x ** 2), np.mean(noise ** 2)
    if p_sig == 0 or p_noise == 0:
        return x
    return x + noise * np.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10)))


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """float in [-1, 1] -> int16 samples."""
    return np.round(np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)


# --- the corpus --------------------------------------------------------------------------
def song_rng(seed: int, kind: int, index: int, part: int) -> np.random.Generator:
    """The RNG of one work (part 0) or one of its versions (part v + 1), from (seed, ids)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(kind, index, part)))


def generate_corpus(out_dir: Path, cfg: dict[str, Any], seed: int) -> dict:
    """Write out_dir/<work_id>/<perf_id>.wav and out_dir/metadata.json; return the metadata.

    The corpus is built in a temp dir beside out_dir and renamed into place, so a failure
    leaves any previous corpus untouched and no half-written one.
    """
    _check_cfg(cfg)
    if int(seed) < 0:
        raise CoveridError(f"params seed: must be a non-negative integer, got {seed!r}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        metadata = _write_songs(tmp, cfg, seed)
        write_json(tmp / "metadata.json", metadata)
    n_perf = sum(len(p) for p in metadata.values())
    log.info("synth corpus: %d performances of %d works (%d noise songs) in %.1f s -> %s",
             n_perf, len(metadata), cfg["n_noise"], time.perf_counter() - start, out_dir)
    return metadata


def _plan(cfg: dict[str, Any]) -> list[tuple[int, int, int]]:
    """(kind, index, number of versions) per work: the works, then the noise songs."""
    return ([(WORK, i, cfg["versions_per_work"]) for i in range(cfg["n_works"])]
            + [(NOISE_SONG, i, 1) for i in range(cfg["n_noise"])])


def _write_songs(root: Path, cfg: dict[str, Any], seed: int) -> dict:
    """Render and write every performance under root, works spread over `cfg["workers"]`
    processes (each song has its own seeded RNG, so the bytes do not depend on the split);
    return the Da-TACOS metadata, in plan order."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    plan = _plan(cfg)
    first_perf = np.cumsum([0] + [n for _, _, n in plan])[:-1] + 1
    jobs = [(root, cfg, seed, w_no, kind, index, n, int(p0))
            for w_no, ((kind, index, n), p0) in enumerate(zip(plan, first_perf), start=1)]
    metadata: dict[str, dict[str, dict]] = {}
    workers = max(1, int(cfg["workers"]))
    with tqdm(total=sum(n for _, _, n in plan), desc="synth corpus", unit="song") as bar:
        if workers == 1:
            done = map(_write_work, jobs)
            pool = None
        else:
            # spawn: safe even when the parent has loaded threaded libraries (TF, BLAS)
            pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
            done = pool.map(_write_work, jobs, chunksize=8)
        try:
            for work_id, perfs in done:
                metadata[work_id] = perfs
                bar.update(len(perfs))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    return metadata


def _write_work(job: tuple) -> tuple[str, dict[str, dict]]:
    """Render and write one work's performances: (work_id, {perf_id: metadata})."""
    import soundfile as sf

    root, cfg, seed, w_no, kind, index, n_versions, first_perf = job
    sr, duration = int(cfg["sample_rate"]), float(cfg["duration_s"])
    work_id = f"W_{w_no}"
    work = make_work(song_rng(seed, kind, index, 0), cfg)
    (root / work_id).mkdir()
    perfs = {}
    for v in range(n_versions):
        perf_id = f"P_{first_perf + v}"
        version = make_version(song_rng(seed, kind, index, v + 1), work, cfg)
        audio = render_version(work, version, sr, duration, cfg["peak_dbfs"])
        sf.write(root / work_id / f"{perf_id}.wav", to_pcm16(audio), sr, subtype="PCM_16")
        perfs[perf_id] = perf_metadata(work, version, work_id, perf_id, kind == NOISE_SONG, sr,
                                       duration)
    return work_id, perfs


def perf_metadata(work: Work, version: Version, work_id: str, perf_id: str, noise: bool,
                  sr: int, duration_s: float) -> dict[str, Any]:
    """One performance's entry: the Da-TACOS fields plus what the generator chose."""
    title = f"Synthetic work {work_id[2:]}"
    perf_key = (work.tonic + version.key_shift) % 12
    return {
        "work_title": title,
        "work_artist": "coverid synth",
        "perf_title": title,
        "perf_artist": f"Synthetic performer {perf_id[2:]}",
        "release_year": str(version.release_year),
        "work_id": work_id,
        "perf_id": perf_id,
        "instrumental": "Yes",
        "noise_song": noise,
        "work_key": f"{NOTE_NAMES[work.tonic]} {work.mode}",
        "perf_key": f"{NOTE_NAMES[perf_key]} {work.mode}",
        "key_shift": version.key_shift,
        "work_tempo_bpm": work.tempo_bpm,
        "tempo_ratio": version.tempo_ratio,
        "tempo_bpm": round(work.tempo_bpm * version.tempo_ratio, 2),
        "structure": list(version.structure),
        "section_edit": version.section_edit,
        "offset_s": version.offset_s,
        "timbre": {part: t.name for part, t in version.timbres.items()},
        "accompaniment": None if version.solo else version.accompaniment,
        "melody_variations": version.melody_variations,
        "chord_substitutions": version.chord_substitutions,
        "snr_db": version.snr_db,
        "noise_color": version.noise_color if version.snr_db is not None else None,
        "duration_s": duration_s,
        "sample_rate": sr,
    }


def corpus_checks(section: str, cfg: dict[str, Any], required: tuple[str, ...]) -> dict[str, bool]:
    """The checks every rendered corpus (data.synth, data.melodies) shares, after one line for
    missing keys: name -> passed."""
    missing = [k for k in required if k not in cfg]
    if missing:
        raise CoveridError(f"params data.{section}: missing keys {', '.join(missing)}")
    return {
        "n_works": cfg["n_works"] >= 0,
        "versions_per_work": cfg["versions_per_work"] >= 2,
        "n_noise": cfg["n_noise"] >= 0,
        "duration_s": cfg["duration_s"] > 0,
        "sample_rate": cfg["sample_rate"] >= 8000,
        "tempo_bpm": len(cfg["tempo_bpm"]) == 2 and 0 < cfg["tempo_bpm"][0] <= cfg["tempo_bpm"][1],
        "tempo_range": 0 <= cfg["tempo_range"] < 1,
        "snr_db": cfg["snr_db"] is None or (len(cfg["snr_db"]) == 2
                                             and cfg["snr_db"][0] <= cfg["snr_db"][1]),
        "max_offset_s": cfg["max_offset_s"] >= 0,
        "peak_dbfs": cfg["peak_dbfs"] <= 0,
    }


def raise_if_invalid(section: str, cfg: dict[str, Any], checks: dict[str, bool]) -> None:
    """One line naming every failed check's key and value."""
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        shown = ", ".join(f"{k}={cfg[k]!r}" for k in bad)
        raise CoveridError(f"params data.{section}: invalid {shown}")


def _check_cfg(cfg: dict[str, Any]) -> None:
    """Fail with one line on a missing or impossible data.synth setting."""
    checks = corpus_checks("synth", cfg, REQUIRED_KEYS)
    checks.update({"timbre_jitter": cfg["timbre_jitter"] >= 0, "n_sections": cfg["n_sections"] >= 1,
                   "bars_per_section": cfg["bars_per_section"] >= 1})
    checks.update({k: 0 <= cfg[k] <= 1 for k in ("p_section_edit", "p_melody_variation",
                                                 "p_chord_substitution", "p_common_progression",
                                                 "p_solo")})
    raise_if_invalid("synth", cfg, checks)


# --- one-aspect versions (benchmarks/bench_nuisance.py) --------------------------------
NUISANCE_INDEX = 10**6  # work indices of the nuisance works: far from any corpus's works


def _aspect_features(job: tuple[int, str | None], cfg: dict[str, Any], pcfg: dict[str, Any],
                     seed: int) -> np.ndarray:
    """HPCP (T, 12) of nuisance work i's reference version (aspect None) or of its version that
    differs from the reference in one aspect ("all": in every aspect)."""
    i, aspect = job
    index = NUISANCE_INDEX + i
    work = make_work(song_rng(seed, WORK, index, 0), cfg)
    version = make_version(song_rng(seed, WORK, index, 1), work, cfg)
    if aspect is not None:
        other = make_version(song_rng(seed, WORK, index, 2), work, cfg)
        version = other if aspect == "all" else one_aspect_version(version, other, aspect)
    sr = int(pcfg["audio"]["sample_rate"])
    audio = render_version(work, version, sr, float(cfg["duration_s"]), cfg["peak_dbfs"])
    return compute_hpcp(audio.astype(np.float32), sr, pcfg["audio"])


def nuisance_songs(cfg: dict[str, Any], pcfg: dict[str, Any], n_works: int, seed: int,
                   workers: int) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """Per aspect (and "all"), the HPCP of `n_works` new works x 2 versions that differ in
    that aspect only: {aspect: ([(T, 12) per song], work index per song)}. Each work's
    reference version is rendered once and shared by every aspect."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    from tqdm import tqdm

    aspects = [*ASPECTS, "all"]
    jobs = [(i, a) for a in (None, *aspects) for i in range(n_works)]
    fn = partial(_aspect_features, cfg=cfg, pcfg=pcfg, seed=seed)
    with ProcessPoolExecutor(max(1, workers)) as pool:
        feats = list(tqdm(pool.map(fn, jobs, chunksize=4), total=len(jobs), desc="nuisance songs",
                          unit="song"))
    refs, variants = feats[:n_works], feats[n_works:]
    works = np.repeat(np.arange(n_works), 2)
    return {a: ([song for i in range(n_works) for song in (refs[i], variants[k * n_works + i])],
                works)
            for k, a in enumerate(aspects)}
