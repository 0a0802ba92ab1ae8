"""Training throughput (pairs per second) of the seed, bag and move encoders on this machine.

Random (23, spect_len) features, the params.yaml train section (loss, batch size, augmentation)
with each arch; one warm-up epoch (tracing) is not timed. A triplet batch of P x K songs counts
as P x K / 2 pairs, so pair and triplet runs compare by the songs embedded per second.
Prints the figures and writes reports/bench/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from coverid.core.config import load_params, with_overrides  # noqa: E402
from coverid.core.io import write_json  # noqa: E402

OUT = Path("reports/bench/train.json")


def measure(params: dict, arch: str, loss: str, steps: int, pitch_pool: str | None = None,
            n_songs: int = 120) -> dict:
    """Seconds per step and pairs per second for one arch and loss (and move pitch pooling)."""
    from coverid.train.devices import setup_devices
    from coverid.train.fit import Trainer, seed_everything
    from coverid.train.pairs import batch_items, encode_labels, make_dataset

    params = with_overrides(params, {"model.arch": arch, "train.loss": loss, "train.steps_per_epoch": steps,
                                     **({"model.move.pitch_pool": pitch_pool} if pitch_pool else {})})
    name = arch if arch != "move" else f"move/{params['model']['move']['pitch_pool']}"
    train = params["train"]
    length = params["preprocess"]["spect_len"]
    rng = np.random.default_rng(0)
    x = rng.random((n_songs, 23, length)).astype(np.float32)
    labels = encode_labels(np.repeat(np.arange(n_songs // 4), 4).astype(str))
    seed_everything(params["seed"])
    trainer = Trainer(params, (23, length), setup_devices(train))
    batches = iter(trainer.strategy.experimental_distribute_dataset(
        make_dataset(x, labels, train, params["seed"], range(2))))
    trainer.run_epoch(batches, 1)  # trace
    for _ in range(steps - 1):
        next(batches)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    trainer.run_epoch(batches, steps)
    secs = (time.perf_counter() - t0) / steps
    pairs = batch_items(train) / 2
    return {"arch": name, "loss": loss, "songs_per_batch": batch_items(train),
            "seconds_per_step": round(secs, 4), "pairs_per_second": round(pairs / secs, 2),
            "load_avg_1m": round((load0 + os.getloadavg()[0]) / 2, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    params = load_params(args.params)
    runs = [measure(params, arch, loss, args.steps, pool)
            for arch, loss, pool in (("seed", "contrastive", None), ("bag", "contrastive", None),
                                     ("bag", "triplet", None), ("move", "contrastive", None),
                                     ("move", "triplet", None), ("move", "triplet", "early"),
                                     ("move", "triplet", "late"), ("move", "triplet", "gram"))
            if pool is None or pool != params["model"]["move"]["pitch_pool"]]
    result = {"cpu_count": os.cpu_count(), "machine": platform.machine(),
              "spect_len": params["preprocess"]["spect_len"], "runs": runs}
    for r in runs:
        print(f"{r['arch']:>10} {r['loss']:<12} {r['seconds_per_step']:.3f} s/step "
              f"{r['pairs_per_second']:8.1f} pairs/s  (load {r['load_avg_1m']})")
    write_json(OUT, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
