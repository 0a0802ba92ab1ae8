"""DVC stage `tune`: search the verification threshold (and distance) on validation pairs
with Optuna; trials go to MLflow nested under the training run; writes
reports/threshold.json."""

from __future__ import annotations

from coverid.core import paths
from coverid.core.config import load_params
from coverid.core.io import write_json
from coverid.core.stage import stage_main
from coverid.data.splits import load_split


def main() -> None:
    """Tune on the validation split of the processed features with the trained encoder."""
    params = load_params()
    from coverid.eval.tune import tune_threshold  # TensorFlow: only once the params are good
    from coverid.model.embedder import load_embedder

    val = load_split(params, "val")
    embedder = load_embedder(paths.MODEL_DIR)
    result = tune_threshold(params, embedder, val.features, val.work_id)
    write_json(paths.REPORTS / "threshold.json", result)


if __name__ == "__main__":
    stage_main(main)
