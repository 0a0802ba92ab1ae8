"""Test-split evaluation: embed, rank in distance chunks, verify at the tuned threshold,
compare with the classical baselines; the plots and files the evaluate stage writes."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coverid.core.errors import BadInputError, CoveridError
from coverid.core.io import read_json, write_json, write_npz, write_text
from coverid.data.splits import HOLDOUT
from coverid.data.store import FeatureSet
from coverid.eval import plots
from coverid.eval.baselines import select_queries
from coverid.eval.distance import paired
from coverid.eval.expansion import augment, check_expansion, expansion_of
from coverid.eval.metrics import (
    pr_curve,
    query_stats_from_embeddings,
    roc_curve,
    sample_pairs,
    stats_map_se,
    summarize,
    verification_metrics,
)

log = logging.getLogger(__name__)

METRIC_KEYS = ("map", "map_se", "mr1", "p10", "n_queries", "n_candidates", "threshold", "accuracy",
               "precision", "recall", "f1", "balanced_accuracy", "roc_auc", "average_precision",
               "qe_k", "qe_alpha", "map_plain", "mr1_plain", "p10_plain")
COMPARE_KEYS = ("map", "map_se", "mr1", "p10", "n_queries")


@dataclass
class Evaluation:
    """Everything one evaluation produces: flat metrics and the arrays behind the plots."""

    metrics: dict[str, Any]
    stats: dict[str, np.ndarray]  # per-query retrieval stats (coverid.eval.metrics.query_stats)
    stats_plain: dict[str, np.ndarray]  # the same without query expansion
    pair_dist: np.ndarray
    pair_labels: np.ndarray
    metric: str
    seconds_per_query: float  # embedding time per song + ranking time per query (a timing)


def evaluate_embeddings(emb: np.ndarray, work_id: np.ndarray, metric: str,
                        head: tuple[np.ndarray, float] | None, threshold: float,
                        cfg: dict[str, Any], seed: int, embed_seconds: float = 0.0,
                        expansion: tuple[int, float] = (0, 0.0)) -> Evaluation:
    """Retrieval metrics (chunked, after query expansion when k > 0, see expansion.py) and
    verification metrics at `threshold` on sampled pairs of the plain embeddings.

    seconds_per_query = embedding time per song + ranking time per query row.
    """
    k, alpha = expansion
    chunk = int(cfg["chunk_size"])
    t0 = time.perf_counter()
    if k:
        ranked = augment(emb, k, alpha, chunk)
        stats = query_stats_from_embeddings(ranked, work_id, "euclidean", None, chunk_size=chunk,
                                            progress=True)
    rank_seconds = time.perf_counter() - t0
    plain = query_stats_from_embeddings(emb, work_id, metric, head, chunk_size=chunk, progress=not k)
    if not k:
        stats, rank_seconds = plain, time.perf_counter() - t0
    retrieval = summarize(stats, len(emb) - 1)
    without = summarize(plain, len(emb) - 1)
    if retrieval["n_queries"] == 0:
        raise CoveridError("the test split has no work with two versions: nothing to rank")
    i, j, labels = sample_pairs(work_id, int(cfg["n_negatives"]), seed)
    if labels.sum() == 0 or labels.sum() == len(labels):
        raise CoveridError("the test split needs same-work and different-work pairs")
    d = paired(emb[i], emb[j], metric, head)
    verification = verification_metrics(d, labels, threshold)
    per_query = embed_seconds / len(emb) + rank_seconds / max(1, retrieval["n_queries"])
    merged = {**retrieval, "map_se": stats_map_se(stats, work_id), **verification,
              "qe_k": k, "qe_alpha": alpha,
              **{f"{m}_plain": without[m] for m in ("map", "mr1", "p10")}}
    return Evaluation({m: merged[m] for m in METRIC_KEYS}, stats, plain, d, labels, metric,
                      per_query)


def write_plots(ev: Evaluation, plot_dir: str | Path, model: dict[str, Any],
                split: str = "test") -> list[Path]:
    """distances.png, roc.png + roc.csv, pr.png + pr.csv, ap_hist.png under `plot_dir`, titled
    with the split and the model's arch/loss (its config.json)."""
    plot_dir = Path(plot_dir)
    m = ev.metrics
    fpr, tpr, _ = roc_curve(ev.pair_dist, ev.pair_labels)
    precision, recall, _ = pr_curve(ev.pair_dist, ev.pair_labels)
    plots.distance_hist(plot_dir / "distances.png", ev.pair_dist, ev.pair_labels,
                        m["threshold"], ev.metric,
                        plots.title("Pair distances", split, model))
    plots.roc_plot(plot_dir / "roc.png", fpr, tpr, m["roc_auc"], plots.title("ROC", split, model))
    plots.write_csv(plot_dir / "roc.csv", {"fpr": fpr, "tpr": tpr})
    plots.pr_plot(plot_dir / "pr.png", recall, precision, m["average_precision"],
                  plots.title("Precision-recall", split, model))
    plots.write_csv(plot_dir / "pr.csv", {"recall": recall, "precision": precision})
    plots.ap_hist(plot_dir / "ap_hist.png", ev.stats["ap"],
                  plots.title("AP per query", split, model))
    return [plot_dir / n for n in ("distances.png", "roc.png", "roc.csv", "pr.png", "pr.csv",
                                   "ap_hist.png")]


