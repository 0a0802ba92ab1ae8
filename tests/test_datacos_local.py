"""Da-TACOS from zips the user already has (`--from DIR`, data.datacos.from_dir) and flat mirrors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from conftest import repo_params
from test_datacos import (  # noqa: F401  (server is a fixture)
    NET,
    make_tree,
    server,
    zip_folder,
)
from test_download_stage import ROOT, _project, _stage

from coverid.core.errors import BadInputError, CoveridError
from coverid.data import datacos

NAMES = ("da-tacos_metadata.zip", "da-tacos_benchmark_subset_crema.zip")
CREMA = NAMES[1]


@pytest.fixture
def zips(tmp_path, server):  # noqa: F811
    """The metadata and benchmark crema zips in a flat folder `zips/`, also served over HTTP in
    Zenodo's layout and flat under /flat/; return (folder, checksums manifest)."""
    src, folder = tmp_path / "src", tmp_path / "zips"
    folder.mkdir()
    make_tree(src)
    md5s = {}
    for name in NAMES:
        body = zip_folder(src / Path(name).stem, folder / name)
        server.files[f"/records/{datacos.ARCHIVES[name][0]}/files/{name}"] = body
        server.files[f"/flat/{name}"] = body
        md5s[name] = hashlib.md5(body).hexdigest()
    manifest = tmp_path / "md5.json"
    manifest.write_text(json.dumps(md5s))
    return folder, manifest


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under `root`: relative path -> bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime of every file in a folder (to show the user's zips are untouched)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def _unpack(out, manifest, **kw):
    return datacos.download(out, "benchmark", ["metadata", "crema"], checksums=manifest,
                            progressbar=False, **{**NET, **kw})


def test_from_dir_equals_download_and_leaves_zips_alone(tmp_path, server, zips):  # noqa: F811
    folder, manifest = zips
    before = _snapshot(folder)
    local = _unpack(tmp_path / "local", manifest, from_dir=folder)
    assert server.gets == []
    http = _unpack(tmp_path / "http", manifest, base_url=server.url)
    assert len(server.gets) == 2
    assert [d.name for d in local] == [d.name for d in http] == ["da-tacos_metadata",
                                                                  "da-tacos_benchmark_subset_crema"]
    got = _tree(tmp_path / "local")
    assert got == _tree(tmp_path / "http")  # same files, same bytes, same markers
    assert len([k for k in got if k.endswith(".h5")]) == 6
    assert json.loads(got[f"da-tacos_metadata/{datacos.MARKER}"])["archive"] == NAMES[0]
    assert sorted(p.name for p in (tmp_path / "local").iterdir()) == sorted(d.name for d in local)
    assert _snapshot(folder) == before  # still there, same bytes, not rewritten

    # unpacked folders with a matching marker are skipped: the zips are not even needed again
    for p in folder.iterdir():
        p.unlink()
    assert _unpack(tmp_path / "local", manifest, from_dir=folder) == local
    assert _tree(tmp_path / "local") == got


def test_keep_archives_does_not_copy_local_zips(tmp_path, zips):
    folder, manifest = zips
    out = tmp_path / "raw"
    _unpack(out, manifest, from_dir=folder, keep_archives=True)
    assert not (out / datacos.ARCHIVE_DIR).exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES)


def test_missing_archive_names_the_path(tmp_path, zips):
    folder, manifest = zips
    (folder / CREMA).unlink()
    out = tmp_path / "raw"
    with pytest.raises(BadInputError) as e:
        _unpack(out, manifest, from_dir=folder)
    msg = str(e.value)
    assert "\n" not in msg and e.value.path == str(folder / CREMA)
    assert f"archive {CREMA} missing from {folder}" in msg
    assert f"https://zenodo.org/records/3520368/files/{CREMA}" in msg  # where to get it
    # the archive before it is complete; nothing half-written
    assert sorted(p.name for p in out.iterdir()) == ["da-tacos_metadata"]

    with pytest.raises(BadInputError, match="folder of Da-TACOS archives not found") as e:
        _unpack(tmp_path / "raw2", manifest, from_dir=tmp_path / "nowhere")
    assert e.value.path == str(tmp_path / "nowhere")
    assert not (tmp_path / "raw2").exists()


def test_md5_mismatch_names_file_and_both_sums(tmp_path, zips):
    folder, manifest = zips
    before = _snapshot(folder)
    actual = hashlib.md5((folder / CREMA).read_bytes()).hexdigest()
    sums = json.loads(manifest.read_text())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**sums, CREMA: "0" * 32}))
    out = tmp_path / "raw"
    with pytest.raises(BadInputError) as e:
        _unpack(out, bad, from_dir=folder)
    assert str(e.value) == f"{folder / CREMA}: md5 mismatch: expected {'0' * 32}, got {actual}"
    assert sorted(p.name for p in out.iterdir()) == ["da-tacos_metadata"]

    # without a manifest the built-in table (the published Zenodo md5s) is the reference
    with pytest.raises(BadInputError, match=f"expected {datacos.ARCHIVES[NAMES[0]][1]}, got "):
        datacos.download(tmp_path / "raw2", "benchmark", ["metadata"], from_dir=folder, **NET)
    assert not (tmp_path / "raw2").exists()
    assert _snapshot(folder) == before


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped"])
def test_corrupt_zip_names_the_file(tmp_path, zips, damage):
    folder, manifest = zips
    path = folder / CREMA
    body = path.read_bytes()
    if damage == "garbage":
        body = b"this is not a zip file" * 10
    elif damage == "truncated":
        body = body[: len(body) // 2]
    else:  # a byte of a member's (stored) data: the CRC check fails on extraction
        i = body.index(b"HDF") + 200
        body = body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1:]
    path.write_bytes(body)
    sums = {**json.loads(manifest.read_text()), CREMA: hashlib.md5(body).hexdigest()}
    manifest.write_text(json.dumps(sums))
    out = tmp_path / "raw"
    with pytest.raises(BadInputError, match="not a valid zip archive") as e:
        _unpack(out, manifest, from_dir=folder)
    assert e.value.path == str(path) and "\n" not in str(e.value)
    assert sorted(p.name for p in out.iterdir()) == ["da-tacos_metadata"]  # no temp folder left
    assert path.read_bytes() == body


