"""A song index on disk: raw embeddings, a FAISS index over them and a JSON sidecar.

Layout of INDEX_DIR:
  meta.json        format, model identity, feature config, index settings, threshold, and the
                   songs by column: {"songs": {"perf_id": [...], "work_id": [...], "title",
                   "artist", "path", "sha1"}} (columns load ~10x faster than one object per
                   song: a 1M-song sidecar in ~0.3 s)
  embeddings.npy   (N, D) raw embeddings, row i = songs[i] (for re-ranking, rebuilding and
                   extending), stored as index.storage says (float16 by default, half the
                   size of float32; an index without the setting is float32)
  index.faiss      FAISS index over the embeddings mapped to an L2 "candidate space"
  expanded.npy     (N, D), the same dtype, only with query expansion (meta "expansion": {k, alpha},
                   from the tuned threshold file): each song expanded with its k nearest
                   other songs (database-side augmentation, coverid.eval.expansion)

Search is always two steps: the FAISS index proposes candidates in the L2 candidate space,
then the candidates are re-ranked with the model's own distance (`coverid.eval.distance.pairwise`,
in float32) on the stored embeddings, so reported distances are the model's (to float16's
rounding of the stored embeddings, ~1e-3, by default) and comparable with the tuned
threshold. The candidate space is the embedding itself (euclidean), the L2-normalised
embedding (cosine), or, for a BCE head 1 - sigmoid(w.|a-b| + bias), the embedding scaled by
sqrt(max(-w, 0)): L2 there is a proxy for the head's weighted L1, which FAISS cannot index,
so an exact index re-ranks every song and an approximate one its top `candidates`.

With query expansion the query is first expanded with its k nearest songs, and results are
ordered by the distance between the expanded query and the expanded songs; the distance
reported (and compared with the threshold) is still the model's own on the raw embeddings.
An approximate index searches its candidates once, with the query itself: the expanded query
re-ranks those candidates, which keeps a query at one scan of the codes.

Index kinds: `flat` (exact IndexFlatL2) up to `exact_max` songs; beyond it `pqfs` (product
quantizer with 4-bit fast-scan codes, `pq_dims` dimensions per code) or `hnsw`
(IndexHNSWFlat); see benchmarks/bench_index.py for why pqfs is the default.

Writes are atomic at the directory level: a new index is written into a temp directory beside
INDEX_DIR and renamed over it, so an interrupted build or add leaves the previous index intact.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from coverid import __version__
from coverid.core import io
from coverid.core.errors import BadInputError, CoveridError
from coverid.eval.distance import pairwise
from coverid.eval.expansion import check_expansion, expand, expansion_of, unit

log = logging.getLogger(__name__)

FORMAT = 1
META_FILE = "meta.json"
EMB_FILE = "embeddings.npy"
INDEX_FILE = "index.faiss"
EXPANDED_FILE = "expanded.npy"
KINDS = ("flat", "pqfs", "hnsw")
QUANTIZER_SEED = 0  # which vectors train the product quantizer: fixed, so a rebuild is identical
_CHUNK = 16384  # rows of stored embeddings re-ranked at once


@dataclass
class Song:
    """One indexed performance; path and sha1 are known for songs indexed from audio."""

    perf_id: str
    work_id: str | None = None
    title: str | None = None
    artist: str | None = None
    path: str | None = None
    sha1: str | None = None


SONG_FIELDS = tuple(f.name for f in fields(Song))


class SongTable:
    """Songs stored by column (fast to load and save at a million songs); rows come out as Song."""

    def __init__(self, columns: dict[str, list[Any]]) -> None:
        self.columns = columns

    @classmethod
    def from_songs(cls, songs: list[Song]) -> SongTable:
        """A table of `songs`, in order."""
        return cls({f: [getattr(s, f) for s in songs] for f in SONG_FIELDS})

    def __len__(self) -> int:
        return len(self.columns["perf_id"])

    def __getitem__(self, i: int) -> Song:
        return Song(**{f: self.columns[f][i] for f in SONG_FIELDS})

    def __iter__(self) -> Iterator[Song]:
        return (self[i] for i in range(len(self)))

    def rows_where(self, column: str, value: Any) -> set[int]:
        """Rows whose `column` equals `value`."""
        return {i for i, v in enumerate(self.columns[column]) if v == value}

    def extend(self, songs: list[Song]) -> SongTable:
        """A new table with `songs` appended."""
        return SongTable({f: self.columns[f] + [getattr(s, f) for s in songs] for f in SONG_FIELDS})


@dataclass
class Hit:
    """A search result: row in the index, exact model distance, the song."""

    row: int
    distance: float
    song: Song


@dataclass
class SongIndex:
    """An index directory loaded for searching."""

    path: Path
    meta: dict[str, Any]
    songs: SongTable
    embeddings: np.ndarray  # (N, D), memory-mapped when loaded from disk
    faiss_index: Any
    expanded: np.ndarray | None = None  # (N, D) with query expansion, else None

    @property
    def count(self) -> int:
        """Number of indexed songs."""
        return len(self.songs)

    @property
    def kind(self) -> str:
        """flat | pqfs | hnsw."""
        return str(self.meta["index"]["kind"])

    @property
    def metric(self) -> str:
        """The distance results are ranked and reported with: euclidean | cosine | bce."""
        return str(self.meta["index"]["distance"])

    @property
    def head(self) -> tuple[np.ndarray, float] | None:
        """The BCE head (weights, bias) recorded at build time, else None."""
        return _head_from_json(self.meta["model"].get("head"))

    def self_matches(self, path: str | Path | None, sha1: str | None) -> set[int]:
        """Rows that are the query itself: same audio content hash or same resolved path."""
        rows: set[int] = set()
        if sha1:
            rows |= self.songs.rows_where("sha1", sha1)
        if path:
            rows |= self.songs.rows_where("path", str(Path(path).resolve()))
        return rows

    @property
    def expansion(self) -> tuple[int, float]:
        """(k, alpha) of the query expansion; k = 0 when there is none."""
        e = expansion_of(self.meta)
        return int(e["k"]), float(e["alpha"])

    def search(self, queries: np.ndarray, k: int, exclude: list[set[int]] | None = None,
               expanded: bool = True) -> list[list[Hit]]:
        """The k nearest songs per query embedding (Q, D), nearest first, `exclude` rows left
        out; ordered with query expansion when the index has it (and `expanded`)."""
        q = np.asarray(queries, dtype=np.float32).reshape(-1, self.embeddings.shape[1])
        exclude = exclude or [set() for _ in q]
        n = self.count
        if n == 0:
            return [[] for _ in q]
        qe_k, alpha = self.expansion if expanded and self.expanded is not None else (0, 0.0)
        extra = max((len(e) for e in exclude), default=0)
        want = min(n, max(k, qe_k) + extra)
        if self.kind == "flat":
            n_cand = want if self.metric != "bce" and not qe_k else n
        else:
            n_cand = min(n, max(want, int(self.meta["index"]["candidates"])))
        # One candidate search, with the query itself: with query expansion the query's nearest
        # songs come from these candidates, and the expanded query re-ranks the same ones (a
        # second search with the expanded query would double an approximate index's time).
        if n_cand < n:
            _, cand = self.faiss_index.search(candidate_space(q, self.metric, self.head), n_cand)
        else:
            cand = None
        out = []
        for i in range(len(q)):
            rows = np.arange(n) if cand is None else np.unique(cand[i][cand[i] >= 0])
            if exclude[i]:
                rows = rows[~np.isin(rows, np.fromiter(exclude[i], dtype=np.int64))]
            dist = self._distances(q[i], rows)
            key = dist
            if qe_k:
                near = rows[np.lexsort((rows, dist))[:qe_k]]
                key = pairwise(self._expand(q[i], near, alpha), self.expanded[rows])[0]
            order = np.lexsort((rows, key))[:k]
            out.append([Hit(int(rows[j]), float(dist[j]), self.songs[rows[j]]) for j in order])
        return out

    def expand_queries(self, q: np.ndarray, k: int, alpha: float,
                       exclude: list[set[int]]) -> np.ndarray:
        """Each query expanded with its k nearest indexed songs (coverid.eval.expansion.expand)."""
        out = unit(q)
        for i, hits in enumerate(self.search(q, k, exclude, expanded=False)):
            out[i] = self._expand(q[i], np.array([h.row for h in hits], dtype=np.int64), alpha)[0]
        return out

    def _expand(self, q: np.ndarray, rows: np.ndarray, alpha: float) -> np.ndarray:
        """One query (D,) expanded with the stored songs at `rows`; (1, D)."""
        q = q[None, :]
        vecs = np.asarray(self.embeddings[rows], dtype=np.float32)
        return expand(q, vecs[None], unit(q) @ unit(vecs).T, alpha)

    def _distances(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact model distances from one query to the stored embeddings at sorted `rows`."""
        parts = [
            pairwise(q[None, :], np.asarray(self.embeddings[rows[s:s + _CHUNK]]), self.metric, self.head)[0]
            for s in range(0, len(rows), _CHUNK)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def _faiss() -> Any:
    """Import FAISS without its loader's INFO chatter about CPU-specific builds."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


def _head_from_json(head: Any) -> tuple[np.ndarray, float] | None:
    """[weights, bias] from the sidecar -> (np.ndarray, float)."""
    if head is None:
        return None
    return np.asarray(head[0], dtype=np.float32), float(head[1])


def candidate_space(x: np.ndarray, metric: str,
                    head: tuple[np.ndarray, float] | None = None) -> np.ndarray:
    """Map embeddings to the space where L2 ranks candidates for `metric` (see module doc)."""
    x = np.asarray(x, dtype=np.float32)
    if metric == "euclidean":
        return np.ascontiguousarray(x)
    if metric == "cosine":
        return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))
    if metric == "bce":
        if head is None:
            raise CoveridError("a bce model needs its head (weights, bias) to build or search an index")
        w = np.asarray(head[0], dtype=np.float32).ravel()
        # A larger w.|a-b| means "more likely a cover", so dimensions with w < 0 carry the
        # dissimilarity; if none do (an untrained head), fall back to |w|.
        scale = np.maximum(-w, 0.0)
        if not scale.any():
            scale = np.abs(w)
        return np.ascontiguousarray(x * np.sqrt(scale)[None, :])
    raise CoveridError(f"unknown metric {metric!r}; expected euclidean, cosine or bce")


def check_distance(distance: str, model_metric: str) -> str:
    """Distances that make sense for a model: its own; cosine or euclidean for embedding models."""
    allowed = ("bce",) if model_metric == "bce" else ("euclidean", "cosine")
    if distance not in allowed:
        raise CoveridError(f"a {model_metric} model cannot rank with the {distance} distance "
                           f"(allowed: {', '.join(allowed)})")
    return distance


def index_kind(n: int, icfg: dict[str, Any]) -> str:
    """flat up to `exact_max` songs, else the configured approximate kind."""
    kind = "flat" if n <= int(icfg["exact_max"]) else str(icfg["approx"])
    if kind not in KINDS:
        raise CoveridError(f"index.approx must be pqfs or hnsw, got {kind!r}")
    return kind


def make_faiss(vectors: np.ndarray, kind: str, icfg: dict[str, Any]) -> Any:
    """A FAISS index of `kind` holding `vectors` (candidate space), trained when needed."""
    faiss = _faiss()
    d = vectors.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatL2(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, int(icfg["hnsw_m"]))
        index.hnsw.efConstruction = int(icfg["ef_construction"])
    else:
        per = int(icfg["pq_dims"])
        m = d // per if d % per == 0 else d  # one dimension per code when pq_dims does not divide d
        index = faiss.IndexPQFastScan(d, m, 4)
        n_train = min(len(vectors), int(icfg["train_max"]))
        sample = np.random.default_rng(QUANTIZER_SEED).choice(len(vectors), n_train, replace=False)
        index.train(vectors[np.sort(sample)])
    configure_search(index, kind, icfg)
    if len(vectors):
        index.add(vectors)
    return index


def configure_search(index: Any, kind: str, icfg: dict[str, Any]) -> None:
    """Set query-time parameters (HNSW efSearch) from the index settings."""
    if kind == "hnsw":
        index.hnsw.efSearch = int(icfg["ef_search"])


def storage_dtype(icfg: dict[str, Any], emb: np.ndarray | None = None) -> np.dtype:
    """The dtype embeddings are stored in (index.storage; float32 for an index built before
    the setting); with `emb`, a CoveridError when its values do not fit that dtype."""
    name = icfg["storage"] if "storage" in icfg.keys() else "float32"
    if name not in ("float16", "float32"):
        raise CoveridError(f"index.storage must be float16 or float32, got {name!r}")
    dtype = np.dtype(name)
    top = float(np.abs(emb).max()) if emb is not None and emb.size else 0.0
    limit = float(np.finfo(dtype).max)  # compared in float64: a float16 scalar would cast top
    if top > limit:
        raise CoveridError(f"embeddings up to {top:.3g} do not fit {dtype} (at most "
                           f"{limit:g}); set index.storage: float32")
    return dtype


def _index_settings(kind: str, n: int, icfg: dict[str, Any]) -> dict[str, Any]:
    """What the sidecar records about the FAISS index (enough to search and extend it)."""
    return {"kind": kind, "space": "l2", "count": n, **{k: icfg[k] for k in sorted(icfg)}}


def build_index(out_dir: str | Path, embeddings: np.ndarray, songs: list[Song], model: dict[str, Any],
                features: dict[str, Any], icfg: dict[str, Any], threshold: dict[str, Any] | None = None,
                extra: dict[str, Any] | None = None, distance: str | None = None) -> SongIndex:
    """Write a new index directory (replacing any previous one atomically) and return it.

    `distance` ranks and scores results (default the model's metric; a threshold tuned on
    cosine for a euclidean model makes it cosine).
    """
    out_dir = Path(out_dir)
    distance = check_distance(distance or model["metric"], model["metric"])
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    _check_songs(emb, songs, model)
    storage_dtype(icfg, emb)
    kind = index_kind(len(songs), icfg)
    log.info("building a %s index of %d songs (%s)", kind, len(songs), distance)
    index = make_faiss(candidate_space(emb, distance, _head_from_json(model.get("head"))), kind, icfg)
    expansion = expansion_of(threshold)
    check_expansion(expansion, distance)
    meta = {
        "format": FORMAT,
        "created_by": f"coverid {__version__}",
        "model": model,
        "features": features,
        "index": {**_index_settings(kind, len(songs), icfg), "distance": distance},
        "threshold": threshold,
        "expansion": {"k": int(expansion["k"]), "alpha": float(expansion["alpha"])},
        **(extra or {}),
        "songs": SongTable.from_songs(songs).columns,
    }
    _write_dir(out_dir, meta, emb, index, expanded_songs(meta, emb, index))
    return load_index(out_dir)


def add_songs(index_dir: str | Path, embeddings: np.ndarray, songs: list[Song], model: dict[str, Any],
              features: dict[str, Any], skip_existing: bool = False) -> tuple[SongIndex, list[str]]:
    """Append songs to an index (same model and features required); returns (index, skipped ids).

    Perf ids already in the index are an error, or skipped with `skip_existing`. The FAISS index
    is extended when its kind does not change (a pqfs index keeps its trained codebooks), and
    rebuilt when growth crosses the exact_max recorded at build time.
    """
    old = load_index(index_dir)
    check_compatible(old.meta, model, features, old.path)
    known = set(old.songs.columns["perf_id"])
    dup = [s.perf_id for s in songs if s.perf_id in known]
    if dup and not skip_existing:
        shown = ", ".join(dup[:5]) + (", ..." if len(dup) > 5 else "")
        raise CoveridError(f"{old.path}: {len(dup)} perf ids already indexed ({shown}); "
                           "use --skip-existing to skip them or build a new index")
    keep = [i for i, s in enumerate(songs) if s.perf_id not in known]
    new_emb = np.asarray(embeddings, dtype=np.float32).reshape(-1, old.embeddings.shape[1])[keep]
    new_songs = [songs[i] for i in keep]
    _check_songs(new_emb, new_songs, model)
    storage_dtype(old.meta["index"], new_emb)
    emb = np.concatenate([np.asarray(old.embeddings, dtype=np.float32), new_emb])
    all_songs = old.songs.extend(new_songs)
    # An index keeps the settings it was built with (`index build` applies new ones).
    settings = {k: v for k, v in old.meta["index"].items() if k not in ("kind", "space", "count", "distance")}
    kind = index_kind(len(all_songs), settings)
    head = _head_from_json(model.get("head"))
    if kind == old.kind:
        index = old.faiss_index
        if len(new_emb):
            index.add(candidate_space(new_emb, old.metric, head))
    else:
        log.info("index grows past exact_max (%s): rebuilding as %s", settings["exact_max"], kind)
        index = make_faiss(candidate_space(emb, old.metric, head), kind, settings)
    meta = {**old.meta, "index": {**_index_settings(kind, len(all_songs), settings), "distance": old.metric},
            "songs": all_songs.columns}
    # New songs change old songs' neighbours: every song is expanded again.
    _write_dir(old.path, meta, emb, index, expanded_songs(meta, emb, index))
    return load_index(old.path), [s.perf_id for s in songs if s.perf_id in known]


def expanded_songs(meta: dict[str, Any], emb: np.ndarray, index: Any,
                   batch: int = 1024) -> np.ndarray | None:
    """Every song expanded with its k nearest other songs (database-side augmentation), or
    None when the index has no query expansion."""
    from tqdm import tqdm

    songs = SongIndex(Path("."), meta, SongTable(meta["songs"]), emb, index)
    k, alpha = songs.expansion
    if not k:
        return None
    configure_search(index, str(meta["index"]["kind"]), meta["index"])
    out = np.empty(emb.shape, dtype=np.float32)
    for start in tqdm(range(0, len(emb), batch), desc="query expansion", unit="batch",
                      disable=len(emb) <= batch):
        stop = min(start + batch, len(emb))
        out[start:stop] = songs.expand_queries(emb[start:stop], k, alpha,
                                               [{r} for r in range(start, stop)])
    return out


def _check_songs(emb: np.ndarray, songs: list[Song], model: dict[str, Any]) -> None:
    """Embeddings must be (len(songs), dim), finite, and perf ids unique."""
    if emb.ndim != 2 or len(emb) != len(songs) or emb.shape[1] != int(model["dim"]):
        raise CoveridError(f"embeddings of shape {emb.shape} do not match {len(songs)} songs "
                           f"of dimension {model['dim']}")
    if not np.isfinite(emb).all():
        raise CoveridError("the model produced non-finite embeddings; is the model trained?")
    ids = [s.perf_id for s in songs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise CoveridError(f"duplicate perf ids in the input: {', '.join(dup[:5])}")


def check_compatible(meta: dict[str, Any], model: dict[str, Any], features: dict[str, Any],
                     where: str | Path) -> None:
    """Raise when the index was built with another model or feature configuration."""
    old = meta["model"]
    rebuild = "rebuild it with 'coverid index build'"
    for key in ("metric", "dim", "config_hash"):
        if old.get(key) != model.get(key):
            raise BadInputError(where, f"index built with another model ({key} {old.get(key)!r} "
                                       f"from {old.get('source')}, model in use has "
                                       f"{model.get(key)!r} from {model.get('source')}); {rebuild}")
    if old.get("probe") is not None and model.get("probe") is not None:
        a, b = np.asarray(old["probe"]), np.asarray(model["probe"])
        scale = max(float(np.abs(a).max()), 1e-6)
        if a.shape != b.shape or float(np.abs(a - b).max()) > 1e-3 * scale:
            raise BadInputError(where, f"index built with a model whose weights differ from "
                                       f"{model.get('source')} (same config, other embeddings); {rebuild}")
    if _canon(meta["features"]) != _canon(features):
        diff = sorted(k for k in set(meta["features"]) | set(features)
                      if _canon(meta["features"].get(k)) != _canon(features.get(k)))
        raise BadInputError(where, f"index built with another feature configuration "
                                   f"(differs in {', '.join(diff)}); {rebuild}")


def _canon(obj: Any) -> str:
    """A canonical JSON form for comparing configs."""
    return json.dumps(obj, sort_keys=True, default=str)


def load_index(index_dir: str | Path) -> SongIndex:
    """Open an index directory; a missing or corrupt part is a one-line BadInputError."""
    faiss = _faiss()
    index_dir = Path(index_dir)
    meta_path = index_dir / META_FILE
    if not index_dir.is_dir():
        raise BadInputError(index_dir, "index directory not found")
    if not meta_path.exists():
        raise BadInputError(index_dir, f"not a coverid index (no {META_FILE})")
    meta = _read_meta(meta_path)
    songs = SongTable(meta["songs"])
    dim = int(meta["model"]["dim"])
    try:
        emb = np.load(index_dir / EMB_FILE, mmap_mode="r")
    except FileNotFoundError:
        raise BadInputError(index_dir / EMB_FILE, "embeddings file missing") from None
    except (OSError, ValueError) as e:
        raise BadInputError(index_dir / EMB_FILE, f"corrupt embeddings file ({e})") from None
    dtype = storage_dtype(meta["index"])
    if emb.shape != (len(songs), dim) or emb.dtype != dtype:
        raise BadInputError(index_dir / EMB_FILE, f"holds {emb.dtype} {emb.shape}, sidecar says "
                                                  f"{dtype} ({len(songs)}, {dim})")
    faiss_path = index_dir / INDEX_FILE
    if not faiss_path.exists():
        raise BadInputError(faiss_path, "FAISS index file missing")
    try:
        index = faiss.read_index(str(faiss_path))
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[-1].split("Error: ")[-1][:120]
        raise BadInputError(faiss_path, f"corrupt FAISS index ({reason})") from None
    if index.ntotal != len(songs) or index.d != dim:
        raise BadInputError(faiss_path, f"holds {index.ntotal} vectors of dim {index.d}, "
                                        f"sidecar says {len(songs)} of dim {dim}")
    configure_search(index, str(meta["index"]["kind"]), meta["index"])
    return SongIndex(index_dir, meta, songs, emb, index, _load_expanded(index_dir, meta, emb.shape, dtype))


def _load_expanded(index_dir: Path, meta: dict[str, Any], shape: tuple[int, ...],
                   dtype: np.dtype) -> np.ndarray | None:
    """The expanded embeddings when the index has query expansion, else None."""
    if not int(expansion_of(meta)["k"]):
        return None
    path = index_dir / EXPANDED_FILE
    try:
        expanded = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise BadInputError(path, "expanded embeddings missing (the index has query expansion)") from None
    except (OSError, ValueError) as e:
        raise BadInputError(path, f"corrupt expanded embeddings ({e})") from None
    if expanded.shape != shape or expanded.dtype != dtype:
        raise BadInputError(path, f"holds {expanded.dtype} {expanded.shape}, expected {dtype} {shape}")
    return expanded


def _read_meta(path: Path) -> dict[str, Any]:
    """Parse and sanity-check meta.json."""
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInputError(path, f"not valid JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(meta, dict):
        raise BadInputError(path, "expected a JSON object")
    if meta.get("format") != FORMAT:
        raise BadInputError(path, f"unsupported index format {meta.get('format')!r} (expected {FORMAT})")
    for key, sub in (("model", ("metric", "dim")), ("index", ("kind", "distance")), ("features", ())):
        if not isinstance(meta.get(key), dict) or any(s not in meta[key] for s in sub):
            raise BadInputError(path, f"missing or incomplete {key!r} section")
    if meta["index"]["kind"] not in KINDS:
        raise BadInputError(path, f"unknown index kind {meta['index']['kind']!r}")
    try:
        storage_dtype(meta["index"])
    except CoveridError as e:
        raise BadInputError(path, str(e)) from None
    cols = meta.get("songs")
    if not isinstance(cols, dict) or any(not isinstance(cols.get(f), list) for f in SONG_FIELDS):
        raise BadInputError(path, f"'songs' must hold the columns {', '.join(SONG_FIELDS)}")
    if len({len(cols[f]) for f in SONG_FIELDS}) != 1:
        raise BadInputError(path, "'songs' columns differ in length")
    return meta


def _write_dir(target: Path, meta: dict[str, Any], emb: np.ndarray, index: Any,
               expanded: np.ndarray | None = None) -> None:
    """Write the files into a temp dir beside `target`, then swap it in."""
    faiss = _faiss()
    dtype = storage_dtype(meta["index"])
    with atomic_dir(target) as tmp:
        np.save(tmp / EMB_FILE, np.asarray(emb, dtype))
        if expanded is not None:
            np.save(tmp / EXPANDED_FILE, np.asarray(expanded, dtype))
        faiss.write_index(index, str(tmp / INDEX_FILE))
        (tmp / META_FILE).write_text(_meta_text(meta))


def _meta_text(meta: dict[str, Any]) -> str:
    """meta.json: indented, except that each song column takes one line (C-speed JSON)."""
    head = json.dumps({k: v for k, v in meta.items() if k != "songs"}, indent=2, default=io.json_default)
    cols = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in meta["songs"].items())
    return head[:-2] + ',\n  "songs": {\n' + cols + "\n  }\n}\n"


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temp dir beside `target`; on success it replaces `target`, else is removed.

    See coverid.core.io.atomic_dir; in addition, refuses to replace a non-empty directory that is
    not a coverid index.
    """
    target = Path(target)
    if target.exists() and not (target / META_FILE).exists() and (
            not target.is_dir() or any(target.iterdir())):
        raise BadInputError(target, "exists and is not a coverid index; refusing to overwrite it")
    with io.atomic_dir(target) as tmp:
        yield tmp
