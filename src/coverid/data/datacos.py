"""Da-TACOS: the Zenodo archive table, verified download and unzip, per-file readers.

Archive names, records and md5 sums are those published on Zenodo records 3520368
(metadata, crema, hpcp, key, madmom, mfcc, tags) and 4717628 (chroma_cens, "cens"),
as listed by mirdata's Da-TACOS loader (mirdata/datasets/da_tacos.py, REMOTES).

Layout after `download` (each archive holds one top-level folder named after it):
    OUT/da-tacos_metadata/da-tacos_benchmark_subset_metadata.json
    OUT/da-tacos_benchmark_subset_crema/W_163930_crema/P_546633_crema.h5

Where the archives come from (`download`'s `base_url` / `from_dir`):
    nothing                      https://zenodo.org/records/<record>/files/<name>
    http(s)://HOST               HOST/records/<record>/files/<name> (a Zenodo-layout mirror)
    http(s)://.../{name}         a template: {name} (and {record}) filled in (a flat HTTP mirror)
    from_dir, a folder or file:  DIR/<name>, zips the user already has; verified, unpacked, never
                                 modified (a base_url that is a folder or file:// URL counts as this)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from coverid.core.errors import BadInputError, CoveridError
from coverid.core.skips import SkipLog
from coverid.data.metadata import pairs, read_metadata

log = logging.getLogger(__name__)

ZENODO = "https://zenodo.org"
SUBSETS = ("benchmark", "coveranalysis")
METADATA = "metadata"
MARKER = ".coverid-complete"  # written last inside an unzipped folder: {"archive", "md5"}
ARCHIVE_DIR = ".archives"  # where zips are downloaded, inside the output folder

# archive file name -> (Zenodo record, md5). None as md5 would mean "unknown": such an
# archive is only downloaded with a checksums manifest that names it.
ARCHIVES: dict[str, tuple[str, str | None]] = {
    "da-tacos_metadata.zip": ("3520368", "b8aed83c45687a6bac76de3da1799237"),
    "da-tacos_benchmark_subset_cens.zip": ("4717628", "b32aab63ee401f0f8baec8aa35eb0975"),
    "da-tacos_benchmark_subset_crema.zip": ("3520368", "c702a3b97a60081311bf8e7fae7b433b"),
    "da-tacos_benchmark_subset_hpcp.zip": ("3520368", "f92cf3d00cc3195572381d6bbcc086de"),
    "da-tacos_benchmark_subset_key.zip": ("3520368", "f4e6b05fa9ab46002357f371a8b0e97e"),
    "da-tacos_benchmark_subset_madmom.zip": ("3520368", "8beb1d8fa39f95b79d5f502a41fd5f0c"),
    "da-tacos_benchmark_subset_mfcc.zip": ("3520368", "a3be0cd80754043a8c238cf501062789"),
    "da-tacos_coveranalysis_subset_cens.zip": ("4717628", "7eb56dd3a44fa7d90cc6643bc446e79b"),
    "da-tacos_coveranalysis_subset_crema.zip": ("3520368", "70252fe115e1ab4c4d74698d4ad68f4b"),
    "da-tacos_coveranalysis_subset_hpcp.zip": ("3520368", "961784fc2419214adf05504e9fc56cc2"),
    "da-tacos_coveranalysis_subset_key.zip": ("3520368", "6e72db855bad5805a67382bd318eee9c"),
    "da-tacos_coveranalysis_subset_madmom.zip": ("3520368", "42482eedfe9d9a8be9db3611b9d343b4"),
    "da-tacos_coveranalysis_subset_mfcc.zip": ("3520368", "11371910cad7012daaa81a5fe9dfa1c0"),
    "da-tacos_coveranalysis_subset_tags.zip": ("3520368", "4b9d4cd5beca571e1d614c9a77580f8c"),
}

# feature name (as in params and inside the h5 files) -> token in archive/folder names
FEATURE_TOKENS = {"crema": "crema", "hpcp": "hpcp", "chroma_cens": "cens"}


# ---------------------------------------------------------------------------- names


def feature_token(feature: str) -> str:
    """The token a feature has in archive and folder names (chroma_cens -> cens)."""
    return FEATURE_TOKENS.get(feature, feature)


def archive_name(subset: str, item: str) -> str:
    """Zip name of a subset's feature archive, or of the metadata archive for "metadata"."""
    if item == METADATA:
        return "da-tacos_metadata.zip"
    if subset not in SUBSETS:
        raise CoveridError(f"unknown Da-TACOS subset {subset!r} (one of {', '.join(SUBSETS)})")
    return f"da-tacos_{subset}_subset_{feature_token(item)}.zip"


