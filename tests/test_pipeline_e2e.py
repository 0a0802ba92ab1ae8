"""End to end: `dvc repro` of the whole chain on a tiny generated corpus, in a temp repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY = {
    "data.synth.n_works": 8,
    "data.synth.versions_per_work": 3,
    "data.synth.n_noise": 4,
    "data.synth.duration_s": 6.0,
    "data.synth.sample_rate": 22050,
    "data.split.train": 0.5,
    "data.split.val": 0.25,
    "data.split.test": 0.25,
    "preprocess.spect_len": 64,
    "preprocess.max_frames": None,
    "preprocess.workers": 1,
    "preprocess.scheduler": "single",
    "validate.min_length_frames": 10,
    "model.bag.patch": 3,
    "model.bag.lags": [3],
    "model.bag.codes": 8,
    "train.epochs": 2,
    "train.steps_per_epoch": 2,
    "train.batch_size": 8,
    "train.val_every": 1,
    "tune.n_trials": 5,
    "tune.n_negatives": 50,
    "baseline.max_queries": 4,
    "baseline.workers": 1,
}


def _set(d: dict, dotted: str, value: object) -> None:
    *head, last = dotted.split(".")
    for k in head:
        d = d[k]
    assert last in d, f"params.yaml has no key {dotted}"
    d[last] = value


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TF_CPP_MIN_LOG_LEVEL": "2",
           "MPLBACKEND": "Agg", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC repo holding the project's pipeline and a tiny params.yaml."""
    repo = tmp_path_factory.mktemp("pipeline")
    for name in ("dvc.yaml", "stages", "src"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, repo / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in TINY.items():
        _set(params, key, value)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    (repo / "data/audio").mkdir(parents=True)
    (repo / "data/audio/.gitkeep").touch()
    _run(["git", "init", "-q"], repo)
    _run([str(BIN / "dvc"), "init", "-q"], repo)
    _run([str(BIN / "dvc"), "config", "core.analytics", "false"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "init"], repo)
    _run([str(BIN / "dvc"), "repro"], repo)
    return repo


@pytest.mark.slow
def test_repro_produces_every_report(repo):
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    for key in ("map", "mr1", "p10", "f1", "roc_auc"):
        assert key in metrics
    assert 0.0 <= metrics["map"] <= 1.0 and metrics["mr1"] >= 1.0
    thr = json.loads((repo / "reports/threshold.json").read_text())
    assert "threshold" in thr
    qe = thr["expansion"]  # picked on val: never worse there than the plain ranking
    assert qe["val_map"] >= qe["val_map_plain"] and (metrics["qe_k"], metrics["qe_alpha"]) == (
        qe["k"], qe["alpha"])
    assert ("without query expansion" in (repo / "reports/compare.md").read_text()) == (qe["k"] > 0)
    assert json.loads((repo / "reports/validation.json").read_text())["n_failed"] == 0
    assert (repo / "reports/plots/eval/distances.png").stat().st_size > 0
    assert (repo / "reports/compare.md").read_text().count("|") > 4
    emb = __import__("numpy").load(repo / "reports/eval/embeddings.npz")
    assert set(emb.files) >= {"embeddings", "work_id", "perf_id"}
    assert (repo / "mlflow.db").exists() and not (repo / "mlruns").exists()


@pytest.mark.slow
def test_second_repro_does_nothing(repo):
    out = _run([str(BIN / "dvc"), "repro"], repo)
    assert "Running stage" not in out.stdout, out.stdout
    status = _run([str(BIN / "dvc"), "status"], repo)
    assert "changed" not in status.stdout


@pytest.mark.slow
def test_every_stage_run_again_writes_the_same_bytes(repo):
    """A forced rerun of the whole chain leaves dvc.lock as it was: every output DVC hashes
    (corpus, HDF5 features, model, reports, plots) is byte for byte the same, so a fresh
    clone reproduces the committed hashes; timings live outside them."""
    before = (repo / "dvc.lock").read_text()
    timings = json.loads((repo / "reports/timings/train.json").read_text())
    _run([str(BIN / "dvc"), "repro", "-f"], repo)
    assert (repo / "dvc.lock").read_text() == before
    assert json.loads((repo / "reports/timings/train.json").read_text()) != timings
    assert "changed" not in _run([str(BIN / "dvc"), "status"], repo).stdout


@pytest.mark.slow
def test_loss_change_reruns_only_downstream_and_is_tracked(repo):
    import mlflow

    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "baseline run", "--allow-empty"], repo)
    out = _run([str(BIN / "dvc"), "exp", "run", "-S", "train.loss=bce"], repo)
    ran = {line.split("'")[1] for line in out.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"train", "tune", "evaluate"}, out.stdout
    shown = _run([str(BIN / "dvc"), "exp", "show", "--json"], repo)
    assert "bce" in shown.stdout
    mlflow.set_tracking_uri(f"sqlite:///{repo}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["coverid"])
    train_runs = runs[runs["tags.coverid.stage"] == "train"]
    default_loss = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["loss"]
    assert default_loss != "bce"
    assert set(train_runs["params.train.loss"]) == {"bce", default_loss}  # (the default twice)
    evals = runs[runs["tags.coverid.stage"] == "evaluate"]
    assert set(evals["params.train.loss"]) == {"bce", default_loss}
    assert evals["metrics.map"].notna().all()
