"""The melody corpus: its variant families, and the cost of rendering it and extracting its
features.

With params.yaml's data.melodies (works, versions and duration overridable), times:
- reading the ABC collections and finding the variant families (text only);
- generate_melody_corpus (music21 parses + soundfont rendering, `workers` processes);
- extract_audio_dir on the result with params.yaml's preprocess section.
Seconds per song from wall time and from the CPU time of this process and its workers (the
CPU figure holds when other jobs share the machine; the load average is recorded). Figures go
to reports/bench/melodies.json.

    .venv/bin/python benchmarks/bench_melodies.py [--works 100] [--versions 4] [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from coverid.core.config import load_params
from coverid.core.io import write_json
from coverid.core.skips import SkipLog
from coverid.data.melodies import generate_melody_corpus, plan_works
from coverid.data.tune_index import corpus_root, read_tunes
from coverid.features.collection import extract_audio_dir

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, *args) -> tuple[object, float, float]:
    """(result, wall s, CPU s of this process and its children) of fn(*args)."""
    c0, t0 = os.times(), time.perf_counter()
    result = fn(*args)
    wall, c1 = time.perf_counter() - t0, os.times()
    cpu = sum(getattr(c1, k) - getattr(c0, k) for k in ("user", "system", "children_user", "children_system"))
    return result, wall, cpu


def main() -> None:
    """Index, render, extract; print and write the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--works", type=int, default=100)
    ap.add_argument("--versions", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()

    params = load_params(ROOT / "params.yaml")
    cfg = {**params["data"]["melodies"].to_dict(), "n_works": args.works,
           "versions_per_work": args.versions, "n_noise": 0, "duration_s": args.seconds}
    pcfg = params["preprocess"]
    tunes, index_wall, _ = timed(read_tunes, corpus_root(cfg["corpus_dir"]), cfg["collections"],
                                 SkipLog())
    (_, stats), family_wall, _ = timed(plan_works, tunes, cfg, params["seed"])
    tmp = Path(tempfile.mkdtemp(prefix="bench_melodies."))
    try:
        skips = SkipLog()
        meta, render_wall, render_cpu = timed(generate_melody_corpus, tmp / "melodies", cfg,
                                              params["seed"], skips)
        fs, extract_wall, extract_cpu = timed(extract_audio_dir, tmp / "melodies", pcfg, "melodies",
                                              SkipLog())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    songs = sum(len(p) for p in meta.values())
    per_song = lambda s: round(s / songs, 3)  # noqa: E731
    report = {
        "works": len(meta), "songs": songs, "seconds_per_song": args.seconds,
        "versions_per_work": args.versions, "workers": cfg["workers"],
        "preprocess_workers": pcfg["workers"], "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "collections": cfg["collections"],
        "tunes_per_collection": dict(Counter(t.collection for t in tunes)),
        **stats,
        "works_with_several_corpus_variants": sum(
            len({m["tune"] for m in p.values()}) > 1 for p in meta.values()),
        "skipped_tunes": len(skips.skipped),
        "index_s": round(index_wall, 2), "families_s": round(family_wall, 2),
        "render_wall_s": round(render_wall, 1), "render_cpu_s": round(render_cpu, 1),
        "extract_wall_s": round(extract_wall, 1), "extract_cpu_s": round(extract_cpu, 1),
        "render_wall_s_per_song": per_song(render_wall), "render_cpu_s_per_song": per_song(render_cpu),
        "extract_wall_s_per_song": per_song(extract_wall),
        "extract_cpu_s_per_song": per_song(extract_cpu),
        "render_plus_extract_wall_s_per_song": per_song(render_wall + extract_wall),
        "extracted": len(fs),
    }
    for key, value in report.items():
        print(f"{key}: {value}")
    write_json(ROOT / "reports" / "bench" / "melodies.json", report)


if __name__ == "__main__":
    main()
