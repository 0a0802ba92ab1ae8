"""Benchmark: what a shorter training costs in MAP (the time budget of `make run`).

Trains the params.yaml model (seed 42) once per configuration given as `--config
"train.epochs=50,train.learning_rate=0.006"` (dotted keys, YAML values) on the processed
corpus's train split, early-stopped on val, and ranks the test split as the pipeline does:
plain and with the query expansion chosen on val. Prints and writes reports/bench/budget.json
with each configuration's training seconds, best epoch, val MAP and test MAP.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

from bench_losses import train_and_rank  # noqa: E402

from coverid.core import paths  # noqa: E402
from coverid.core.config import load_params  # noqa: E402
from coverid.core.io import write_json  # noqa: E402

OUT = Path("reports/bench/budget.json")


def override(params: dict, spec: str) -> dict:
    """A copy of params with each `dotted.key=value` of the comma-separated spec set."""
    p = copy.deepcopy(params)
    for item in filter(None, spec.split(",")):
        key, value = item.split("=", 1)
        *parents, leaf = key.strip().split(".")
        node = p
        for name in parents:
            node = node[name]
        if leaf not in node:
            raise SystemExit(f"unknown params key {key}")
        node[leaf] = yaml.safe_load(value)
    return p


def main() -> None:
    """Train and rank once per --config; print and record the figures."""
    from coverid.data.splits import read_splits, split_mask
    from coverid.data.store import read_features
    from coverid.train.fit import split_sets

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append", default=[], help="overrides, e.g. train.epochs=50")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    params = load_params()
    fs = read_features(paths.processed_file(params), params["preprocess"]["feature"])
    splits = read_splits(paths.splits_file(params))
    train_fs, val_fs = split_sets(fs, splits)
    test = fs.take(split_mask(fs.work_id, splits, "test"))
    runs = []
    for spec in args.config or [""]:
        p = override(params, spec)
        t0 = time.perf_counter()
        row = train_and_rank(p, p["train"]["loss"], int(p["seed"]), train_fs, val_fs, test, None)
        row = {"config": spec or "params.yaml", "seconds": round(time.perf_counter() - t0, 1), **row}
        runs.append(row)
        print(f"{row['config']}: {row['seconds']} s, val MAP {row['best_val_map']:.4f}, test MAP "
              f"{row['map']:.4f}, with query expansion {row['map_expanded']:.4f}", flush=True)
        write_json(args.out, {"runs": runs})


if __name__ == "__main__":
    main()
