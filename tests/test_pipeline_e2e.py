"""End to end: `dvc repro` of the whole chain on a tiny generated corpus, in a temp repo; then
what a person sees of it: the MLflow REST API (run names, nesting, tags, the registry's
champion) and, where Debian's chromium is installed, the MLflow UI, the Data Docs summary and
`dvc plots show` rendered headless with no internet."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
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
    "data.melodies.n_works": 6,
    "data.melodies.versions_per_work": 3,
    "data.melodies.duration_s": 6.0,
    "data.melodies.sample_rate": 22050,
    "data.extra.split.train": 0.5,
    "data.extra.split.val": 0.0,
    "data.extra.split.test": 0.5,
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
    "model.projection_dim": 16,  # 64 -> 16: the whitening fitted after training, end to end
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


def _run(cmd: list[str], cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **extra_env, "PATH": f"{BIN}:{os.environ['PATH']}", "TF_CPP_MIN_LOG_LEVEL": "2",
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
    shutil.copy(ROOT / ".dvc/plots_offline.html", repo / ".dvc/plots_offline.html")
    _run([str(BIN / "dvc"), "config", "plots.html_template", "plots_offline.html"], repo)
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


@pytest.mark.slow
def test_exp_show_recipe_in_the_docs_shows_loss_arch_and_map(repo):
    """The copy-paste `dvc exp show` line of docs/experiments.md, run on the two experiments."""
    doc = (ROOT / "docs/experiments.md").read_text()
    line = re.search(r"^(dvc exp show --no-pager --drop .*)$", doc, re.M).group(1)
    import shlex

    out = _run([str(BIN / "dvc"), *shlex.split(line)[1:]], repo, COLUMNS="250")
    header = next(row for row in out.stdout.splitlines() if "Experiment" in row).split()
    assert header == ["Experiment", "Created", "best_val_map", "map", "map_se", "map_plain",
                      "holdout_map", "model.arch", "train.loss"]
    rows = [row.split() for row in out.stdout.splitlines() if " bce " in f" {row} "]
    assert rows and all("..." not in row for row in rows)  # nothing elided


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(repo):
    """`mlflow server` on the pipeline's tracking database (one worker), its base URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{repo}/mlflow.db",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _api(url: str, endpoint: str, body: dict | None = None, **query) -> dict:
    """GET (or POST `body` to) an MLflow REST endpoint; the JSON answer."""
    full = f"{url}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(full, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _tags(entity: dict) -> dict[str, str]:
    """An MLflow REST entity's tags as a dict (runs keep them under data)."""
    items = entity.get("data", entity).get("tags", [])
    return {t["key"]: t["value"] for t in items}


@pytest.mark.slow
def test_mlflow_rest_api_names_nests_tags_and_crowns_the_champion(repo, server):
    """After `dvc repro` (twice) and `dvc exp run -S train.loss=bce`: runs named by what they
    are, evaluate runs nested under their training runs, the threshold search on the training
    run as one table, every registered version tagged and described, and the champion alias on
    a workspace version, never on the experiment's."""
    exp = _api(server, "experiments/get-by-name", experiment_name="coverid")["experiment"]
    assert _tags(exp)["mlflow.experimentKind"] == "custom_model_development"
    assert _tags(exp)["mlflow.note.content"].startswith("coverid: cover song identification")
    runs = _api(server, "runs/search", {"experiment_ids": [exp["experiment_id"]],
                                        "max_results": 1000})["runs"]
    by_stage: dict[str, list[dict]] = {}
    for run in runs:
        by_stage.setdefault(_tags(run)["coverid.stage"], []).append(run)
    assert set(by_stage) == {"train", "evaluate", "baseline"}  # no run per threshold trial
    train = {run["info"]["run_id"]: run for run in by_stage["train"]}
    bce = [r for r in train.values() if _tags(r)["coverid.dvc_exp"] != "workspace"]
    assert len(bce) == 1
    exp_name = _tags(bce[0])["coverid.dvc_exp"]
    assert {r["info"]["run_name"] for r in train.values()} == {
        "train bag/triplet", f"train bag/bce ({exp_name})"}
    assert {r["info"]["run_name"] for r in by_stage["baseline"]} == {"baseline qmax/dtw"}
    for run in by_stage["evaluate"]:
        parent = train[_tags(run)["mlflow.parentRunId"]]  # nested under its training run
        loss = {p["key"]: p["value"] for p in run["data"]["params"]}["train.loss"]
        assert run["info"]["run_name"].startswith(f"evaluate bag/{loss}")
        assert _tags(parent)["coverid.model"] and parent["info"]["run_name"].startswith(
            f"train bag/{loss}")
    run_id = bce[0]["info"]["run_id"]
    metrics = {m["key"] for m in bce[0]["data"]["metrics"]}
    assert {"best_val_map", "test_map", "test_map_plain", "tune_f1", "tune_trial_f1"} <= metrics
    listed = lambda path: {f["path"] for f in _api(server, "artifacts/list", run_id=run_id,  # noqa: E731
                                                    path=path).get("files", [])}
    assert {"tune/trials.json", "tune/trials.png", "tune/threshold.json"} <= listed("tune")
    assert {"plots/eval/roc.png", "plots/eval/distances.png"} <= listed("plots/eval")

    name = "coverid-encoder"
    champion = _api(server, "registered-models/alias", name=name, alias="champion")["model_version"]
    assert _tags(champion)["coverid.loss"] == "triplet"
    assert _tags(champion)["coverid.dvc_exp"] == "workspace"
    versions = _api(server, "model-versions/search", filter=f"name='{name}'")["model_versions"]
    assert len(versions) == len(train)  # one per training run
    for v in versions:
        tags = _tags(v)
        assert {"coverid.arch", "coverid.loss", "coverid.val_map", "coverid.test_map",
                "coverid.commit", "coverid.dvc_exp", "coverid.test_set"} <= set(tags)
        assert v["description"].startswith(f"bag/{tags['coverid.loss']} encoder")
        assert f"test MAP {tags['coverid.test_map']}" in v["description"]
    exp_version = next(v for v in versions if _tags(v)["coverid.dvc_exp"] == exp_name)
    assert exp_version["version"] != champion["version"]  # experiments never take the alias
    out = _run([str(BIN / "coverid"), "models", "list"], repo)
    assert re.search(rf"^{champion['version']}\s+champion\s+bag\s+triplet\s", out.stdout, re.M)


