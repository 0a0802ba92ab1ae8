"""Training loop: determinism, resume after a kill, early stopping, strategies, the stage."""

import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from conftest import make_feature_set, repo_params  # noqa: E402

from coverid.core.config import ConfigError, Params  # noqa: E402
from coverid.core.errors import CoveridError  # noqa: E402
from coverid.train.devices import DeviceSetup, choose_strategy  # noqa: E402
from coverid.train.fit import Trainer, fit, write_curve  # noqa: E402
from coverid.train.pairs import encode_labels, make_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
L = 24


def tiny_params(**train) -> Params:
    """params.yaml with a tiny move model and a short run; `train` overrides train keys."""
    move = {"channels": 4, "first_kernel": 3, "kernel": 3, "dilations": [1, 2], "downsample": 2,
            "pitch_pool": "gram", "time_pool": 1}
    short = {"epochs": 3, "steps_per_epoch": 2, "batch_size": 4, "works_per_batch": 2,
             "versions_per_work": 2, "val_every": 1, "patience": 5, "warmup_epochs": 1,
             "resume": False, "checkpoint_every": 1, **train}
    return repo_params({"seed": 7, "model.arch": "move", "model.embedding_dim": 8,
                        "data.extra.source": None,
                        **{f"model.move.{k}": v for k, v in move.items()},
                        **{f"train.{k}": v for k, v in short.items()}})


@pytest.fixture(scope="module")
def data():
    return (make_feature_set(n_works=4, versions=3, n_noise=1, spect_len=L, seed=0),
            make_feature_set(n_works=3, versions=2, n_noise=1, spect_len=L, seed=1))


def default_setup():
    return DeviceSetup(tf.distribute.get_strategy(), "default")


def weights(result):
    return [np.array(v) for v in result.encoder.get_weights()]


def test_deterministic_and_resumable_after_a_kill(data, tmp_path):
    """Run A uninterrupted; run B killed after epoch 2 (its first epochs are an independent run:
    determinism), then resumed from its checkpoint: the same history and weights as A."""
    tr, va = data
    params = tiny_params()
    a = fit(params, tr, va, tmp_path / "a", default_setup())
    assert not (tmp_path / "a").exists()  # checkpoints removed after success

    class Killed(Exception):
        pass

    def kill_after_2(epoch, metrics):
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        fit(params, tr, va, tmp_path / "b", default_setup(), on_epoch=kill_after_2)
    assert (tmp_path / "b" / "last.npz").exists()
    resumed_epochs = []
    b = fit(tiny_params(resume=True), tr, va, tmp_path / "b", default_setup(),
            on_epoch=lambda e, m: resumed_epochs.append(e))
    assert resumed_epochs == [3]
    assert b.state.history == a.state.history
    assert all(np.array_equal(x, y) for x, y in zip(weights(a), weights(b)))
    assert 0.0 <= a.state.best_val_map <= 1.0 and a.pairs_per_second > 0


def test_resume_continues_the_last_epoch_when_an_earlier_one_was_best(data, tmp_path,
                                                                      monkeypatch):
    """The best checkpoint holds only weights to come back to: the optimiser state (step count,
    moments, slow weights) must be the last epoch's, or the resumed run diverges from A."""
    import coverid.train.fit as train_mod

    tr, va = data
    monkeypatch.setattr(train_mod, "validation_map",
                        lambda trainer, *a: 1.0 / (1 + int(trainer.optimizer.iterations)))

    class Killed(Exception):
        pass

    def kill_after_2(epoch, metrics):
        if epoch == 2:
            raise Killed

    params = tiny_params(patience=5)
    a = fit(params, tr, va, tmp_path / "a", default_setup())
    with pytest.raises(Killed):
        fit(params, tr, va, tmp_path / "b", default_setup(), on_epoch=kill_after_2)
    b = fit(tiny_params(resume=True, patience=5), tr, va, tmp_path / "b", default_setup())
    assert a.state.best_epoch == b.state.best_epoch == 1  # the best is not the last epoch
    assert b.state.history == a.state.history
    assert all(np.array_equal(x, y) for x, y in zip(weights(a), weights(b)))


