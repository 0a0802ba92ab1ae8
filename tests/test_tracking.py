from pathlib import Path

import pytest

from coverid.core.config import load_params

mlflow = pytest.importorskip("mlflow")


@pytest.fixture
def params(tmp_path, monkeypatch):
    p = load_params(Path(__file__).parents[1] / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("DVC_EXP_NAME", "exp-test")
    return p


def test_stage_runs_are_tagged_and_log_params(params, tmp_path):
    from coverid.core.tracking import stage_run

    with stage_run("train", params) as run:
        mlflow.log_metric("map", 0.5)
        mlflow.log_text("hello", "note.txt")
    with stage_run("evaluate", params):
        pass
    client = mlflow.MlflowClient()
    got = client.get_run(run.info.run_id)
    assert got.data.params["train.loss"] == params["train"]["loss"]
    assert got.data.params["data.source"] == "synth"
    assert got.data.tags["coverid.stage"] == "train"
    assert got.data.tags["coverid.dvc_exp"] == "exp-test"
    runs = mlflow.search_runs(filter_string=f"tags.`coverid.pipeline` = '{got.data.tags['coverid.pipeline']}'")
    assert sorted(runs["tags.coverid.stage"]) == ["evaluate", "train"]
    # artifacts go to ./mlartifacts, never the deprecated ./mlruns file store
    assert (tmp_path / "mlartifacts").is_dir() and not (tmp_path / "mlruns").exists()
    assert (tmp_path / "mlflow.db").exists()


def test_resuming_a_run_does_not_relog_params(params):
    from coverid.core.tracking import stage_run

    with stage_run("train", params) as run:
        pass
    with stage_run("tune", params, run_id=run.info.run_id) as again:
        assert again.info.run_id == run.info.run_id
        with stage_run("trial", params, nested=True) as child:
            mlflow.log_metric("f1", 0.7)
    child_run = mlflow.MlflowClient().get_run(child.info.run_id)
    assert child_run.data.tags["mlflow.parentRunId"] == run.info.run_id


def test_runs_are_named_and_the_experiment_is_described(params):
    from coverid.core.tracking import EXPERIMENT_TAGS, setup, stage_run, ui_url

    with stage_run("train", params) as run:
        pass
    got = mlflow.MlflowClient().get_run(run.info.run_id)
    arch, loss = params["model"]["arch"], params["train"]["loss"]
    assert got.info.run_name == f"train {arch}/{loss} (exp-test)"
    exp = mlflow.get_experiment(got.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.tags["mlflow.note.content"] == EXPERIMENT_TAGS["mlflow.note.content"]
    assert setup(params) == exp.experiment_id  # set up again: the same experiment, tags kept
    assert ui_url(params, 5000) == (f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs"
                                    "?workflowType=machine_learning")


def test_run_name_without_a_dvc_experiment(params, monkeypatch):
    from coverid.core.tracking import run_name

    monkeypatch.delenv("DVC_EXP_NAME")
    assert run_name("evaluate", params) == (
        f"evaluate {params['model']['arch']}/{params['train']['loss']}")
