"""Benchmark: a compact (<= --dim) embedding of the pipeline's fused model, against its joined one.

The pipeline's fused model (`--model`, preprocess.fusion) joins each feature's encoder, itself
whitened to model.projection_dim (512), into a 1,024-d embedding. This measures ways to bring
the joined embedding down to --dim dims, each fitted on the train songs only, with the same
trained weights:
- joint: PCA whitening of the joined (projected) embedding (model.fusion_dim's);
- joint_full: PCA whitening of the joined *full* embeddings (each encoder's 16,384-d bag counts,
  unit norm, weighted as in the joined one), so no information is dropped before the joint PCA;
- per_part: each encoder's full embedding whitened to --dim / n_parts dims, then joined;
- lda: joint_full's top `--lda-pca` whitened components, then the within-work covariance of the
  train songs whitened (WCCN) and the --dim directions that best separate the train works kept;
each at several eigenvalue shrinkages. Rows: val MAP plain and with the query expansion picked
on val (as the tune stage does), test and hold-out MAP on every query and on Qmax's queries.
The variant with the best expanded val MAP is `picked_on_val`; the hold-out is never used to
choose. Writes reports/bench/compact.json.

    .venv/bin/python benchmarks/bench_compact.py [--model data/models/encoder] [--dim 512]
        [--shrinkages 0.03 0.1 0.3 1]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from bench_holdout import rank  # noqa: E402
from bench_projection import Precomputed  # noqa: E402

from coverid.core import paths  # noqa: E402
from coverid.core.config import load_params  # noqa: E402
from coverid.core.io import read_json, write_json  # noqa: E402

OUT = Path("reports/bench/compact.json")
SPLITS = ("train", "val", "test", "holdout")


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def joined(parts: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Unit-norm parts weighted by w_i / sqrt(sum w^2) and concatenated (as fuse_encoders)."""
    norm = float(np.sqrt(np.sum(np.square(weights))))
    return np.concatenate([unit(p) * (w / norm) for p, w in zip(parts, weights)], axis=1)


