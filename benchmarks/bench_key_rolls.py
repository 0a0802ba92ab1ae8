"""Benchmark: soft key rolls (`model.bag.key_rolls`, `key_sharpness`) at inference time.

The trained bag encoder's weights are copied into encoders that roll each song to its best key
signature only (key_rolls 1) or to its n best with softmax(sharpness x score) mixing weights,
and each is measured on the validation and test splits: MAP and MR1, plain and with the tuned
query expansion (reports/threshold.json), each MAP with its standard error bootstrapped over
works (the queries of one work are not independent). Songs whose key signature is ambiguous
(two signatures a fifth apart share 6 of 7 notes) are the ones the hard roll loses. Needs a
trained model (`dvc repro train`); writes reports/bench/key_rolls.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from coverid.core import paths
from coverid.core.config import load_params
from coverid.core.io import write_json
from coverid.eval.expansion import expansion_of
from coverid.eval.metrics import map_standard_error

OUT = Path("reports/bench/key_rolls.json")


def with_rolls(trained: Any, model_cfg: dict[str, Any], rolls: int, sharpness: float) -> Any:
    """A copy of the trained bag encoder that mixes `rolls` key signatures at inference."""
    from coverid.model.encoders import build_encoder

    cfg = {**model_cfg, "bag": {**model_cfg["bag"], "key_rolls": rolls,
                                "key_sharpness": sharpness}}
    enc = build_encoder(cfg, tuple(trained.input_shape[1:]))
    for layer in trained.layers:
        if layer.weights:
            enc.get_layer(layer.name).set_weights(layer.get_weights())
    return enc


def measure(emb: np.ndarray, work_id: np.ndarray, k: int, alpha: float, chunk: int) -> dict[str, float]:
    """MAP (with its work-bootstrap standard error) and MR1, plain and with query expansion."""
    from coverid.eval.expansion import augment
    from coverid.eval.metrics import query_stats_from_embeddings

    out: dict[str, float] = {}
    for suffix, e in [("", emb)] + ([("_qe", augment(emb, k, alpha, chunk))] if k else []):
        stats = query_stats_from_embeddings(e, work_id, chunk_size=chunk)
        out[f"map{suffix}"] = float(stats["ap"].mean())
        out[f"map{suffix}_se"] = map_standard_error(stats["ap"], np.asarray(work_id)[stats["query"]])
        out[f"mr1{suffix}"] = float(stats["rank1"].mean())
    return out


def main() -> None:
    """Print and record validation and test retrieval for each key-roll setting."""
    from coverid.data.splits import load_split
    from coverid.model.embedder import Embedder, load_embedder

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rolls", type=int, default=2, help="key signatures mixed (n > 1)")
    ap.add_argument("--sharpness", type=float, nargs="+", default=[50, 100, 200, 500, 1000])
    args = ap.parse_args()
    params = load_params()
    if params["model"]["arch"] != "bag":
        raise SystemExit("bench_key_rolls: needs model.arch: bag")
    tuned = expansion_of(json.loads((paths.REPORTS / "threshold.json").read_text()))
    k, alpha = int(tuned["k"]), float(tuned["alpha"])
    trained = load_embedder(paths.MODEL_DIR)
    splits = {name: load_split(params, name) for name in ("val", "test")}
    settings = [(1, 0.0)] + [(args.rolls, s) for s in args.sharpness]
    rows: list[dict[str, Any]] = []
    for rolls, sharpness in settings:
        enc = with_rolls(trained.encoder, params["model"], rolls, sharpness)
        emb = Embedder(enc, trained.config)
        row: dict[str, Any] = {"key_rolls": rolls, "key_sharpness": sharpness}
        for name, fs in splits.items():
            row[name] = measure(emb.embed(fs.features), fs.work_id, k, alpha,
                                int(params["evaluate"]["chunk_size"]))
        rows.append(row)
        v, t = row["val"], row["test"]
        print(f"rolls {rolls} sharpness {sharpness:6g}: val MAP {v['map']:.4f} MR1 {v['mr1']:.2f}"
              f" (QE {v.get('map_qe', float('nan')):.4f})  test MAP {t['map']:.4f} "
              f"+- {t['map_se']:.3f} MR1 {t['mr1']:.2f} (QE {t.get('map_qe', float('nan')):.4f} "
              f"+- {t.get('map_qe_se', float('nan')):.3f} MR1 {t.get('mr1_qe', float('nan')):.2f})")
    write_json(OUT, {"expansion": {"k": k, "alpha": alpha}, "settings": rows})


if __name__ == "__main__":
    main()
