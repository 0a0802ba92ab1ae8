"""Da-TACOS: download from a local HTTP server (never the internet), readers, preprocessing."""

from __future__ import annotations

import hashlib
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import repo_params

from coverid.core.errors import BadInputError, CoveridError
from coverid.core.skips import SkipLog
from coverid.data import datacos, sources

WORKS = {"W_1": ["P_10", "P_11"], "W_2": ["P_20", "P_21", "P_22"], "W_3": ["P_30"]}


def make_tree(root: Path, subset: str = "benchmark", feature: str = "crema", works=WORKS,
              frames: int = 300, seed: int = 0) -> Path:
    """Write a Da-TACOS-like feature folder and metadata JSON under `root`."""
    rng = np.random.default_rng(seed)
    token = datacos.feature_token(feature)
    folder = datacos.feature_dir(root, subset, feature)
    for work, perfs in works.items():
        for perf in perfs:
            path = folder / f"{work}_{token}" / f"{perf}_{token}.h5"
            path.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(path, "w") as f:
                f[feature] = rng.random((frames + int(perf[2:]), 12)).astype(np.float32)
                f.attrs["label"] = work
                f.attrs["track_id"] = perf
    meta = {w: {p: {"work_id": w, "perf_id": p, "work_title": f"Song {w}", "work_artist": "Orig",
                    "perf_title": f"Song {w} ({p})", "perf_artist": f"Band {p}"} for p in perfs}
            for w, perfs in works.items()}
    meta_path = datacos.metadata_file(root, subset)
    meta_path.parent.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps(meta))
    return folder