def feature_dir(data_dir: Path, subset: str, feature: str) -> Path:
    """The unzipped folder of one subset's feature files."""
    return Path(data_dir) / f"da-tacos_{subset}_subset_{feature_token(feature)}"


def source_dir(data_dir: Path, subset: str, feature: str) -> Path | None:
    """Where a subset's `feature` is read from: its own folder, else the "single_files"
    folder (every feature of a performance in one h5); None when neither is there."""
    for folder in (feature_dir(data_dir, subset, feature),
                   Path(data_dir) / f"da-tacos_{subset}_subset_single_files"):
        if folder.is_dir():
            return folder
    return None


def metadata_file(data_dir: Path, subset: str) -> Path:
    """The metadata JSON of a subset inside the unzipped metadata archive."""
    return Path(data_dir) / "da-tacos_metadata" / f"da-tacos_{subset}_subset_metadata.json"


def archive_url(name: str, base_url: str | None = None) -> str:
    """Download URL of an archive: Zenodo's, `base_url` replacing the host (mirror, test
    server), or `base_url` as a template with {name} and {record} (a flat mirror)."""
    if name not in ARCHIVES:
        raise CoveridError(f"unknown Da-TACOS archive {name!r}; known: {', '.join(sorted(ARCHIVES))}")
    record = ARCHIVES[name][0]
    if base_url and "{name}" in base_url:
        return base_url.replace("{name}", name).replace("{record}", record)
    host = (base_url or ZENODO).rstrip("/")
    return f"{host}/records/{record}/files/{name}?download=1"


def local_source(base_url: str | None = None, from_dir: str | Path | None = None) -> Path | None:
    """The local folder the archives are read from: `from_dir`, or a `base_url` that is a
    file:// URL or has no scheme (a path, ~ expanded); None for an http(s) source."""
    if from_dir is not None and base_url:
        raise CoveridError(f"Da-TACOS: give either a local folder ({from_dir}) or base_url "
                           f"({base_url}), not both")
    if from_dir is not None:
        return Path(from_dir).expanduser()
    if not base_url:
        return None
    parts = urllib.parse.urlparse(base_url)
    if parts.scheme == "file":
        return Path(urllib.request.url2pathname(parts.path))
    if "://" not in base_url:
        return Path(base_url).expanduser()
    if parts.scheme not in ("http", "https"):
        raise CoveridError(f"Da-TACOS base_url {base_url!r}: expected http(s)://, file:// or a folder")
    return None


# ------------------------------------------------------------------------ checksums


