"""DVC stage `train`: fit the encoder (one per feature of a fused input, joined) on the train
split (validation MAP on val) ->
data/models/encoder, reports/train.json, the training curve; one MLflow run with the model."""

from __future__ import annotations

import mlflow

from coverid.core import paths
from coverid.core.config import load_params
from coverid.core.io import write_json
from coverid.core.stage import record_timings, stage_main
from coverid.core.tracking import log_numbers, stage_run
from coverid.data.splits import load_dataset
from coverid.model.registry import tag_version, train_tags


def main() -> None:
    """Train, save the model dir, write the reports, log everything to one MLflow run."""
    params = load_params()
    # TensorFlow loads with these: only once params.yaml has passed its checks
    from coverid.model.embedder import fingerprint, log_mlflow_model, save_embedder
    from coverid.train.devices import setup_devices
    from coverid.train.fit import embedder_config, resume_run_id, split_sets, write_curve
    from coverid.train.fusion import fit_fused, fused_report, part_checkpoints

    fs, splits = load_dataset(params)  # the extra corpus' train and val works too
    train_fs, val_fs = split_sets(fs, splits)
    parts = fs.parts()  # one encoder per stacked feature (preprocess.fusion)
    run_id = resume_run_id(params["train"], part_checkpoints(paths.CHECKPOINTS, parts, parts[0]))
    with stage_run("train", params, run_id=run_id) as run:
        setup = setup_devices(params["train"])
        mlflow.log_dict(setup.describe(), "devices.json")
        mlflow.set_tags({"coverid.devices": ",".join(setup.gpus or setup.cpus),
                         "coverid.strategy": setup.kind})
        # per-epoch metrics: plain names for the first feature's encoder, <feature>_... for the others
        result = fit_fused(params, train_fs, val_fs, paths.CHECKPOINTS, setup, run.info.run_id,
                           on_epoch=lambda part, e, m: mlflow.log_metrics(
                               {(k if part == parts[0] else f"{part}_{k}"): v for k, v in m.items()},
                               step=e))
        config = embedder_config(params, fs, result.encoder)
        save_embedder(paths.MODEL_DIR, result.encoder, config, result.head)
        model_key = fingerprint(paths.MODEL_DIR)
        mlflow.set_tag("coverid.model", model_key)
        metrics, timings = fused_report(result, len(train_fs), len(val_fs))
        write_json(paths.REPORTS / "train.json", metrics)
        record_timings(timings)
        first = result.parts[parts[0]].state
        curves = write_curve(first.history, paths.PLOTS, first.best_epoch,
                             f"{config['arch']}/{config['loss']} ({config['feature']}): loss on train, "
                             "MAP on the val split",
                             {p: r.state.history for p, r in result.parts.items() if p != parts[0]})
        log_numbers({**metrics, **timings})
        for path in curves:
            mlflow.log_artifact(str(path), "plots")
        info = log_mlflow_model(paths.MODEL_DIR, params["mlflow"]["registered_model"])
        if info.registered_model_version:
            tag_version(params, str(info.registered_model_version),
                        train_tags(params, config, metrics, model_key))


if __name__ == "__main__":
    stage_main(main)
