"""Benchmark: test MAP of each loss (contrastive, bce, triplet) against Qmax on the same songs.

Trains the params.yaml model once per loss with that loss's own settings (train.losses;
everything else as in params.yaml, `--seeds` training seeds each: small test splits make one
run noisy) on the processed corpus's train split, early-stopped on val, and ranks the test
split. Each model's MAP is taken on the queries the baseline stage used
(reports/baseline.json), so it compares with Qmax and DTW on the same songs. `--config
"train.epochs=20"` overrides params (dotted keys, YAML values) for every loss. Writes
reports/bench/losses.json with each run's test MAP (plain and with query expansion), best
val MAP and seconds (training and ranking).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from coverid.core import paths  # noqa: E402
from coverid.core.config import load_params, parse_overrides, with_overrides  # noqa: E402
from coverid.core.io import write_json  # noqa: E402

OUT = Path("reports/bench/losses.json")
LOSSES = ("contrastive", "bce", "triplet")


def train_and_rank(params: dict, loss: str, seed: int, train_fs, val_fs, test,
                   queries: np.ndarray | None) -> dict:
    """Train with `loss` and training seed `seed`; test MAP on all queries and on `queries`,
    without and with the query expansion picked on val as the tune stage does."""
    from coverid.eval.evaluate import on_queries
    from coverid.eval.expansion import augment, select_expansion
    from coverid.eval.metrics import query_stats_from_embeddings, summarize
    from coverid.model.embedder import Embedder, metric_for
    from coverid.train.fit import fit

    p = with_overrides(params, {"train.loss": loss, "seed": seed})
    t0 = time.perf_counter()
    result = fit(p, train_fs, val_fs)
    embedder = Embedder(result.encoder, {"metric": metric_for(loss)}, result.head)
    emb = embedder.embed(test.features)
    chunk = int(p["evaluate"]["chunk_size"])
    qe = select_expansion(embedder.embed(val_fs.features), val_fs.work_id, embedder.metric,
                          embedder.head, p["tune"]["expansion"], chunk)
    stats = query_stats_from_embeddings(emb, test.work_id, embedder.metric, embedder.head,
                                        chunk_size=chunk)
    expanded = stats if not qe["k"] else query_stats_from_embeddings(
        augment(emb, qe["k"], qe["alpha"], chunk), test.work_id, chunk_size=chunk)
    row = {"map": summarize(stats, len(emb) - 1)["map"], "best_val_map": result.state.best_val_map,
           "best_epoch": result.state.best_epoch, "epochs_run": result.state.epoch,
           "expansion": qe, "map_expanded": summarize(expanded, len(emb) - 1)["map"],
           "train_seconds": round(result.state.seconds, 1),
           "seconds": round(time.perf_counter() - t0, 1)}
    if loss == "bce" and p["model"]["projection_dim"] is not None:
        row["head_refit"] = head_refits(p, result.encoder, train_fs, val_fs, test, chunk)
    if queries is not None:
        row["map_on_baseline_queries"] = on_queries(stats, queries, len(emb) - 1, test.work_id)["map"]
        row["map_expanded_on_baseline_queries"] = on_queries(expanded, queries, len(emb) - 1,
                                                             test.work_id)["map"]
    return row


REFIT_C = (0.001, 0.01, 0.1, 1.0)


def head_refits(params: dict, encoder, train_fs, val_fs, test, chunk: int) -> list[dict]:
    """bce under a fixed projection: val and test MAP of the head refitted with each REFIT_C
    (train.losses.bce.refit_c picks one; the trained model's projection is kept)."""
    from coverid.eval.metrics import retrieval_metrics_from_embeddings
    from coverid.model.embedder import Embedder
    from coverid.model.whiten import fit_head

    embedder = Embedder(encoder, {"metric": "bce"})
    e = {name: embedder.embed(fs.features) for name, fs in (("train", train_fs), ("val", val_fs),
                                                            ("test", test))}
    bce, rows = params["train"]["losses"]["bce"], []
    for c in REFIT_C:
        head = fit_head(e["train"], train_fs.work_id, bce["refit_negatives"], int(params["seed"]), c)
        rows.append({"refit_c": c, **{f"{name}_map": round(retrieval_metrics_from_embeddings(
            e[name], fs.work_id, "bce", head, chunk_size=chunk)["map"], 4)
            for name, fs in (("val", val_fs), ("test", test))}})
    return rows


def split_features(params: dict) -> tuple:
    """(train, val, test) FeatureSets of the processed corpus."""
    from coverid.data.splits import read_splits, split_mask
    from coverid.data.store import read_features
    from coverid.train.fit import split_sets

    fs = read_features(paths.processed_file(params), params["preprocess"]["feature"])
    splits = read_splits(paths.splits_file(params))
    train_fs, val_fs = split_sets(fs, splits)
    return train_fs, val_fs, fs.take(split_mask(fs.work_id, splits, "test"))


def main() -> None:
    """Print and record each loss's test MAP next to the baselines'."""
    from coverid.eval.evaluate import baseline_queries, read_report

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
    ap.add_argument("--seeds", type=int, nargs="+", default=[42], help="training seeds")
    ap.add_argument("--config", default="", help="overrides for every loss, e.g. train.epochs=20")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    params = with_overrides(load_params(), parse_overrides(filter(None, args.config.split(","))))
    train_fs, val_fs, test = split_features(params)
    baseline = read_report(paths.REPORTS / "baseline.json", required=False) or {}
    queries = baseline_queries(load_params(), test.work_id, baseline)  # the pipeline's seed's
    out: dict = {"baseline": {m: r["map"] for m, r in baseline.items()}, "losses": {}}
    for loss in args.losses:
        runs = [train_and_rank(params, loss, s, train_fs, val_fs, test, queries)
                for s in args.seeds]
        key = "map_on_baseline_queries" if queries is not None else "map"
        maps = [r[key] for r in runs]
        qe = [r[key.replace("map", "map_expanded", 1)] for r in runs]
        out["losses"][loss] = {"settings": params["train"]["losses"][loss].to_dict(),
                               "seeds": args.seeds, "runs": runs, "mean_map": float(np.mean(maps)),
                               "mean_map_expanded": float(np.mean(qe)),
                               "mean_val_map": float(np.mean([r["best_val_map"] for r in runs])),
                               "mean_seconds": float(np.mean([r["seconds"] for r in runs]))}
        print(f"{loss:>12}: test MAP {np.mean(maps):.3f}, with query expansion {np.mean(qe):.3f} "
              f"(runs {', '.join(f'{m:.3f}/{e:.3f}' for m, e in zip(maps, qe))})  vs  "
              + ", ".join(f"{m} {v:.3f}" for m, v in out["baseline"].items()), flush=True)
        write_json(args.out, {**out, "config": args.config or "params.yaml"})


if __name__ == "__main__":
    main()
