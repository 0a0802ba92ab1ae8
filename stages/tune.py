"""DVC stage `tune`: search the verification threshold (and distance) on validation pairs
with Optuna, and the query expansion; writes reports/threshold.json. The search goes to the
training run of the model as one table (tune/trials.json), one plot (tune/trials.png) and the
objective per trial as a metric history, not as one run per trial."""

from __future__ import annotations

import mlflow
from mlflow.entities import Metric

from coverid.core import paths
from coverid.core.config import load_params
from coverid.core.io import write_json
from coverid.core.stage import stage_main
from coverid.core.tracking import find_train_run, stage_run
from coverid.data.splits import load_split
from coverid.eval.plots import title, trials_figure
from coverid.eval.tune import tune_metrics, tune_threshold


def main() -> None:
    """Tune on the validation split of the processed features with the trained encoder."""
    params = load_params()
    # TensorFlow loads with these: only once params.yaml has passed its checks
    from coverid.model.embedder import load_embedder

    val = load_split(params, "val")
    embedder = load_embedder(paths.MODEL_DIR)
    objective = params["tune"]["objective"]
    result, trials = tune_threshold(params, embedder, val.features, val.work_id)
    parent = find_train_run(params, embedder.fingerprint)
    with stage_run("tune", params, run_id=parent) as run:
        mlflow.log_metrics(tune_metrics(result, objective))
        mlflow.MlflowClient().log_batch(run.info.run_id, metrics=[
            Metric(f"tune_trial_{objective}", v, 0, n) for n, v in zip(trials["trial"], trials[objective])])
        mlflow.set_tag("coverid.tune_metric", result["metric"])
        mlflow.set_tag("coverid.optuna_study", result["study_name"])
        mlflow.log_table(trials, "tune/trials.json")
        mlflow.log_figure(trials_figure(trials, objective, (result["metric"], result["threshold"]),
                                        title("Threshold search", "val", embedder.config)),
                          "tune/trials.png")
        mlflow.log_dict(result, "tune/threshold.json")
    write_json(paths.REPORTS / "threshold.json", result)


if __name__ == "__main__":
    stage_main(main)
