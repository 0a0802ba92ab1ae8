"""Dataset analysis over Da-TACOS-schema metadata: statistics, search, cover maps, plots.

Metadata: {work_id: {perf_id: {"work_title", "work_artist", "perf_title", "perf_artist", ...}}}
(SPEC.md section 1). All functions but the readers and the plot are pure.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from coverid.core import paths
from coverid.core.errors import BadInputError, CoveridError
from coverid.core.io import atomic_path
from coverid.data.datacos import metadata_file
from coverid.data.metadata import Metadata, read_metadata
from coverid.data.store import read_features
from coverid.features.transform import PITCH, pitch_names

TEXT_FIELDS = ("work_title", "work_artist", "perf_title", "perf_artist")


def default_metadata_path(params: dict[str, Any]) -> Path:
    """The metadata JSON of params' data.source (synth or melodies, datacos subset, or the audio folder)."""
    data = params["data"]
    if data["source"] == "datacos":

        return metadata_file(paths.raw_dir(params), data["datacos"]["subset"])
    if data["source"] == "audio":
        return Path(data["audio"]["dir"]) / "metadata.json"
    return paths.raw_dir(params) / "metadata.json"


def load_metadata(path: str | Path) -> Metadata:
    """Read and check a metadata JSON file for analysis: it must list some performances."""
    meta = read_metadata(path)
    if not meta:
        raise BadInputError(path, "expected a non-empty object {work_id: {perf_id: {...}}}")
    for work, perfs in meta.items():
        if not perfs:
            raise BadInputError(path, f"work {work!r}: expected a non-empty object of performances")
    return meta


def rows(meta: Metadata) -> list[dict[str, Any]]:
    """One flat record per performance, sorted by (work_id, perf_id)."""
    out = []
    for work in sorted(meta):
        for perf in sorted(meta[work]):
            info = meta[work][perf]
            out.append({"work_id": work, "perf_id": perf,
                        **{k: _text(info.get(k)) for k in TEXT_FIELDS}})
    return out


def _text(value: Any) -> str:
    """A metadata field as a plain string ('' when missing)."""
    return "" if value is None else str(value)


def stats(meta: Metadata, lengths_s: np.ndarray | None = None) -> dict[str, Any]:
    """Counts of works and performances, the versions-per-work histogram, noise songs,
    and (when `lengths_s` of the processed performances is given) duration figures."""
    versions = Counter(len(perfs) for perfs in meta.values())
    out: dict[str, Any] = {
        "works": len(meta),
        "performances": sum(len(p) for p in meta.values()),
        "works_with_covers": sum(n for k, n in versions.items() if k > 1),
        "noise_songs": versions.get(1, 0),
        "versions_per_work": {str(k): versions[k] for k in sorted(versions)},
        "durations": None,
    }
    if lengths_s is not None and len(lengths_s):
        d = np.asarray(lengths_s, dtype=np.float64)
        out["durations"] = {"count": int(len(d)), "total_hours": float(d.sum() / 3600),
                            "min_s": float(d.min()), "median_s": float(np.median(d)),
                            "mean_s": float(d.mean()), "max_s": float(d.max())}
    return out


def format_stats(s: dict[str, Any]) -> str:
    """The statistics as a small text table."""
    lines = [f"{'works':<20}{s['works']:>10}", f"{'performances':<20}{s['performances']:>10}",
             f"{'works with covers':<20}{s['works_with_covers']:>10}",
             f"{'noise songs':<20}{s['noise_songs']:>10}", "", "versions per work   works"]
    lines += [f"{k:>17}   {n:>5}" for k, n in s["versions_per_work"].items()]
    d = s["durations"]
    if d:
        lines += ["", f"durations ({d['count']} processed performances, {d['total_hours']:.2f} h)"]
        lines += [f"{k[:-2]:>17}   {d[k]:8.1f} s" for k in ("min_s", "median_s", "mean_s", "max_s")]
    return "\n".join(lines)


def search(meta: Metadata, artist: str | None = None, title: str | None = None) -> list[dict[str, Any]]:
    """Performances whose work or performance artist/title contain the text (case-insensitive);
    with both given, both must match."""
    if not artist and not title:
        raise CoveridError("give --artist and/or --title to search for")

    def has(row: dict[str, Any], text: str | None, fields: tuple[str, str]) -> bool:
        return text is None or any(text.casefold() in row[f].casefold() for f in fields)

    return [r for r in rows(meta)
            if has(r, artist, ("work_artist", "perf_artist")) and has(r, title, ("work_title", "perf_title"))]


def cover_map(meta: Metadata) -> dict[str, dict[str, Any]]:
    """work_id -> its title, artist and performances (id, title, artist), sorted."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows(meta):
        work = out.setdefault(r["work_id"], {"work_title": r["work_title"], "work_artist": r["work_artist"],
                                             "performances": []})
        work["performances"].append({"perf_id": r["perf_id"], "perf_title": r["perf_title"],
                                     "perf_artist": r["perf_artist"]})
    return out


def find_performance(meta: Metadata | None, perf_id: str) -> dict[str, Any] | None:
    """The metadata row of one performance, or None."""
    return next((r for r in rows(meta) if r["perf_id"] == perf_id), None) if meta else None


def lengths_seconds(features_file: str | Path) -> np.ndarray:
    """Original durations (s) of the performances in a processed feature file."""
    fs = read_features(features_file)
    return fs.length_frames / fs.frame_rate_hz


def plot_chromagram(features_file: str | Path, perf_id: str, out: str | Path,
                    meta: Metadata | None = None) -> Path:
    """Save an image of one performance's 12 pitch rows from a processed feature file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fs = read_features(features_file)
    hit = np.flatnonzero(fs.perf_id == perf_id)
    if not len(hit):
        raise CoveridError(f"{features_file}: no performance {perf_id!r}")
    i = int(hit[0])
    x = fs.features[i][:12]  # the tiled rows 12..22 repeat 0..10
    info = find_performance(meta, perf_id)
    label = f"{perf_id} ({fs.work_id[i]})"
    if info and (info["perf_title"] or info["perf_artist"]):
        label += f": {info['perf_title']} by {info['perf_artist']}"
    fig, ax = plt.subplots(figsize=(10, 3))
    im = ax.imshow(x, aspect="auto", origin="lower", interpolation="nearest", cmap="magma")
    ax.set(title=label, ylabel="pitch class", yticks=range(PITCH),
           yticklabels=pitch_names(fs.source, fs.feature),
           xlabel=f"frame (resized to {fs.spect_len}; {fs.length_frames[i] / fs.frame_rate_hz:.0f} s "
                  f"originally), feature {fs.feature}")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=100)
    plt.close(fig)
    return out


def audio_manifest(audio_dir: str | Path, extensions: list[str]) -> dict[str, Any]:
    """Relative path, size and mtime of every audio file (and metadata.json) under `audio_dir`,
    so that stages depending on the manifest re-run when the collection changes."""
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise CoveridError(f"{audio_dir}: audio folder not found (params data.audio.dir)")
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    files = sorted(p for p in audio_dir.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(audio_dir).parts)
                   and (p.suffix.lower() in exts or p.relative_to(audio_dir) == Path("metadata.json")))
    if not any(p.suffix.lower() in exts for p in files):
        raise CoveridError(f"{audio_dir}: no audio files ({', '.join(sorted(exts))})")
    entries = []
    for p in files:
        st = p.stat()
        entries.append({"path": p.relative_to(audio_dir).as_posix(), "size": st.st_size,
                        "mtime": round(st.st_mtime, 6)})
    return {"dir": str(audio_dir), "files": entries}
