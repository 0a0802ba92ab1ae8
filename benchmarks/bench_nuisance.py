"""Benchmark: which version differences the model fails on, against Qmax.

Renders `--works` new works (never in any corpus) x 2 versions per aspect of
`coverid.data.synth.ASPECTS` (key, tempo, structure, arrangement, noise, content), the two
versions differing in that aspect only, plus "all" (two ordinary versions). Per aspect, the
model at data/models/encoder and Qmax rank the 2 x works songs; their MAPs say which kind of
difference costs each method. Writes reports/bench/nuisance.json.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from coverid.core import paths  # noqa: E402
from coverid.core.config import load_params  # noqa: E402
from coverid.core.io import write_json  # noqa: E402

OUT = Path("reports/bench/nuisance.json")


def model_map(embedder, songs: list[np.ndarray], works: np.ndarray, chunk: int) -> float:
    """MAP of the model's embeddings of `songs` ((T, 12) each) among themselves."""
    from coverid.eval.metrics import retrieval_metrics_from_embeddings
    from coverid.features.transform import to_model_input
    from coverid.search.identify import feature_config

    fc = feature_config(embedder)  # the settings the model was trained with
    x = np.stack([to_model_input(s, fc["spect_len"], fc["max_frames"], fc["tile"])
                  for s in songs])
    emb = embedder.embed(x)
    return retrieval_metrics_from_embeddings(emb, works, embedder.metric, embedder.head,
                                             chunk_size=chunk)["map"]


def qmax_map(params: dict, songs: list[np.ndarray], works: np.ndarray) -> float:
    """MAP of Qmax on the same songs, as the baseline stage computes it (same features)."""
    from coverid.eval.baselines import distance_rows, to_chroma
    from coverid.eval.metrics import retrieval_metrics
    from coverid.features.transform import to_model_input

    pre, bcfg = params["preprocess"], params["baseline"]
    x = np.stack([to_model_input(s, pre["spect_len"], pre["max_frames"], False) for s in songs])
    chroma = to_chroma(x, int(bcfg["downsample"]))
    dist, _ = distance_rows("qmax", chroma, np.arange(len(songs)), bcfg,
                            workers=int(bcfg["workers"]))
    return retrieval_metrics(dist, works)["map"]


def main() -> None:
    """Print and record per-aspect MAPs of the model and Qmax."""
    from coverid.data.synth import nuisance_songs
    from coverid.model.embedder import load_embedder

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--works", type=int, default=20, help="works per aspect (2 versions each)")
    ap.add_argument("--no-qmax", action="store_true", help="skip the (slow) Qmax side")
    args = ap.parse_args()
    params = load_params()
    embedder = load_embedder(paths.MODEL_DIR)
    t0 = time.perf_counter()
    sets = nuisance_songs(params["data"]["synth"], params["preprocess"], args.works,
                          int(params["seed"]), int(params["preprocess"]["workers"]))
    out: dict = {"works_per_aspect": args.works, "model": embedder.config.get("arch"),
                 "loss": embedder.config.get("loss"), "map": {}}
    for aspect, (songs, works) in sets.items():
        row = {"model": round(model_map(embedder, songs, works, int(params["evaluate"]["chunk_size"])), 4)}
        if not args.no_qmax:
            row["qmax"] = round(qmax_map(params, songs, works), 4)
        out["map"][aspect] = row
        print(f"{aspect:>12}: " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(OUT, out)


if __name__ == "__main__":
    main()