@pytest.mark.parametrize("as_url", [False, True])
def test_base_url_folder_or_file_url_is_a_local_source(tmp_path, server, zips, as_url):  # noqa: F811
    folder, manifest = zips
    base = folder.as_uri() if as_url else str(folder)
    dirs = _unpack(tmp_path / "raw", manifest, base_url=base)
    assert server.gets == []
    assert len(datacos.find_files(dirs[1])) == 6
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES)


def test_flat_http_mirror_template(tmp_path, server, zips):  # noqa: F811
    _, manifest = zips
    dirs = _unpack(tmp_path / "raw", manifest, base_url=server.url + "/flat/{name}")
    assert server.gets == [f"/flat/{n}" for n in NAMES]
    assert len(datacos.find_files(dirs[1])) == 6


def test_source_rules():
    assert datacos.archive_url(CREMA, "https://m.example/dt/{name}") == f"https://m.example/dt/{CREMA}"
    assert datacos.archive_url(CREMA, "https://m.example/{record}/{name}") == \
        f"https://m.example/3520368/{CREMA}"
    assert datacos.archive_url(CREMA, "https://m.example/") == \
        f"https://m.example/records/3520368/files/{CREMA}?download=1"
    assert datacos.local_source() is None
    assert datacos.local_source("https://m.example") is None
    assert datacos.local_source("file:///data/zips") == Path("/data/zips")
    assert datacos.local_source("rel/zips") == Path("rel/zips")
    assert datacos.local_source(None, "zips") == Path("zips")
    assert datacos.local_source(None, "~/zips") == datacos.local_source("~/zips") == Path.home() / "zips"
    with pytest.raises(CoveridError, match="not both"):
        datacos.local_source("https://m.example", "zips")
    with pytest.raises(CoveridError, match="expected http"):
        datacos.local_source("ftp://m.example")


def test_cli_from(tmp_path, zips, capsys):
    from coverid.cli import main

    folder, manifest = zips
    out = tmp_path / "raw"
    none = str(tmp_path / "params.yaml")  # the repo's settings; the command line gives the rest
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    assert main(["download", "da-tacos", "--feature", "crema", "--out", str(out), "--from", str(folder),
                 "--checksums", str(manifest), "--params", none]) == 0
    assert capsys.readouterr().out.split() == [str(out / "da-tacos_metadata"),
                                               str(out / "da-tacos_benchmark_subset_crema")]
    assert len(datacos.find_files(out / "da-tacos_benchmark_subset_crema")) == 6

    assert main(["download", "da-tacos", "--feature", "hpcp", "--out", str(out), "--from", str(folder),
                 "--params", none, "--no-metadata"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"coverid: error: {folder / 'da-tacos_benchmark_subset_hpcp.zip'}: archive "
                   f"da-tacos_benchmark_subset_hpcp.zip missing from {folder} (download it from "
                   "https://zenodo.org/records/3520368/files/da-tacos_benchmark_subset_hpcp.zip?download=1)")

    with pytest.raises(SystemExit) as e:
        main(["download", "da-tacos", "--from", str(folder), "--base-url", "http://x", "--params", none])
    assert e.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_cli_from_dir_in_params(tmp_path, zips, capsys):
    from coverid.cli import main

    folder, manifest = zips
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(repo_params({
        "data.datacos.subset": "benchmark", "data.datacos.features": ["crema"], "data.datacos.base_url": None,
        "data.datacos.from_dir": str(folder), "data.datacos.checksums": str(manifest)}).to_dict()))
    out = tmp_path / "raw"
    assert main(["download", "da-tacos", "--out", str(out), "--params", str(params)]) == 0
    assert len(datacos.find_files(out / "da-tacos_benchmark_subset_crema")) == 6


def test_stage_passes_from_dir(tmp_path, monkeypatch, zips):
    folder, manifest = zips
    params = _project(tmp_path, monkeypatch, source="datacos")
    params["data"]["datacos"].update(features=["crema"], from_dir=str(folder), checksums=str(manifest))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    _stage().main()
    raw = tmp_path / "data" / "raw" / "datacos"
    assert sorted(p.name for p in raw.iterdir()) == ["da-tacos_benchmark_subset_crema", "da-tacos_metadata"]
    assert len(datacos.find_files(raw / "da-tacos_benchmark_subset_crema")) == 6
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES)
