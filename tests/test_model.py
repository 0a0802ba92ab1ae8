"""Encoders, the BCE head and the embedder's save/load contract."""

import json

import numpy as np
import pytest
from conftest import model_config, repo_params

keras = pytest.importorskip("keras")

from coverid.core.errors import BadInputError, CoveridError  # noqa: E402
from coverid.eval.distance import paired  # noqa: E402
from coverid.features.transform import tile_pitch  # noqa: E402
from coverid.model.embedder import Embedder, load_embedder, save_embedder  # noqa: E402
from coverid.model.encoders import (  # noqa: E402
    build_encoder,
    build_head,
    head_arrays,
    head_logits,
    min_length_seed,
    seed_encoder,
)


@pytest.fixture(autouse=True)
def _seeded_weights():
    """Random initial weights are seeded, so every test here sees the same network."""
    keras.utils.set_random_seed(0)

# params.yaml's model section, a small MOVE encoder (MOVE's own early pitch pool, no downsampling)
MOVE = repo_params({"model.arch": "move", "model.embedding_dim": 8, "model.move.channels": 4,
                    "model.move.first_kernel": 3, "model.move.kernel": 3, "model.move.dilations": [1, 2],
                    "model.move.pooling": "attention", "model.move.l2_normalize": True,
                    "model.move.dropout": 0.0, "model.move.time_pool": 1, "model.move.downsample": 1,
                    "model.move.pitch_pool": "early"})["model"].to_dict()


def tiled(rng, n, length):
    return np.stack([tile_pitch(rng.random((12, length))) for _ in range(n)]).astype(np.float32)


def test_seed_encoder_shape_and_range():
    enc = seed_encoder((23, 500))
    e = np.asarray(enc(np.random.default_rng(0).random((2, 23, 500)).astype(np.float32)))
    assert e.shape == (2, 512) and (e >= 0).all() and (e <= 1).all()  # sigmoid
    assert min_length_seed() == 222
    with pytest.raises(CoveridError, match="spect_len >= 222"):
        seed_encoder((23, 100))


@pytest.mark.parametrize("pooling,pitch_pool,downsample", [
    ("attention", "early", 1), ("mean", "late", 2), ("max", "early", 3), ("attention", "late", 1),
    ("attention", "gram", 2), ("mean", "key", 2)])