def write_embeddings(path: str | Path, emb: np.ndarray, work_id: np.ndarray,
                     perf_id: np.ndarray) -> None:
    """reports/eval/embeddings.npz: arrays embeddings, work_id, perf_id (atomic, no clock)."""
    write_npz(path, embeddings=np.asarray(emb, np.float32), work_id=np.asarray(work_id, str),
              perf_id=np.asarray(perf_id, str))


def compare(model: dict[str, Any], baseline: dict[str, dict[str, Any]],
            model_on_baseline_queries: dict[str, Any] | None = None,
            plain: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """One row per method: the model, the model on the baselines' queries when they are a
    subset, the model without query expansion (on the same queries) when it was used, each
    baseline."""
    rows = {"model": {k: model[k] for k in COMPARE_KEYS}}
    subset = " (baseline queries)" if model_on_baseline_queries is not None else ""
    if subset:
        rows["model" + subset] = {k: model_on_baseline_queries[k] for k in COMPARE_KEYS}
    if plain is not None:
        rows["model without query expansion" + subset] = {k: plain[k] for k in COMPARE_KEYS}
    for method, scores in baseline.items():
        rows[method] = {k: scores.get(k) for k in COMPARE_KEYS}
    return rows


def compare_markdown(rows: dict[str, dict[str, Any]], seconds: dict[str, float | None]) -> str:
    """The comparison as a Markdown table, with each method's seconds per query."""
    def fmt(v: Any, spec: str) -> str:
        return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)

    lines = ["| method | queries | MAP | MAP s.e. | MR1 | P@10 | seconds/query |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {fmt(r['n_queries'], 'd')} | {fmt(r['map'], '.4f')} | "
                     f"{fmt(r.get('map_se'), '.3f')} | "
                     f"{fmt(r['mr1'], '.2f')} | {fmt(r['p10'], '.4f')} | "
                     f"{fmt(seconds.get(name), '.4g')} |")
    return "\n".join(lines) + "\n"


def on_queries(stats: dict[str, np.ndarray], queries: np.ndarray, n_candidates: int,
               work_id: np.ndarray) -> dict[str, Any]:
    """The model's retrieval metrics (and MAP's standard error) restricted to `queries`
    (performance indices)."""
    keep = np.isin(stats["query"], queries)
    sub = {k: v[keep] for k, v in stats.items()}
    return {**summarize(sub, n_candidates), "map_se": stats_map_se(sub, work_id)}


def baseline_queries(params: dict[str, Any], work_id: np.ndarray,
                      baseline: dict[str, dict[str, Any]]) -> np.ndarray | None:
    """The queries the baseline stage used (same selection, seed and split), if consistent."""
    if not baseline:
        return None
    queries = select_queries(work_id, params["baseline"]["max_queries"], int(params["seed"]))
    n = {int(s.get("n_queries", -1)) for s in baseline.values()}
    if n != {len(queries)}:
        log.warning("baseline.json counts %s queries, expected %d: not comparing on the same "
                    "queries", sorted(n), len(queries))
        return None
    return queries


def split_prefix(split: str) -> str:
    """How a split's figures are named beside the test split's: "" for test, "holdout_" for
    the hold-out (holdout_map, holdout_qmax_seconds_per_query, ...)."""
    return "" if split == "test" else f"{split}_"


def baseline_seconds(timings: dict[str, float], prefix: str) -> dict[str, float]:
    """{method: seconds per query} from the baseline stage's timings: keys `<method>_seconds_per_query`
    for the test split, `<prefix><method>_...` for another (split_prefix)."""
    other = split_prefix(HOLDOUT)
    return {k.removeprefix(prefix).removesuffix("_seconds_per_query"): v for k, v in timings.items()
            if k.endswith("_seconds_per_query") and k.startswith(prefix)
            and (prefix or not k.startswith(other))}


def read_report(path: str | Path, required: bool = True) -> dict[str, Any] | None:
    """A JSON report written by an earlier stage (None when optional and missing)."""
    path = Path(path)
    if not path.exists():
        if required:
            raise BadInputError(path, "not found: run the stage that writes it first")
        log.warning("%s not found: continuing without it", path)
        return None
    return read_json(path, "report")


@dataclass
class EvalReport:
    """What the evaluate stage writes: the evaluation, the embeddings, the comparison rows
    (quality only) and each row's seconds per query."""

    evaluation: Evaluation
    embeddings: np.ndarray
    rows: dict[str, dict[str, Any]]
    seconds: dict[str, float | None]