def zip_folder(folder: Path, zip_path: Path, top: bool = True) -> bytes:
    """Zip `folder` with itself as the single top-level entry, as the real archives are
    (top=False: its contents at the zip's root)."""
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, p.relative_to(folder.parent if top else folder).as_posix())
    return zip_path.read_bytes()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        path = self.path.split("?")[0]
        srv.gets.append(path)
        body = srv.files.get(path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.drops.get(path, 0) > 0:  # full Content-Length announced, half sent, then closed
            srv.drops[path] -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    """A local HTTP server; tests fill `files` {url path: bytes} and `drops` {path: n}."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.drops, srv.gets = {}, {}, []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def archives(tmp_path, server):
    """Serve the metadata and benchmark crema archives; return the checksums manifest."""
    src = tmp_path / "src"
    make_tree(src)
    md5s = {}
    for folder in (datacos.feature_dir(src, "benchmark", "crema"), src / "da-tacos_metadata"):
        name = folder.name + ".zip"
        body = zip_folder(folder, tmp_path / name)
        record = datacos.ARCHIVES[name][0]
        server.files[f"/records/{record}/files/{name}"] = body
        md5s[name] = hashlib.md5(body).hexdigest()
    manifest = tmp_path / "md5.txt"
    manifest.write_text("".join(f"{m}  {n}\n" for n, m in md5s.items()))
    return manifest


# data.datacos's network settings, no waiting between retries
NET = {"retries": 3, "retry_wait_s": 0.0, "timeout_s": 60.0, "keep_archives": False}


def _get(out, server, manifest, **kw):
    return datacos.download(out, "benchmark", ["metadata", "crema"], base_url=server.url,
                            checksums=manifest, progressbar=False, **{**NET, **kw})


def test_download_unzips_in_place_and_rerun_skips(tmp_path, server, archives):
    out = tmp_path / "raw"
    dirs = _get(out, server, archives)
    assert [d.name for d in dirs] == ["da-tacos_metadata", "da-tacos_benchmark_subset_crema"]
    h5 = out / "da-tacos_benchmark_subset_crema" / "W_2_crema" / "P_21_crema.h5"
    assert datacos.read_feature_h5(h5, "crema").shape == (321, 12)
    assert datacos.metadata_file(out, "benchmark").exists()
    assert sorted(p.name for p in out.iterdir()) == ["da-tacos_benchmark_subset_crema", "da-tacos_metadata"]
    assert len(server.gets) == 2
    assert _get(out, server, archives) == dirs
    assert len(server.gets) == 2  # verified folders: no second GET


def test_zip_without_top_folder_is_wrapped(tmp_path, server):
    src = tmp_path / "src"
    folder = make_tree(src, feature="hpcp")
    name = "da-tacos_benchmark_subset_hpcp.zip"
    body = zip_folder(folder, tmp_path / name, top=False)
    server.files[f"/records/3520368/files/{name}"] = body
    (tmp_path / "sums.json").write_text(json.dumps({name: hashlib.md5(body).hexdigest()}))
    out = tmp_path / "raw"
    (got,) = datacos.download(out, "benchmark", ["hpcp"], base_url=server.url,
                              checksums=tmp_path / "sums.json", progressbar=False, **NET)
    assert got == out / "da-tacos_benchmark_subset_hpcp"
    assert len(datacos.find_files(got)) == 6 and (got / datacos.MARKER).exists()


def test_download_refetches_a_folder_without_marker(tmp_path, server, archives):
    out = tmp_path / "raw"
    _get(out, server, archives)
    (out / "da-tacos_benchmark_subset_crema" / datacos.MARKER).unlink()
    _get(out, server, archives)
    assert len(server.gets) == 3
    assert (out / "da-tacos_benchmark_subset_crema" / datacos.MARKER).exists()


def test_wrong_md5_leaves_nothing(tmp_path, server, archives):
    bad = tmp_path / "bad.json"
    sums = {n: m for m, n in (line.split() for line in archives.read_text().splitlines())}
    sums["da-tacos_metadata.zip"] = "0" * 32
    bad.write_text(json.dumps(sums))
    out = tmp_path / "raw"
    with pytest.raises(CoveridError, match="da-tacos_metadata.zip: md5 mismatch"):
        _get(out, server, bad)
    assert not out.exists() or not any(out.rglob("*"))


def test_dropped_connection_is_retried(tmp_path, server, archives):
    path = next(p for p in server.files if p.endswith("crema.zip"))
    server.drops[path] = 1
    out = tmp_path / "raw"
    _get(out, server, archives)
    assert server.gets.count(path) == 2
    assert len(datacos.find_files(out / "da-tacos_benchmark_subset_crema")) == 6


def test_dropped_connection_gives_up_cleanly(tmp_path, server, archives):
    path = next(p for p in server.files if p.endswith("metadata.zip"))
    server.drops[path] = 5
    out = tmp_path / "raw"
    with pytest.raises(CoveridError, match="da-tacos_metadata.zip: download failed after 2 attempts"):
        _get(out, server, archives, retries=1)
    assert not out.exists() or not any(out.rglob("*"))


def test_404_names_archive_and_url(tmp_path, server, archives):
    server.files = {p: b for p, b in server.files.items() if not p.endswith("crema.zip")}
    out = tmp_path / "raw"
    with pytest.raises(CoveridError, match=r"da-tacos_benchmark_subset_crema.zip: .*HTTP 404 from "
                       r"http://127.0.0.1:\d+/records/3520368/files/da-tacos_benchmark_subset_crema.zip"):
        _get(out, server, archives)
    assert server.gets[-1].endswith("crema.zip") and server.gets.count(server.gets[-1]) == 1
    # the metadata archive that did succeed is complete; nothing else is there
    assert sorted(p.name for p in out.iterdir()) == ["da-tacos_metadata"]


def test_cli_download(tmp_path, server, archives, capsys):
    from coverid.cli import main

    out, params = tmp_path / "raw", tmp_path / "params.yaml"
    params.write_text((Path(__file__).parents[1] / "params.yaml").read_text())
    assert main(["download", "da-tacos", "--subset", "benchmark", "--feature", "crema", "--out", str(out),
                 "--base-url", server.url, "--checksums", str(archives),
                 "--params", str(params)]) == 0
    assert capsys.readouterr().out.split() == [str(out / "da-tacos_metadata"),
                                               str(out / "da-tacos_benchmark_subset_crema")]
    assert main(["download", "da-tacos", "--feature", "hpcp", "--out", str(out), "--base-url", server.url,
                 "--checksums", str(archives), "--params", str(params)]) == 1
    assert "da-tacos_benchmark_subset_hpcp.zip: not in the checksums manifest" in capsys.readouterr().err
    # the settings not given on the command line come from a params file: none, one line
    assert main(["download", "da-tacos", "--out", str(out), "--params", str(tmp_path / "none.yaml")]) == 1
    err = capsys.readouterr().err
    assert err == (f"coverid: error: {tmp_path / 'none.yaml'} not found: run inside a coverid project "
                   "or pass --params FILE\n")


def test_manifest_must_name_every_archive(tmp_path, server, archives):
    with pytest.raises(CoveridError, match="hpcp.zip: not in the checksums manifest"):
        datacos.download(tmp_path / "raw", "benchmark", ["hpcp"], base_url=server.url,
                         checksums=archives, **NET)
    assert server.gets == []


def test_archive_table_and_names():
    assert datacos.archive_name("benchmark", "chroma_cens") == "da-tacos_benchmark_subset_cens.zip"
    assert datacos.ARCHIVES["da-tacos_benchmark_subset_cens.zip"][0] == "4717628"
    assert datacos.archive_url("da-tacos_metadata.zip") == \
        "https://zenodo.org/records/3520368/files/da-tacos_metadata.zip?download=1"
    assert all(md5 is None or len(md5) == 32 for _, md5 in datacos.ARCHIVES.values())
    with pytest.raises(CoveridError, match="unknown Da-TACOS subset"):
        datacos.archive_name("nope", "crema")
    with pytest.raises(CoveridError, match="unknown Da-TACOS archive"):
        datacos.archive_url("da-tacos_benchmark_subset_tags.zip")


def test_read_checksums_formats(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"x.zip": "md5:" + "A" * 32}))
    assert datacos.read_checksums(tmp_path / "a.json") == {"x.zip": "a" * 32}
    (tmp_path / "b.txt").write_text("# comment\n" + "b" * 32 + " *y.zip\n")
    assert datacos.read_checksums(tmp_path / "b.txt") == {"y.zip": "b" * 32}
    (tmp_path / "c.txt").write_text("nothex  z.zip\n")
    with pytest.raises(BadInputError, match="z.zip: 'nothex' is not an md5"):
        datacos.read_checksums(tmp_path / "c.txt")


# ---------------------------------------------------------------------------- readers


def _h5(path: Path, build) -> Path:
    with h5py.File(path, "w") as f:
        build(f)
    return path


def test_read_feature_h5_root_group_and_single_files(tmp_path):
    x = np.random.default_rng(0).random((50, 12)).astype(np.float32)
    root = _h5(tmp_path / "a.h5", lambda f: f.create_dataset("hpcp", data=x))
    wrapped = _h5(tmp_path / "b.h5", lambda f: f.create_dataset("_top/hpcp", data=x.astype(np.float64)))

    def single(f):
        for k in ("chroma_cens", "crema", "hpcp"):
            f[k] = x * (k == "hpcp")
        f["key_extractor"] = np.zeros(3)
        f.attrs["label"] = "W_1"

    single_file = _h5(tmp_path / "c.h5", single)
    for p in (root, wrapped, single_file):
        got = datacos.read_feature_h5(p, "hpcp")
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, x, rtol=1e-6)


@pytest.mark.parametrize("build, problem", [
    (lambda f: f.create_dataset("crema", data=np.zeros((5, 12))), "no 'hpcp' dataset"),
    (lambda f: f.create_dataset("hpcp", data=np.zeros((5, 11))), r"shape \(5, 11\), expected \(T, 12\)"),
    (lambda f: f.create_dataset("hpcp", data=np.zeros((0, 12))), "is empty"),
    (lambda f: f.create_dataset("hpcp", data=np.full((5, 12), np.nan)), "NaN or Inf"),
])
def test_read_feature_h5_bad_files(tmp_path, build, problem):
    path = _h5(tmp_path / "bad.h5", build)
    with pytest.raises(BadInputError, match=problem) as e:
        datacos.read_feature_h5(path, "hpcp")
    assert str(path) in str(e.value)


def test_read_feature_h5_not_hdf5(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"not hdf5")
    with pytest.raises(BadInputError, match="not a readable HDF5 file"):
        datacos.read_feature_h5(tmp_path / "x.h5", "hpcp")


def test_ids_from_path():
    assert datacos.ids_from_path(Path("d/W_163930_crema/P_546633_crema.h5")) == ("W_163930", "P_546633")
    assert datacos.ids_from_path(Path("d/W_5/P_7.h5")) == ("W_5", "P_7")
    with pytest.raises(BadInputError):
        datacos.ids_from_path(Path("d/x/y.h5"))


# ---------------------------------------------------------------------- preprocessing

PCFG = {**repo_params()["preprocess"].to_dict(), "spect_len": 20, "max_frames": 310, "tile": True,
        "workers": 1, "scheduler": "single", "max_failed_fraction": 0.5}


def test_preprocess_dir_one_feature(tmp_path):
    from coverid.data.store import read_features
    from coverid.features.transform import to_model_input

    data = tmp_path / "raw"
    folder = make_tree(data, works={**WORKS, "W_3": ["P_30", "P_31"]})
    bad = folder / "W_3_crema" / "P_31_crema.h5"
    with h5py.File(bad, "w") as f:
        f["crema"] = np.full((300, 12), np.inf, dtype=np.float32)
    stray = folder / "W_9_crema" / "P_90_crema.h5"
    stray.parent.mkdir()
    stray.write_bytes((folder / "W_1_crema" / "P_10_crema.h5").read_bytes())
    skips = SkipLog()
    written = sources.preprocess_dir(data, tmp_path / "out", ["crema"], PCFG, skips)
    assert written == [tmp_path / "out" / "benchmark.h5"]

    fs = read_features(written[0])
    assert list(fs.perf_id) == ["P_10", "P_11", "P_20", "P_21", "P_22", "P_30"]
    assert list(fs.work_id) == ["W_1", "W_1", "W_2", "W_2", "W_2", "W_3"]
    assert fs.features.shape == (6, 23, 20) and fs.source == "datacos" and fs.feature == "crema"
    assert list(fs.length_frames) == [310, 311, 320, 321, 322, 330]
    raw = datacos.read_feature_h5(folder / "W_2_crema" / "P_21_crema.h5", "crema")
    np.testing.assert_allclose(fs.features[3], to_model_input(raw, 20, 310, True), rtol=1e-6)

    reasons = {Path(s["path"]).name: s["reason"] for s in skips.skipped}
    assert set(reasons) == {"P_31_crema.h5", "P_90_crema.h5"}
    assert "NaN or Inf" in reasons["P_31_crema.h5"]
    assert "not in da-tacos_benchmark_subset_metadata.json" in reasons["P_90_crema.h5"]
    assert skips.total == 8


def test_preprocess_dir_several_features_and_subsets(tmp_path):
    data = tmp_path / "raw"
    make_tree(data, feature="crema")
    make_tree(data, feature="chroma_cens")
    make_tree(data, subset="coveranalysis", feature="crema", works={"W_7": ["P_70", "P_71"]})
    written = sources.preprocess_dir(data, tmp_path / "out", ["crema", "chroma_cens"], PCFG)
    assert [p.name for p in written] == ["benchmark_crema.h5", "benchmark_chroma_cens.h5",
                                         "coveranalysis_crema.h5"]


def test_preprocess_single_files_variant(tmp_path):
    from coverid.data.store import read_features

    data = tmp_path / "raw"
    x = np.random.default_rng(0).random((400, 12)).astype(np.float32)
    for work, perf in (("W_1", "P_1"), ("W_1", "P_2"), ("W_2", "P_3")):
        path = data / "da-tacos_coveranalysis_subset_single_files" / work / f"{perf}.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            for k in ("chroma_cens", "crema", "hpcp"):
                f[k] = x
            f.create_group("key_extractor").attrs["key"] = "C"
    (written,) = sources.preprocess_dir(data, tmp_path / "out", ["hpcp"], PCFG)
    assert written.name == "coveranalysis.h5"
    assert list(read_features(written).perf_id) == ["P_1", "P_2", "P_3"]


def test_preprocess_dir_failure_budget_and_missing(tmp_path):
    data = tmp_path / "raw"
    folder = make_tree(data, works={"W_1": ["P_10", "P_11"]})
    (folder / "W_1_crema" / "P_11_crema.h5").write_bytes(b"garbage")
    with pytest.raises(CoveridError, match=r"1 of 2 inputs failed .*P_11_crema.h5: not a readable"):
        sources.preprocess_dir(data, tmp_path / "out", ["crema"], {**PCFG, "max_failed_fraction": 0.1})
    assert not (tmp_path / "out" / "benchmark.h5").exists()
    with pytest.raises(CoveridError, match="no Da-TACOS feature folder found"):
        sources.preprocess_dir(data, tmp_path / "out", ["hpcp"], PCFG)


def test_fused_datacos_features_are_stacked_per_song(tmp_path):
    """preprocess.fusion on Da-TACOS: each feature from its own folder, the songs holding
    every feature stacked row by row (crema above hpcp); melody is refused in one line."""
    from coverid.core.config import with_overrides
    from coverid.features.transform import to_model_input

    raw = tmp_path / "raw"
    make_tree(raw / "datacos", feature="hpcp", works={**WORKS, "W_2": ["P_20", "P_21"]}, seed=1)
    make_tree(raw / "datacos", feature="crema")  # its metadata (every song) is the one kept
    params = with_overrides(repo_params(), {
        "data.source": "datacos", "data.raw_dir": str(raw), "data.datacos.features": ["crema", "hpcp"],
        "preprocess.feature": "crema", "preprocess.fusion": ["hpcp"], "preprocess.spect_len": 20,
        "preprocess.scheduler": "single", "preprocess.max_failed_fraction": 0.5})
    fs = sources.features_for_source(params, SkipLog())
    assert fs.feature == "crema+hpcp" and fs.features.shape == (5, 46, 20)
    assert list(fs.perf_id) == ["P_10", "P_11", "P_20", "P_21", "P_30"]  # P_22 has no hpcp
    folder = datacos.feature_dir(raw / "datacos", "benchmark", "hpcp")
    raw_hpcp = datacos.read_feature_h5(folder / "W_2_hpcp" / "P_21_hpcp.h5", "hpcp")
    np.testing.assert_allclose(fs.features[3, 23:], to_model_input(raw_hpcp, 20, None, True), rtol=1e-6)
    params = with_overrides(params, {"data.datacos.features": ["crema"]})
    with pytest.raises(CoveridError, match="'hpcp' is not among the downloaded"):
        sources.features_for_source(params, SkipLog())
