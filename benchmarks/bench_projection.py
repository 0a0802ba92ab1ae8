"""Benchmark: what the compact embedding costs in MAP (full bag embedding vs its projections).

Trains the params.yaml model once (`--set key=value` overrides; model.projection whiten, so the
loss trains the full embedding and the whitening is fitted after training) on the processed
corpus's train split (and data.extra's), early-stopped on val, or ranks an already trained
`--model DIR`; then ranks val, the test split and the hold-out with the same trained weights
seen three ways: the full embedding, the fitted projection (whiten) and a seeded random
orthogonal one (random). MAP plain and with the query expansion picked on val (as the tune
stage does). Writes reports/bench/projection.json.

    .venv/bin/python benchmarks/bench_projection.py [--model DIR] [--set model.projection_dim=256]
        [--grid]   # also: whitening power x shrinkage -> reports/bench/projection_grid.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


from coverid.core.config import load_params, parse_overrides, with_overrides  # noqa: E402
from coverid.core.io import write_json  # noqa: E402

OUT = Path("reports/bench/projection.json")
GRID_OUT = Path("reports/bench/projection_grid.json")
POWERS, SHRINKAGES = (0.5, 0.75, 1.0), (0.0, 0.03, 0.1, 0.3)


class Precomputed:
    """An embedder of embeddings already computed, by the id of the features array they belong
    to, mapped by `fn` (the grid's projections; None: as they are)."""

    metric, head = "euclidean", None

    def __init__(self, by_array: dict, fn: Any = None) -> None:
        self.by_array, self.fn = by_array, fn

    def embed(self, x: Any) -> Any:
        e = self.by_array[id(x)]
        return e if self.fn is None else self.fn(e)


def grid(encoder: Any, train: Any, sets: dict, dim: int, params: dict) -> list[dict]:
    """val/test/hold-out MAP of PCA whitening x variance^-power/2 with shrinkage, same model."""
    import numpy as np

    from coverid.model.embedder import Embedder
    from coverid.model.encoders import full_embedding

    full_model = Embedder(full_embedding(encoder), {"metric": "euclidean"})
    x = full_model.embed(train.features).astype(np.float64)
    full = {id(fs.features): full_model.embed(fs.features) for fs in sets.values()}
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s[:dim] ** 2 / len(x)
    rows = []
    for power in POWERS:
        for shrink in SHRINKAGES:
            w = vt[:dim].T / (var + shrink * var.mean()) ** (power / 2)

            def fn(e, w=w):
                y = (e - mean) @ w
                return y / np.linalg.norm(y, axis=1, keepdims=True)
            row = rank(Precomputed(full, fn), sets, params["tune"]["expansion"],
                       int(params["evaluate"]["chunk_size"]))
            rows.append({"power": power, "shrinkage": shrink, **row})
            print(power, shrink, {k: v for k, v in row.items() if k.endswith(("map", "expanded"))},
                  flush=True)
    return rows


def rank(embedder: Any, sets: dict, grid: dict, chunk: int) -> dict[str, Any]:
    """Plain and expanded MAP of each split (expansion picked on val)."""
    from coverid.eval.expansion import augment, select_expansion
    from coverid.eval.metrics import retrieval_metrics_from_embeddings

    emb = {name: embedder.embed(fs.features) for name, fs in sets.items()}
    qe = select_expansion(emb["val"], sets["val"].work_id, embedder.metric, embedder.head, grid, chunk)
    row: dict[str, Any] = {"dims": int(emb["val"].shape[1]), "expansion": qe}
    for name, e in emb.items():
        wid = sets[name].work_id
        row[f"{name}_map"] = round(retrieval_metrics_from_embeddings(
            e, wid, embedder.metric, embedder.head, chunk_size=chunk)["map"], 4)
        if qe["k"]:
            row[f"{name}_map_expanded"] = round(retrieval_metrics_from_embeddings(
                augment(e, qe["k"], qe["alpha"], chunk), wid, chunk_size=chunk)["map"], 4)
    return row


def main() -> None:
    """Train (or load) once; rank full, whitened and random-projected embeddings; record."""
    from coverid.data.splits import HOLDOUT, load_dataset, split_mask
    from coverid.model.embedder import Embedder, load_embedder, metric_for
    from coverid.model.encoders import (
        full_embedding,
        fused_parts,
        projection_matrix,
        projection_of,
        set_projection,
    )
    from coverid.train.fit import fit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None,
                    help="a model dir trained with a whiten projection (e.g. data/models/encoder)")
    ap.add_argument("--set", action="append", default=[], help="overrides, key=YAML value")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--grid", action="store_true", help="also the whitening power x shrinkage grid")
    args = ap.parse_args()
    overrides = parse_overrides(args.set)
    params = with_overrides(load_params(), overrides)
    fs, splits = load_dataset(params)
    fs = fs.part(fs.parts()[0])  # the projection of one encoder: preprocess.feature's
    sets = {name: fs.take(split_mask(fs.work_id, splits, name)) for name in ("train", "val", "test", HOLDOUT)}
    t0 = time.perf_counter()
    if args.model is None:
        result = fit(params, sets["train"], sets["val"])
        encoder, metric = result.encoder, metric_for(params["train"]["loss"])
    else:
        loaded = load_embedder(args.model)
        encoder, metric = loaded.encoder, loaded.metric
        encoder = fused_parts(encoder).get(fs.feature, encoder)  # a fused model: that encoder
    if metric == "bce":
        raise SystemExit("bench_projection ranks distance embeddings (triplet, contrastive)")
    seconds = round(time.perf_counter() - t0, 1)
    train = sets.pop("train")
    qe_grid, chunk = params["tune"]["expansion"], int(params["evaluate"]["chunk_size"])
    runs = {"full": rank(Embedder(full_embedding(encoder), {"metric": metric}), sets, qe_grid, chunk),
            "whiten": rank(Embedder(encoder, {"metric": metric}), sets, qe_grid, chunk)}
    proj = projection_of(encoder)
    d_in, dim = (int(v) for v in proj.kernel.shape)
    if args.grid:
        write_json(GRID_OUT, {"seed": params["seed"], "model": str(args.model) if args.model else None,
                              "projection_dim": dim, "runs": grid(encoder, train, sets, dim, params)})
    set_projection(encoder, projection_matrix(d_in, dim, int(params["seed"])), proj.bias.numpy() * 0)
    runs["random"] = rank(Embedder(encoder, {"metric": metric}), sets, qe_grid, chunk)
    for name in ("whiten", "random"):
        runs[name]["loss_vs_full"] = {k: round(runs["full"][k] - v, 4) for k, v in runs[name].items()
                                      if k in runs["full"] and k.endswith(("_map", "_expanded"))}
    for name, row in runs.items():
        print(name, {k: v for k, v in row.items() if k != "expansion"}, flush=True)
    write_json(args.out, {"seed": params["seed"], "overrides": overrides,
                          "model": str(args.model) if args.model else None,
                          "projection_dim": dim, "shrinkage": params["model"]["projection_shrinkage"],
                          "train_seconds": seconds, "runs": runs})


if __name__ == "__main__":
    main()
