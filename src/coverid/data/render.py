"""Note lists rendered to audio with the General MIDI soundfont that pretty_midi bundles
(TimGM6mb.sf2), played by the tinysoundfont synthesiser (no system packages).

Each call builds a fresh synthesiser, so a song's samples depend on its notes only (not on
what a worker process rendered before): the same notes give the same bytes in any process.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from coverid.core.errors import CoveridError

Note = tuple[int, int, float, float, int]   # channel, MIDI pitch, start s, length s, velocity
NOTE_OFF, NOTE_ON = 0, 1                    # at one sample, notes end before others start


def soundfont_path() -> Path:
    """pretty_midi's bundled General MIDI soundfont."""
    import pretty_midi

    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise CoveridError(f"{path}: pretty_midi's General MIDI soundfont is missing; "
                           "reinstall pretty_midi")
    return path


@lru_cache(maxsize=1)
def _soundfont_bytes() -> bytes:
    """The soundfont file, read once per process."""
    return soundfont_path().read_bytes()


def render_notes(notes: list[Note], programs: dict[int, int], sr: int, n_samples: int) -> np.ndarray:
    """Mono float64 audio of `n_samples` samples: every note on its channel's GM program."""
    try:
        import tinysoundfont
    except ImportError:
        raise CoveridError("the melodies source needs tinysoundfont: pip install --no-deps "
                           "tinysoundfont==0.3.7 (make venv does)") from None

    synth = tinysoundfont.Synth(samplerate=sr)
    sfid = synth.sfload(_soundfont_bytes())
    for channel, program in sorted(programs.items()):
        synth.program_select(channel, sfid, 0, program)
    events = []
    for channel, pitch, start, length, velocity in notes:
        on = int(round(start * sr))
        off = max(on + 1, int(round((start + length) * sr)))
        if on < n_samples:
            events.append((on, NOTE_ON, channel, pitch, velocity))
            events.append((off, NOTE_OFF, channel, pitch, 0))
    events.sort()
    out = np.zeros(2 * n_samples, dtype=np.float32)   # interleaved stereo
    done = 0
    for at, kind, channel, pitch, velocity in events:
        at = min(at, n_samples)
        if at > done:
            out[2 * done:2 * at] = np.frombuffer(synth.generate_simple(at - done), dtype=np.float32)
            done = at
        if kind == NOTE_ON:
            synth.noteon(channel, pitch, velocity)
        else:
            synth.noteoff(channel, pitch)
    if n_samples > done:
        out[2 * done:] = np.frombuffer(synth.generate_simple(n_samples - done), dtype=np.float32)
    return out.reshape(-1, 2).mean(axis=1, dtype=np.float64)
