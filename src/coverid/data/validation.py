"""Great Expectations checks of the processed features and the split, with HTML Data Docs.

The feature array is summarised into two small tables (one row per performance, one per
work) and each table is validated by a GX 1.x expectation suite through a Checkpoint that
also renders Data Docs. Summaries keep GX fast on 15,000 performances: it never sees the
(N, F, L) array itself.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coverid.core.errors import CoveridError
from coverid.data.splits import SPLITS
from coverid.data.store import FeatureSet
from coverid.features.transform import feature_rows

log = logging.getLogger(__name__)

PERFORMANCES = "performances"
WORKS = "works"
SITE = "coverid"
ID_COLUMN = {PERFORMANCES: "perf_id", WORKS: "work_id"}
_CHUNK = 512  # performances summarised at once: bounds the temporary arrays' memory


@dataclass
class ExpectationResult:
    """One expectation's outcome on one summary table."""

    key: str  # stable id, e.g. "finite"
    table: str  # performances | works
    name: str  # GX expectation type, e.g. expect_column_values_to_be_between
    column: str | None
    success: bool
    unexpected_count: int | None  # rows failing (column-map expectations)
    element_count: int | None  # rows checked
    observed_value: Any = None  # aggregate expectations (median, max, distinct values)
    examples: list[str] = field(default_factory=list)  # ids of some failing rows
    description: str = ""
    error: str | None = None  # GX raised while evaluating it

    def summary(self) -> str:
        """One line: which expectation failed, on what, and for how many rows."""
        what = f"{self.name}({self.column})" if self.column else self.name
        if self.error:
            return f"{what} raised {_short(self.error)}"
        if self.unexpected_count is not None and self.element_count is not None:
            eg = f" (e.g. {', '.join(self.examples)})" if self.examples else ""
            return f"{what} failed for {self.unexpected_count} of {self.element_count} rows{eg}"
        return f"{what} failed (observed {_short(self.observed_value)})"


@dataclass
class ValidationReport:
    """Every expectation's result; `success` when all passed."""

    success: bool
    results: list[ExpectationResult]
    n_performances: int
    n_works: int
    docs_index: Path | None = None
    seconds: float = 0.0
    failed: list[ExpectationResult] = field(init=False)

    def __post_init__(self) -> None:
        self.failed = [r for r in self.results if not r.success]

    def failures_summary(self) -> str:
        """One line per failed expectation, e.g. `expect_..._between(max) failed for 3 of 360 rows`."""
        return "\n".join(f"{r.summary()} [{r.table}: {r.description}]" for r in self.failed)

    def raise_if_failed(self) -> None:
        """Raise CoveridError naming every failed expectation."""
        if not self.success:
            raise CoveridError(
                f"data validation failed ({len(self.failed)} of {len(self.results)} "
                f"expectations):\n{self.failures_summary()}"
            )

    def metrics(self) -> dict[str, int]:
        """reports/validation.json, a DVC metrics file: numbers only, so `dvc metrics show`
        stays one short line (the expectations' texts are in `details`)."""
        return {"n_expectations": len(self.results), "n_passed": len(self.results) - len(self.failed),
                "n_failed": len(self.failed), "n_performances": self.n_performances,
                "n_works": self.n_works}

    def details(self) -> dict[str, Any]:
        """Every expectation's outcome by `<table>.<key>`: what, on which column, observed."""
        return {
            f"{r.table}.{r.key}": {
                k: _jsonable(v) for k, v in asdict(r).items()
                if k not in ("key", "table") and v not in (None, [])
            }
            for r in self.results
        }


def summary_html(report: ValidationReport, title: str) -> str:
    """A self-contained page of every expectation's result (no scripts, fonts or links to fetch:
    readable offline, unlike GX's Data Docs index, which needs its CDN assets)."""
    def cell(v: Any) -> str:
        return f"<td>{html.escape('' if v is None else _short(v))}</td>"

    rows = []
    for r in report.results:
        status = "passed" if r.success else "FAILED"
        rows.append(f'<tr class="{status.lower()}">' + "".join(cell(v) for v in (
            r.table, r.description, f"{r.name}({r.column})" if r.column else r.name, status,
            r.unexpected_count if r.observed_value is None else r.observed_value,
            r.element_count)) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("table", "expectation", "check", "result",
                                             "unexpected / observed", "rows"))
    n_ok = len(report.results) - len(report.failed)
    verdict = "all passed" if report.success else f"{len(report.failed)} FAILED"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #bbb; padding: 4px 8px; text-align: left; }}
