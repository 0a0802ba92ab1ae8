"""MLflow set-up: one experiment, runs tagged so the runs of one `dvc repro` are tied together."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coverid.core.config import flatten, params_hash

log = logging.getLogger(__name__)

ARTIFACT_ROOT = Path("mlartifacts")  # new experiments keep their artifacts here, not in ./mlruns


def git_commit() -> str:
    """The current git commit, or 'unknown' outside a repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def pipeline_tags(params: dict[str, Any]) -> dict[str, str]:
    """Tags shared by every run of one pipeline execution (same commit, experiment, params)."""
    commit = git_commit()
    phash = params_hash(params)
    return {
        "coverid.git_commit": commit,
        "coverid.dvc_exp": os.environ.get("DVC_EXP_NAME", "workspace"),
        "coverid.params_hash": phash,
        "coverid.pipeline": f"{commit[:8]}-{phash}",
    }


# The experiment's tags: a model-training experiment (the UI opens on its runs table, not on
# the GenAI trace pages) with a description a person reads first.
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    "mlflow.note.content": (
        "coverid: cover song identification (params.yaml, dvc.yaml). One run per pipeline "
        "stage, named `<stage> <arch>/<loss>` plus the DVC experiment's name. The evaluate run "
        "is nested under its training run; the training run also holds the threshold search "
        "(tune/trials table and plot) and the test plots. Compare runs by params.train.loss "
        "and params.model.arch with the metrics best_val_map, test_map and test_map_plain. "
        "Registered models: coverid-encoder, alias `champion` = the best version so far."),
}


def run_name(stage: str, params: dict[str, Any], what: str | None = None) -> str:
    """What a stage's run is called in the UI: `train bag/triplet (exp-name)`; `what` replaces
    the arch/loss part for stages that use no model (the baselines)."""
    name = f"{stage} {what or params['model']['arch'] + '/' + params['train']['loss']}"
    exp = os.environ.get("DVC_EXP_NAME")
    return f"{name} ({exp})" if exp else name


def ui_url(params: dict[str, Any], port: int, host: str = "127.0.0.1") -> str:
    """The MLflow UI address of the project experiment's runs table, in the UI's "Model
    training" view (its sidebar has Models and the registry; without the query it opens in
    the GenAI view); the experiment is created when missing."""
    return f"http://{host}:{port}/#/experiments/{setup(params)}/runs?workflowType=machine_learning"


def setup(params: dict[str, Any]) -> str:
    """Point MLflow at the configured backend and experiment (tagged as EXPERIMENT_TAGS);
    return the experiment id."""
    import mlflow

    cfg = params["mlflow"]
    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", cfg["tracking_uri"]))
    name = cfg["experiment"]
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        # Artifacts go to a folder of our own, never the deprecated ./mlruns file store.
        root = ARTIFACT_ROOT.resolve()
        exp_id = mlflow.create_experiment(name, artifact_location=root.as_uri())
    else:
        exp_id = exp.experiment_id
    have = {} if exp is None else exp.tags
    client = mlflow.MlflowClient()
    for key, value in EXPERIMENT_TAGS.items():
        if have.get(key) != value:
            client.set_experiment_tag(exp_id, key, value)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


@contextlib.contextmanager
def stage_run(stage: str, params: dict[str, Any], run_id: str | None = None,
              nested: bool = False, parent_run_id: str | None = None,
              what: str | None = None) -> Iterator[Any]:
    """Start (or resume, given `run_id`) an MLflow run for a stage, tagged and with all params;
    `parent_run_id` nests it under a run that may have finished already."""
    import mlflow

    setup(params)
    tags = {**pipeline_tags(params), "coverid.stage": stage}
    if parent_run_id:
        # the UI nests by this tag; start_run(parent_run_id=...) needs an active parent
        tags["mlflow.parentRunId"] = parent_run_id
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name(stage, params, what),
                          nested=nested, tags=None if run_id else tags) as run:
        if run_id is None:
            mlflow.log_params(flatten(params))
        log.info("MLflow run %s (%s)", run.info.run_id, stage)
        yield run


def log_numbers(values: dict[str, Any], prefix: str = "") -> None:
    """Log the numeric entries of `values` as metrics of the active run (None and text skipped)."""
    import mlflow

    mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in values.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})


def find_train_run(params: dict[str, Any], model_fingerprint: str | None) -> str | None:
    """The newest training run that produced the model with this fingerprint, if tracked."""
    import mlflow

    if not model_fingerprint:
        return None
    exp_id = setup(params)
    runs = mlflow.MlflowClient().search_runs(
        [exp_id], f"tags.`coverid.stage` = 'train' and tags.`coverid.model` = '{model_fingerprint}'",
        order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        log.warning("no tracked training run for model %s", model_fingerprint)
        return None
    return runs[0].info.run_id
