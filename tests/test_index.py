"""The song index: build/search/add round trips, index kinds, self-matches, bad input, atomicity.

Runs on fakes (no TF, no essentia): an embedder that projects features with a fixed random
matrix, and a feature extractor that reads "work=W var=V" from tiny text files posing as audio.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import model_config

import coverid.search.identify as ident
from coverid.core.errors import BadInputError, CoveridError
from coverid.eval.distance import pairwise
from coverid.search.index import Song, build_index, candidate_space, load_index

ICFG = {"exact_max": 1000, "approx": "pqfs", "pq_dims": 2, "train_max": 1000, "candidates": 1000,
        "hnsw_m": 8, "ef_construction": 40, "ef_search": 64}
SPECT_LEN, DIM = 40, 16


class FakeEmbedder:
    """Same attributes as coverid.model.embedder.Embedder; embed = flatten @ fixed random matrix."""

    def __init__(self, seed: int = 0, metric: str = "euclidean", spect_len: int = SPECT_LEN,
                 feature: str = "hpcp", run: str = "run1") -> None:
        rng = np.random.default_rng(seed)
        rows = 23 * len(feature.split("+"))
        self.proj = rng.standard_normal((rows * spect_len, DIM)).astype(np.float32) / 10
        self.metric = metric
        self.fingerprint = run
        self.head = (-np.abs(rng.standard_normal(DIM)).astype(np.float32), 2.0) if metric == "bce" else None
        self.config = model_config({"feature": feature, "max_failed_fraction": 0.5, "scheduler": "single"},
                                   arch="fake", loss="bce" if metric == "bce" else "contrastive",
                                   metric=metric, spect_len=spect_len, tile=True, max_frames=None,
                                   params_hash="abc123")
        self.calls = 0

    def embed(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        self.calls += 1
        x = np.asarray(x, dtype=np.float32)
        return (x.reshape(len(x), -1) @ self.proj).astype(np.float32)


MODELS = {"modelA": lambda: FakeEmbedder(0), "modelB": lambda: FakeEmbedder(1),
          "modelS": lambda: FakeEmbedder(0, spect_len=30), "modelC": lambda: FakeEmbedder(0, feature="chroma_cens"),
          "modelBCE": lambda: FakeEmbedder(0, metric="bce"),
          "modelF": lambda: FakeEmbedder(0, feature="hpcp+melody")}


def fake_open_model(model):
    """Models by name (the sidecar stores absolute paths: use the last component)."""
    name = Path(str(model)).name
    if name not in MODELS:
        raise BadInputError(model, "model directory not found")
    return MODELS[name]()


def fake_features(path, pcfg, feature):
    """{part: (T, 12)} chroma from a text file "work=W var=V": a work's pattern plus a version's
    noise (the same for each part of a stacked feature)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "audio file not found")
    text = path.read_text(errors="replace")
    if not text.startswith("work="):
        raise BadInputError(path, "cannot decode audio (invalid data)")
    fields = dict(kv.split("=") for kv in text.split())
    base = np.random.default_rng(int(fields["work"])).random((150, 12))
    noise = np.random.default_rng(1000 + int(fields["var"])).random((150, 12))
    return {part: (0.8 * base + 0.2 * noise).astype(np.float32) for part in feature.split("+")}



def features_interrupted_at(n: int):
    """fake_features that raises KeyboardInterrupt on its n-th call (a user's Ctrl-C)."""
    calls = {"n": 0}

    def load(path, pcfg, feature):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return fake_features(path, pcfg, feature)

    return load

