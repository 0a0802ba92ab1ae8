"""Optuna search for the verification threshold (and distance) on validation pairs.

One study per model and tuning set-up: the study is named
`{tune.study_name}-{arch}-{loss}-{model key}-{settings hash}`, where the model key is the first 8
characters of the model's content fingerprint (`coverid.model.embedder.fingerprint`) and the
settings hash covers the seed, objective and number of negatives. The study's objective is
named after tune.objective (optuna-dashboard shows `f1`, not "Objective 0") and its user
attributes hold the model, its arch and loss, and the best value, distance and threshold. Retraining therefore starts a fresh
study instead of mixing trials scored on another model's distances, while re-running the
stage on the same model resumes its study (`load_if_exists`) and only adds the trials
still missing to reach `tune.n_trials`, so a re-run is cheap and gives the same answer.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from coverid.core.config import params_hash
from coverid.core.errors import CoveridError
from coverid.eval.distance import paired
from coverid.eval.expansion import select_expansion
from coverid.eval.metrics import ThresholdScorer, sample_pairs

log = logging.getLogger(__name__)

OBJECTIVES = ("f1", "balanced_accuracy")
EMBEDDING_METRICS = ("euclidean", "cosine")


def candidate_metrics(model_metric: str) -> list[str]:
    """Distances worth trying: the BCE head's score for bce models, else the model's own
    embedding distance first, then the other one."""
    if model_metric == "bce":
        return ["bce"]
    return [model_metric] + [m for m in EMBEDDING_METRICS if m != model_metric]


def study_name(cfg: dict[str, Any], seed: int, model_fingerprint: str | None,
               model_config: dict[str, Any]) -> str:
    """`{study_name}-{arch}-{loss}-{model fingerprint}-{settings hash}` (module docstring)."""
    model_key = model_fingerprint[:8] if model_fingerprint else "untracked"
    settings = params_hash({"seed": seed, "objective": cfg["objective"],
                            "n_negatives": cfg["n_negatives"]})[:6]
    return f"{cfg['study_name']}-{model_config['arch']}-{model_config['loss']}-{model_key}-{settings}"


def pair_scorers(emb: np.ndarray, i: np.ndarray, j: np.ndarray, labels: np.ndarray,
                 metrics: list[str], head: tuple[np.ndarray, float] | None
                 ) -> dict[str, ThresholdScorer]:
    """One threshold scorer per distance, on the pair distances computed once."""
    return {m: ThresholdScorer(paired(emb[i], emb[j], m, head), labels) for m in metrics}


def plateau_midpoint(scorer: ThresholdScorer, threshold: float) -> float:
    """The middle of the gap between pair distances that holds `threshold`: every threshold
    in that gap makes the same predictions, and the middle generalises best."""
    d = scorer.sorted
    k = int(np.searchsorted(d, threshold, side="right"))
    if k == 0 or k == len(d):
        return float(threshold)
    return float((d[k - 1] + d[k]) / 2.0)


def optimise(scorers: dict[str, ThresholdScorer], objective: str, n_trials: int, seed: int,
             name: str, storage: str) -> Any:
    """Run (or resume) the study until it holds `n_trials` finished trials; return it."""
    import optuna

    if objective not in OBJECTIVES:
        raise CoveridError(f"tune.objective must be one of {OBJECTIVES}, got {objective!r}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([objective])
    metrics = list(scorers)

    def objective_fn(trial: optuna.Trial) -> float:
        metric = trial.suggest_categorical("metric", metrics) if len(metrics) > 1 else metrics[0]
        scorer = scorers[metric]
        t = trial.suggest_float(f"threshold_{metric}", float(scorer.sorted[0]),
                                float(scorer.sorted[-1]))
        trial.set_user_attr("metric", metric)
        trial.set_user_attr("threshold", t)
        return scorer(t, objective)

    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    remaining = max(0, int(n_trials) - done)
    log.info("study %s: %d finished trials, running %d more", name, done, remaining)
    if remaining:
        study.optimize(objective_fn, n_trials=remaining)
    return study


def best_threshold(study: Any, scorers: dict[str, ThresholdScorer], objective: str
                   ) -> dict[str, Any]:
    """The best trial's distance and threshold (moved to the middle of its plateau)."""
    best = study.best_trial
    metric = best.user_attrs["metric"]
    t = plateau_midpoint(scorers[metric], float(best.user_attrs["threshold"]))
    return {"threshold": t, "metric": metric, "objective": objective,
            "objective_value": scorers[metric](t, objective), "best_trial": best.number,
            "trial_threshold": float(best.user_attrs["threshold"])}


def trials_table(study: Any) -> dict[str, list]:
    """The study's finished trials as columns (trial, metric, threshold, objective value): the
    threshold search as one table instead of one MLflow run per trial."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    objective = (study.metric_names or ["value"])[0]
    return {"trial": [t.number for t in done],
            "metric": [t.user_attrs.get("metric", "") for t in done],
            "threshold": [float(t.user_attrs.get("threshold", float("nan"))) for t in done],
            objective: [float(t.value) for t in done]}


def tune_threshold(params: dict[str, Any], embedder: Any, features: np.ndarray,
                   work_id: np.ndarray) -> tuple[dict[str, Any], dict[str, list]]:
    """Embed the validation split, run the study, pick the query expansion; return the
    threshold.json content and the study's trials table."""
    cfg, seed = params["tune"], int(params["seed"])
    emb = embedder.embed(features, batch_size=int(cfg["batch_size"]))
    i, j, labels = sample_pairs(work_id, int(cfg["n_negatives"]), seed)
    if labels.sum() == 0 or labels.sum() == len(labels):
        raise CoveridError("the validation split needs two versions of one work and two "
                           "different works to tune a threshold")
    scorers = pair_scorers(emb, i, j, labels, candidate_metrics(embedder.metric), embedder.head)
    name = study_name(cfg, seed, embedder.fingerprint, embedder.config)
    study = optimise(scorers, cfg["objective"], int(cfg["n_trials"]), seed, name, cfg["storage"])
    best = best_threshold(study, scorers, cfg["objective"])
    for key, value in {"model": embedder.fingerprint, "arch": embedder.config.get("arch"),
                       "loss": embedder.config.get("loss"),
                       "params_hash": embedder.config.get("params_hash"),
                       f"best_{cfg['objective']}": best["objective_value"],
                       "best_metric": best["metric"], "best_threshold": best["threshold"]}.items():
        study.set_user_attr(key, value)
    expansion = select_expansion(emb, work_id, embedder.metric, embedder.head, cfg["expansion"],
                                 int(params["evaluate"]["chunk_size"]))
    result = {**best, "model": embedder.fingerprint,
              "study_name": name,
              "storage": cfg["storage"], "n_trials": len(study.trials),
              "n_pairs": int(len(labels)), "n_positive": int(labels.sum()),
              "expansion": expansion}
    log.info("threshold %.4f (%s): %s %.4f; query expansion k=%d alpha=%g: val MAP %.4f "
             "(%.4f without)", result["threshold"], result["metric"], cfg["objective"],
             result["objective_value"], expansion["k"], expansion["alpha"],
             expansion["val_map"], expansion["val_map_plain"])
    return result, trials_table(study)


def tune_metrics(result: dict[str, Any], objective: str) -> dict[str, float]:
    """The tune stage's MLflow metrics from its result."""
    e = result["expansion"]
    return {"tune_threshold": result["threshold"], "tune_qe_k": e["k"], "tune_qe_alpha": e["alpha"],
            "tune_val_map": e["val_map"], "tune_val_map_plain": e["val_map_plain"],
            f"tune_{objective}": result["objective_value"]}
