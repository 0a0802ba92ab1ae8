"""Evaluation: metrics on the test split, plots, embeddings, comparison table, MLflow."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import CHUNK, FakeEmbedder, make_feature_set

from coverid.core.errors import BadInputError, CoveridError
from coverid.eval.distance import pairwise
from coverid.eval.evaluate import (
    METRIC_KEYS,
    compare,
    compare_markdown,
    evaluate,
    evaluate_embeddings,
    log_to_training_run,
    on_queries,
    read_report,
    write_report,
)
from coverid.eval.expansion import augment
from coverid.eval.metrics import retrieval_metrics

mlflow = pytest.importorskip("mlflow")

MODEL = {"arch": "bag", "loss": "triplet"}  # the config.json keys plot titles name


@pytest.fixture
def params(tmp_path, project_params):
    p = project_params
    p["evaluate"].update(chunk_size=4, n_negatives=40)
    p["baseline"]["max_queries"] = 5
    return p


def test_evaluate_embeddings_matches_full_matrix_metrics():
    fs = make_feature_set(n_works=4, versions=3, n_noise=3, spect_len=10, rows=12)
    emb = FakeEmbedder(120).embed(fs.features)
    cfg = {"chunk_size": 5, "n_negatives": 30}
    ev = evaluate_embeddings(emb, fs.work_id, "cosine", None, 0.5, cfg, seed=0,
                             embed_seconds=1.2)
    full = retrieval_metrics(pairwise(emb, emb, "cosine"), fs.work_id)
    for key in ("map", "mr1", "p10", "n_queries", "n_candidates"):
        assert ev.metrics[key] == full[key]
    assert set(ev.metrics) == set(METRIC_KEYS)
    assert ev.metrics["threshold"] == 0.5
    assert ev.seconds_per_query >= 1.2 / len(emb)
    assert len(ev.pair_dist) == len(ev.pair_labels) == 4 * 3 + 30


def test_evaluate_embeddings_ranks_expanded_vectors():
    fs = make_feature_set(n_works=4, versions=3, n_noise=3, spect_len=10, rows=12)
    emb = FakeEmbedder(120).embed(fs.features)
    cfg = {"chunk_size": 5, "n_negatives": 30}
    ev = evaluate_embeddings(emb, fs.work_id, "cosine", None, 0.5, cfg, seed=0,
                             expansion=(2, 1.0))
    expanded = retrieval_metrics(pairwise(augment(emb, 2, 1.0, CHUNK), augment(emb, 2, 1.0, CHUNK)), fs.work_id)
    plain = retrieval_metrics(pairwise(emb, emb, "cosine"), fs.work_id)
    assert ev.metrics["map"] == pytest.approx(expanded["map"])
    assert ev.metrics["map_plain"] == pytest.approx(plain["map"])
    assert (ev.metrics["qe_k"], ev.metrics["qe_alpha"]) == (2, 1.0)
    # Verification stays on the plain embeddings.
    d = pairwise(emb, emb, "cosine")
    assert np.isin(ev.pair_dist.round(5), d.round(5)).all()


def test_compare_rows_and_markdown():
    model = {"map": 0.8, "map_se": 0.05, "mr1": 1.5, "p10": 0.2, "n_queries": 10, "f1": 0.9}
    base = {"qmax": {"map": 0.3, "map_se": 0.1, "mr1": 4.0, "p10": 0.1, "n_queries": 5}}
    rows = compare(model, base, {**model, "map": 0.7, "n_queries": 5})
    assert list(rows) == ["model", "model (baseline queries)", "qmax"]
    assert "f1" not in rows["model"]
    md = compare_markdown(rows, {"model": 0.001, "model (baseline queries)": 0.001, "qmax": 2.0})
    assert md.count("\n") == 5
    assert "| qmax | 5 | 0.3000 | 0.100 | 4.00 | 0.1000 | 2 |" in md
    assert "| model (baseline queries) | 5 | 0.7000 |" in md
    rows = compare(model, base, {**model, "n_queries": 5}, {**model, "map": 0.6, "n_queries": 5})
    assert rows["model without query expansion (baseline queries)"]["map"] == 0.6
    # The baselines on every query: no subset rows.
    rows = compare(model, base, None, {**model, "map": 0.6})
    assert list(rows) == ["model", "model without query expansion", "qmax"]


def test_on_queries_subsets_stats():
    stats = {"query": np.array([0, 2, 5]), "ap": np.array([1.0, 0.5, 0.0]),
             "rank1": np.array([1, 2, 9]), "p10": np.array([0.1, 0.1, 0.1]),
             "n_relevant": np.array([1, 1, 1])}
    work_id = np.array(["a", "b", "c", "b", "b", "c"])
    sub = on_queries(stats, np.array([2, 5]), 9, work_id)
    assert sub["map"] == 0.25 and sub["mr1"] == 5.5 and sub["n_queries"] == 2
    assert np.isnan(sub["map_se"])  # both queries of work c: no spread to estimate
    assert on_queries(stats, np.array([0, 2]), 9, work_id)["map_se"] > 0


def test_read_report(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        read_report(tmp_path / "threshold.json")
    assert read_report(tmp_path / "baseline.json", required=False) is None
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BadInputError, match="not valid JSON"):
        read_report(tmp_path / "bad.json")


def test_evaluate_and_write_report(params, tmp_path):
    from coverid.eval.baselines import select_queries

    fs = make_feature_set(n_works=5, versions=3, n_noise=3, spect_len=10, rows=12)
    embedder = FakeEmbedder(120)
    threshold = {"threshold": 0.6, "metric": "euclidean", "objective": "f1",
                 "expansion": {"k": 0, "alpha": 0.0}}
    n_base = len(select_queries(fs.work_id, 5, params["seed"]))
    baseline = {"dtw": {"map": 0.4, "map_se": 0.1, "mr1": 2.0, "p10": 0.2, "n_queries": n_base}}
    params["baseline"]["max_queries"] = 5
    report = evaluate(params, embedder, fs, threshold, baseline, {"dtw": 0.5})
    write_report(report, fs, tmp_path / "r", MODEL)
    metrics = report.evaluation.metrics

    r = tmp_path / "r"
    saved = json.loads((r / "metrics.json").read_text())
    assert list(saved) == list(METRIC_KEYS) and saved == pytest.approx(metrics)
    assert "seconds_per_query" not in saved  # timings stay out of the DVC metrics
    assert saved["n_queries"] == 15 and saved["n_candidates"] == len(fs) - 1
    assert saved["map"] > 0.9  # versions share a base pattern
    with np.load(r / "eval" / "embeddings.npz") as z:
        assert z["embeddings"].shape == (len(fs), 16)
        assert z["work_id"].tolist() == fs.work_id.tolist()
        assert z["perf_id"].tolist() == fs.perf_id.tolist()
    plots = r / "plots" / "eval"
    for name in ("distances.png", "roc.png", "pr.png", "ap_hist.png"):
        assert (plots / name).read_bytes()[:4] == b"\x89PNG"
    with (plots / "roc.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["fpr", "tpr"] and float(rows[-1]["tpr"]) == 1.0
    with (plots / "pr.csv").open() as f:
        assert next(csv.reader(f)) == ["recall", "precision"]
    cmp = json.loads((r / "compare.json").read_text())
    assert list(cmp) == ["model", "model (baseline queries)", "dtw"]
    assert cmp["model (baseline queries)"]["n_queries"] == n_base
    md = (r / "compare.md").read_text()
    assert "| dtw | 5 | 0.4000 | 0.100 | 2.00 | 0.2000 | 0.5 |" in md
    assert 0 <= saved["map_se"] < 0.2
    # The same evaluation again gives the same bytes (DVC's hashes reproduce).
    before = {p: p.read_bytes() for p in r.rglob("*") if p.is_file() and p.name != "compare.md"}
    write_report(evaluate(params, embedder, fs, threshold, baseline, {"dtw": 0.5}), fs, r, MODEL)
    assert {p: p.read_bytes() for p in before} == before
    assert json.loads((r / "metrics_holdout.json").read_text()) == {}  # no hold-out: empty


def test_write_report_with_a_holdout(params, tmp_path):
    fs = make_feature_set(n_works=4, versions=3, n_noise=2, spect_len=10, rows=12)
    held = make_feature_set(n_works=3, versions=2, n_noise=0, spect_len=10, rows=12)
    threshold = {"threshold": 0.6, "metric": "euclidean", "objective": "f1",
                 "expansion": {"k": 0, "alpha": 0.0}}
    report = evaluate(params, FakeEmbedder(120), fs, threshold, None)
    holdout = evaluate(params, FakeEmbedder(120), held, threshold,
                       {"qmax": {"map": 0.5, "map_se": 0.1, "mr1": 2.0, "p10": 0.1, "n_queries": 5}},
                       {"qmax": 1.5})
    write_report(report, fs, tmp_path, MODEL, holdout, ("Test split (synth)", "Hold-out (melodies)"))
    saved = json.loads((tmp_path / "metrics_holdout.json").read_text())
    assert saved["holdout_map"] == pytest.approx(holdout.evaluation.metrics["map"])
    assert saved["holdout_n_queries"] == len(held) and "holdout_f1" not in saved  # retrieval only
    assert json.loads((tmp_path / "metrics.json").read_text())["n_queries"] == 12
    assert list(json.loads((tmp_path / "compare_holdout.json").read_text())) == [
        "model", "model (baseline queries)", "qmax"]
    md = (tmp_path / "compare.md").read_text()
    assert md.startswith("## Test split (synth)\n\n| method |")
    head, tail = md.split("## Hold-out (melodies)\n\n")
    assert "| qmax |" not in head and "| qmax | 5 | 0.5000 | 0.100 | 2.00 | 0.1000 | 1.5 |" in tail


def test_plots_are_titled_with_split_and_model(params, tmp_path, monkeypatch):
    from coverid.eval import plots

    titles = {}
    real_save = plots._save

    def keep_title(fig, path):
        titles[path.name] = fig.axes[0].get_title()
        real_save(fig, path)

    monkeypatch.setattr(plots, "_save", keep_title)
    fs = make_feature_set(n_works=4, versions=3, n_noise=2, spect_len=10, rows=12)
    threshold = {"threshold": 0.6, "metric": "euclidean", "objective": "f1",
                 "expansion": {"k": 0, "alpha": 0.0}}
    write_report(evaluate(params, FakeEmbedder(120), fs, threshold, None), fs, tmp_path, MODEL)
    assert titles == {"distances.png": "Pair distances, test split: bag/triplet",
                      "roc.png": "ROC, test split: bag/triplet",
                      "pr.png": "Precision-recall, test split: bag/triplet",
                      "ap_hist.png": "AP per query, test split: bag/triplet"}


def test_trials_figure_marks_the_chosen_threshold_on_its_distance():
    from coverid.eval.plots import trials_figure

    table = {"trial": [0, 1, 2], "metric": ["cosine", "euclidean", "euclidean"],
             "threshold": [0.2, 0.8, 1.1], "f1": [0.5, 0.7, 0.9]}
    fig = trials_figure(table, "f1", ("euclidean", 1.05), "Threshold search, val split: bag/triplet")
    assert fig._suptitle.get_text() == "Threshold search, val split: bag/triplet"
    cos, euc = fig.axes
    assert cos.get_xlabel() == "cosine threshold (1 trials)" and not cos.get_lines()
    assert euc.get_xlabel() == "euclidean threshold (2 trials)"
    assert [line.get_xdata()[0] for line in euc.get_lines()] == [1.05]
    assert euc.collections[0].get_offsets().tolist() == [[0.8, 0.7], [1.1, 0.9]]


def test_test_metrics_and_plots_land_on_the_training_run(params, tmp_path):
    from coverid.core.tracking import find_train_run, stage_run

    with stage_run("train", params) as train:
        mlflow.set_tag("coverid.model", "abc123abc123")
    assert find_train_run(params, "abc123abc123") == train.info.run_id
    assert find_train_run(params, "no-such-model") is None
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "roc.png").write_bytes(b"png")
    log_to_training_run(train.info.run_id, {"map": 0.75}, tmp_path / "plots")
    assert mlflow.get_run(train.info.run_id).data.metrics["test_map"] == 0.75
    listed = mlflow.MlflowClient().list_artifacts(train.info.run_id, "plots/eval")
    assert [a.path for a in listed] == ["plots/eval/roc.png"]


def test_evaluate_rejects_bce_threshold_without_head(params):
    fs = make_feature_set(n_works=2, versions=2, n_noise=0, spect_len=10, rows=12)
    with pytest.raises(CoveridError, match="BCE head"):
        evaluate(params, FakeEmbedder(120), fs,
                 {"threshold": 0.5, "metric": "bce", "expansion": {"k": 0, "alpha": 0.0}}, None)


def test_distance_hist_handles_identical_distances(tmp_path):
    from coverid.eval.plots import distance_hist

    dist = np.full(20, 0.5, dtype=np.float32)
    dist[3] = np.nextafter(np.float32(0.5), np.float32(1))
    labels = np.arange(20) % 2
    distance_hist(tmp_path / "d.png", dist, labels, 0.5, "bce", "Pair distances")
    assert (tmp_path / "d.png").stat().st_size > 0
