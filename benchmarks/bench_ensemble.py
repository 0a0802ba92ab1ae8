"""Benchmark: an ensemble of fused models trained with other seeds, at equal total dims or more.

Each model (`--models`: the pipeline's data/models/encoder and, e.g., bench_holdout.py
--set seed=43 --save-model DIR's DIR/works100) embeds every split with each of its encoders'
full bags, power-normalised as its projection does; each bag is whitened to d dims (fitted on
the train songs, model.projection_shrinkage, as the train stage fits it). For each d of --dims,
every model alone (its parts joined: 2 d dims) and all models together (every part of every
model joined, weights equal: 2 d x models dims) are ranked with the query expansion picked on
val: so 2 models at 256 dims a part are set against 1 model at 512 (the same 1,024 dims), and
2 models at 128 against 1 at 256 (512 dims). Writes reports/bench/ensemble.json (--out).

    .venv/bin/python benchmarks/bench_ensemble.py --models data/models/encoder \
        data/bench/models/seed43/works100 [--dims 512 256 128]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from bench_compact import SPLITS, joined, scored  # noqa: E402

from coverid.core import paths  # noqa: E402
from coverid.core.config import load_params  # noqa: E402
from coverid.core.io import read_json, write_json  # noqa: E402

OUT = Path("reports/bench/ensemble.json")


def full_bags(model_dir: Path, sets: dict, names: list[str]) -> list[dict[str, np.ndarray]]:
    """Each part's power-normalised full bag of every split: [{split: (N, D)}] in `names` order."""
    from coverid.model.embedder import Embedder, load_embedder
    from coverid.model.encoders import full_embedding, fused_parts, projection_of
    from coverid.model.whiten import power_normalise

    parts = fused_parts(load_embedder(model_dir).encoder)
    if not parts:
        raise SystemExit(f"{model_dir}: not a fused model (preprocess.fusion is empty)")
    out = []
    for name in names:
        full = Embedder(full_embedding(parts[name]), {"metric": "euclidean"})
        power = projection_of(parts[name]).power
        out.append({n: power_normalise(full.embed(s.part(name).features), power) for n, s in sets.items()})
    return out


def whitened(bag: dict[str, np.ndarray], dim: int, shrinkage: float) -> dict[str, np.ndarray]:
    """One bag whitened to dim dims, fitted on its train songs."""
    from coverid.model.whiten import project, whitening

    kernel, bias = whitening(bag["train"], dim, shrinkage)
    return {n: project(x, kernel, bias) for n, x in bag.items()}


def main() -> None:
    """Embed with each model, whiten each part to each d, rank each model and the ensemble."""
    from coverid.data.splits import HOLDOUT, load_dataset, split_mask

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, nargs="+", required=True)
    ap.add_argument("--dims", type=int, nargs="+", default=[512, 256, 128], help="per part")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    params = load_params()
    fs, splits = load_dataset(params)
    sets = {n: fs.take(split_mask(fs.work_id, splits, n)) for n in SPLITS}
    bags = [full_bags(m, sets, fs.parts()) for m in args.models]
    shrinkage = params["model"]["projection_shrinkage"]
    baselines = {"test": read_json(paths.REPORTS / "baseline.json", "baseline report"),
                 HOLDOUT: read_json(paths.REPORTS / "baseline_holdout.json", "baseline report")}
    rows: list[dict[str, Any]] = []
    for dim in args.dims:
        per_model = [[whitened(b, dim, shrinkage) for b in model_bags] for model_bags in bags]
        groups = [[i] for i in range(len(bags))] + ([list(range(len(bags)))] if len(bags) > 1 else [])
        for group in groups:
            blocks = [part for i in group for part in per_model[i]]
            emb = {n: joined([b[n] for b in blocks], [1.0] * len(blocks)) for n in SPLITS}
            rows.append(scored({"models": [str(args.models[i]) for i in group], "dims_per_part": dim,
                                "dims": int(emb["val"].shape[1])}, emb, sets, params, baselines))
    write_json(args.out, {"seed": params["seed"], "shrinkage": shrinkage,
                          "qmax": {s: round(b["qmax"]["map"], 4) for s, b in baselines.items()},
                          "runs": rows})


if __name__ == "__main__":
    main()
