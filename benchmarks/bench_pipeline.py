"""Benchmark: the pipeline part of `make run` from a fresh clone, and whether it reproduces.

Clones this repository's HEAD into a temp folder, runs `dvc repro` there with this
environment's tools (the install is `make venv`'s business, timed apart), then reads each
stage's reports/timings/<stage>.json and checks that `dvc status` is clean and that dvc.lock
and every DVC metrics file equal the committed ones. Prints the figures and writes
reports/bench/pipeline.json. Takes as long as the pipeline (about 8 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OUT = ROOT / "reports/bench/pipeline.json"
STAGES = ("download", "preprocess", "validate", "train", "tune", "baseline", "evaluate")


def run(cmd: list[str], cwd: Path) -> str:
    """Run a command (this environment's tools first on PATH); its stdout, or exit on failure."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return out.stdout


def main() -> None:
    """Clone, reproduce, time and compare."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    args = ap.parse_args()
    clone = Path(tempfile.mkdtemp(prefix="coverid-clone-"))
    run(["git", "clone", "-q", str(ROOT), str(clone)], ROOT)
    t0 = time.perf_counter()
    log = run([str(BIN / "dvc"), "repro"], clone)
    total = time.perf_counter() - t0
    ran = [line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")]
    seconds = {s: json.loads((clone / f"reports/timings/{s}.json").read_text())["wall_seconds"]
               for s in ran}
    tracked = ["dvc.lock", *(str(p.relative_to(clone)) for p in (clone / "reports").glob("*.json"))]
    changed = [line[3:] for line in run(["git", "status", "--porcelain", *tracked], clone).splitlines()]
    result = {"commit": run(["git", "rev-parse", "HEAD"], clone).strip(), "cpu_count": os.cpu_count(),
              "pipeline_seconds": round(total, 1), "stages_run": ran,
              "stage_seconds": seconds, "skipped": [s for s in STAGES if s not in ran],
              "dvc_status_clean": "up to date" in run([str(BIN / "dvc"), "status"], clone),
              "lock_and_metrics_changed": changed}
    print(json.dumps(result, indent=2))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    if args.keep:
        print(clone)
    else:
        subprocess.run(["rm", "-rf", str(clone)])


if __name__ == "__main__":
    main()
