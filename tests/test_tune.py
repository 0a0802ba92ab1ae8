"""Threshold tuning: Optuna study on validation pairs, named and resumable; the trials as one table."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FakeEmbedder, make_feature_set

from coverid.eval.distance import paired
from coverid.eval.metrics import ThresholdScorer, sample_pairs, verification_metrics
from coverid.eval.tune import (
    candidate_metrics,
    optimise,
    pair_scorers,
    plateau_midpoint,
    study_name,
    tune_threshold,
)

optuna = pytest.importorskip("optuna")


@pytest.fixture
def params(tmp_path, project_params):
    p = project_params
    p["tune"].update(storage=f"sqlite:///{tmp_path}/optuna.db", n_trials=10, n_negatives=60)
    return p


def test_candidate_metrics():
    assert candidate_metrics("bce") == ["bce"]
    assert candidate_metrics("euclidean") == ["euclidean", "cosine"]
    assert candidate_metrics("cosine") == ["cosine", "euclidean"]


def test_study_name_says_model_and_changes_with_model_and_settings():
    cfg = {"study_name": "s", "objective": "f1", "n_negatives": 10}
    model = {"arch": "bag", "loss": "triplet"}
    a = study_name(cfg, 0, "aaaaaaaa1111", model)
    assert a.startswith("s-bag-triplet-aaaaaaaa-")
    assert study_name(cfg, 0, "aaaaaaaa1111", {"arch": "move", "loss": "bce"}).startswith(
        "s-move-bce-aaaaaaaa-")
    assert study_name(cfg, 0, "bbbbbbbb1111", model) != a
    other_objective = {**cfg, "objective": "balanced_accuracy"}
    assert study_name(other_objective, 0, "aaaaaaaa", model) != a
    assert study_name(cfg, 1, "aaaaaaaa", model) != a
    assert study_name({**cfg, "n_trials": 99}, 0, "aaaaaaaa", model) == a
    assert "-untracked-" in study_name(cfg, 0, None, model)


def test_plateau_midpoint_keeps_predictions():
    d = np.array([0.1, 0.2, 0.5, 0.9])
    y = np.array([1, 1, 0, 0])
    scorer = ThresholdScorer(d, y)
    assert plateau_midpoint(scorer, 0.3) == pytest.approx(0.35)
    assert plateau_midpoint(scorer, 0.2) == pytest.approx(0.35)
    assert scorer(0.35, "f1") == scorer(0.3, "f1") == 1.0
    assert plateau_midpoint(scorer, 5.0) == 5.0


def test_optimise_bce_head_and_resume(tmp_path):
    fs = make_feature_set(n_works=5, versions=3, n_noise=3, spect_len=10, rows=12)
    emb = FakeEmbedder(12 * 10).embed(fs.features)
    head = (np.ones(16, np.float32), -2.0)
    i, j, y = sample_pairs(fs.work_id, 40, seed=0)
    scorers = pair_scorers(emb, i, j, y, candidate_metrics("bce"), head)
    storage = f"sqlite:///{tmp_path}/o.db"
    study = optimise(scorers, "balanced_accuracy", 8, 0, "bce-study", storage)
    assert len(study.trials) == 8
    assert {t.user_attrs["metric"] for t in study.trials} == {"bce"}
    assert all(0.0 <= t.user_attrs["threshold"] <= 1.0 for t in study.trials)
    # Resuming with the same target adds nothing; a larger target adds the difference.
    assert len(optimise(scorers, "balanced_accuracy", 8, 0, "bce-study", storage).trials) == 8
    assert len(optimise(scorers, "balanced_accuracy", 11, 0, "bce-study", storage).trials) == 11


def test_tune_threshold_names_the_study_tables_the_trials_and_finds_a_good_threshold(params):
    fs = make_feature_set(n_works=6, versions=3, n_noise=4, spect_len=10, rows=12)
    embedder = FakeEmbedder(12 * 10, config={"params_hash": "feedbeef0000", "arch": "bag",
                                             "loss": "triplet"}, fingerprint="feedbeef0000")
    result, trials = tune_threshold(params, embedder, fs.features, fs.work_id)

    for key in ("threshold", "metric", "objective", "objective_value", "study_name", "storage",
                "n_trials"):
        assert key in result
    assert result["n_trials"] == 10 and result["objective"] == "f1"
    assert result["metric"] in ("euclidean", "cosine")
    assert result["study_name"].startswith("coverid-threshold-bag-triplet-feedbeef-")
    assert result["model"] == "feedbeef0000" and "mlflow_run_id" not in result
    # The reported value is what the threshold really scores on the validation pairs.
    emb = embedder.embed(fs.features)
    i, j, y = sample_pairs(fs.work_id, 60, params["seed"])
    d = paired(emb[i], emb[j], result["metric"])
    assert verification_metrics(d, y, result["threshold"])["f1"] == pytest.approx(
        result["objective_value"])
    assert result["objective_value"] > 0.8  # versions share a pattern: well separable

    # The trials as one table: every finished trial, its distance, threshold and f1.
    assert sorted(trials) == ["f1", "metric", "threshold", "trial"]
    assert trials["trial"] == list(range(10))
    best = int(np.argmax(trials["f1"]))
    assert trials["f1"][best] == pytest.approx(
        verification_metrics(paired(emb[i], emb[j], trials["metric"][best]), y,
                             trials["threshold"][best])["f1"])
    # The study names its objective and keeps the model and the best value in its attributes.
    study = optuna.load_study(study_name=result["study_name"], storage=params["tune"]["storage"])
    assert study.metric_names == ["f1"]
    attrs = study.user_attrs
    assert attrs["model"] == "feedbeef0000" and (attrs["arch"], attrs["loss"]) == ("bag", "triplet")
    assert attrs["best_f1"] == pytest.approx(result["objective_value"])
    assert (attrs["best_metric"], attrs["best_threshold"]) == (result["metric"], result["threshold"])

    # Same model and settings: the study is resumed, no trial added, same answer.
    again, _ = tune_threshold(params, embedder, fs.features, fs.work_id)
    assert again["threshold"] == result["threshold"] and again["n_trials"] == 10
    # A retrained model (another fingerprint) gets a fresh study.
    embedder.fingerprint = "0123456789ab"
    other, _ = tune_threshold(params, embedder, fs.features, fs.work_id)
    assert other["study_name"] != result["study_name"] and other["n_trials"] == 10


def test_tune_needs_positive_pairs(params):
    from coverid.core.errors import CoveridError

    fs = make_feature_set(n_works=0, versions=1, n_noise=5, spect_len=10, rows=12)
    with pytest.raises(CoveridError, match="validation split"):
        tune_threshold(params, FakeEmbedder(120), fs.features, fs.work_id)
