"""DVC stage `evaluate`: the trained encoder on the test split at the tuned threshold, and on
the extra corpus' hold-out (data.extra) when there is one; writes reports/metrics.json,
reports/metrics_holdout.json, reports/eval/embeddings.npz, reports/plots/eval/* and the
model-vs-baselines tables reports/compare.json, compare_holdout.json and compare.md (with
seconds per query).
Its MLflow run is nested under the model's training run, which also gets the test metrics
and plots; the registered version gets its test MAP and may become the champion."""

from __future__ import annotations

import mlflow

from coverid.core import paths
from coverid.core.config import load_params
from coverid.core.stage import record_timings, stage_main
from coverid.core.tracking import find_train_run, log_numbers, stage_run
from coverid.data.splits import HOLDOUT, has_holdout, load_split
from coverid.eval.evaluate import (
    baseline_seconds,
    evaluate,
    holdout_metrics,
    log_to_training_run,
    read_report,
    split_prefix,
    write_report,
)
from coverid.model.registry import (
    maybe_promote,
    tag_version,
    test_set_key,
    test_tags,
    version_of_run,
)

PLOTS = paths.PLOTS / "eval"


def main() -> None:
    """Evaluate the encoder in data/models/encoder with reports/threshold.json."""
    params = load_params()
    # TensorFlow loads with this: only once params.yaml has passed its checks
    from coverid.model.embedder import load_embedder

    test = load_split(params, "test")
    embedder = load_embedder(paths.MODEL_DIR)
    threshold = read_report(paths.REPORTS / "threshold.json")
    timings = read_report(paths.timings_file("baseline"), required=False) or {}
    report = evaluate(params, embedder, test, threshold,
                      read_report(paths.REPORTS / "baseline.json", required=False),
                      baseline_seconds(timings, ""))
    holdout, names = None, (f"Test split ({params['data']['source']})", "")
    if has_holdout(params):
        songs = load_split(params, HOLDOUT)
        holdout = evaluate(params, embedder, songs, threshold,
                           read_report(paths.REPORTS / "baseline_holdout.json", required=False),
                           baseline_seconds(timings, split_prefix(HOLDOUT)))
        extra = params["data"]["extra"]["source"]
        names = (names[0], f"Hold-out ({extra}: test works of data.extra, never seen in training)")
    write_report(report, test, paths.REPORTS, embedder.config, holdout, names)
    metrics = {**report.evaluation.metrics, **holdout_metrics(holdout)}
    record_timings({"seconds_per_query": report.evaluation.seconds_per_query})
    train_run_id = find_train_run(params, embedder.fingerprint)
    with stage_run("evaluate", params, parent_run_id=train_run_id):
        log_numbers(metrics)
        log_numbers({"seconds_per_query": report.evaluation.seconds_per_query})
        mlflow.set_tag("coverid.metric", threshold["metric"])
        mlflow.log_artifacts(str(PLOTS), "plots/eval")
        mlflow.log_artifact(str(paths.REPORTS / "compare.md"))
        mlflow.log_dict(report.rows, "compare.json")
        if train_run_id:
            mlflow.set_tag("coverid.train_run_id", train_run_id)
    log_to_training_run(train_run_id, metrics, PLOTS)
    version = version_of_run(params, train_run_id)
    if version:
        tags = tag_version(params, version, test_tags(metrics, test_set_key(test.perf_id)))
        maybe_promote(params, version, tags)


if __name__ == "__main__":
    stage_main(main)