CHROMIUM = shutil.which("chromium")
OFFLINE = "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"  # nothing but the local server resolves


def _chromium(target: str, tmp: Path, *extra: str) -> str:
    """Headless chromium (as the machine notes say: no sandbox as root, no background
    networking) on `target`; the rendered DOM once scripts have run."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp / 'profile'}", f"--host-resolver-rules={OFFLINE}",
           "--window-size=1400,900", "--virtual-time-budget=20000", *extra, target]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _distinct_colours(png: Path) -> int:
    from matplotlib.image import imread

    img = imread(png)
    return len({tuple(px) for px in img.reshape(-1, img.shape[-1])[::37].tolist()})


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_a_browser_shows_the_runs_the_checks_and_the_plots_offline(repo, server, tmp_path):
    """What `make ui` prints, the Data Docs summary and `dvc plots show`, rendered by headless
    chromium with every host but 127.0.0.1 unresolvable: the texts a person looks for are on
    the rendered pages, and the screenshots are not blank."""
    from coverid.core.config import load_params
    from coverid.core.tracking import ui_url

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        url = ui_url(load_params(repo / "params.yaml"), int(server.rsplit(":", 1)[1]))
    finally:
        os.chdir(cwd)
    dom = _chromium(url, tmp_path, "--dump-dom")
    for text in ("train bag/triplet", "train bag/bce", "baseline qmax/dtw", "Model registry"):
        assert text in dom, text
    assert "evaluate bag/" not in dom  # nested: folded under its training run's row
    _chromium(url, tmp_path, f"--screenshot={tmp_path / 'runs.png'}")
    assert _distinct_colours(tmp_path / "runs.png") > 20

    summary = repo / "reports/data_docs/summary.html"
    dom = _chromium(summary.as_uri(), tmp_path, "--dump-dom")
    assert re.search(r"\d+ of \d+ expectations passed \(all passed\)", dom)
    assert "every feature value finite" in dom
    _chromium(summary.as_uri(), tmp_path, f"--screenshot={tmp_path / 'checks.png'}")
    assert _distinct_colours(tmp_path / "checks.png") > 5

    _run([str(BIN / "dvc"), "plots", "show", "-o", str(tmp_path / "plots")], repo)
    dom = _chromium((tmp_path / "plots/index.html").as_uri(), tmp_path, "--dump-dom")
    assert dom.count('role="graphics-document"') >= 4  # the four Vega plots drew, offline
    page = (tmp_path / "plots/index.html").read_text()
    for title in ("training loss (train split)", "ROC (test split)", "precision-recall (test split)",
                  "validation MAP (val split; the kept epoch has the highest)"):
        assert f'"text": "{title}"' in page, title  # drawn on a canvas: in the spec, not the DOM
