"""A tune as a Melody (music21 parse) and its performances: a Version is a draw of key,
tempo, instruments, re-harmonisation, phrase edit, start and noise; its notes loop to fill the
song and are rendered with the soundfont (data/render.py).

The accompaniment is a diatonic triad per bar, the one that covers most of the bar's melody
(weighted by note length, with a preference for I, V and IV); a version replaces some bars'
triad by the runner-up, so that versions differ in harmony as covers do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from coverid.core.errors import BadInputError, CoveridError
from coverid.data.render import Note, render_notes
from coverid.data.synth import NOISE_COLORS, _add_noise
from coverid.data.tune_index import Tune

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# Triad preference added to a triad's share of the bar's melody: I, IV, V over the others,
# no diminished triad.
TRIAD_PRIOR = (0.15, 0.0, 0.0, 0.05, 0.1, 0.02, -1.0)
KEY_SHIFTS = tuple(range(-5, 7))         # the 12 transpositions, centred on the written key
ACCOMPANIMENTS = ("block", "oompah", "arpeggio")
MELODY, CHORDS, BASS = 0, 1, 2           # MIDI channels
VELOCITY = {MELODY: 100, CHORDS: 62, BASS: 80}
CHORD_LOW, BASS_LOW = 55, 36             # lowest MIDI note of the chord and bass registers
BARLESS_QL = 4.0                         # bar length assumed when a tune has no measures


@dataclass(frozen=True)
class Melody:
    """A parsed tune: notes (MIDI pitch, start, length in quarter notes), bar starts, key."""

    notes: tuple[tuple[int, float, float], ...]
    bars: tuple[float, ...]      # bar start offsets, then the end of the tune
    tonic: int
    mode: str


@dataclass(frozen=True)
class Version:
    """One performance of a work: everything needed to render it, deterministically."""

    variant: int
    key_shift: int
    tempo_bpm: float
    programs: dict[int, int]
    accompaniment: str | None
    chords: tuple[int, ...]      # triad degree (0-6) per bar
    substitutions: int
    bar_order: tuple[int, ...]   # bars of one pass, after the phrase edit
    phrase_edit: str | None
    offset_s: float
    snr_db: float | None
    noise_color: str
    noise_seed: int


# --- parsing -----------------------------------------------------------------------------
def parse_melody(tune: Tune) -> Melody:
    """The tune's melody, repeats expanded; BadInputError naming the tune when music21 fails
    or finds no notes."""
    from music21 import converter, harmony, stream

    try:
        score = converter.parse(tune.text, format="abc")
        part = score.parts[0] if score.parts else score
        try:
            part = part.expandRepeats()
        except Exception:  # malformed repeat marks: play the tune as written
            pass
        measures = list(part.getElementsByClass(stream.Measure))
        key = score.analyze("key")
    except Exception as e:  # music21 fails on bad ABC with any exception type
        raise BadInputError(tune.ref, f"music21 cannot parse it ({type(e).__name__}: {e})") from None
    holders = measures or [part]
    notes: list[list] = []
    for m in holders:
        for n in m.flatten().notes:
            length = float(n.quarterLength)
            if isinstance(n, harmony.ChordSymbol) or length <= 0:
                continue
            pitch = max(p.midi for p in n.pitches)
            start = float(m.offset if measures else 0.0) + float(n.offset)
            if n.tie is not None and n.tie.type in ("stop", "continue") and notes \
                    and notes[-1][0] == pitch:
                notes[-1][2] = start + length - notes[-1][1]
            else:
                notes.append([pitch, start, length])
    if not notes:
        raise BadInputError(tune.ref, "no notes after parsing")
    end = max(s + d for _, s, d in notes)
    bars = [float(m.offset) for m in measures] or [float(b) for b in np.arange(0.0, end, BARLESS_QL)]
    return Melody(tuple((int(p), round(s, 6), round(d, 6)) for p, s, d in notes),
                  tuple(bars) + (max(end, bars[-1] + 1e-6),), int(key.tonic.pitchClass),
                  "minor" if key.mode == "minor" else "major")


# --- harmony and versions ------------------------------------------------------------------
def triad_pcs(tonic: int, mode: str, degree: int) -> tuple[int, int, int]:
    """Pitch classes of the diatonic triad on `degree` (the minor's V is major)."""
    scale = SCALES[mode]
    pcs = [(tonic + scale[(degree + k) % 7]) % 12 for k in (0, 2, 4)]
    if mode == "minor" and degree == 4:
        pcs[1] = (pcs[1] + 1) % 12
    return tuple(pcs)


def bar_triads(melody: Melody) -> list[tuple[int, int]]:
    """Per bar, the best and runner-up triad degrees for the melody notes sounding in it."""
    out, prev = [], (0, 4)
    for a, b in zip(melody.bars, melody.bars[1:]):
        weight = np.zeros(12)
        for pitch, s, d in melody.notes:
            weight[pitch % 12] += max(0.0, min(s + d, b) - max(s, a))
        if weight.sum() == 0:
            out.append(prev)
            continue
        share = weight / weight.sum()
        score = [share[list(triad_pcs(melody.tonic, melody.mode, g))].sum() + TRIAD_PRIOR[g]
                 for g in range(7)]
        order = np.argsort(score, kind="stable")[::-1]
        prev = (int(order[0]), int(order[1]))
        out.append(prev)
    return out


def make_version(rng: np.random.Generator, variants: list[Melody], variant: int,
                 work_tempo: float, cfg: dict[str, Any]) -> Version:
    """Draw a performance of variant `variant`; every draw is made whatever the knobs."""
    melody = variants[variant]
    key_shift = int(rng.choice(KEY_SHIFTS))
    r = cfg["tempo_range"]
    tempo = round(work_tempo * float(rng.uniform(1 - r, 1 + r)), 2)
    programs = {MELODY: int(rng.choice(cfg["programs"])),
                CHORDS: int(rng.choice(cfg["accompaniment_programs"])),
                BASS: int(rng.choice(cfg["bass_programs"]))}
    style = str(rng.choice(ACCOMPANIMENTS))
    solo = rng.random() < cfg["p_solo"]
    triads = bar_triads(melody)
    u = rng.random(len(triads))
    subs = u < cfg["p_chord_substitution"]
    chords = tuple(second if sub else best for (best, second), sub in zip(triads, subs))
    bar_order, edit = _edit_phrases(rng, len(triads), cfg["phrase_bars"], cfg["p_phrase_edit"])
    offset = round(float(rng.uniform(0, cfg["max_offset_s"])), 3)
    snr = round(float(rng.uniform(*cfg["snr_db"])), 2) if cfg["snr_db"] is not None else None
    color = str(rng.choice(NOISE_COLORS))
    noise_seed = int(rng.integers(2**32))
    return Version(variant, key_shift, tempo, programs, None if solo else style, chords,
                   int(subs.sum()), bar_order, edit, offset, snr, color, noise_seed)


def _edit_phrases(rng: np.random.Generator, n_bars: int, phrase_bars: int,
                  p: float) -> tuple[tuple[int, ...], str | None]:
    """The bars of one pass; with probability p one phrase (phrase_bars bars) is dropped or
    repeated, e.g. 'drop:2' (when the tune has at least two phrases)."""
    phrases = [list(range(a, min(a + phrase_bars, n_bars))) for a in range(0, n_bars, phrase_bars)]
    u, i = rng.random(), int(rng.integers(len(phrases)))
    kind = str(rng.choice(("drop", "repeat")))
    if u >= p or len(phrases) < 2:
        return tuple(range(n_bars)), None
    if kind == "drop":
        del phrases[i]
    else:
        phrases.insert(i, phrases[i])
    return tuple(b for ph in phrases for b in ph), f"{kind}:{i}"


# --- rendering -----------------------------------------------------------------------------
def pass_notes(melody: Melody, version: Version) -> tuple[list[Note], float]:
    """The notes of one pass through the (edited) tune, in seconds, and the pass length."""
    spq = 60.0 / version.tempo_bpm
    notes: list[Note] = []
    t = 0.0
    for bar in version.bar_order:
        a, b = melody.bars[bar], melody.bars[bar + 1]
        for pitch, s, d in melody.notes:
            if a <= s < b:
                notes.append((MELODY, pitch + version.key_shift, (t + s - a) * spq, d * spq,
                              VELOCITY[MELODY]))
        if version.accompaniment is not None:
            notes += _accompany(melody, version, version.chords[bar], t * spq, (b - a), spq)
        t += b - a
    return notes, t * spq


def _accompany(melody: Melody, version: Version, degree: int, start: float, bar_ql: float,
               spq: float) -> list[Note]:
    """One bar of accompaniment: a triad and its root in the bass, in the version's style."""
    pcs = [(pc + version.key_shift) % 12 for pc in triad_pcs(melody.tonic, melody.mode, degree)]
    chord = [CHORD_LOW + (pc - CHORD_LOW) % 12 for pc in pcs]
    bass = BASS_LOW + (pcs[0] - BASS_LOW) % 12
    length = bar_ql * spq
    out: list[Note] = [(BASS, bass, start, length, VELOCITY[BASS])]
    if version.accompaniment == "block":
        out += [(CHORDS, p, start, length, VELOCITY[CHORDS]) for p in chord]
    elif version.accompaniment == "oompah":
        for beat in np.arange(1.0, bar_ql, 1.0):
            out += [(CHORDS, p, start + beat * spq, 0.8 * spq, VELOCITY[CHORDS]) for p in chord]
    else:  # arpeggio, in eighth notes
        for k, beat in enumerate(np.arange(0.0, bar_ql, 0.5)):
            out.append((CHORDS, chord[k % 3], start + beat * spq, 0.5 * spq, VELOCITY[CHORDS]))
    return out


def version_notes(melody: Melody, version: Version, duration_s: float) -> list[Note]:
    """The performance's notes in [0, duration_s): the pass loops, the start is offset_s in."""
    one, length = pass_notes(melody, version)
    if length <= 0:
        raise CoveridError(f"a melody of no length cannot fill {duration_s} s")
    notes: list[Note] = []
    end, t = version.offset_s + duration_s, 0.0
    while t < end:
        for ch, pitch, s, d, vel in one:
            a, b = t + s - version.offset_s, t + s + d - version.offset_s
            if b > 0 and a < duration_s:
                notes.append((ch, pitch, max(a, 0.0), b - max(a, 0.0), vel))
        t += length
    return notes


def render_version(melody: Melody, version: Version, sr: int, duration_s: float,
                   peak_dbfs: float) -> np.ndarray:
    """The version's audio: float64 mono, `duration_s` long, noise added, peak at peak_dbfs."""
    n = int(round(duration_s * sr))
    out = render_notes(version_notes(melody, version, duration_s), version.programs, sr, n)
    if version.snr_db is not None:
        out = _add_noise(out, version.snr_db, version.noise_color, version.noise_seed)
    peak = np.max(np.abs(out))
    return out * (10 ** (peak_dbfs / 20) / peak) if peak > 0 else out
