"""A user's audio folder (SPEC.md section 2): DIR/<work>/<performance>.<ext>.

Every sub-folder is one work and every audio file in it one performance. Files directly
under DIR are performances of unknown work: each gets a work id of its own
(`W_unknown_<stem>`), so it acts as a noise song. An optional DIR/metadata.json in the
Da-TACOS schema ({work: {perf: {...}}}, keys matching folder and file names) overrides the
folder-derived ids and adds titles and artists.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coverid.core.errors import CoveridError
from coverid.core.skips import SkipLog
from coverid.data.metadata import read_metadata

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = ("mp3", "wav", "flac", "ogg", "m4a")  # SPEC.md section 2
# Extensions that look like audio but are not accepted: reported as skips, not ignored.
AUDIO_LIKE = frozenset({
    "aac", "aif", "aifc", "aiff", "alac", "amr", "ape", "au", "caf", "flac", "m4a", "m4b", "mid",
    "midi", "mka", "mp2", "mp3", "mpc", "oga", "ogg", "opus", "ra", "snd", "tta", "wav", "wave",
    "webm", "wma", "wv",
})
METADATA = "metadata.json"
UNKNOWN_PREFIX = "W_unknown_"


@dataclass(frozen=True)
class AudioItem:
    """One performance file with its ids; `skip` is why it cannot be used (None: usable)."""

    path: Path
    work_id: str
    perf_id: str
    known_work: bool = True  # False: a file directly under DIR (work unknown)
    title: str = ""
    artist: str = ""
    skip: str | None = None


def scan_audio_dir(audio_dir: str | Path, extensions: list[str] | tuple[str, ...] = AUDIO_EXTENSIONS) -> list[AudioItem]:
    """Every performance under `audio_dir`, sorted by path; non-audio files are ignored."""
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise CoveridError(f"{audio_dir}: audio folder not found")
    exts = {e.lower().lstrip(".") for e in extensions}
    meta = read_metadata(audio_dir / METADATA, required=False)
    found: list[tuple[Path, str | None]] = []  # (file, folder work name or None)
    for entry in sorted(audio_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            files = sorted(p for p in entry.iterdir() if p.is_file() and not p.name.startswith("."))
            found += [(p, entry.name) for p in files if _is_audio_like(p, exts)]
            if any(p.is_dir() for p in entry.iterdir()):
                log.debug("%s: nested folders are not scanned", entry)
        elif entry.is_file() and _is_audio_like(entry, exts):
            found.append((entry, None))
    if not found:
        raise CoveridError(f"{audio_dir}: no audio files ({', '.join(sorted(exts))})")
    stems = Counter(p.stem for p, _ in found)
    items = [_item(p, folder, exts, meta, stems) for p, folder in found]
    return _mark_duplicates(items)


def usable_items(scanned: list[AudioItem], skips: SkipLog) -> list[tuple[Path, str, str]]:
    """(path, work_id, perf_id) of the usable items; the others go to `skips` with their reason."""
    items = []
    for it in scanned:
        if it.skip is None:
            items.append((it.path, it.work_id, it.perf_id))
        else:
            skips.total += 1
            skips.add(it.path, it.skip)
    return items


def _is_audio_like(path: Path, exts: set[str]) -> bool:
    """Accepted audio, or something that looks like audio (reported rather than ignored)."""
    ext = path.suffix.lower().lstrip(".")
    return ext in exts or ext in AUDIO_LIKE


def _item(path: Path, folder: str | None, exts: set[str], meta: dict[str, dict[str, Any]],
          stems: Counter) -> AudioItem:
    """The AudioItem of one file: folder-derived ids unless metadata.json names it."""
    stem = path.stem
    entry, work_key = _lookup(meta, folder, stem)
    if entry is not None:
        work_id = str(entry.get("work_id") or work_key)
        perf_id = str(entry.get("perf_id") or stem)
        known, title, artist = True, str(entry.get("perf_title") or entry.get("work_title") or ""), \
            str(entry.get("perf_artist") or entry.get("work_artist") or "")
    elif folder is None:
        work_id, perf_id, known, title, artist = f"{UNKNOWN_PREFIX}{stem}", stem, False, "", ""
    else:
        # a stem used by several files gets its folder as a prefix, so perf ids stay unique
        perf_id = stem if stems[stem] == 1 else f"{folder}/{stem}"
        work_id, known, title, artist = folder, True, "", ""
    ext = path.suffix.lower().lstrip(".")
    skip = None if ext in exts else f"unsupported audio extension '.{ext}' (supported: {', '.join(sorted(exts))})"
    return AudioItem(path, work_id, perf_id, known, title, artist, skip)


def _lookup(meta: dict[str, dict[str, Any]], folder: str | None,
            stem: str) -> tuple[dict[str, Any] | None, str | None]:
    """The metadata entry of a file: meta[folder][stem], or for a top-level file the one
    work that lists `stem`."""
    if folder is not None:
        entry = meta.get(folder, {}).get(stem)
        return (entry, folder) if entry is not None else (None, None)
    hits = [(perfs[stem], work) for work, perfs in meta.items() if stem in perfs]
    return hits[0] if len(hits) == 1 else (None, None)


def _mark_duplicates(items: list[AudioItem]) -> list[AudioItem]:
    """Give every file after the first with the same perf id a skip reason."""
    seen: dict[str, Path] = {}
    out = []
    for it in items:
        if it.skip is None and it.perf_id in seen:
            it = AudioItem(it.path, it.work_id, it.perf_id, it.known_work, it.title, it.artist,
                           f"duplicate performance id {it.perf_id!r} (also {seen[it.perf_id]})")
        elif it.skip is None:
            seen[it.perf_id] = it.path
        out.append(it)
    return out