def read_checksums(path: str | Path) -> dict[str, str]:
    """Read a manifest: JSON {"name.zip": "md5"} or md5sum lines "md5  name.zip"."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise BadInputError(path, f"cannot read checksums manifest ({e.strerror})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        pairs = {str(k): str(v) for k, v in obj.items()}
    else:
        pairs = {}
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise BadInputError(path, f"line {n}: expected 'md5  name', got {line!r}")
            pairs[parts[1].lstrip("*")] = parts[0]
    for name, md5 in pairs.items():
        md5 = md5.removeprefix("md5:")
        if not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
            raise BadInputError(path, f"{name}: {md5!r} is not an md5 sum")
        pairs[name] = md5.lower()
    return pairs


def expected_md5(name: str, manifest: dict[str, str] | None) -> str:
    """The md5 an archive must have: from the manifest when given, else the table."""
    if manifest is not None:
        if name not in manifest:
            raise CoveridError(f"{name}: not in the checksums manifest; refusing to download unverified")
        return manifest[name]
    md5 = ARCHIVES[name][1]
    if md5 is None:
        raise CoveridError(f"{name}: no known md5; pass a checksums manifest that names it")
    return md5


# ------------------------------------------------------------------------- download


def download(
    out_dir: str | Path,
    subset: str,
    features: Iterable[str],
    base_url: str | None = None,
    checksums: str | Path | None = None,
    *,
    from_dir: str | Path | None = None,
    retries: int,
    retry_wait_s: float,
    timeout_s: float,
    keep_archives: bool,
    progressbar: bool = True,
) -> list[Path]:
    """Download, verify (md5) and unzip the archives of `subset` for `features`
    ("metadata" names the metadata archive); return the unzipped folders.

    With `from_dir` (or a `base_url` that is a folder or file:// URL) the archives are
    read as `<from_dir>/<name>` instead, verified and unpacked the same way; those zips
    are never modified or removed (`keep_archives` does not apply).
    Already-unzipped folders whose marker records the expected md5 are skipped; a
    failure leaves nothing half-written under `out_dir`. Dropped connections, timeouts
    and 5xx answers are retried `retries` times, waiting retry_wait_s * 2**attempt.
    """
    out_dir = Path(out_dir)
    local = local_source(base_url, from_dir)
    manifest = read_checksums(checksums) if checksums else None
    names = list(dict.fromkeys(archive_name(subset, f) for f in features))
    plan = [(name, archive_url(name, base_url if local is None else None), expected_md5(name, manifest))
            for name in names]
    fetch: Callable[..., Path]
    if local is None:
        fetch = partial(_retrieve, out_dir / ARCHIVE_DIR, retries=retries, retry_wait_s=retry_wait_s,
                        timeout_s=timeout_s, progressbar=progressbar)
    else:
        fetch, keep_archives = partial(_local_archive, local), True  # the user's zips stay
    created = not out_dir.exists()
    done: list[Path] = []
    try:
        for name, url, md5 in plan:
            done.append(_fetch_one(out_dir, name, url, md5, fetch, keep_archives))
    finally:
        _remove_if_empty(out_dir / ARCHIVE_DIR)
        if created:
            _remove_if_empty(out_dir)
    return done


def _fetch_one(out_dir: Path, name: str, url: str, md5: str, fetch: Callable[..., Path],
               keep_archives: bool) -> Path:
    """Make `out_dir/<stem>` hold the verified contents of archive `name`; `fetch(name,
    url, md5)` gives the verified zip, removed afterwards unless `keep_archives`."""
    target = out_dir / Path(name).stem
    if _marker_md5(target) == md5:
        log.info("%s: up to date (md5 %s)", target, md5)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    zip_path = fetch(name, url, md5)
    _unzip(zip_path, target, name, md5)
    if not keep_archives:
        zip_path.unlink()
    log.info("%s: unzipped to %s", name, target)
    return target


def _marker_md5(folder: Path) -> str | None:
    """The md5 recorded in a folder's completion marker, or None."""
    try:
        return json.loads((folder / MARKER).read_text()).get("md5")
    except (OSError, ValueError, AttributeError):
        return None


def _local_archive(from_dir: Path, name: str, url: str, md5: str) -> Path:
    """`from_dir/name` once its md5 is checked; read only. `url` is where to get it."""
    if not from_dir.is_dir():
        raise BadInputError(from_dir, "folder of Da-TACOS archives not found")
    path = from_dir / name
    if not path.is_file():
        raise BadInputError(path, f"archive {name} missing from {from_dir} (download it from {url})")
    log.info("%s: checking md5", path)
    digest = hashlib.md5()
    try:
        with path.open("rb") as f:
            for chunk in iter(partial(f.read, 1 << 20), b""):
                digest.update(chunk)
    except OSError as e:
        raise BadInputError(path, f"cannot read ({e.strerror})") from None
    if digest.hexdigest() != md5:
        raise BadInputError(path, f"md5 mismatch: expected {md5}, got {digest.hexdigest()}")
    return path


def _retrieve(archive_dir: Path, name: str, url: str, md5: str, *, retries: int,
              retry_wait_s: float, timeout_s: float, progressbar: bool) -> Path:
    """Download one archive with pooch (temp file, md5 check, rename), retrying
    dropped connections and server errors; a verified zip already there is reused."""
    import pooch
    import requests

    downloader = pooch.HTTPDownloader(progressbar=progressbar, timeout=timeout_s)
    for attempt in range(retries + 1):
        try:
            path = pooch.retrieve(url, known_hash=f"md5:{md5}", fname=name, path=archive_dir,
                                  downloader=downloader)
            return Path(path)
        except requests.exceptions.HTTPError as e:
            status = e.response.status_code if e.response is not None else None
            if (status is not None and status < 500) or attempt == retries:
                raise CoveridError(f"{name}: download failed: HTTP {status} from {url}") from None
            reason = f"HTTP {status}"
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError) as e:
            if attempt == retries:
                raise CoveridError(f"{name}: download failed after {retries + 1} attempts from {url}: "
                                   f"{type(e).__name__}") from None
            reason = type(e).__name__
        except ValueError as e:
            if "hash" not in str(e).lower():
                raise
            raise CoveridError(f"{name}: md5 mismatch (expected {md5}); the download was discarded") from None
        wait = min(retry_wait_s * 2.0**attempt, 60.0)
        log.warning("%s: %s, retrying in %.0f s (%d/%d)", name, reason, wait, attempt + 1, retries)
        time.sleep(wait)
    raise AssertionError("unreachable")