def evaluate(params: dict[str, Any], embedder: Any, test: FeatureSet, threshold: dict[str, Any],
             baseline: dict[str, dict[str, Any]] | None,
             baseline_seconds: dict[str, float] | None = None) -> EvalReport:
    """Evaluate `embedder` on the test rows at the tuned threshold and expansion, and compare
    it with the baselines on their queries."""
    cfg = params["evaluate"]
    metric = threshold["metric"]
    if metric == "bce" and embedder.head is None:
        raise CoveridError(f"threshold.json tuned the bce distance but the model "
                           f"({embedder.metric}) has no BCE head: re-run the tune stage")
    embedder.embed(test.features[:1])  # build the inference function outside the timing
    t0 = time.perf_counter()
    emb = embedder.embed(test.features, batch_size=int(cfg["batch_size"]))
    embed_seconds = time.perf_counter() - t0
    expansion = check_expansion(expansion_of(threshold), metric)
    ev = evaluate_embeddings(emb, test.work_id, metric, embedder.head,
                             float(threshold["threshold"]), cfg, int(params["seed"]),
                             embed_seconds, expansion)
    baseline = baseline or {}
    queries = baseline_queries(params, test.work_id, baseline)
    subset = queries is not None and len(queries) < ev.metrics["n_queries"]
    model_sub = on_queries(ev.stats, queries, len(emb) - 1, test.work_id) if subset else None
    plain_sub = None
    if expansion[0]:
        plain_sub = on_queries(ev.stats_plain, queries if subset else ev.stats_plain["query"],
                               len(emb) - 1, test.work_id)
    rows = compare(ev.metrics, baseline, model_sub, plain_sub)
    seconds = {**{name: ev.seconds_per_query for name in rows if name.startswith("model")},
               **(baseline_seconds or {})}
    log.info("test MAP %.4f (%.4f without query expansion) MR1 %.2f P@10 %.4f | F1 %.4f at "
             "%s <= %.4g", ev.metrics["map"], ev.metrics["map_plain"], ev.metrics["mr1"],
             ev.metrics["p10"], ev.metrics["f1"], metric, ev.metrics["threshold"])
    return EvalReport(ev, emb, rows, seconds)


HOLDOUT_KEYS = ("map", "map_se", "mr1", "p10", "n_queries", "n_candidates", "map_plain",
                "mr1_plain", "p10_plain")  # the retrieval metrics reported for the hold-out


def holdout_metrics(holdout: EvalReport | None) -> dict[str, Any]:
    """The hold-out's retrieval metrics as holdout_<name> (names unique across the metrics
    files, so that `dvc exp show` keeps short columns); {} without a hold-out."""
    if holdout is None:
        return {}
    return {f"{split_prefix(HOLDOUT)}{k}": holdout.evaluation.metrics[k] for k in HOLDOUT_KEYS}


def write_report(report: EvalReport, test: FeatureSet, reports: Path, model: dict[str, Any],
                 holdout: EvalReport | None = None, names: tuple[str, str] = ("", "")) -> None:
    """metrics.json, eval/embeddings.npz, the plots (titled with `model`'s arch/loss),
    compare.json under `reports`; metrics_holdout.json and compare_holdout.json ({} without a
    hold-out); compare.md with both tables, headed by `names` (test split, hold-out)."""
    write_plots(report.evaluation, reports / "plots" / "eval", model)
    write_embeddings(reports / "eval" / "embeddings.npz", report.embeddings, test.work_id,
                     test.perf_id)
    write_json(reports / "metrics.json", report.evaluation.metrics)
    write_json(reports / "compare.json", report.rows)
    write_json(reports / "metrics_holdout.json", holdout_metrics(holdout))
    write_json(reports / "compare_holdout.json", {} if holdout is None else holdout.rows)
    text = compare_markdown(report.rows, report.seconds)
    if holdout is not None:
        text = (f"## {names[0]}\n\n{text}\n## {names[1]}\n\n"
                f"{compare_markdown(holdout.rows, holdout.seconds)}")
    write_text(reports / "compare.md", text)


def log_to_training_run(train_run_id: str | None, metrics: dict[str, Any],
                        plot_dir: Path | None = None) -> None:
    """Copy the test metrics onto the training run as test_<name>, and the test plots under
    plots/eval, so that one run shows the model's whole story (when it exists)."""
    if not train_run_id:
        return
    import mlflow
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    now = int(time.time() * 1000)
    batch = [Metric(f"test_{k}", float(v), now, 0) for k, v in metrics.items()]
    client = mlflow.MlflowClient()
    try:
        client.log_batch(train_run_id, metrics=batch)
        if plot_dir is not None:
            client.log_artifacts(train_run_id, str(plot_dir), "plots/eval")
    except MlflowException as e:
        log.warning("could not log onto training run %s: %s", train_run_id, e)
