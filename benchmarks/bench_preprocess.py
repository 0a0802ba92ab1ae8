"""from-audio-dir speed: HPCP realtime factor per core with 1 and 2 workers.

Renders a small synth corpus (default 4 works x 5 versions of 30 s = 20 WAVs at 44.1 kHz)
into a temp dir, then times, with params.yaml's preprocess section:
- the feature alone per file (CPU time, one BLAS thread): numpy chain vs essentia's own
  frame loop (the Da-TACOS reference), and the decoding share;
- `extract_audio_dir` end to end (scan, decode, HPCP, resize) with scheduler `single` and
  with a 2-process pool (wall time).
Realtime factor = seconds of audio / seconds of compute, from wall time and from the CPU
time of this process plus its workers (the CPU figure is the per-core speed even when other
jobs share the machine; the load average is recorded). Target: >= 150x per core, near
linear to 2 workers. Figures go to reports/bench/preprocess.json.

    .venv/bin/python benchmarks/bench_preprocess.py [--works 4] [--versions 5] [--seconds 30]
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from coverid.core.config import load_params
from coverid.core.io import write_json

ROOT = Path(__file__).resolve().parents[1]
TARGET = 150.0


def render(out: Path, params: dict, works: int, versions: int, seconds: float) -> float:
    """Write the corpus; return its total duration in seconds."""
    from coverid.data.synth import generate_corpus

    cfg = {**params["data"]["synth"], "n_works": works, "versions_per_work": versions, "n_noise": 0,
           "duration_s": seconds}
    generate_corpus(out, cfg, params["seed"])
    import soundfile as sf

    return sum(sf.info(p).duration for p in out.rglob("*.wav"))


def per_file(files: list[Path], pcfg: dict, reference_files: int) -> dict:
    """CPU seconds of decoding, numpy HPCP and essentia's HPCP loop, in this process."""
    from threadpoolctl import threadpool_limits

    from coverid.features import extract as F

    cfg = pcfg["audio"]
    sr = int(cfg["sample_rate"])
    F.compute_hpcp(np.zeros(sr, np.float32), sr, cfg)  # warm-up: imports, caches
    out = {"decode_s": 0.0, "hpcp_s": 0.0, "audio_s": 0.0, "ref_hpcp_s": 0.0, "ref_audio_s": 0.0}
    with threadpool_limits(1):
        for i, path in enumerate(files):
            t0 = time.process_time()
            audio = F.load_audio(path, sr, 0.0, 0.0)
            t1 = time.process_time()
            x = F.compute_hpcp(audio, sr, cfg)
            t2 = time.process_time()
            out["decode_s"] += t1 - t0
            out["hpcp_s"] += t2 - t1
            out["audio_s"] += len(audio) / sr
            if i < reference_files:
                t3 = time.process_time()
                ref = F.compute_hpcp_essentia(audio, sr, cfg)
                out["ref_hpcp_s"] += time.process_time() - t3
                out["ref_audio_s"] += len(audio) / sr
                out["max_abs_diff_vs_essentia"] = max(out.get("max_abs_diff_vs_essentia", 0.0),
                                                      float(np.abs(x - ref).max()))
    return out


def end_to_end(audio_dir: Path, pcfg: dict, scheduler: str, workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its worker processes) of extract_audio_dir."""
    from coverid.core.skips import SkipLog
    from coverid.features.collection import extract_audio_dir

    cfg = copy.deepcopy(pcfg)
    cfg.update({"scheduler": scheduler, "workers": workers})
    c0, t0 = os.times(), time.perf_counter()
    fs = extract_audio_dir(audio_dir, cfg, "synth", SkipLog())
    wall, c1 = time.perf_counter() - t0, os.times()
    assert len(fs) > 0
    cpu = sum(getattr(c1, k) - getattr(c0, k) for k in ("user", "system", "children_user", "children_system"))
    return wall, cpu


def main() -> None:
    """Render, time, print and write the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--works", type=int, default=4)
    ap.add_argument("--versions", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--reference-files", type=int, default=3, help="files also run through essentia's loop")
    ap.add_argument("--repeats", type=int, default=3, help="end-to-end runs per setting (best is kept)")
    args = ap.parse_args()

    params = load_params(ROOT / "params.yaml")
    pcfg = params["preprocess"]
    tmp = Path(tempfile.mkdtemp(prefix="bench_preprocess."))
    try:
        audio_dir = tmp / "synth"
        total_s = render(audio_dir, params, args.works, args.versions, args.seconds)
        files = sorted(audio_dir.rglob("*.wav"))
        pf = per_file(files, pcfg, args.reference_files)
        e2e = {}
        for name, scheduler, workers in [("1_worker", "single", 1), ("2_workers", "processes", 2)]:
            runs = [end_to_end(audio_dir, pcfg, scheduler, workers) for _ in range(args.repeats)]
            wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
            e2e[name] = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                         "realtime_x_wall": round(total_s / wall, 1),
                         "realtime_x_per_core_wall": round(total_s / wall / workers, 1),
                         "realtime_x_per_core_cpu": round(total_s / cpu, 1)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    scaling = e2e["2_workers"]["realtime_x_wall"] / e2e["1_worker"]["realtime_x_wall"]
    report = {
        "files": len(files),
        "audio_s": round(total_s, 1),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "feature_only_cpu": {
            "hpcp_realtime_x_per_core": round(pf["audio_s"] / pf["hpcp_s"], 1),
            "decode_plus_hpcp_realtime_x_per_core": round(pf["audio_s"] / (pf["hpcp_s"] + pf["decode_s"]), 1),
            "essentia_frame_loop_realtime_x_per_core": round(pf["ref_audio_s"] / pf["ref_hpcp_s"], 1)
            if pf["ref_hpcp_s"] else None,
            "max_abs_diff_vs_essentia": pf.get("max_abs_diff_vs_essentia"),
        },
        "extract_audio_dir": e2e,
        "wall_speedup_2_workers": round(scaling, 2),
        "cpu_overhead_2_workers": round(e2e["2_workers"]["cpu_s"] / e2e["1_worker"]["cpu_s"], 2),
        "target_realtime_x_per_core": TARGET,
        "meets_target_cpu": min(v["realtime_x_per_core_cpu"] for v in e2e.values()) >= TARGET,
    }
    for key, value in report.items():
        print(f"{key}: {value}")
    write_json(ROOT / "reports" / "bench" / "preprocess.json", report)


if __name__ == "__main__":
    main()
