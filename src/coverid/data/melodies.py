"""The melody corpus: real folk tunes (music21's Essen, Ryan's, O'Neill's and Aird's ABC
collections) rendered as cover versions (WAV) with Da-TACOS metadata, as the synth corpus is.

A work is a variant family (data/tune_index.py: the same tune printed several times, under one
or several titles, in one or several collections) or, when the families run out, a single tune.
Its versions play the family's different corpus variants in turn, each transposed, at another
tempo, on other General MIDI instruments, over its own diatonic re-harmonisation (one triad
per bar chosen from the melody's notes, some bars taking the runner-up triad), with a phrase
dropped or repeated, from a later start and with additive noise; the tune loops to fill
`duration_s` (data/arrange.py). Only the selected tunes are parsed (music21); a tune music21
cannot read is skipped with a one-line reason.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coverid.core.errors import BadInputError, CoveridError
from coverid.core.io import atomic_dir, write_json
from coverid.core.skips import SkipLog
from coverid.data.arrange import (
    BASS,
    CHORDS,
    MELODY,
    Melody,
    Version,
    make_version,
    parse_melody,
    render_version,
)
from coverid.data.synth import NOTE_NAMES, corpus_checks, raise_if_invalid, song_rng, to_pcm16
from coverid.data.tune_index import Tune, corpus_root, dedupe, families, read_tunes

log = logging.getLogger(__name__)

# Collections named in metadata: folder -> (title, year of publication).
COLLECTIONS = {
    "essenFolksong": ("Essen Folksong Collection", "1995"),
    "ryansMammoth": ("Ryan's Mammoth Collection", "1883"),
    "oneills1850": ("O'Neill's Music of Ireland", "1903"),
    "airdsAirs": ("Aird's Selection of Scotch, English, Irish and Foreign Airs", "1782"),
}
SELECT, WORK, NOISE_SONG = 2, 0, 1       # spawn_key heads: selection, works, noise songs
REQUIRED_KEYS = ("collections", "corpus_dir", "n_works", "versions_per_work", "n_noise",
                 "duration_s", "sample_rate", "tempo_bpm", "tempo_range", "snr_db",
                 "p_phrase_edit", "phrase_bars", "max_offset_s", "p_chord_substitution",
                 "p_solo", "incipit_steps", "title_incipit_steps", "programs",
                 "accompaniment_programs", "bass_programs", "peak_dbfs", "workers")


# --- the corpus ----------------------------------------------------------------------------
def _parse_job(tune: Tune) -> Melody | str:
    """parse_melody for a worker: the melody, or the one-line reason it was skipped."""
    try:
        return parse_melody(tune)
    except BadInputError as e:
        return e.problem


@dataclass(frozen=True)
class PlannedWork:
    """A work to render: its corpus variants (tunes) and how many versions it gets."""

    kind: int
    index: int
    tunes: tuple[Tune, ...]
    n_versions: int
    family_size: int


def plan_works(tunes: list[Tune], cfg: dict[str, Any], seed: int) -> tuple[list[PlannedWork], dict]:
    """The works (variant families first, then single tunes) and noise songs (single tunes),
    drawn with a seeded RNG; plus counts for the log and the benchmark."""
    kept, duplicates = dedupe(tunes)
    groups = families(kept, cfg["incipit_steps"], cfg["title_incipit_steps"])
    multi = [g for g in groups if len(g) > 1]
    single = [g[0] for g in groups if len(g) == 1]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SELECT,)))
    fam_order, single_order = rng.permutation(len(multi)), rng.permutation(len(single))
    n_v = cfg["versions_per_work"]
    plan = []
    for i in fam_order[:cfg["n_works"]]:
        g = multi[i]
        chosen = sorted(rng.choice(g, size=min(n_v, len(g)), replace=False).tolist())
        plan.append(PlannedWork(WORK, len(plan), tuple(kept[j] for j in chosen), n_v, len(g)))
    n_single = cfg["n_works"] - len(plan)
    for j in single_order[:n_single]:
        plan.append(PlannedWork(WORK, len(plan), (kept[single[j]],), n_v, 1))
    for k, j in enumerate(single_order[n_single:n_single + cfg["n_noise"]]):
        plan.append(PlannedWork(NOISE_SONG, k, (kept[single[j]],), 1, 1))
    stats = {"tunes": len(tunes), "duplicates_dropped": duplicates, "families": len(multi),
             "tunes_in_families": sum(map(len, multi)),
             "cross_collection_families": sum(len({kept[i].collection for i in g}) > 1
                                              for g in multi),
             "works_from_families": min(len(multi), cfg["n_works"])}
    if len(plan) < cfg["n_works"] + cfg["n_noise"]:
        log.warning("melodies: only %d works and noise songs available (asked for %d)", len(plan),
                    cfg["n_works"] + cfg["n_noise"])
    return plan, stats


def generate_melody_corpus(out_dir: Path, cfg: dict[str, Any], seed: int,
                           skips: SkipLog | None = None) -> dict:
    """Write out_dir/<work_id>/<perf_id>.wav and out_dir/metadata.json; return the metadata.

    Unreadable files and unparsable tunes are left out, each recorded with a one-line reason
    in `skips`, in the log and in out_dir/skipped.json; the corpus is built beside out_dir and
    renamed into place.
    """
    _check_cfg(cfg)
    if int(seed) < 0:
        raise CoveridError(f"params seed: must be a non-negative integer, got {seed!r}")
    skips = skips if skips is not None else SkipLog()
    start = time.perf_counter()
    tunes = read_tunes(corpus_root(cfg["corpus_dir"]), cfg["collections"], skips)
    plan, stats = plan_works(tunes, cfg, seed)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        jobs = _parsed_jobs(tmp, plan, cfg, seed, skips)
        metadata = dict(_pool_map(_write_work, jobs, cfg["workers"], "melody corpus", "song",
                                  [j[4].n_versions for j in jobs]))
        write_json(tmp / "metadata.json", metadata)
        skips.write(tmp / "skipped.json")
    for s in skips.skipped:
        log.warning("melodies: skipped %s: %s", s["path"], s["reason"])
    n_perf = sum(len(p) for p in metadata.values())
    log.info("melody corpus: %d performances of %d works (%d variant families in the corpus, "
             "%d skipped tunes) in %.1f s -> %s", n_perf, len(metadata), stats["families"],
             len(skips.skipped), time.perf_counter() - start, out_dir)
    return metadata


def _parsed_jobs(root: Path, plan: list[PlannedWork], cfg: dict[str, Any], seed: int,
                 skips: SkipLog) -> list[tuple]:
    """Parse every planned tune (in worker processes); works keep the variants that parsed
    and get consecutive ids; a tune that failed is recorded in `skips`."""
    tunes = list(dict.fromkeys(t for w in plan for t in w.tunes))
    parsed = dict(zip(tunes, _pool_map(_parse_job, tunes, cfg["workers"], "parse tunes", "tune",
                                       [1] * len(tunes))))
    skips.total += len(tunes)
    for t, result in parsed.items():
        if isinstance(result, str):
            skips.add(t.ref, result)
    jobs, perf_no = [], 1
    for w in plan:
        ok = [(t, parsed[t]) for t in w.tunes if isinstance(parsed[t], Melody)]
        if not ok:
            continue
        jobs.append((root, cfg, seed, f"W_{len(jobs) + 1}", w, ok, perf_no))
        perf_no += w.n_versions
    return jobs


def _pool_map(fn: Any, items: list, workers: int, desc: str, unit: str, sizes: list[int]) -> list:
    """[fn(x) for x in items], in `workers` spawned processes, with a progress bar counting
    sizes[i] units per item."""
    from tqdm import tqdm

    results = []
    with tqdm(total=sum(sizes), desc=desc, unit=unit) as bar:
        if workers <= 1 or len(items) < 2:
            done = map(fn, items)
            pool = None
        else:
            # spawn: safe even when the parent has loaded threaded libraries (TF, BLAS)
            pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
            done = pool.map(fn, items, chunksize=4)
        try:
            for result, size in zip(done, sizes):
                results.append(result)
                bar.update(size)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    return results


def _write_work(job: tuple) -> tuple[str, dict[str, dict]]:
    """Render and write one work's performances: (work_id, {perf_id: metadata})."""
    import soundfile as sf

    root, cfg, seed, work_id, work, variants, first_perf = job
    sr, duration = int(cfg["sample_rate"]), float(cfg["duration_s"])
    rng = song_rng(seed, work.kind, work.index, 0)
    tempo = round(float(rng.uniform(*cfg["tempo_bpm"])), 2)
    order = rng.permutation(len(variants))
    melodies = [m for _, m in variants]
    (root / work_id).mkdir()
    perfs = {}
    for v in range(work.n_versions):
        perf_id = f"P_{first_perf + v}"
        variant = int(order[v % len(variants)])
        version = make_version(song_rng(seed, work.kind, work.index, v + 1), melodies, variant,
                               tempo, cfg)
        audio = render_version(melodies[variant], version, sr, duration, cfg["peak_dbfs"])
        sf.write(root / work_id / f"{perf_id}.wav", to_pcm16(audio), sr, subtype="PCM_16")
        perfs[perf_id] = perf_metadata(work, variants, version, work_id, perf_id, tempo, sr,
                                       duration)
    return work_id, perfs


