"""Benchmark: the HPCP model fused with a model of the predominant melody's pitch classes.

The pipeline's HPCP model (`--model`; of a fused model, its first encoder) hears a mix whose
chords dominate its chroma, and it all but never matches a solo version to an accompanied one
(bench_holdout_pairs.py). This takes `preprocess.feature: melody` (coverid.features.extract.
compute_melody) for every song of the pipeline's corpora (the processed files' own when
`preprocess.fusion` holds melody, else extracted once under --scratch), trains the
params.yaml model on it as the pipeline trains on HPCP, and ranks val, the test split and the
real-melody hold-out with the two unit-norm embeddings concatenated, the melody one weighted
by w: squared distance = d_hpcp^2 + w^2 d_melody^2. w and the query expansion are picked on
val. Writes reports/bench/fusion.json with Qmax's figures (reports/baseline*.json) beside.

`--dims 256` also whitens each model's full embedding to 256 dims (fitted on the train songs,
as the pipeline's projection), so that the fused embedding has 512; `--joint 512` whitens the
joined embedding instead (as model.fusion_dim does in the pipeline). `--melody-set key=value`
trains the melody model with other settings than the HPCP one (e.g. model.bag.patch=13), so
that its own settings can be picked on val (the pipeline trains both with params.yaml's).

    .venv/bin/python benchmarks/bench_fusion.py [--model data/models/encoder] [--weights 0.5 1 1.5]
        [--dims 256] [--joint 512] [--melody-set model.bag.patch=13 ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from bench_holdout import rank  # noqa: E402
from bench_holdout_pairs import melody_rows, method_breakdown  # noqa: E402
from bench_projection import Precomputed  # noqa: E402

from coverid.core import paths  # noqa: E402
from coverid.core.config import load_params, parse_overrides, with_overrides  # noqa: E402
from coverid.core.io import read_json, write_json  # noqa: E402

OUT = Path("reports/bench/fusion.json")
SPLITS = ("train", "val", "test", "holdout")


def fuse(hpcp: np.ndarray, melody: np.ndarray, w: float | None) -> np.ndarray:
    """[e_hpcp, w e_melody] / sqrt(1 + w^2) (unit norm); w 0: HPCP alone; None: melody alone."""
    if w is None:
        return melody
    if w == 0:
        return hpcp
    return np.concatenate([hpcp, w * melody], axis=1) / np.sqrt(1 + w * w)


def melody_params(params: dict, scratch: Path, extract: bool = True) -> dict:
    """params reading melody features from scratch (extracted there once, from the pipeline's
    raw audio, with the pipeline's splits, unless `extract` is False)."""
    from coverid.core.skips import SkipLog
    from coverid.data.sources import features_for_source
    from coverid.data.splits import extra_params, extra_splits_file
    from coverid.data.store import write_features

    p = with_overrides(params, {"preprocess.feature": "melody", "preprocess.fusion": [],
                                "data.processed_dir": str(scratch)})
    scratch.mkdir(parents=True, exist_ok=True)
    for ours, theirs in ((paths.splits_file(p), paths.splits_file(params)),
                         (extra_splits_file(p), extra_splits_file(params))):
        shutil.copyfile(theirs, ours)
    for corpus in (p, extra_params(p)) if extract else ():
        if corpus is not None and not paths.processed_file(corpus).exists():
            write_features(paths.processed_file(corpus), features_for_source(corpus, SkipLog()))
    return p


def main() -> None:
    """Extract, train the melody model, fuse with the HPCP model at each weight; record."""
    from coverid.data.splits import HOLDOUT, load_dataset, split_mask
    from coverid.model.embedder import Embedder, load_embedder
    from coverid.model.encoders import fused_parts
    from coverid.train.fit import fit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("data/models/encoder"), help="the HPCP model")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.5])
    ap.add_argument("--dims", type=int, nargs="*", default=[],
                    help="also whiten each model to this many dims before fusing")
    ap.add_argument("--joint", type=int, nargs="*", default=[],
                    help="also whiten the fused embedding to this many dims (fitted on the train songs)")
    ap.add_argument("--melody-set", action="append", default=[],
                    help="melody model overrides, key=YAML value")
    ap.add_argument("--scratch", type=Path, default=Path("data/bench/fusion"))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    params = load_params()
    fs, splits = load_dataset(params)
    hp_fs = fs.part(fs.parts()[0])  # the pipeline's input may be fused already (preprocess.fusion)
    mp = melody_params(params, args.scratch, extract="melody" not in fs.parts())
    mp = with_overrides(mp, parse_overrides(args.melody_set))
    mel_fs = fs.part("melody") if "melody" in fs.parts() else load_dataset(mp)[0]
    if not np.array_equal(hp_fs.perf_id, mel_fs.perf_id):
        raise SystemExit(f"{args.scratch}: the melody features are not the pipeline's songs (delete it)")
    hp = {n: hp_fs.take(split_mask(hp_fs.work_id, splits, n)) for n in SPLITS}
    mel = {n: mel_fs.take(split_mask(mel_fs.work_id, splits, n)) for n in SPLITS}
    t0 = time.perf_counter()
    result = fit(mp, mel["train"], mel["val"])
    train_seconds = round(time.perf_counter() - t0, 1)
    melody_model = Embedder(result.encoder, {"metric": "euclidean"})
    hpcp_model = load_embedder(args.model)
    parts = fused_parts(hpcp_model.encoder)  # a fused pipeline model: its first feature's encoder
    if parts:
        hpcp_model = Embedder(parts[fs.parts()[0]], {"metric": hpcp_model.metric})
    if hpcp_model.metric != "euclidean":
        raise SystemExit("bench_fusion fuses distance embeddings (triplet, contrastive)")
    shipped = {n: (hpcp_model.embed(hp[n].features), melody_model.embed(mel[n].features))
               for n in SPLITS}
    baselines = {"test": read_json(paths.REPORTS / "baseline.json", "baseline report"),
                 HOLDOUT: read_json(paths.REPORTS / "baseline_holdout.json", "baseline report")}
    rows_meta = melody_rows(params, hp[HOLDOUT])
    runs: list[dict[str, Any]] = []
    variants = [(None, shipped)] + [(d, rewhitened((hpcp_model.encoder, result.encoder), (hp, mel), d,
                                                   params["model"]["projection_shrinkage"],
                                                   params["model"]["projection_power"]))
                                    for d in args.dims]
    for dims, emb in variants:
        runs += [fused_row(emb, w, dims, hp, params, baselines, rows_meta)
                 for w in [0.0, *args.weights, None]]
    for joint in args.joint:
        runs += [fused_row(shipped, w, None, hp, params, baselines, rows_meta, joint)
                 for w in args.weights]
    best = max((r for r in runs if r["melody_weight"] not in (None, 0.0) and r["per_model_dims"] is None
                and r["joint_dims"] is None),
               key=lambda r: r["expansion"]["val_map_plain"])
    write_json(args.out, {
        "seed": params["seed"], "hpcp_model": str(args.model), "melody_set": args.melody_set,
        "melody_train_seconds": train_seconds,
        "melody_best_val_map": result.state.best_val_map, "picked_on_val": best["melody_weight"],
        "qmax": {s: round(b["qmax"]["map"], 4) for s, b in baselines.items()}, "runs": runs})