def test_move_is_transposition_invariant_and_length_free(pooling, pitch_pool, downsample):
    rng = np.random.default_rng(1)
    move = {**MOVE["move"], "pooling": pooling, "pitch_pool": pitch_pool, "downsample": downsample}
    enc = build_encoder({**MOVE, "move": move}, (23, 40))
    base = rng.random((3, 12, 40)).astype(np.float32)
    x = np.stack([tile_pitch(b) for b in base])
    shifted = np.stack([tile_pitch(np.roll(b, 5, axis=0)) for b in base])
    e, e_shift = np.asarray(enc(x)), np.asarray(enc(shifted))
    np.testing.assert_allclose(e, e_shift, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert np.asarray(enc(tiled(rng, 2, 17))).shape == (2, 8)  # another length
    # without the pitch max-pool a roll would change the embedding: check the test can fail
    assert not np.allclose(x, shifted)


def test_untiled_input_gives_the_same_embedding_as_tiled():
    rng = np.random.default_rng(2)
    enc12 = build_encoder(MOVE, (12, 30))
    enc23 = build_encoder(MOVE, (23, 30))
    enc23.set_weights(enc12.get_weights())
    base = rng.random((2, 12, 30)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(enc12(base)),
                               np.asarray(enc23(np.stack([tile_pitch(b) for b in base]))), atol=1e-6)


def test_bad_model_params():
    with pytest.raises(CoveridError, match="unknown model.arch"):
        build_encoder({**MOVE, "arch": "resnet"}, (23, 30))
    with pytest.raises(CoveridError, match="pooling"):
        build_encoder({**MOVE, "move": {**MOVE["move"], "pooling": "median"}}, (23, 30))
    with pytest.raises(CoveridError, match="pitch_pool"):
        build_encoder({**MOVE, "move": {**MOVE["move"], "pitch_pool": "middle"}}, (23, 30))
    with pytest.raises(CoveridError, match="12 or 23"):
        build_encoder(MOVE, (7, 30))


def test_head_matches_the_bce_distance():
    rng = np.random.default_rng(3)
    head = build_head(6)
    e1, e2 = rng.standard_normal((2, 5, 6)).astype(np.float32)
    p_cover = 1 / (1 + np.exp(-np.asarray(head_logits(head, e1, e2))))
    np.testing.assert_allclose(paired(e1, e2, "bce", head_arrays(head)), 1 - p_cover, atol=1e-6)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    enc = build_encoder(MOVE, (23, 20))
    head = (rng.standard_normal(8).astype(np.float32), 0.25)
    config = model_config(arch="move", loss="bce", metric="bce", embedding_dim=8, spect_len=20)
    out = tmp_path / "encoder"
    save_embedder(out, enc, config, head)
    save_embedder(out, enc, config, head)  # replacing an existing dir
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder"]
    emb = load_embedder(out)
    x = tiled(rng, 5, 20)
    np.testing.assert_allclose(emb.embed(x, batch_size=2), np.asarray(enc(x)), atol=1e-6)
    assert emb.metric == "bce" and emb.head[1] == 0.25
    np.testing.assert_allclose(emb.head[0], head[0])
    assert emb.embed(x[:0]).shape == (0, 8)
    with pytest.raises(CoveridError, match="do not fit"):
        Embedder(emb.encoder, config, head).embed(np.zeros((1, 12, 20), np.float32))


def test_load_errors(tmp_path):
    with pytest.raises(BadInputError, match="model directory not found"):
        load_embedder(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(BadInputError, match="not a model directory"):
        load_embedder(bad)
    (bad / "encoder.keras").write_bytes(b"not a zip")
    (bad / "config.json").write_text(json.dumps(model_config()))
    with pytest.raises(BadInputError, match="cannot load the Keras model"):
        load_embedder(bad)
    # a config.json of an older coverid lacking a key: one line naming the file and the key
    old = model_config()
    del old["max_frames"]
    (bad / "config.json").write_text(json.dumps(old))
    with pytest.raises(BadInputError) as e:
        load_embedder(bad)
    assert str(e.value) == (f"{bad / 'config.json'}: missing key max_frames (saved by an older "
                            "coverid? train it again)")
    old = model_config()
    del old["preprocess"]["audio"]["whitening"]
    (bad / "config.json").write_text(json.dumps(old))
    with pytest.raises(CoveridError) as e:
        load_embedder(bad)
    assert str(e.value) == f"{bad / 'config.json'}: missing key preprocess.audio.whitening"
    # a key added since (preprocess.audio.melody_frame_size) is filled in: the model loads
    # as far as its (broken) Keras file
    old = model_config()
    del old["preprocess"]["audio"]["melody_frame_size"]
    (bad / "config.json").write_text(json.dumps(old))
    with pytest.raises(BadInputError, match="cannot load the Keras model"):
        load_embedder(bad)
    (bad / "config.json").write_text("{")
    with pytest.raises(BadInputError, match="not valid JSON"):
        load_embedder(bad)


def test_fused_encoder_joins_weighted_unit_embeddings_and_round_trips(tmp_path):
    """fuse_encoders: part i's rows through its encoder, scaled by w_i / sqrt(sum w^2): unit
    norm, squared distance = (d_a^2 + w^2 d_b^2) / (1 + w^2); saved and loaded as one model."""
    from coverid.eval.distance import pairwise
    from coverid.model.encoders import fuse_encoders, fused_parts

    rng = np.random.default_rng(5)
    a, b = build_encoder(MOVE, (23, 20)), build_encoder(MOVE, (23, 20))
    w = 1.5
    fused = fuse_encoders({"hpcp": a, "melody": b}, [1.0, w], (46, 20))
    x = np.concatenate([tiled(rng, 6, 20), tiled(rng, 6, 20)], axis=1)
    ea, eb, e = np.asarray(a(x[:, :23])), np.asarray(b(x[:, 23:])), np.asarray(fused(x))
    assert e.shape == (6, 16) and list(fused_parts(fused)) == ["hpcp", "melody"]
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(e, np.concatenate([ea, w * eb], 1) / np.sqrt(1 + w * w), atol=1e-6)
    np.testing.assert_allclose(pairwise(e, e) ** 2,
                               (pairwise(ea, ea) ** 2 + w * w * pairwise(eb, eb) ** 2) / (1 + w * w),
                               atol=1e-5)
    config = model_config({"feature": "hpcp", "fusion": ["melody"]}, arch="move", feature="hpcp+melody",
                          embedding_dim=16, spect_len=20)
    save_embedder(tmp_path / "encoder", fused, config)
    back = load_embedder(tmp_path / "encoder")
    np.testing.assert_allclose(back.embed(x), e, atol=1e-6)
    assert back.dim == 16 and list(fused_parts(back.encoder)) == ["hpcp", "melody"]
    with pytest.raises(CoveridError, match="do not fit"):
        back.embed(x[:, :23])
    with pytest.raises(CoveridError, match="need as many weights"):
        fuse_encoders({"hpcp": a, "melody": b}, [1.0], (46, 20))
    with pytest.raises(CoveridError, match="23 pitch rows each"):
        fuse_encoders({"hpcp": a, "melody": b}, [1.0, 1.0], (40, 20))


def test_models_saved_before_fusion_still_load(tmp_path):
    """A config.json without preprocess.fusion (saved before it existed) means no fusion."""
    enc = build_encoder(MOVE, (23, 20))
    config = model_config(arch="move", embedding_dim=8, spect_len=20)
    del config["preprocess"]["fusion"]
    save_embedder(tmp_path / "old", enc, config)
    emb = load_embedder(tmp_path / "old")
    assert emb.config["preprocess"]["fusion"] == []


def test_embedding_graphs_run_without_the_arithmetic_optimizer():
    """make_embed_fn turns grappler's arithmetic optimizer off (it made the bag's embeddings
    of the same songs differ between calls on 2 threads), and embeds the same input alike."""
    import keras
    import tensorflow as tf

    from coverid.model.embedder import make_embed_fn

    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": True})
    inp = keras.Input((23, 40))
    parts = [keras.layers.Flatten()(keras.layers.Rescaling(s)(inp)) for s in (1.0, 0.5, 0.25, 2.0)]
    model = keras.Model(inp, keras.layers.Add()(parts))
    fn = make_embed_fn(model)
    assert tf.config.optimizer.get_experimental_options()["arithmetic_optimization"] is False
    x = np.random.default_rng(0).random((64, 23, 40), dtype=np.float32)
    assert np.asarray(fn(x)).tobytes() == np.asarray(fn(x)).tobytes()
