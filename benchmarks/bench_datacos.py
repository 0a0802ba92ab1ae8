"""Da-TACOS preprocessing at benchmark size: 15,000 files of ~20,000 x 12 float32.

Generates a benchmark-subset-shaped tree (1,000 works x 13 versions + 2,000 noise songs,
T uniform in [16,000, 24,000] frames, ~14 GB) in a temp dir, then times
`preprocess_dir` (params.yaml's preprocess section) in a child process while sampling the
RSS of that process and all its children. Target: < 3 min on 2 cores, peak < 4 GB.
The temp tree is deleted afterwards. Figures go to reports/bench/datacos.json.

    .venv/bin/python benchmarks/bench_datacos.py [--files N] [--frames T] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import psutil

from coverid.core.config import load_params
from coverid.core.io import write_json

ROOT = Path(__file__).resolve().parents[1]
TARGET_S, TARGET_GB = 180.0, 4.0
VERSIONS, NOISE_SHARE = 13, 2000 / 15000  # the benchmark subset's shape


def generate(root: Path, n_files: int, mean_frames: int, seed: int = 0) -> tuple[int, int]:
    """Write the tree and metadata; return (files, total frames)."""
    rng = np.random.default_rng(seed)
    n_noise = int(round(n_files * NOISE_SHARE))
    n_works = (n_files - n_noise) // VERSIONS
    groups = [VERSIONS] * n_works + [1] * (n_files - n_works * VERSIONS)
    folder = root / "da-tacos_benchmark_subset_crema"
    meta: dict[str, dict] = {}
    frames, perf = 0, 0
    lo, hi = int(mean_frames * 0.8), int(mean_frames * 1.2)
    for w, n in enumerate(groups):
        work = f"W_{w}"
        (folder / f"{work}_crema").mkdir(parents=True)
        for _ in range(n):
            t = int(rng.integers(lo, hi + 1))
            x = rng.random((t, 12), dtype=np.float32)
            with h5py.File(folder / f"{work}_crema" / f"P_{perf}_crema.h5", "w") as f:
                f["crema"] = x
            meta.setdefault(work, {})[f"P_{perf}"] = {"work_id": work, "perf_id": f"P_{perf}"}
            frames += t
            perf += 1
    (root / "da-tacos_metadata").mkdir()
    (root / "da-tacos_metadata" / "da-tacos_benchmark_subset_metadata.json").write_text(json.dumps(meta))
    return perf, frames


CHILD = """
import json, resource, sys, logging
logging.basicConfig(level=logging.WARNING)
from coverid.data.sources import preprocess_dir
from coverid.core.skips import SkipLog
pcfg = json.loads(sys.argv[3]); skips = SkipLog()
preprocess_dir(sys.argv[1], sys.argv[2], ["crema"], pcfg, skips)
cpu = sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage,
          (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))
print(json.dumps({"total": skips.total, "skipped": len(skips.skipped), "cpu_s": cpu}))
"""


def run_measured(args: list[str]) -> tuple[float, float, float, str]:
    """Run a child Python; return (seconds, peak tree RSS GB, peak single-process RSS GB, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak_tree = peak_one = 0
    while proc.poll() is None:
        try:
            rss = [p.memory_info().rss for p in [ps, *ps.children(recursive=True)]]
        except psutil.Error:
            rss = [0]
        peak_tree, peak_one = max(peak_tree, sum(rss)), max(peak_one, max(rss))
        time.sleep(0.1)
    out = proc.stdout.read()
    if proc.returncode:
        raise SystemExit(f"preprocessing failed (exit {proc.returncode})")
    return time.perf_counter() - start, peak_tree / 1e9, peak_one / 1e9, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=15000)
    ap.add_argument("--frames", type=int, default=20000, help="mean frames per file")
    ap.add_argument("--keep", type=Path, help="reuse/keep the generated tree in this folder")
    a = ap.parse_args()
    pcfg = load_params(ROOT / "params.yaml")["preprocess"]

    need_gb = a.files * a.frames * 12 * 4 * 1.05 / 1e9
    base = a.keep or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(base).free / 1e9
    frames = a.frames
    if not (a.keep and (a.keep / "da-tacos_metadata").exists()) and need_gb > 0.8 * free_gb:
        frames = int(a.frames * 0.8 * free_gb / need_gb)
        print(f"only {free_gb:.0f} GB free for {need_gb:.0f} GB: scaling T to {frames}")

    tree = a.keep or Path(tempfile.mkdtemp(prefix="bench_datacos_", dir=base))
    out = Path(tempfile.mkdtemp(prefix="bench_datacos_out_"))
    try:
        t0 = time.perf_counter()
        gen_s = None
        if not (a.keep and (a.keep / "da-tacos_metadata").exists()):
            generate(tree, a.files, frames)
            gen_s = time.perf_counter() - t0
        files = list(tree.glob("da-tacos_benchmark_subset_crema/W_*/P_*.h5"))
        n_files, data_gb = len(files), sum(p.stat().st_size for p in files) / 1e9
        print(f"{n_files} files, {data_gb:.1f} GB" + (f", generated in {gen_s:.0f} s" if gen_s else ""))
        load = os.getloadavg()[0]
        secs, peak_tree, peak_one, child = run_measured([str(tree), str(out), json.dumps(pcfg)])
        counts = json.loads(child.strip().splitlines()[-1])
        result = {
            "files": n_files, "mean_frames": round(data_gb * 1e9 / n_files / 48),
            "data_gb": round(data_gb, 2),
            "generate_s": None if gen_s is None else round(gen_s, 1),
            "preprocess_s": round(secs, 1), "files_per_s": round(n_files / secs, 1),
            "peak_rss_gb_tree": round(peak_tree, 3), "peak_rss_gb_single_process": round(peak_one, 3),
            "cpu_s": round(counts["cpu_s"], 1),
            "cpu_s_per_core": round(counts["cpu_s"] / (os.cpu_count() or 1), 1),
            "skipped": counts["skipped"], "workers": pcfg["workers"], "scheduler": pcfg["scheduler"],
            "cpus": os.cpu_count(), "loadavg_1min_before": round(load, 2),
            "output_mb": round((out / "benchmark.h5").stat().st_size / 1e6, 1),
            "target": f"< {TARGET_S:.0f} s and < {TARGET_GB:.0f} GB",
            "pass": secs < TARGET_S and peak_tree < TARGET_GB,
            "scaled": frames != a.frames,
        }
        for k, v in result.items():
            print(f"{k:>28}: {v}")
        write_json(ROOT / "reports" / "bench" / "datacos.json", result)
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if not a.keep:
            shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    main()