def lda_projection(x: np.ndarray, labels: np.ndarray, dim: int, pca: int,
                   shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """(W, b): PCA whitening to `pca` dims, then the within-work covariance (of works with two or
    more train songs) whitened with shrinkage, then the top `dim` axes of the between-work
    scatter of the whitened work means; x W + b."""
    from coverid.model.whiten import whitening

    w1, b1 = whitening(x, pca, 0.0)
    y = x.astype(np.float64) @ w1 + b1
    works, inv = np.unique(labels, return_inverse=True)
    means = np.zeros((len(works), y.shape[1]))
    np.add.at(means, inv, y)
    counts = np.bincount(inv)
    means /= counts[:, None]
    multi = counts[inv] > 1
    r = y[multi] - means[inv[multi]]
    sw = r.T @ r / max(len(r) - int((counts > 1).sum()), 1)
    lam, v = np.linalg.eigh(sw)
    lam = np.maximum(lam, 0) + shrinkage * lam.mean()
    w2 = v / np.sqrt(lam)
    z = (means - means.mean(0)) @ w2
    _, _, vt = np.linalg.svd(z * np.sqrt(counts)[:, None], full_matrices=False)
    k = min(dim, vt.shape[0])
    w = w1.astype(np.float64) @ w2 @ vt[:k].T
    return w.astype(np.float32), (b1.astype(np.float64) @ w2 @ vt[:k].T).astype(np.float32)


def variants(full: dict, proj: dict, weights: list[float], labels: np.ndarray, dim: int,
             shrinkages: list[float], lda_pca: int) -> list[tuple[dict, dict]]:
    """(description, {split: embedding}) of each way to `dim` dims, fitted on the train songs
    (`labels`: their works, for the LDA)."""
    from coverid.model.whiten import project, whitening

    n_parts = len(weights)
    joined_proj = {s: joined(proj[s], weights) for s in SPLITS}
    joined_full = {s: joined(full[s], weights) for s in SPLITS}
    out: list[tuple[dict, dict]] = [({"method": "joined", "dims": int(joined_proj["val"].shape[1])},
                                     joined_proj),
                                    ({"method": "joined_full", "dims": int(joined_full["val"].shape[1])},
                                     joined_full)]
    for s in shrinkages:
        for method, src in (("joint", joined_proj), ("joint_full", joined_full)):
            k, b = whitening(src["train"], dim, s)
            out.append(({"method": method, "shrinkage": s, "dims": dim},
                        {n: project(src[n], k, b) for n in SPLITS}))
        per = {n: [] for n in SPLITS}
        for i in range(n_parts):
            k, b = whitening(full["train"][i], dim // n_parts, s)
            for n in SPLITS:
                per[n].append(project(full[n][i], k, b))
        out.append(({"method": "per_part", "shrinkage": s, "dims": dim},
                    {n: joined(per[n], weights) for n in SPLITS}))
        k, b = lda_projection(joined_full["train"], labels, dim, lda_pca, s)
        out.append(({"method": "lda", "shrinkage": s, "pca": lda_pca, "dims": int(k.shape[1])},
                    {n: project(joined_full[n], k, b) for n in SPLITS}))
    return out


def main() -> None:
    """Embed every split with each encoder (full and projected), rank each compact variant."""
    from coverid.data.splits import HOLDOUT, load_dataset, split_mask
    from coverid.eval.evaluate import baseline_queries
    from coverid.eval.expansion import select_expansion
    from coverid.model.embedder import Embedder, load_embedder
    from coverid.model.encoders import full_embedding, fused_parts
    from coverid.train.fusion import part_weights

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=paths.MODEL_DIR)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--shrinkages", type=float, nargs="+", default=[0.03, 0.1, 0.3, 1.0])
    ap.add_argument("--lda-pca", type=int, default=768, help="whitened dims before the LDA")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    params = load_params()
    fs, splits = load_dataset(params)
    model = load_embedder(args.model)
    parts = fused_parts(model.encoder)
    if not parts:
        raise SystemExit(f"{args.model}: not a fused model (preprocess.fusion is empty)")
    names = fs.parts()
    sets = {n: fs.take(split_mask(fs.work_id, splits, n)) for n in SPLITS}
    t0 = time.perf_counter()
    full: dict[str, list] = {n: [] for n in SPLITS}
    proj: dict[str, list] = {n: [] for n in SPLITS}
    for name in names:
        full_model = Embedder(full_embedding(parts[name]), {"metric": "euclidean"})
        proj_model = Embedder(parts[name], {"metric": "euclidean"})
        for n in SPLITS:
            x = sets[n].part(name).features
            full[n].append(full_model.embed(x))
            proj[n].append(proj_model.embed(x))
    embed_seconds = round(time.perf_counter() - t0, 1)
    chunk, grid = int(params["evaluate"]["chunk_size"]), params["tune"]["expansion"]
    baselines = {"test": read_json(paths.REPORTS / "baseline.json", "baseline report"),
                 HOLDOUT: read_json(paths.REPORTS / "baseline_holdout.json", "baseline report")}
    rows = []
    for desc, emb in variants(full, proj, part_weights(params, len(names)), sets["train"].work_id,
                              args.dim, args.shrinkages, args.lda_pca):
        qe = select_expansion(emb["val"], sets["val"].work_id, "euclidean", None, grid, chunk)
        row: dict[str, Any] = {**desc, "expansion": qe}
        for split in ("test", HOLDOUT):
            queries = baseline_queries(params, sets[split].work_id, baselines[split])
            row[split] = rank(Precomputed({id(sets[split].features): emb[split]}), sets[split], qe,
                              chunk, queries)
        print(f"{desc}: val {qe['val_map_plain']:.4f} (expanded {qe['val_map']:.4f}) "
              f"| test {row['test']} | hold-out {row[HOLDOUT]}", flush=True)
        rows.append(row)
    compact = [r for r in rows if r["method"] not in ("joined", "joined_full")]
    best = max(compact, key=lambda r: (r["expansion"]["val_map"], r["expansion"]["val_map_plain"]))
    write_json(args.out, {
        "seed": params["seed"], "model": str(args.model), "dim": args.dim, "embed_seconds": embed_seconds,
        "qmax": {s: round(b["qmax"]["map"], 4) for s, b in baselines.items()},
        "picked_on_val": {k: best.get(k) for k in ("method", "shrinkage", "dims")}, "runs": rows})


if __name__ == "__main__":
    main()