def rewhitened(encoders: tuple, sets: tuple[dict, dict], dim: int, shrinkage: float,
               power: float) -> dict:
    """Each model's full embedding, power-normalised, whitened to `dim` (fitted on its train
    songs, as the train stage fits it): {split: (a, b)}."""
    from coverid.model.embedder import Embedder
    from coverid.model.encoders import full_embedding
    from coverid.model.whiten import power_normalise, project, whitening

    out: dict[str, list] = {n: [] for n in SPLITS}
    for encoder, split_sets in zip(encoders, sets):
        full = Embedder(full_embedding(encoder), {"metric": "euclidean"})
        w, b = whitening(power_normalise(full.embed(split_sets["train"].features), power), dim, shrinkage)
        for n in out:
            out[n].append(project(power_normalise(full.embed(split_sets[n].features), power), w, b))
    return {n: tuple(v) for n, v in out.items()}


def fused_row(emb: dict, w: float | None, dims: int | None, hp: dict, params: dict,
              baselines: dict, rows_meta: list, joint: int | None = None) -> dict[str, Any]:
    """MAP of the fusion at weight w (expansion picked on val) and its hold-out pair MRRs;
    `joint`: the fused embedding whitened to this many dims first (fitted on train)."""
    from coverid.data.splits import HOLDOUT
    from coverid.eval.distance import pairwise
    from coverid.eval.evaluate import baseline_queries
    from coverid.eval.expansion import select_expansion

    chunk, grid = int(params["evaluate"]["chunk_size"]), params["tune"]["expansion"]
    e = {n: fuse(a, b, w) for n, (a, b) in emb.items()}
    if joint is not None:
        from coverid.model.whiten import project, whitening

        kernel, bias = whitening(e["train"], joint, params["model"]["projection_shrinkage"])
        e = {n: project(x, kernel, bias) for n, x in e.items()}
    qe = select_expansion(e["val"], hp["val"].work_id, "euclidean", None, grid, chunk)
    row: dict[str, Any] = {"melody_weight": w, "per_model_dims": dims, "joint_dims": joint,
                           "dims": int(e["val"].shape[1]), "expansion": qe}
    for split in ("test", HOLDOUT):
        songs = hp[split]
        queries = baseline_queries(params, songs.work_id, baselines[split])
        row[split] = rank(Precomputed({id(songs.features): e[split]}), songs, qe, chunk, queries)
    row["holdout_pairs_mrr"] = {k: v["mrr"] for k, v in method_breakdown(
        pairwise(e[HOLDOUT], e[HOLDOUT]), hp[HOLDOUT], rows_meta).items()}
    print(f"w={w} dims={row['dims']}: val {qe['val_map_plain']:.4f} (expanded {qe['val_map']:.4f}) "
          f"| test {row['test']} | hold-out {row[HOLDOUT]}", flush=True)
    return row


if __name__ == "__main__":
    main()