def _unzip(zip_path: Path, target: Path, name: str, md5: str) -> None:
    """Extract into a temp folder beside `target`, write the marker, then rename it into place."""
    stem = target.name
    tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".unzip", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                for member in zf.namelist():
                    if member.startswith("/") or ".." in Path(member).parts:
                        raise BadInputError(zip_path, f"unsafe path {member!r} in archive {name}")
                zf.extractall(tmp)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise BadInputError(zip_path, f"not a valid zip archive ({str(e) or type(e).__name__})") from None
        entries = [p for p in tmp.iterdir() if p.name != "__MACOSX"]
        # the archives hold one folder named after them; anything else is wrapped as is
        src = entries[0] if len(entries) == 1 and entries[0].is_dir() and entries[0].name == stem else tmp
        (src / MARKER).write_text(json.dumps({"archive": name, "md5": md5}) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(src, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _remove_if_empty(folder: Path) -> None:
    """Remove `folder` when it exists and holds nothing."""
    try:
        folder.rmdir()
    except OSError:
        pass


# -------------------------------------------------------------------------- readers


def read_feature_h5(path: str | Path, feature: str) -> np.ndarray:
    """Read one performance's (T, 12) float32 feature from a Da-TACOS h5 file.

    The array may sit at the root under the feature's name (per-feature and
    "single_files" archives) or inside a group (deepdish wrapping, e.g. `_top`).
    """
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError):
        raise BadInputError(path, "not a readable HDF5 file") from None
    with f:
        node = _find_dataset(f, feature)
        if node is None:
            raise BadInputError(path, f"no {feature!r} dataset (top-level keys {sorted(f.keys())})")
        try:
            x = np.asarray(node[()])
        except OSError as e:
            raise BadInputError(path, f"cannot read {node.name!r} ({e}); a compression filter "
                                      "may be missing (try `pip install hdf5plugin`)") from None
    if x.ndim != 2 or x.shape[1] != 12:
        raise BadInputError(path, f"{feature!r} has shape {x.shape}, expected (T, 12)")
    if x.shape[0] == 0:
        raise BadInputError(path, f"{feature!r} is empty")
    if not np.issubdtype(x.dtype, np.number):
        raise BadInputError(path, f"{feature!r} has non-numeric dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise BadInputError(path, f"{feature!r} contains NaN or Inf")
    return x


def _find_dataset(f: Any, feature: str) -> Any:
    """The dataset named `feature` at the root, else the shallowest one in a sub-group."""
    import h5py

    node = f.get(feature)
    if isinstance(node, h5py.Dataset):
        return node
    found: list[Any] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and name.rsplit("/", 1)[-1] == feature:
            found.append(obj)

    f.visititems(visit)
    return min(found, key=lambda d: d.name.count("/")) if found else None


_W = re.compile(r"^(W_\d+)")
_P = re.compile(r"^(P_\d+)")


def ids_from_path(path: Path) -> tuple[str, str]:
    """(work_id, perf_id) from `.../W_x[_feat]/P_y[_feat].h5`."""
    w, p = _W.match(path.parent.name), _P.match(path.name)
    if not (w and p):
        raise BadInputError(path, "name does not follow W_<n>[_feature]/P_<n>[_feature].h5")
    return w.group(1), p.group(1)


def find_files(folder: Path) -> list[Path]:
    """Every performance file `W_*/P_*.h5` in an unzipped feature folder, sorted."""
    return sorted(folder.glob("W_*/P_*.h5"))


# -------------------------------------------------------------------- preprocessing


def list_items(data_dir: Path, subset: str, feature: str, skips: SkipLog) -> list[tuple[Path, str, str]]:
    """(path, work_id, perf_id) of every file of a subset's feature folder, cross-checked
    with the subset's metadata JSON when it is there; mismatches are recorded as skips."""
    folder = source_dir(data_dir, subset, feature)
    if folder is None:
        raise CoveridError(f"{feature_dir(data_dir, subset, feature)}: Da-TACOS {subset} {feature} folder "
                           f"not found (run `coverid download da-tacos --subset {subset} --feature {feature}`)")
    meta_path = metadata_file(data_dir, subset)
    known = pairs(read_metadata(meta_path)) if meta_path.exists() else None
    items: list[tuple[Path, str, str]] = []
    for path in find_files(folder):
        try:
            work, perf = ids_from_path(path)
        except BadInputError as e:
            skips.total += 1
            skips.add(path, e.problem)
            continue
        if known is not None and (work, perf) not in known:
            skips.total += 1
            skips.add(path, f"{work}/{perf} is not in {metadata_file(data_dir, subset).name}")
            continue
        items.append((path, work, perf))
    if known is not None and len(items) < len(known):
        log.warning("%s: %d performances of the metadata have no %s file",
                    folder, len(known) - len(items), feature)
    return items