def perf_metadata(work: PlannedWork, variants: list[tuple[Tune, Melody]], version: Version,
                  work_id: str, perf_id: str, work_tempo: float, sr: int,
                  duration_s: float) -> dict[str, Any]:
    """One performance's entry: the Da-TACOS fields plus the tune's source and what the
    generator chose."""
    tune, melody = variants[version.variant]
    collection, year = COLLECTIONS.get(tune.collection, (tune.collection, ""))
    perf_key = (melody.tonic + version.key_shift) % 12
    return {
        "work_title": variants[0][0].title,
        "work_artist": "Traditional",
        "perf_title": tune.title,
        "perf_artist": collection,
        "release_year": year,
        "work_id": work_id,
        "perf_id": perf_id,
        "instrumental": "Yes",
        "noise_song": work.kind == NOISE_SONG,
        "collection": tune.collection,
        "tune": tune.ref,
        "family_size": work.family_size,
        "variants_used": len(variants),
        "work_key": f"{NOTE_NAMES[melody.tonic]} {melody.mode}",
        "perf_key": f"{NOTE_NAMES[perf_key]} {melody.mode}",
        "key_shift": version.key_shift,
        "work_tempo_bpm": work_tempo,
        "tempo_bpm": version.tempo_bpm,
        "tempo_ratio": round(version.tempo_bpm / work_tempo, 4),
        "programs": {"melody": version.programs[MELODY], "chords": version.programs[CHORDS],
                     "bass": version.programs[BASS]},
        "accompaniment": version.accompaniment,
        "chord_substitutions": version.substitutions,
        "phrase_edit": version.phrase_edit,
        "offset_s": version.offset_s,
        "snr_db": version.snr_db,
        "noise_color": version.noise_color if version.snr_db is not None else None,
        "duration_s": duration_s,
        "sample_rate": sr,
    }


def _check_cfg(cfg: dict[str, Any]) -> None:
    """Fail with one line on a missing or impossible data.melodies setting."""
    checks = corpus_checks("melodies", cfg, REQUIRED_KEYS)
    gm = lambda xs: len(xs) > 0 and all(0 <= x < 128 for x in xs)  # noqa: E731
    checks.update({
        "collections": len(cfg["collections"]) > 0,
        "phrase_bars": cfg["phrase_bars"] >= 1,
        "incipit_steps": cfg["incipit_steps"] >= 1,
        "title_incipit_steps": cfg["title_incipit_steps"] >= 0,
        "programs": gm(cfg["programs"]),
        "accompaniment_programs": gm(cfg["accompaniment_programs"]),
        "bass_programs": gm(cfg["bass_programs"]),
    })
    checks.update({k: 0 <= cfg[k] <= 1 for k in ("p_phrase_edit", "p_chord_substitution",
                                                 "p_solo")})
    raise_if_invalid("melodies", cfg, checks)