def test_contrastive_random_pairs_train(data):
    tr, va = data
    res = fit(tiny_params(loss="contrastive", negative_sampling="random", epochs=1), tr, va, None,
              default_setup())
    assert np.isfinite(res.state.history[0]["loss"]) and res.head is None


def test_early_stopping_keeps_the_best_bce_hardest(data, monkeypatch):
    tr, va = data
    # val MAP falls after epoch 1, so training stops after `patience` checks with epoch 1's
    # weights
    import coverid.train.fit as train_mod

    maps, kept = iter([0.5, 0.4, 0.3, 0.2, 0.1, 0.0]), []

    def falling_map(trainer, *args):
        kept.append([np.array(w) for w in trainer.encoder.get_weights()])
        return next(maps)

    monkeypatch.setattr(train_mod, "validation_map", falling_map)
    params = tiny_params(epochs=6, patience=2, loss="bce", negative_sampling="hardest")
    res = fit(params, tr, va, None, default_setup())
    assert res.state.epoch == 3 and res.state.stopped_early and res.state.best_epoch == 1
    assert all(np.array_equal(a, b) for a, b in zip(weights(res), kept[0]))
    assert not all(np.array_equal(a, b) for a, b in zip(weights(res), kept[-1]))
    assert np.isfinite(res.state.history[0]["loss"]) and res.head is not None


def test_hardest_negative_is_the_closest_other_work(data):
    tr, _ = data
    params = tiny_params(loss="contrastive", negative_sampling="hardest")
    trainer = Trainer(params, (23, L), default_setup())
    labels = encode_labels(tr.work_id)
    (x1, x2), w = next(iter(make_dataset(tr.features, labels, params["train"], 7, 0)))
    got = float(trainer.loss(((x1, x2), w), training=False))
    e1 = np.asarray(trainer.encoder(x1, training=False))
    e2 = np.asarray(trainer.encoder(x2, training=False))
    cands, cw = np.concatenate([e1, e2]), np.concatenate([w[:, 0], w[:, 1]])
    m = params["train"]["losses"]["contrastive"]["margin"]
    terms = []
    for i in range(len(e1)):
        terms.append(np.sum((e1[i] - e2[i]) ** 2))
        dn = min(np.linalg.norm(e1[i] - c) for c, cwi in zip(cands, cw) if cwi != w[i, 0])
        terms.append(max(0.0, m - dn) ** 2)
    assert got == pytest.approx(np.mean(terms), rel=1e-4)


@pytest.mark.parametrize("loss, mining", [("contrastive", "hard"), ("contrastive", "semi_hard"),
                                          ("bce", "semi_hard"), ("bce", "all")])
def test_pair_losses_are_mined_in_pk_batches(data, loss, mining):
    """negative_sampling batch: P x K batches, the step's loss is the numpy reference's on the
    batch's embeddings (and the BCE head's weights)."""
    from coverid.model.losses import mined_bce_np, mined_contrastive_np

    tr, _ = data
    params = tiny_params(loss=loss, negative_sampling="batch", **{f"losses.{loss}.mining": mining})
    trainer = Trainer(params, (23, L), default_setup())
    assert trainer.mode == "pk"
    x, w = next(iter(make_dataset(tr.features, encode_labels(tr.work_id), params["train"], 7, 0)))
    got = float(trainer.loss((x, w), training=False))
    e, w = np.asarray(trainer.encoder(x, training=False)), np.asarray(w)
    cfg = params["train"]["losses"][loss]
    if loss == "contrastive":
        want = mined_contrastive_np(e, w, cfg["margin"], mining)
    else:
        want = mined_bce_np(e, w, *trainer.head_arrays(), mining)
    assert got == pytest.approx(want, rel=1e-4)


