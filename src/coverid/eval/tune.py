"""Optuna search for the verification threshold (and distance) on validation pairs.

One study per model and tuning set-up: the study is named
`{tune.study_name}-{model key}-{settings hash}`, where the model key is the first 8
characters of the model's content fingerprint (`coverid.model.embedder.fingerprint`) and the
settings hash covers the seed, objective and number of negatives. Retraining therefore starts a fresh
study instead of mixing trials scored on another model's distances, while re-running the
stage on the same model resumes its study (`load_if_exists`) and only adds the trials
still missing to reach `tune.n_trials`, so a re-run is cheap and gives the same answer.
"""

from __future__ import annotations

import logging
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


def study_name(cfg: dict[str, Any], seed: int, model_fingerprint: str | None) -> str:
    """`{study_name}-{model fingerprint}-{settings hash}` (see the module docstring)."""
    model_key = model_fingerprint[:8] if model_fingerprint else "untracked"
    settings = params_hash({"seed": seed, "objective": cfg["objective"],
                            "n_negatives": cfg["n_negatives"]})[:6]
    return f"{cfg['study_name']}-{model_key}-{settings}"


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
             name: str, storage: str, callbacks: list | None = None) -> Any:
    """Run (or resume) the study until it holds `n_trials` finished trials; return it."""
    import optuna

    if objective not in OBJECTIVES:
        raise CoveridError(f"tune.objective must be one of {OBJECTIVES}, got {objective!r}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
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
        study.optimize(objective_fn, n_trials=remaining, callbacks=callbacks or [])
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


class TrialLogger:
    """Optuna callback logging each finished trial as an MLflow run nested under the active
    run (what optuna-integration's deprecated MLflowCallback did): params, the objective
    value as a metric, the trial's user attributes and state as tags."""

    def __init__(self, metric_name: str, experiment_id: str, tags: dict[str, str]) -> None:
        self.metric_name, self.experiment_id, self.tags = metric_name, experiment_id, tags

    def __call__(self, study: Any, trial: Any) -> None:
        import mlflow

        tags = {**self.tags, "optuna.study": study.study_name, "optuna.trial": str(trial.number),
                "optuna.state": trial.state.name,
                **{f"optuna.{k}": str(v) for k, v in trial.user_attrs.items()}}
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True,
                              experiment_id=self.experiment_id, tags=tags):
            mlflow.log_params(trial.params)
            if trial.value is not None:
                mlflow.log_metric(self.metric_name, trial.value)


def tune_threshold(params: dict[str, Any], embedder: Any, features: np.ndarray,
                   work_id: np.ndarray, callbacks: list | None = None) -> dict[str, Any]:
    """Embed the validation split, run the study (each finished trial goes to `callbacks`),
    pick the query expansion; return the threshold.json content."""
    cfg, seed = params["tune"], int(params["seed"])
    emb = embedder.embed(features, batch_size=int(cfg["batch_size"]))
    i, j, labels = sample_pairs(work_id, int(cfg["n_negatives"]), seed)
    if labels.sum() == 0 or labels.sum() == len(labels):
        raise CoveridError("the validation split needs two versions of one work and two "
                           "different works to tune a threshold")
    scorers = pair_scorers(emb, i, j, labels, candidate_metrics(embedder.metric), embedder.head)
    name = study_name(cfg, seed, embedder.fingerprint)
    study = optimise(scorers, cfg["objective"], int(cfg["n_trials"]), seed, name, cfg["storage"],
                     callbacks=callbacks)
    study.set_user_attr("model", embedder.fingerprint)
    study.set_user_attr("params_hash", embedder.config.get("params_hash"))
    expansion = select_expansion(emb, work_id, embedder.metric, embedder.head, cfg["expansion"],
                                 int(params["evaluate"]["chunk_size"]))
    result = {**best_threshold(study, scorers, cfg["objective"]), "model": embedder.fingerprint,
              "study_name": name,
              "storage": cfg["storage"], "n_trials": len(study.trials),
              "n_pairs": int(len(labels)), "n_positive": int(labels.sum()),
              "expansion": expansion}
    log.info("threshold %.4f (%s): %s %.4f; query expansion k=%d alpha=%g: val MAP %.4f "
             "(%.4f without)", result["threshold"], result["metric"], cfg["objective"],
             result["objective_value"], expansion["k"], expansion["alpha"],
             expansion["val_map"], expansion["val_map_plain"])
    return result


def tune_metrics(result: dict[str, Any], objective: str) -> dict[str, float]:
    """The tune stage's MLflow metrics from its result."""
    e = result["expansion"]
    return {"tune_threshold": result["threshold"], "tune_qe_k": e["k"], "tune_qe_alpha": e["alpha"],
            "tune_val_map": e["val_map"], "tune_val_map_plain": e["val_map_plain"],
            f"tune_{objective}": result["objective_value"]}
