"""DVC stage `evaluate`: the trained encoder on the test split at the tuned threshold;
writes reports/metrics.json, reports/eval/embeddings.npz, reports/plots/eval/* and the
model-vs-baselines table reports/compare.json + reports/compare.md."""

from __future__ import annotations

from coverid.core import paths
from coverid.core.config import load_params
from coverid.core.stage import stage_main
from coverid.data.splits import load_split


def main() -> None:
    """Evaluate the encoder in data/models/encoder with reports/threshold.json."""
    params = load_params()
    from coverid.eval.evaluate import read_report, run_evaluation  # TensorFlow: only once the params are good
    from coverid.model.embedder import load_embedder

    test = load_split(params, "test")
    embedder = load_embedder(paths.MODEL_DIR)
    threshold = read_report(paths.REPORTS / "threshold.json")
    baseline = read_report(paths.REPORTS / "baseline.json", required=False)
    run_evaluation(params, embedder, test, threshold, baseline)


if __name__ == "__main__":
    stage_main(main)