def test_bce_in_pk_batches_trains(data):
    tr, va = data
    res = fit(tiny_params(loss="bce", negative_sampling="batch", epochs=1), tr, va, None,
              default_setup())
    assert np.isfinite(res.state.history[0]["loss"]) and res.head is not None


def test_bce_head_starts_as_a_standardised_l1_distance(data):
    from coverid.train.fit import init_head

    tr, _ = data
    trainer = Trainer(tiny_params(loss="bce"), (23, L), default_setup())
    init_head(trainer, tr.features, 7, n=len(tr.features))
    e = np.asarray(trainer.encoder(tr.features, training=False), np.float64)
    l1 = np.array([np.abs(e[i] - e[j]).sum() for i in range(len(e)) for j in range(i + 1, len(e))])
    w, bias = trainer.head_arrays()
    np.testing.assert_allclose(w, -1.0 / l1.std(), rtol=1e-4)
    z = np.abs(e[0] - e[1]) @ w + bias  # logits are L1 distances standardised, negated
    assert z == pytest.approx((l1.mean() - l1[0]) / l1.std(), rel=1e-3, abs=1e-3)


def test_triplet_step_in_a_mirrored_strategy(data):
    tr, va = data
    params = tiny_params(epochs=1, steps_per_epoch=1, loss="triplet",
                         **{"losses.triplet.mining": "semi_hard"})
    setup = DeviceSetup(tf.distribute.MirroredStrategy(["/cpu:0"]), "mirrored")
    res = fit(params, tr, va, None, setup)
    assert np.isfinite(res.state.history[0]["loss"]) and res.devices["replicas"] == 1
    assert res.head is None


def test_mixed_precision_and_xla_code_path(data):
    """The GPU options (loss scaling around Lookahead, float32 outputs, jit) run on the CPU too."""
    import keras

    tr, va = data
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        setup = DeviceSetup(tf.distribute.get_strategy(), "default", mixed_precision=True, xla=True)
        res = fit(tiny_params(epochs=1), tr, va, None, setup)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(res.state.history[0]["loss"])
    assert res.encoder.output.dtype == "float32"


def test_choose_strategy():
    assert choose_strategy([], None) == "default"
    assert choose_strategy(["/gpu:0"], None) == "one_device"
    assert choose_strategy(["/gpu:0", "/gpu:1"], None) == "mirrored"
    cfg = json.dumps({"cluster": {"worker": ["h1:1", "h2:1"]}, "task": {"type": "worker", "index": 0}})
    assert choose_strategy([], cfg) == "multi_worker"
    assert choose_strategy(["/gpu:0"], json.dumps({"cluster": {"worker": ["h1:1"]}})) == "one_device"
    assert choose_strategy([], "not json") == "default"


def test_unknown_loss_and_no_versions(data):
    tr, va = data
    with pytest.raises(ConfigError, match="loss must be one of contrastive, bce, triplet; got 'arcface'"):
        tiny_params(loss="arcface")  # overrides are checked as params.yaml is
    plain = tiny_params().to_dict()  # a plain dict is checked by the trainer
    plain["train"]["loss"] = "arcface"
    with pytest.raises(CoveridError, match="unknown train.loss"):
        fit(plain, tr, va, None, default_setup())
    singles = make_feature_set(n_works=0, versions=1, n_noise=4, spect_len=L)
    with pytest.raises(CoveridError, match="two or more versions"):
        fit(tiny_params(), singles, va, None, default_setup())


