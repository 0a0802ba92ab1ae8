"""Benchmark: what a shorter training costs in MAP (the time budget of `make run`).

Trains the params.yaml model (seed 42) once per configuration given as `--config
"train.epochs=50,train.losses.triplet.learning_rate=0.006"` (dotted keys, YAML values) on the processed
corpus's train split, early-stopped on val, and ranks the test split as the pipeline does:
plain and with the query expansion chosen on val. Prints and writes reports/bench/budget.json
with each configuration's training seconds, best epoch, val MAP and test MAP.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

from bench_losses import split_features, train_and_rank  # noqa: E402

from coverid.core.config import load_params, with_overrides  # noqa: E402
from coverid.core.io import write_json  # noqa: E402

OUT = Path("reports/bench/budget.json")


def overrides(spec: str) -> dict:
    """{"train.epochs": 50, ...} from "train.epochs=50,..." (YAML values)."""
    pairs = (item.split("=", 1) for item in filter(None, spec.split(",")))
    return {key.strip(): yaml.safe_load(value) for key, value in pairs}


def main() -> None:
    """Train and rank once per --config; print and record the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append", default=[], help="overrides, e.g. train.epochs=50")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    params = load_params()
    train_fs, val_fs, test = split_features(params)
    runs = []
    for spec in args.config or [""]:
        p = with_overrides(params, overrides(spec))
        t0 = time.perf_counter()
        row = train_and_rank(p, p["train"]["loss"], int(p["seed"]), train_fs, val_fs, test, None)
        row = {"config": spec or "params.yaml", "seconds": round(time.perf_counter() - t0, 1), **row}
        runs.append(row)
        print(f"{row['config']}: {row['seconds']} s, val MAP {row['best_val_map']:.4f}, test MAP "
              f"{row['map']:.4f}, with query expansion {row['map_expanded']:.4f}", flush=True)
        write_json(args.out, {"runs": runs})


if __name__ == "__main__":
    main()