tr.passed td:nth-child(4) {{ color: #176d17; font-weight: bold; }}
tr.failed td {{ background: #fde2e2; }}
tr.failed td:nth-child(4) {{ color: #b00000; font-weight: bold; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p><b>{n_ok} of {len(report.results)} expectations passed ({verdict})</b> on
{report.n_performances} performances of {report.n_works} works.</p>
<table><tr>{head}</tr>
{chr(10).join(rows)}
</table>
<p>The Great Expectations Data Docs of the same run: <a href="index.html">index.html</a>
(styled by scripts from the internet).</p>
</body></html>
"""


def performance_frame(fs: FeatureSet, splits: dict[str, str],
                      row_split: Sequence[str | None] | None = None) -> pd.DataFrame:
    """One row per performance: ids, split, shape, finite min/max, non-finite count, length.

    `row_split` gives each row's split explicitly (else it comes from `splits` by work), so
    a work whose rows sit in two splits can be represented and caught.
    """
    n = len(fs)
    if row_split is None:
        row_split = [splits.get(w) for w in fs.work_id]
    elif len(row_split) != n:
        raise ValueError(f"row_split has {len(row_split)} rows, features {n}")
    lo = np.full(n, np.nan)
    hi = np.full(n, np.nan)
    nonfinite = np.zeros(n, dtype=np.int64)
    for start in range(0, n, _CHUNK):
        rows = slice(start, min(start + _CHUNK, n))
        x = fs.features[rows].reshape(rows.stop - start, -1)
        finite = np.isfinite(x)
        nonfinite[rows] = x.shape[1] - finite.sum(axis=1)
        # min/max over the finite values only, so the range check is independent of NaNs
        any_finite = finite.any(axis=1)
        lo[rows] = np.where(any_finite, np.where(finite, x, np.inf).min(axis=1), np.nan)
        hi[rows] = np.where(any_finite, np.where(finite, x, -np.inf).max(axis=1), np.nan)
    _, f_rows, length = fs.features.shape
    return pd.DataFrame({
        "perf_id": fs.perf_id.astype(object),
        "work_id": fs.work_id.astype(object),
        "split": pd.Series(list(row_split), dtype=object),
        "n_rows": np.full(n, f_rows, dtype=np.int64),
        "n_frames": np.full(n, length, dtype=np.int64),
        "min": lo,
        "max": hi,
        "n_nonfinite": nonfinite,
        "length_frames": fs.length_frames.astype(np.int64),
    })


def work_frame(perf: pd.DataFrame) -> pd.DataFrame:
    """One row per work: its split(s) joined by '+', number of versions and of splits."""
    groups = perf.groupby("work_id", sort=True)["split"]
    names = groups.agg(lambda s: "+".join(sorted(set(s.dropna()))) or None)
    return pd.DataFrame({
        "work_id": names.index.astype(object),
        "split": names.to_numpy(dtype=object),
        "n_versions": groups.size().to_numpy(dtype=np.int64),
        "n_splits": groups.nunique(dropna=True).to_numpy(dtype=np.int64),
    })


def expected_rows(pcfg: dict[str, Any]) -> int:
    """Pitch rows F the preprocess params produce: 23 when tiled, else 12, per stacked feature
    (preprocess.feature and each of preprocess.fusion)."""
    return feature_rows(pcfg["tile"]) * (1 + len(pcfg["fusion"]))


def validate_features(fs: FeatureSet, splits: dict[str, str], vcfg: dict[str, Any],
                      pcfg: dict[str, Any], docs_dir: Path | None = None,
                      row_split: Sequence[str | None] | None = None) -> ValidationReport:
    """Validate `fs` and its split with GX; write Data Docs to `docs_dir` when given."""
    t0 = time.perf_counter()
    perf = performance_frame(fs, splits, row_split)
    works = work_frame(perf)
    with _quiet():
        import great_expectations as gx

        context = _context(gx, docs_dir)
        suites = {PERFORMANCES: _performance_suite(gx, vcfg, pcfg), WORKS: _work_suite(gx, vcfg)}
        run_id = gx.RunIdentifier(run_name="coverid-validate")  # one run in Data Docs
        results: list[ExpectationResult] = []
        for table, df in ((PERFORMANCES, perf), (WORKS, works)):
            results += _run_checkpoint(gx, context, table, suites[table], df, run_id,
                                       docs=docs_dir is not None)
    docs_index = _publish_docs(context, docs_dir) if docs_dir is not None else None
    report = ValidationReport(
        success=all(r.success for r in results), results=results, n_performances=len(perf),
        n_works=len(works), docs_index=docs_index, seconds=time.perf_counter() - t0,
    )
    log.info("validated %d performances, %d works: %d of %d expectations passed (%.1f s)",
             len(perf), len(works), len(results) - len(report.failed), len(results), report.seconds)
    return report


def _performance_suite(gx: Any, vcfg: dict[str, Any], pcfg: dict[str, Any]) -> Any:
    """Shape, value range, finiteness, length, unique ids, split coverage."""
    E = gx.expectations
    lo, hi = float(vcfg["value_min"]), float(vcfg["value_max"])
    len_lo, len_hi = int(vcfg["min_length_frames"]), int(vcfg["max_length_frames"])
    f_rows = expected_rows(pcfg)
    return _suite(gx, PERFORMANCES, [
        ("non_empty", E.ExpectTableRowCountToBeBetween(min_value=1),
         "at least one performance"),
        ("unique_perf_id", E.ExpectColumnValuesToBeUnique(column="perf_id"),
         "no duplicate perf_id"),
        ("pitch_rows", E.ExpectColumnValuesToBeInSet(column="n_rows", value_set=[f_rows]),
         f"F = {f_rows} pitch rows (12, or 23 when preprocess.tile, per feature)"),
        ("frames", E.ExpectColumnValuesToBeInSet(column="n_frames", value_set=[int(pcfg["spect_len"])]),
         "L = preprocess.spect_len frames"),
        ("finite", E.ExpectColumnValuesToBeBetween(column="n_nonfinite", min_value=0, max_value=0),
         "every feature value finite (no NaN or inf)"),
        ("min_in_range", E.ExpectColumnValuesToBeBetween(column="min", min_value=lo, max_value=hi),
         f"smallest feature value in [{lo}, {hi}]"),
        ("max_in_range", E.ExpectColumnValuesToBeBetween(column="max", min_value=lo, max_value=hi),
         f"largest feature value in [{lo}, {hi}]"),
        ("length", E.ExpectColumnValuesToBeBetween(column="length_frames", min_value=len_lo,
                                                   max_value=len_hi),
         f"original length in [{len_lo}, {len_hi}] frames"),
        ("length_median", E.ExpectColumnMedianToBeBetween(column="length_frames", min_value=len_lo,
                                                          max_value=len_hi),
         "median original length within the accepted range (observed value recorded)"),
        ("has_split", E.ExpectColumnValuesToNotBeNull(column="split"),
         "every performance's work is in the splits file"),
        ("all_splits", E.ExpectColumnDistinctValuesToContainSet(column="split", value_set=list(SPLITS)),
         "train, val and test each hold at least one performance"),
    ])


def _work_suite(gx: Any, vcfg: dict[str, Any]) -> Any:
    """No work in two splits; train works have enough versions to form positive pairs."""
    from great_expectations.expectations.row_conditions import Column

    E = gx.expectations
    k = int(vcfg["min_versions_train"])
    train = Column("split") == "train"
    if vcfg["allow_noise_in_train"]:
        # single-version (noise) works are only negatives; split_works spreads them over splits
        train = train & (Column("n_versions") > 1)
    return _suite(gx, WORKS, [
        ("one_split", E.ExpectColumnValuesToBeBetween(column="n_splits", max_value=1),
         "no work has performances in two splits"),
        ("train_versions", E.ExpectColumnValuesToBeBetween(column="n_versions", min_value=k,
                                                           row_condition=train),
         f"every train work has >= {k} versions"
         + (" (noise songs excepted)" if vcfg["allow_noise_in_train"] else "")),
        ("train_pairs", E.ExpectColumnMaxToBeBetween(column="n_versions", min_value=k,
                                                     row_condition=Column("split") == "train"),
         f"some train work has >= {k} versions (positive pairs exist)"),
    ])


def _suite(gx: Any, name: str, items: list[tuple[str, Any, str]]) -> Any:
    """An ExpectationSuite of (key, expectation, description) items; key goes in meta."""
    suite = gx.ExpectationSuite(name=name)
    for key, expectation, description in items:
        expectation.meta = {"key": key}
        expectation.description = description
        suite.add_expectation(expectation)
    return suite


def _context(gx: Any, docs_dir: Path | None) -> Any:
    """An in-memory GX context: no analytics, no progress bars, our Data Docs site only."""
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if docs_dir is not None:
        shutil.rmtree(_staging(docs_dir), ignore_errors=True)  # left by an interrupted run
        sites[SITE] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(_staging(docs_dir))},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _run_checkpoint(gx: Any, context: Any, table: str, suite: Any, df: pd.DataFrame,
                    run_id: Any, docs: bool) -> list[ExpectationResult]:
    """Validate one summary table through a Checkpoint (which updates Data Docs)."""
    asset = context.data_sources.add_pandas(table).add_dataframe_asset(table)
    batch = asset.add_batch_definition_whole_dataframe(table)
    suite = context.suites.add(suite)
    vd = context.validation_definitions.add(gx.ValidationDefinition(name=table, data=batch, suite=suite))
    actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[SITE])] if docs else []
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=table, validation_definitions=[vd], actions=actions,
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5},
    ))
    result = checkpoint.run(batch_parameters={"dataframe": df}, run_id=run_id)
    ids = df[ID_COLUMN[table]]
    return [_result(table, r, ids) for run in result.run_results.values() for r in run.results]


def _result(table: str, r: Any, ids: pd.Series) -> ExpectationResult:
    """Our flat record of one GX ExpectationValidationResult; failing rows named by id."""
    cfg = r.expectation_config
    res = r.result or {}
    rows = res.get("partial_unexpected_index_list") or []
    examples = list(dict.fromkeys(str(ids.loc[i]) for i in rows if i in ids.index))
    observed = res.get("observed_value")
    if observed is None and res.get("partial_missing_list"):  # *_to_contain_set
        observed = {"missing": res["partial_missing_list"]}
    return ExpectationResult(
        key=(cfg.meta or {}).get("key", cfg.type),
        table=table,
        name=cfg.type,
        column=cfg.kwargs.get("column"),
        success=bool(r.success),
        unexpected_count=_int_or_none(res.get("unexpected_count")),
        element_count=_int_or_none(res.get("element_count")),
        observed_value=_jsonable(observed),
        examples=examples if not r.success else [],
        description=cfg.description or "",
        error=_exception_message(r.exception_info),
    )


def _exception_message(info: Any) -> str | None:
    """The message of an exception GX caught while evaluating (flat or per-metric info)."""
    if not isinstance(info, dict):
        return None
    entries = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for entry in entries:
        if entry.get("raised_exception"):
            return str(entry.get("exception_message") or "an exception").strip().splitlines()[-1]
    return None


def _staging(docs_dir: Path) -> Path:
    """The folder Data Docs are built in before replacing `docs_dir` (same file system)."""
    return docs_dir.parent.resolve() / f".{docs_dir.name}.building"


def _publish_docs(context: Any, docs_dir: Path) -> Path:
    """Move the freshly built site over `docs_dir` so no stale pages remain; return index.html."""
    staging = _staging(docs_dir)
    index = staging / "index.html"
    if not index.exists():  # the actions build it; build explicitly if GX skipped it
        with _quiet():
            context.build_data_docs(site_names=[SITE])
    if not index.exists():
        raise CoveridError(f"{docs_dir}: Great Expectations wrote no index.html")
    docs_dir.parent.mkdir(parents=True, exist_ok=True)
    old = Path(tempfile.mkdtemp(prefix=f".{docs_dir.name}.old.", dir=docs_dir.parent))
    if docs_dir.exists():
        os.replace(docs_dir, old / docs_dir.name)
    os.replace(staging, docs_dir)
    shutil.rmtree(old, ignore_errors=True)
    return docs_dir / "index.html"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence GX's warnings and info logs; no analytics (the pipeline runs offline)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _int_or_none(v: Any) -> int | None:
    return None if v is None else int(v)


def _short(v: Any) -> str:
    """A value shortened for a one-line message."""
    text = str(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _jsonable(v: Any) -> Any:
    """Plain JSON types from GX's observed values (numpy scalars, dicts, lists)."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)