def test_write_curve_marks_the_kept_epoch(tmp_path, monkeypatch):
    import matplotlib.figure

    saved = []
    real = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: (saved.append(fig), real(fig, *a, **k))[1])
    hist = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25, "val_map": 0.75},
            {"epoch": 3, "loss": 0.2, "val_map": 0.7}]
    paths = write_curve(hist, tmp_path, 2, "bag/triplet: loss on train")
    assert [p.name for p in paths] == ["train_curve.csv", "val_map.csv", "train_curve.png"]
    assert (tmp_path / "train_curve.csv").read_text().splitlines() == [
        "epoch,loss", "1,0.500000", "2,0.250000", "3,0.200000"]
    # only the validated epochs: DVC plots would draw a missing val_map as 0
    assert (tmp_path / "val_map.csv").read_text().splitlines() == [
        "epoch,val_map", "2,0.750000", "3,0.700000"]
    assert (tmp_path / "train_curve.png").read_bytes()[:4] == b"\x89PNG"
    ax = saved[0].axes[0]
    assert ax.get_title() == "bag/triplet: loss on train"
    marks = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_xdata()[0] for line in marks] == [2]
    assert [t.get_text() for t in ax.texts] == ["kept: epoch 2"]


@pytest.mark.slow
@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
def test_train_stage_end_to_end(data, tmp_path, monkeypatch, fused):
    """stages/train.py on files: model dir, reports, timings, MLflow run, registry; then load
    from the registry. Training again gives the same model bytes (DVC's hash reproduces)."""
    import mlflow
    from conftest import run_stage_script

    from coverid.core import paths
    from coverid.data.splits import write_splits
    from coverid.data.store import write_features
    from coverid.model.embedder import fingerprint, load_embedder

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("COVERID_CACHE", str(tmp_path / "cache"))
    params = tiny_params(epochs=2)
    params["data"].update(source="synth", processed_dir="processed")
    fs = make_feature_set(n_works=6, versions=3, n_noise=2, spect_len=L, seed=2)
    if fused:
        fs = stacked(fs)
    write_features(paths.processed_file(params), fs)
    works = sorted(set(fs.work_id))
    write_splits(paths.splits_file(params),
                 {w: ("val" if i % 3 == 0 else "train") for i, w in enumerate(works)})
    tf.keras.backend.clear_session()  # as in a new process: layer names count from 0
    run_stage_script("train", params)
    metrics = json.loads((tmp_path / "reports/train.json").read_text())
    if fused:
        assert metrics["melody_epochs_run"] == 2 and set(metrics) >= {"best_val_map", "hpcp_final_loss"}
    else:
        assert metrics["epochs_run"] == 2 and set(metrics) >= {"best_val_map", "final_loss"}
    assert "seconds" not in json.dumps(metrics)  # timings apart from the DVC metrics
    timings = json.loads(paths.timings_file("train").read_text())
    assert timings["train_seconds"] > 0 and timings["wall_seconds"] > 0
    assert (tmp_path / "reports/plots/train_curve.csv").read_text().startswith("epoch,loss\n")
    assert (tmp_path / "reports/plots/val_map.csv").read_text().startswith("epoch,val_map\n")
    local = load_embedder(paths.MODEL_DIR)
    assert "train_run_id" not in local.config
    [run] = mlflow.search_runs(filter_string="tags.`coverid.stage` = 'train'", output_format="list")
    assert run.data.tags["coverid.model"] == local.fingerprint and "val_map" in run.data.metrics
    remote = load_embedder("models:/coverid-encoder/latest")
    np.testing.assert_allclose(remote.embed(fs.features[:3]), local.embed(fs.features[:3]), atol=1e-6)
    assert (tmp_path / "cache").is_dir() and not paths.CHECKPOINTS.exists()
    first = {p.name: p.read_bytes() for p in paths.MODEL_DIR.iterdir()}
    tf.keras.backend.clear_session()  # as in a new process: layer names count from 0 again
    run_stage_script("train", params)
    assert {p.name: p.read_bytes() for p in paths.MODEL_DIR.iterdir()} == first
    assert fingerprint(paths.MODEL_DIR) == local.fingerprint


