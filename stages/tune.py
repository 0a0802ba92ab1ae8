"""DVC stage `tune`: search the verification threshold (and distance) on validation pairs
with Optuna, and the query expansion; writes reports/threshold.json. Trials go to MLflow as
runs nested under the training run of the model."""

from __future__ import annotations

import mlflow

from coverid.core import paths
from coverid.core.config import load_params
from coverid.core.io import write_json
from coverid.core.stage import stage_main
from coverid.core.tracking import find_train_run, pipeline_tags, stage_run
from coverid.data.splits import load_split
from coverid.eval.tune import TrialLogger, tune_metrics, tune_threshold


def main() -> None:
    """Tune on the validation split of the processed features with the trained encoder."""
    params = load_params()
    # TensorFlow loads with these: only once params.yaml has passed its checks
    from coverid.model.embedder import load_embedder

    val = load_split(params, "val")
    embedder = load_embedder(paths.MODEL_DIR)
    parent = find_train_run(params, embedder.fingerprint)
    with stage_run("tune", params, run_id=parent) as run:
        trials = TrialLogger(params["tune"]["objective"], run.info.experiment_id,
                             {**pipeline_tags(params), "coverid.stage": "tune-trial"})
        result = tune_threshold(params, embedder, val.features, val.work_id, [trials])
        mlflow.log_metrics(tune_metrics(result, params["tune"]["objective"]))
        mlflow.set_tag("coverid.tune_metric", result["metric"])
        mlflow.log_dict(result, "tune/threshold.json")
    write_json(paths.REPORTS / "threshold.json", result)


if __name__ == "__main__":
    stage_main(main)