def write_song(path: Path, work: int, var: int) -> Path:
    """A fake audio file for (work, variation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"work={work} var={var}")
    return path


def make_audio_dir(root: Path, n_works: int = 4, versions: int = 3, n_noise: int = 2, start: int = 0) -> Path:
    """works W_i with `versions` files each, plus noise files at the top level."""
    for w in range(start, start + n_works):
        for v in range(versions):
            write_song(root / f"W_{w}" / f"P_{w}_{v}.wav", w, v)
    for n in range(n_noise):
        write_song(root / f"N_{start + n}.wav", 500 + start + n, 0)
    return root


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    """Route model loading and feature extraction to the fakes; no project threshold file
    unless a test writes one."""
    monkeypatch.setattr(ident, "open_model", fake_open_model)
    monkeypatch.setattr(ident, "load_features", fake_features)
    monkeypatch.setattr(ident, "THRESHOLD_FILE", tmp_path / "reports" / "threshold.json")


@pytest.fixture
def built(tmp_path, fakes):
    """An index of 4 works x 3 versions + 2 noise songs, with model A."""
    audio = make_audio_dir(tmp_path / "audio")
    index = ident.build_from("modelA", tmp_path / "idx", ICFG, audio_dir=audio)
    return SimpleNamespace(audio=audio, index=index, dir=tmp_path / "idx", tmp=tmp_path)


def brute_force(index, q, metric=None, head=None):
    """Rows ordered by exact distance (ties by row), and the distances."""
    d = pairwise(q[None], np.asarray(index.embeddings), metric or index.metric, head or index.head)[0]
    order = np.lexsort((np.arange(len(d)), d))
    return order, d


def test_build_search_round_trip(built, tmp_path):
    idx = load_index(built.dir)
    assert idx.count == 14 and idx.kind == "flat" and idx.metric == "euclidean"
    assert idx.embeddings.shape == (14, DIM)
    meta = json.loads((built.dir / "meta.json").read_text())
    assert meta["model"]["source"] == str(Path("modelA").resolve())
    assert meta["features"]["feature"] == "hpcp" and meta["index"]["count"] == 14
    cols = meta["songs"]
    by_id = {p: {k: cols[k][i] for k in cols} for i, p in enumerate(cols["perf_id"])}
    assert by_id["P_1_2"]["work_id"] == "W_1" and by_id["N_0"]["work_id"] == "W_unknown_N_0"
    assert by_id["P_1_2"]["title"] is None and len(by_id["P_1_2"]["sha1"]) == 40
    assert by_id["P_1_2"]["path"] == str((built.audio / "W_1" / "P_1_2.wav").resolve())
    # a new version of work 1 finds work 1 first, with exact, sorted distances
    query = write_song(tmp_path / "q" / "new.wav", 1, 7)
    emb = FakeEmbedder(0)
    res = ident.identify([query], idx, emb, k=5, threshold=None)
    assert res[0]["query"] == str(query)
    hits = res[0]["results"]
    assert [h["work_id"] for h in hits[:3]] == ["W_1"] * 3
    order, d = brute_force(idx, ident.embed_files([query], emb)[0])
    assert [h["perf_id"] for h in hits] == [idx.songs[i].perf_id for i in order[:5]]
    np.testing.assert_allclose([h["distance"] for h in hits], d[order[:5]], rtol=1e-4)
    assert all(h["is_cover"] is None for h in hits)


def test_fused_model_extracts_every_feature_of_its_input(tmp_path, fakes, monkeypatch):
    """A model of 'hpcp+melody' inputs: each song's features are extracted for both parts and
    stacked (46 rows); the sidecar records the stack; a model of HPCP alone cannot search it."""
    seen = []
    monkeypatch.setattr(ident, "load_features",
                        lambda path, pcfg, feature: seen.append(feature) or fake_features(path, pcfg, feature))
    fused = FakeEmbedder(0, feature="hpcp+melody")
    pcfg = ident.preprocess_config(fused)
    assert (pcfg["feature"], list(pcfg["fusion"])) == ("hpcp", ["melody"])
    assert ident.feature_config(fused)["feature"] == "hpcp+melody"
    assert ident.probe_input(ident.feature_config(fused)).shape == (1, 46, SPECT_LEN)
    audio = make_audio_dir(tmp_path / "audio")
    ident.build_from("modelF", tmp_path / "idx", ICFG, audio_dir=audio)
    idx = load_index(tmp_path / "idx")
    assert json.loads((tmp_path / "idx" / "meta.json").read_text())["features"]["feature"] == "hpcp+melody"
    assert set(seen) == {"hpcp+melody"} and idx.count == 14
    x = ident.model_input(write_song(tmp_path / "q" / "new.wav", 1, 7), fused)
    assert x.shape == (46, SPECT_LEN)
    np.testing.assert_array_equal(x[:23], x[23:])  # the fake gives both parts the same chroma
    hits = ident.identify([tmp_path / "q" / "new.wav"], idx, fused, k=3, threshold=None)[0]["results"]
    assert [h["work_id"] for h in hits] == ["W_1"] * 3
    with pytest.raises(CoveridError, match="another model"):
        ident.open_for_search(tmp_path / "idx", "modelA")


def test_index_kind_chosen_by_size_and_approx_matches_exact(tmp_path, fakes):
    audio = make_audio_dir(tmp_path / "audio", n_works=10, versions=4, n_noise=4)
    query = write_song(tmp_path / "q.wav", 3, 9)
    results = {}
    for kind in ("pqfs", "hnsw"):
        icfg = {**ICFG, "exact_max": 10, "approx": kind}
        idx = ident.build_from("modelA", tmp_path / f"idx_{kind}", icfg, audio_dir=audio)
        assert idx.kind == kind and idx.faiss_index.ntotal == 44
        results[kind] = ident.identify([query], idx, FakeEmbedder(0), k=8)[0]["results"]
    exact = ident.build_from("modelA", tmp_path / "idx_flat", ICFG, audio_dir=audio)
    assert exact.kind == "flat"
    want = ident.identify([query], exact, FakeEmbedder(0), k=8)[0]["results"]
    # with candidates >= N the approximate kinds re-rank everything: identical answers
    assert results["pqfs"] == want and results["hnsw"] == want


def test_approx_candidates_are_reranked_exactly(tmp_path, fakes):
    audio = make_audio_dir(tmp_path / "audio", n_works=10, versions=4, n_noise=4)
    icfg = {**ICFG, "exact_max": 10, "candidates": 12}
    idx = ident.build_from("modelA", tmp_path / "idx", icfg, audio_dir=audio)
    q = ident.embed_files([write_song(tmp_path / "q.wav", 3, 9)], FakeEmbedder(0))
    hits = idx.search(q, 5)[0]
    order, d = brute_force(idx, q[0])
    assert len(hits) == 5
    for h in hits:  # reported distances are exact even though candidates came from PQ codes
        assert h.distance == pytest.approx(float(d[h.row]), rel=1e-4)
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    assert hits[0].row == order[0]


def test_self_match_is_excluded(built, tmp_path):
    idx = load_index(built.dir)
    indexed = built.audio / "W_2" / "P_2_1.wav"
    copy = tmp_path / "elsewhere" / "copy.wav"
    copy.parent.mkdir()
    shutil.copy(indexed, copy)  # same bytes, other path: same song
    for query in (indexed, copy):
        res = ident.identify([query], idx, FakeEmbedder(0), k=13)[0]["results"]
        ids = [r["perf_id"] for r in res]
        assert "P_2_1" not in ids and len(ids) == 13
        assert ids[:2] == ["P_2_0", "P_2_2"] or ids[:2] == ["P_2_2", "P_2_0"]
    assert idx.self_matches(indexed, None) == idx.self_matches(None, ident.file_sha1(copy))


def test_threshold_decisions_and_sources(tmp_path, fakes, monkeypatch):
    audio = make_audio_dir(tmp_path / "audio")
    tfile = tmp_path / "t.json"
    tfile.write_text(json.dumps({"threshold": 0.5, "metric": "cosine", "objective": "f1"}))
    idx = ident.build_from("modelA", tmp_path / "idx", ICFG, audio_dir=audio, threshold_file=tfile)
    assert idx.meta["threshold"]["value"] == 0.5 and idx.metric == "cosine"
    emb = FakeEmbedder(0)
    assert ident.resolve_threshold(None, idx, emb) == 0.5
    assert ident.resolve_threshold(0.01, idx, emb) == 0.01
    res = ident.identify([write_song(tmp_path / "q.wav", 0, 5)], idx, emb, k=14, threshold=0.02)
    hits = res[0]["results"]
    assert res[0]["threshold"] == 0.02
    assert all(h["is_cover"] == (h["distance"] <= 0.02) for h in hits)
    assert {h["is_cover"] for h in hits} == {True, False}
    assert max(h["distance"] for h in hits) <= 2.0  # cosine distances
    # a threshold tuned for another model is refused when given explicitly
    tfile.write_text(json.dumps({"threshold": 0.5, "model": "other"}))
    with pytest.raises(BadInputError, match="tuned for model other"):
        ident.build_from("modelA", tmp_path / "idx2", ICFG, audio_dir=audio, threshold_file=tfile)
    # ... and ignored (no decision) when it is the default reports/threshold.json
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "threshold.json").write_text(tfile.read_text())
    plain = ident.build_from("modelA", tmp_path / "idx3", ICFG, audio_dir=audio)
    assert plain.meta["threshold"] is None and ident.resolve_threshold(None, plain, emb) is None


def test_bce_model_reranks_with_the_head(tmp_path, fakes):
    audio = make_audio_dir(tmp_path / "audio", n_works=10, versions=4, n_noise=4)
    emb = FakeEmbedder(0, metric="bce")
    q = ident.embed_files([write_song(tmp_path / "q.wav", 5, 9)], emb)[0]
    for icfg in (ICFG, {**ICFG, "exact_max": 10, "candidates": 20}):
        idx = ident.build_from("modelBCE", tmp_path / "idx", icfg, audio_dir=audio)
        assert idx.metric == "bce" and idx.head is not None
        hits = idx.search(q[None], 6)[0]
        order, d = brute_force(idx, q, "bce", emb.head)
        for h in hits:
            assert h.distance == pytest.approx(float(d[h.row]), rel=1e-4) and 0 <= h.distance <= 1
        if idx.kind == "flat":  # exact: the head's own ranking
            assert [h.row for h in hits] == list(order[:6])
        assert idx.songs[hits[0].row].work_id == "W_5"


def test_model_source_keeps_uris_and_resolves_dirs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ident.model_source("models:/coverid-encoder/latest") == "models:/coverid-encoder/latest"
    assert ident.model_source("runs:/abc/encoder") == "runs:/abc/encoder"
    assert ident.model_source("data/models/encoder") == str(tmp_path / "data/models/encoder")


def test_candidate_space_for_bce_is_weighted():
    x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    head = (np.array([-4.0, 1.0, -1.0], dtype=np.float32), 0.0)
    np.testing.assert_allclose(candidate_space(x, "bce", head), [[2.0, 0.0, 3.0]])
    np.testing.assert_allclose(np.linalg.norm(candidate_space(x, "cosine")), 1.0, rtol=1e-6)
    with pytest.raises(CoveridError):
        candidate_space(x, "bce", None)


def test_add_round_trip_duplicates_and_growth(built, tmp_path):
    more = make_audio_dir(tmp_path / "more", n_works=2, versions=2, n_noise=0, start=10)
    idx, added, skipped = ident.add_from(built.dir, audio_dir=more)
    assert added == 4 and idx.count == 18 and not skipped and idx.embeddings.shape == (18, DIM)
    q = write_song(tmp_path / "q.wav", 11, 5)
    assert ident.identify([q], idx, FakeEmbedder(0), k=2)[0]["results"][0]["work_id"] == "W_11"
    # duplicates are refused by default, skipped on request
    with pytest.raises(CoveridError, match="4 perf ids already indexed"):
        ident.add_from(built.dir, audio_dir=more)
    write_song(more / "W_12" / "P_12_0.wav", 12, 0)
    idx, added, skipped = ident.add_from(built.dir, audio_dir=more, skip_existing=True)
    assert added == 1 and len(skipped) == 4 and idx.count == 19
    # growing past the exact_max recorded at build time switches to the approximate kind
    small = ident.build_from("modelA", tmp_path / "small", {**ICFG, "exact_max": 16}, audio_dir=built.audio)
    assert small.kind == "flat"
    grown, _, _ = ident.add_from(tmp_path / "small", audio_dir=more)
    assert grown.kind == "pqfs" and grown.count == 19 and grown.faiss_index.ntotal == 19


def test_add_with_another_model_or_features_is_refused(built):
    for model, words in (("modelB", "weights differ"), ("modelS", "another model"),
                         ("modelC", "another model")):
        with pytest.raises(BadInputError, match=words):
            ident.add_from(built.dir, model=model, audio_dir=built.audio)
    with pytest.raises(BadInputError, match="another model"):
        ident.open_for_search(built.dir, "modelBCE")
    index, embedder = ident.open_for_search(built.dir)  # default: the model it was built with
    assert index.count == 14 and isinstance(embedder, FakeEmbedder)


def test_feature_config_change_is_detected(built):
    meta = json.loads((built.dir / "meta.json").read_text())
    meta["features"]["audio"]["hop_size"] = 1024
    (built.dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BadInputError, match="another feature configuration .*audio"):
        ident.open_for_search(built.dir)


@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / "index.faiss").write_bytes((d / "index.faiss").read_bytes()[:100]), "corrupt FAISS index"),
    (lambda d: (d / "index.faiss").unlink(), "FAISS index file missing"),
    (lambda d: (d / "meta.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "meta.json").write_text("[]"), "expected a JSON object"),
    (lambda d: (d / "meta.json").write_text((d / "meta.json").read_text().replace('"sha1": [', '"sha1": [1, ')),
     "columns differ in length"),
    (lambda d: (d / "meta.json").unlink(), "not a coverid index"),
    (lambda d: (d / "embeddings.npy").write_bytes(b"\x93NUMPY garbage"), "corrupt embeddings"),
    (lambda d: np.save(d / "embeddings.npy", np.zeros((3, DIM), np.float32)), "sidecar says"),
])
def test_corrupt_index_is_a_one_line_error(built, damage, words):
    damage(built.dir)
    with pytest.raises(BadInputError, match=words) as e:
        load_index(built.dir)
    assert "\n" not in str(e.value)


def test_interrupted_build_keeps_previous_index(built, monkeypatch):
    import faiss

    before = {p.name: p.read_bytes() for p in built.dir.iterdir()}

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(faiss, "write_index", boom)  # fails after embeddings.npy is written
    with pytest.raises(RuntimeError, match="disk full"):
        ident.build_from("modelA", built.dir, ICFG, audio_dir=built.audio)
    monkeypatch.undo()
    monkeypatch.setattr(ident, "open_model", fake_open_model)

    monkeypatch.setattr(ident, "load_features", features_interrupted_at(5))
    with pytest.raises(KeyboardInterrupt):
        ident.add_from(built.dir, audio_dir=built.audio)
    assert {p.name: p.read_bytes() for p in built.dir.iterdir()} == before
    assert sorted(p.name for p in built.tmp.iterdir()) == ["audio", "idx"]  # no temp dirs left
    assert load_index(built.dir).count == 14


def test_build_refuses_to_overwrite_a_foreign_directory(tmp_path, fakes):
    other = tmp_path / "mydocs"
    other.mkdir()
    (other / "thesis.txt").write_text("precious")
    with pytest.raises(BadInputError, match="not a coverid index; refusing"):
        ident.build_from("modelA", other, ICFG, audio_dir=make_audio_dir(tmp_path / "audio"))
    assert (other / "thesis.txt").read_text() == "precious"


def test_undecodable_files_are_skipped_within_budget(tmp_path, fakes):
    audio = make_audio_dir(tmp_path / "audio")
    (audio / "W_0" / "broken.wav").write_bytes(b"\x00\x01garbage")
    idx = ident.build_from("modelA", tmp_path / "idx", ICFG, audio_dir=audio)
    assert idx.count == 14
    assert idx.meta["skipped"][0]["path"].endswith("broken.wav")
    for p in list(audio.rglob("P_*.wav"))[:10]:
        p.write_bytes(b"garbage")
    with pytest.raises(CoveridError, match="inputs failed"):
        ident.build_from("modelA", tmp_path / "idx2", ICFG, audio_dir=audio)


def test_build_from_feature_file_with_metadata(tmp_path, fakes):
    from conftest import make_feature_set

    from coverid.data.store import write_features

    fs = make_feature_set(spect_len=SPECT_LEN)
    write_features(tmp_path / "f.h5", fs)
    meta = {"W_1": {"P_1_0": {"perf_title": "Song", "perf_artist": "Band", "work_id": "W_1",
                              "perf_id": "P_1_0"}}}
    (tmp_path / "m.json").write_text(json.dumps(meta))
    idx = ident.build_from("modelA", tmp_path / "idx", ICFG, features=tmp_path / "f.h5",
                           metadata=tmp_path / "m.json")
    assert idx.count == len(fs)
    song = next(s for s in idx.songs if s.perf_id == "P_1_0")
    assert (song.title, song.artist, song.work_id, song.path) == ("Song", "Band", "W_1", None)
    hits = idx.search(idx.embeddings[[0]], 3)[0]
    assert hits[0].row == 0 and hits[0].distance == pytest.approx(0.0, abs=1e-4)
    write_features(tmp_path / "g.h5", make_feature_set(spect_len=30))
    with pytest.raises(BadInputError, match="model expects 23 x 40"):
        ident.build_from("modelA", tmp_path / "idx2", ICFG, features=tmp_path / "g.h5")


def test_build_index_checks_inputs(tmp_path):
    model = {"metric": "euclidean", "dim": 4}
    songs = [Song("a"), Song("a")]
    with pytest.raises(CoveridError, match="duplicate perf ids"):
        build_index(tmp_path / "i", np.zeros((2, 4), np.float32), songs, model, {}, ICFG)
    with pytest.raises(CoveridError, match="non-finite"):
        build_index(tmp_path / "i", np.full((2, 4), np.nan, np.float32), [Song("a"), Song("b")], model, {}, ICFG)
    with pytest.raises(CoveridError, match="cannot rank with the bce"):
        build_index(tmp_path / "i", np.zeros((2, 4), np.float32), [Song("a"), Song("b")], model, {}, ICFG,
                    distance="bce")
    assert not (tmp_path / "i").exists()


def test_float16_storage_halves_the_files_and_keeps_the_ranking(built, tmp_path):
    """index.storage: float16 stores half the bytes; the same songs come back in the same order,
    with the model's distances to float16's rounding; adding songs keeps the dtype; an index
    without the setting (built before it) is float32."""
    f32 = load_index(built.dir)
    assert "storage" not in f32.meta["index"] and f32.embeddings.dtype == np.float32
    f16 = ident.build_from("modelA", tmp_path / "idx16", {**ICFG, "storage": "float16"},
                           audio_dir=built.audio)
    assert f16.embeddings.dtype == np.float16 and f16.meta["index"]["storage"] == "float16"
    np.testing.assert_array_equal(f16.embeddings, np.asarray(f32.embeddings, np.float16))
    header = 128  # .npy header bytes
    assert ((tmp_path / "idx16/embeddings.npy").stat().st_size - header
            == ((built.dir / "embeddings.npy").stat().st_size - header) // 2)
    q = ident.embed_files([write_song(tmp_path / "q.wav", 1, 7)], FakeEmbedder(0))
    a, b = f32.search(q, 14)[0], f16.search(q, 14)[0]
    assert [h.row for h in a] == [h.row for h in b]
    np.testing.assert_allclose([h.distance for h in b], [h.distance for h in a], rtol=2e-3)
    assert [h.distance for h in a] != [h.distance for h in b]  # rounded, not the float32 values
    more = make_audio_dir(tmp_path / "more", n_works=1, versions=2, n_noise=0, start=10)
    grown, added, _ = ident.add_from(tmp_path / "idx16", audio_dir=more)
    assert added == 2 and grown.embeddings.dtype == np.float16 and grown.count == 16
    np.testing.assert_array_equal(grown.embeddings[:14], f16.embeddings)


def test_float16_storage_with_query_expansion(tmp_path):
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((40, 8)).astype(np.float32)
    songs = [Song(f"s{i}", f"W{i // 4}") for i in range(40)]
    model = {"metric": "euclidean", "dim": 8}
    thr = {"threshold": 1.0, "expansion": {"k": 2, "alpha": 1.0}}
    f32 = build_index(tmp_path / "a", emb, songs, model, {}, ICFG, thr)
    f16 = build_index(tmp_path / "b", emb, songs, model, {}, {**ICFG, "storage": "float16"}, thr)
    assert f16.expanded.dtype == np.float16 and f32.expanded.dtype == np.float32
    np.testing.assert_allclose(np.asarray(f16.expanded, np.float32), f32.expanded, atol=2e-3)
    hits32, hits16 = f32.search(emb[:5], 6, [{i} for i in range(5)]), f16.search(
        emb[:5], 6, [{i} for i in range(5)])
    assert [[h.row for h in r] for r in hits16] == [[h.row for h in r] for r in hits32]


def test_storage_that_does_not_fit_or_is_unknown_is_refused(built, tmp_path):
    model = {"metric": "euclidean", "dim": 4}
    songs = [Song("a"), Song("b")]
    with pytest.raises(CoveridError, match="do not fit float16 .*index.storage: float32"):
        build_index(tmp_path / "i", np.full((2, 4), 7e4, np.float32), songs, model, {},
                    {**ICFG, "storage": "float16"})
    assert not (tmp_path / "i").exists()
    build_index(tmp_path / "i", np.full((2, 4), 7e4, np.float32), songs, model, {},
                {**ICFG, "storage": "float32"})
    meta = json.loads((built.dir / "meta.json").read_text())
    meta["index"]["storage"] = "float8"
    (built.dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BadInputError, match="meta.json: index.storage must be float16 or float32"):
        load_index(built.dir)
    meta["index"]["storage"] = "float16"  # the sidecar says float16, the file holds float32
    (built.dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BadInputError, match=r"embeddings.npy: holds float32 .*sidecar says float16"):
        load_index(built.dir)
