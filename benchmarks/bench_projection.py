"""Benchmark: the learned projection's cost in MAP (full bag embedding vs projected).

Trains the params.yaml model (same seed, same training budget) once per `--dims` entry
(`model.projection_dim`; "null" = the full embedding) on the processed corpus's train split,
early-stopped on val, and ranks the val and test splits (plain MAP, and with the query
expansion picked on val as the tune stage does). Writes reports/bench/projection.json with
each run's dims, val/test MAP, training and total seconds; `--save DIR` also saves each
projected model as DIR/<dims> (a model dir, for bench_index.py --model).

    .venv/bin/python benchmarks/bench_projection.py [--dims null 512] [--epochs 50] [--save DIR]
        [--full-model DIR] [--set model.projection_trainable=true]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

from bench_losses import split_features  # noqa: E402

from coverid.core.config import load_params, params_hash, to_plain, with_overrides  # noqa: E402
from coverid.core.io import write_json  # noqa: E402

OUT = Path("reports/bench/projection.json")


def before_projection(params: dict) -> dict:
    """`params` without the model.projection_* keys (a model trained before they existed)."""
    plain = to_plain(params)
    plain["model"] = {k: v for k, v in plain["model"].items() if not k.startswith("projection_")}
    return plain


def train_and_rank(params: dict, train_fs, val_fs, test, save: Path | None,
                   trained: Path | None = None) -> dict[str, Any]:
    """Train once (or load the `trained` model dir of these params); dims, val and test MAP
    (plain and expanded), seconds."""
    from coverid.eval.expansion import augment, select_expansion
    from coverid.eval.metrics import query_stats_from_embeddings, summarize
    from coverid.model.embedder import Embedder, load_embedder, metric_for, save_embedder
    from coverid.train.fit import FitResult, TrainState, embedder_config, fit

    t0 = time.perf_counter()
    if trained is None:
        result = fit(params, train_fs, val_fs)
    else:
        loaded = load_embedder(trained)
        if loaded.config["params_hash"] not in (params_hash(params), params_hash(before_projection(params))):
            raise SystemExit(f"{trained} was not trained with these params")
        result = FitResult(loaded.encoder, loaded.head, TrainState(best_val_map=float("nan")), {})
    seconds = time.perf_counter() - t0
    loss = params["train"]["loss"]
    embedder = Embedder(result.encoder, {"metric": metric_for(loss)}, result.head)
    chunk = int(params["evaluate"]["chunk_size"])

    def ranked(emb, work_id) -> float:
        stats = query_stats_from_embeddings(emb, work_id, embedder.metric, embedder.head,
                                            chunk_size=chunk)
        return float(summarize(stats, len(emb) - 1)["map"])

    val_emb, test_emb = embedder.embed(val_fs.features), embedder.embed(test.features)
    qe = select_expansion(val_emb, val_fs.work_id, embedder.metric, embedder.head,
                          params["tune"]["expansion"], chunk)
    row = {"projection_dim": params["model"]["projection_dim"], "dims": embedder.dim,
           "val_map": ranked(val_emb, val_fs.work_id), "test_map": ranked(test_emb, test.work_id),
           "best_val_map": result.state.best_val_map, "best_epoch": result.state.best_epoch,
           "epochs_run": result.state.epoch, "expansion": qe,
           "test_map_expanded": ranked(augment(test_emb, qe["k"], qe["alpha"], chunk), test.work_id)
           if qe["k"] else None,
           "train_seconds": round(result.state.seconds, 1), "seconds": round(seconds, 1),
           "trained_model": str(trained) if trained is not None else None,
           "load_avg": [round(v, 2) for v in os.getloadavg()]}
    if save is not None:
        out = save / str(params["model"]["projection_dim"])
        save_embedder(out, result.encoder, embedder_config(params, train_fs, result.encoder))
        row["model_dir"] = str(out)
    return row


def main() -> None:
    """Train full and projected with the same seed and budget; print and record the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", nargs="+", default=["null", "512"],
                    help="model.projection_dim values (YAML: null = off)")
    ap.add_argument("--epochs", type=int, default=None, help="train.epochs (default: params.yaml)")
    ap.add_argument("--set", action="append", default=[], help="more overrides, key=YAML value")
    ap.add_argument("--save", type=Path, default=None, help="save each trained model under DIR")
    ap.add_argument("--full-model", type=Path, default=None,
                    help="the full (null) run: rank this model dir trained with the same params "
                         "(e.g. data/models/encoder trained with projection_dim: null) instead of training")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    params = load_params()
    base = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    if args.epochs is not None:
        base["train.epochs"] = args.epochs
    train_fs, val_fs, test = split_features(params)
    runs = []
    for dims in args.dims:
        p = with_overrides(params, {**base, "model.projection_dim": yaml.safe_load(dims)})
        trained = args.full_model if p["model"]["projection_dim"] is None else None
        row = train_and_rank(p, train_fs, val_fs, test, None if trained else args.save, trained)
        runs.append(row)
        print(f"projection_dim {dims}: {row['dims']} dims, val MAP {row['val_map']:.4f}, test MAP "
              f"{row['test_map']:.4f}, {row['seconds']} s", flush=True)
        write_json(args.out, {"seed": params["seed"], "overrides": base, "runs": runs})
    full = next((r for r in runs if r["projection_dim"] is None), None)
    if full is not None:
        for r in runs:
            if r is not full:
                r["test_map_loss"] = round(full["test_map"] - r["test_map"], 4)
                r["val_map_loss"] = round(full["val_map"] - r["val_map"], 4)
        write_json(args.out, {"seed": params["seed"], "overrides": base, "runs": runs})


if __name__ == "__main__":
    main()