def stacked(fs):
    """`fs` as an 'hpcp+melody' input: its rows, then the same songs' rows reversed in time."""
    from dataclasses import replace

    return replace(fs, features=np.concatenate([fs.features, fs.features[:, :, ::-1]], axis=1),
                   feature="hpcp+melody")


def test_fused_input_trains_one_encoder_per_feature(data, tmp_path):
    """fit_fused: each feature's encoder is exactly what `fit` trains on that feature alone;
    the saved model joins them (weight model.fusion_weight), its val MAP is measured, and the
    report carries each encoder's own figures."""
    from coverid.model.encoders import fused_parts
    from coverid.train.fusion import embedding_map, fit_fused, fused_report

    params = tiny_params(epochs=2)
    params["model"]["fusion_weight"] = 0.5
    train_fs, val_fs = stacked(data[0]), stacked(data[1])
    result = fit_fused(params, train_fs, val_fs, tmp_path / "ckpt", default_setup())
    assert result.fused and list(result.parts) == ["hpcp", "melody"] and result.head is None
    alone = fit(params, train_fs.part("melody"), val_fs.part("melody"), None, default_setup())
    for got, want in zip(result.parts["melody"].encoder.get_weights(), alone.encoder.get_weights()):
        np.testing.assert_array_equal(got, want)
    parts = fused_parts(result.encoder)
    x = val_fs.features
    e = np.asarray(result.encoder(x))
    e_h, e_m = np.asarray(parts["hpcp"](x[:, :23])), np.asarray(parts["melody"](x[:, 23:]))
    np.testing.assert_allclose(e, np.concatenate([e_h, 0.5 * e_m], 1) / np.sqrt(1.25), atol=1e-6)
    from coverid.model.embedder import Embedder

    assert result.val_map == pytest.approx(embedding_map(Embedder(result.encoder, {"metric": "euclidean"}),
                                                         val_fs, 8))
    metrics, timings = fused_report(result, len(train_fs), len(val_fs))
    assert metrics["best_val_map"] == pytest.approx(result.val_map, abs=1e-6)
    assert metrics["melody_epochs_run"] == 2 and "hpcp_best_val_map" in metrics and "epochs_run" not in metrics
    assert timings["train_seconds"] > 0
    assert not (tmp_path / "ckpt").exists()  # each encoder's checkpoints removed on success


def test_fused_bce_model_refits_its_head_on_the_joined_embedding(data):
    from coverid.train.fusion import fit_fused

    params = tiny_params(epochs=1, loss="bce")
    result = fit_fused(params, stacked(data[0]), stacked(data[1]), None, default_setup())
    w, bias = result.head
    assert w.shape == (16,) and np.isfinite(bias) and 0 <= result.val_map <= 1


def test_fusion_dim_whitens_the_joined_embedding(data):
    """model.fusion_dim: the joined embedding PCA-whitened on the training songs (unit norm,
    that many dims, saved and loaded as one model)."""
    from coverid.model.encoders import projection_of
    from coverid.model.whiten import project, whitening
    from coverid.train.fusion import fit_fused

    params = tiny_params(epochs=1)
    params["model"]["fusion_dim"] = 6
    train_fs, val_fs = stacked(data[0]), stacked(data[1])
    result = fit_fused(params, train_fs, val_fs, None, default_setup())
    e = np.asarray(result.encoder(val_fs.features))
    assert e.shape == (len(val_fs), 6) and projection_of(result.encoder) is not None
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    joined = result.encoder.get_layer("fused").output
    import keras

    full = keras.Model(result.encoder.input, joined)
    kernel, bias = whitening(np.asarray(full(train_fs.features)), 6, params["model"]["projection_shrinkage"])
    # (float32 embeddings: the smallest whitened components amplify their rounding)
    np.testing.assert_allclose(e, project(np.asarray(full(val_fs.features)), kernel, bias), atol=1e-3)
