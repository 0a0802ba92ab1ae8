"""The model registry: version tags and description, the champion alias and who moves it,
the CLI's default model and `coverid models`."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import repo_params

from coverid.core.config import to_plain
from coverid.core.errors import CoveridError
from coverid.model import registry
from coverid.model.registry import TAG, should_promote

mlflow = pytest.importorskip("mlflow")

T = lambda **kw: {f"{TAG}{k}": v for k, v in kw.items()}  # noqa: E731


def test_should_promote_only_a_better_map_on_the_same_test_split():
    new = T(test_map="0.8000", test_set="abc")
    assert should_promote(new, None) == (True, "there is no champion yet")
    assert should_promote(new, T(test_map="0.7000", test_set="abc"))[0]
    assert not should_promote(new, T(test_map="0.8000", test_set="abc"))[0]  # a tie keeps it
    ok, why = should_promote(new, T(test_map="0.9000", test_set="abc"))
    assert not ok and why == "test MAP 0.8000 does not beat the champion's 0.9000"
    # Another test split: MAPs do not compare, the workspace run's data are the reference.
    assert should_promote(new, T(test_map="0.9000", test_set="xyz")) == (
        True, "the champion was tested on another test split")
    assert should_promote(new, T(test_set="abc")) == (True, "the champion has no test MAP")
    assert should_promote(T(test_set="abc"), None) == (False, "the version has no test MAP")


def test_test_set_key_ignores_order_and_sees_membership():
    a = registry.test_set_key(np.array(["P_2", "P_1"]))
    assert a == registry.test_set_key(np.array(["P_1", "P_2"]))
    assert a != registry.test_set_key(np.array(["P_1", "P_3"]))


def test_description_reads_the_tags():
    tags = T(arch="bag", loss="triplet", embedding_dim="512", val_map="0.7850", commit="0123456789",
             dvc_exp="workspace")
    assert registry.description(tags) == (
        "bag/triplet encoder, 512-d embedding; val MAP 0.7850. Commit 01234567, DVC experiment "
        "workspace.")
    tags.update(T(test_map="0.7870", test_map_se="0.0260", test_queries="300",
                  test_map_plain="0.7250"))
    assert "; test MAP 0.7870 +- 0.0260 (300 queries, 0.7250 without query expansion)." in (
        registry.description(tags))


@pytest.fixture
def params(tmp_path, monkeypatch):
    """The repo's params on a fresh tracking database of its own (the registry starts empty)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    p = repo_params()
    p["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", p["mlflow"]["tracking_uri"])
    return p


def _register(params, val_map: float) -> tuple[str, str]:
    """A registered version made by a (fake) training run: its run id and version."""
    from coverid.core.tracking import stage_run

    with stage_run("train", params) as run:
        pass
    client = mlflow.MlflowClient()
    name = params["mlflow"]["registered_model"]
    try:
        client.create_registered_model(name)
    except mlflow.exceptions.MlflowException:
        pass
    v = client.create_model_version(name, f"runs:/{run.info.run_id}/encoder", run.info.run_id)
    config = {"arch": "bag", "loss": "triplet", "embedding_dim": 512}
    registry.tag_version(params, v.version,
                         registry.train_tags(params, config, {"best_val_map": val_map}, "f" * 12))
    return run.info.run_id, str(v.version)


def _evaluated(params, run_id: str, test_map: float, test_set: str = "abc") -> tuple[str, dict]:
    version = registry.version_of_run(params, run_id)
    metrics = {"map": test_map, "map_se": 0.02, "map_plain": test_map - 0.05, "n_queries": 300}
    return version, registry.tag_version(params, version, registry.test_tags(metrics, test_set))


def test_versions_are_tagged_described_and_the_champion_moves_only_when_beaten(params, monkeypatch):
    run1, v1 = _register(params, 0.75)
    version, tags = _evaluated(params, run1, 0.70)
    assert version == v1
    got = mlflow.MlflowClient().get_model_version(params["mlflow"]["registered_model"], v1)
    assert got.tags[f"{TAG}arch"] == "bag" and got.tags[f"{TAG}loss"] == "triplet"
    assert got.tags[f"{TAG}val_map"] == "0.7500" and got.tags[f"{TAG}test_map"] == "0.7000"
    assert got.tags[f"{TAG}dvc_exp"] == "workspace" and got.tags[f"{TAG}commit"]
    assert got.description.startswith("bag/triplet encoder, 512-d embedding; val MAP 0.7500; test MAP")
    assert registry.maybe_promote(params, v1, tags)  # no champion yet
    assert str(registry.champion(params).version) == v1

    # A worse version, even from the workspace, leaves the alias where it is.
    run2, v2 = _register(params, 0.5)
    assert not registry.maybe_promote(params, v2, _evaluated(params, run2, 0.40)[1])
    assert str(registry.champion(params).version) == v1
    # A better one from a `dvc exp run` does not move it either.
    run3, v3 = _register(params, 0.9)
    _, tags3 = _evaluated(params, run3, 0.90)
    monkeypatch.setenv("DVC_EXP_NAME", "exp-bce")
    assert not registry.maybe_promote(params, v3, tags3)
    assert str(registry.champion(params).version) == v1
    # Back in the workspace, the better version becomes the champion.
    monkeypatch.delenv("DVC_EXP_NAME")
    assert registry.maybe_promote(params, v3, tags3)
    assert str(registry.champion(params).version) == v3
    # auto_promote off: only `coverid models promote` moves it.
    params["mlflow"]["auto_promote"] = False
    run4, v4 = _register(params, 0.95)
    assert not registry.maybe_promote(params, v4, _evaluated(params, run4, 0.95)[1])
    rows = registry.list_versions(params)
    assert [r["version"] for r in rows] == [v4, v3, v2, v1]
    assert rows[1]["aliases"] == "champion" and rows[1]["test_map"] == "0.9000"


def test_cli_models_list_promote_and_default_model(params, tmp_path, capsys):
    import yaml

    from coverid.cli import main

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(to_plain(params)))
    assert registry.default_model() == "data/models/encoder"  # no database yet
    run1, v1 = _register(params, 0.75)
    _evaluated(params, run1, 0.70)
    assert registry.default_model() == "data/models/encoder"  # no champion yet
    assert main(["models", "promote", v1]) == 0
    assert capsys.readouterr().out.strip() == f"models:/coverid-encoder@champion -> version {v1}"
    assert registry.default_model() == "models:/coverid-encoder@champion"
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["version", "aliases", "arch", "loss", "val_map", "test_map",
                              "test_map_se", "dvc_exp", "commit"]
    assert out[1].split()[:6] == [v1, "champion", "bag", "triplet", "0.7500", "0.7000"]
    assert main(["models", "promote", "99"]) == 1
    assert "models:/coverid-encoder/99: no such version" in capsys.readouterr().err


def test_registry_off_is_one_line(params):
    params["mlflow"]["registered_model"] = None
    with pytest.raises(CoveridError, match="mlflow.registered_model is null"):
        registry.list_versions(params)
    assert registry.champion(params) is None

