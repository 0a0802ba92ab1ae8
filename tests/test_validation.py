"""The validate stage: summary tables, GX expectations on clean and corrupted data, Data Docs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import make_feature_set

from coverid.core.errors import CoveridError
from coverid.core.stage import stage_main
from coverid.data import validation
from coverid.data.splits import write_splits
from coverid.data.store import write_features

ROOT = Path(__file__).resolve().parents[1]
# W_0..W_3 have 3 versions, W_4 and W_5 are noise songs (one version); W_4 sits in train.
SPLITS = {"W_0": "train", "W_1": "train", "W_2": "val", "W_3": "test", "W_4": "train", "W_5": "val"}
VCFG = {"value_min": 0.0, "value_max": 1.0, "min_length_frames": 100, "max_length_frames": 5000,
        "min_versions_train": 2, "allow_noise_in_train": True}
PCFG = {"tile": True, "spect_len": 40, "fusion": []}


def _failed(report: validation.ValidationReport) -> dict[str, validation.ExpectationResult]:
    return {f"{r.table}.{r.key}": r for r in report.failed}


def test_performance_frame_counts_nonfinite_and_finite_range(monkeypatch):
    monkeypatch.setattr(validation, "_CHUNK", 4)  # rows 3 and 7 straddle chunk boundaries
    fs = make_feature_set()
    fs.features[3, 0, :5] = np.nan
    fs.features[3, 1, 0] = np.inf
    fs.features[7] = np.nan
    fs.features[9, 2, 2] = -0.5
    df = validation.performance_frame(fs, SPLITS)
    flat = fs.features.reshape(len(fs), -1)
    assert df["n_nonfinite"].tolist() == (~np.isfinite(flat)).sum(axis=1).tolist()
    assert df.loc[3, "max"] == pytest.approx(np.nanmax(np.where(np.isinf(flat[3]), np.nan, flat[3])))
    assert np.isnan(df.loc[7, "min"]) and np.isnan(df.loc[7, "max"])
    assert df.loc[9, "min"] == pytest.approx(-0.5)
    assert (df[["n_rows", "n_frames"]].to_numpy() == [23, 40]).all()
    assert df["split"].tolist() == [SPLITS[w] for w in fs.work_id]


def test_work_frame_flags_a_work_in_two_splits():
    fs = make_feature_set()
    row_split = [SPLITS[w] for w in fs.work_id]
    row_split[0] = "test"  # P_0_0 in test, the other W_0 versions in train
    works = validation.work_frame(validation.performance_frame(fs, SPLITS, row_split)).set_index("work_id")
    assert works.loc["W_0", "n_splits"] == 2 and works.loc["W_0", "split"] == "test+train"
    assert works.loc["W_4", "n_versions"] == 1 and works["n_splits"].drop("W_0").eq(1).all()


def test_clean_set_passes_and_writes_data_docs(tmp_path):
    docs = tmp_path / "reports" / "data_docs"
    docs.mkdir(parents=True)
    (docs / "stale.html").write_text("from an earlier run")
    report = validation.validate_features(make_feature_set(), SPLITS, VCFG, PCFG, docs)
    assert report.success, report.failures_summary()
    assert report.failures_summary() == ""
    assert report.n_performances == 14 and report.n_works == 6
    summary = report.metrics()
    assert summary["n_failed"] == 0 and summary["n_expectations"] == len(report.results) >= 10
    assert summary["n_passed"] == summary["n_expectations"]
    # numbers only: `dvc metrics show` stays one short line
    assert all(type(v) is int for v in summary.values()), summary
    details = report.details()
    assert details["performances.finite"]["description"] == "every feature value finite (no NaN or inf)"
    json.dumps(details)
    assert report.docs_index == docs / "index.html"
    index = report.docs_index.read_text()
    assert "performances" in index and "works" in index
    assert list(docs.glob("validations/performances/**/*.html"))
    assert not (docs / "stale.html").exists()
    assert [p.name for p in tmp_path.joinpath("reports").iterdir()] == ["data_docs"]  # no leftovers


def test_nan_and_out_of_range_fail_separately():
    fs = make_feature_set()
    fs.features[0, 5, 5] = np.nan
    fs.features[4, 0, 0] = 1.5
    report = validation.validate_features(fs, SPLITS, VCFG, PCFG, None)
    failed = _failed(report)
    assert set(failed) == {"performances.finite", "performances.max_in_range"}
    finite = failed["performances.finite"]
    assert (finite.column, finite.unexpected_count, finite.element_count) == ("n_nonfinite", 1, 14)
    assert finite.examples == ["P_0_0"]
    lines = report.failures_summary().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("expect_column_values_to_be_between(n_nonfinite) failed for 1 of 14 rows")
    assert "expect_column_values_to_be_between(max) failed for 1 of 14 rows (e.g. P_1_1)" in lines[1]
    with pytest.raises(CoveridError, match=r"2 of \d+ expectations"):
        report.raise_if_failed()


@pytest.mark.parametrize("rows, pcfg, key", [
    (13, PCFG, "performances.pitch_rows"),
    (12, PCFG, "performances.pitch_rows"),  # untiled features while params say tile
    (23, {"tile": True, "spect_len": 50, "fusion": []}, "performances.frames"),
    (23, {**PCFG, "fusion": ["melody"]}, "performances.pitch_rows"),  # a fused input has 46
])
def test_wrong_shape_fails(rows, pcfg, key):
    report = validation.validate_features(make_feature_set(rows=rows), SPLITS, VCFG, pcfg, None)
    assert set(_failed(report)) == {key}
    assert _failed(report)[key].unexpected_count == 14


def test_leaked_work_fails():
    fs = make_feature_set()
    row_split = [SPLITS[w] for w in fs.work_id]
    row_split[1] = "test"  # one version of train work W_0 leaks into test
    report = validation.validate_features(fs, SPLITS, VCFG, PCFG, None, row_split=row_split)
    failed = _failed(report)
    assert set(failed) == {"works.one_split"}
    assert (failed["works.one_split"].unexpected_count, failed["works.one_split"].examples) == (1, ["W_0"])


def test_single_version_train_work_fails_unless_noise_allowed():
    fs = make_feature_set()
    report = validation.validate_features(fs, SPLITS, {**VCFG, "allow_noise_in_train": False}, PCFG, None)
    failed = _failed(report)
    assert set(failed) == {"works.train_versions"}
    assert (failed["works.train_versions"].unexpected_count, failed["works.train_versions"].examples) == (1, ["W_4"])
    # with noise allowed (the clean test), a 3-version train work still fails a higher minimum
    report = validation.validate_features(fs, SPLITS, {**VCFG, "min_versions_train": 4}, PCFG, None)
    assert set(_failed(report)) == {"works.train_versions", "works.train_pairs"}
    assert _failed(report)["works.train_versions"].unexpected_count == 2


def test_duplicate_perf_id_and_unsplit_work_fail():
    fs = make_feature_set()
    fs.perf_id[2] = fs.perf_id[1]
    splits = {w: s for w, s in SPLITS.items() if w != "W_3"}
    report = validation.validate_features(fs, splits, VCFG, PCFG, None)
    failed = _failed(report)
    assert set(failed) == {"performances.unique_perf_id", "performances.has_split", "performances.all_splits"}
    assert failed["performances.unique_perf_id"].unexpected_count == 2
    assert failed["performances.has_split"].unexpected_count == 3
    assert "expect_column_distinct_values_to_contain_set(split) failed (observed {'missing': ['test']})" \
        in report.failures_summary()


def _load_stage():
    spec = importlib.util.spec_from_file_location("stage_validate", ROOT / "stages" / "validate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_writes_reports_and_exits_nonzero_on_failure(tmp_path, monkeypatch, capsys):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["source"] = "synth"
    params["data"]["extra"]["source"] = None  # one corpus (test_corpora.py: two)
    params["preprocess"].update(spect_len=40, tile=True, fusion=[])
    params["validate"].update(VCFG)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    stage = _load_stage()
    fs = make_feature_set()
    write_features("data/processed/synth.h5", fs)
    write_splits("data/processed/splits.json", SPLITS)

    stage_main(stage.main)
    assert json.loads(Path("reports/validation.json").read_text())["n_failed"] == 0
    assert Path("reports/data_docs/index.html").exists()
    page = Path("reports/data_docs/summary.html").read_text()
    assert "expectations passed (all passed)" in page and "http" not in page  # nothing to fetch

    fs.features[0, 0, 0] = np.nan
    write_features("data/processed/synth.h5", fs)
    with pytest.raises(SystemExit) as exit_info:
        stage_main(stage.main)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "data validation failed (1 of" in err
    assert "expect_column_values_to_be_between(n_nonfinite) failed for 1 of 14 rows (e.g. P_0_0)" in err
    summary = json.loads(Path("reports/validation.json").read_text())
    assert summary["n_failed"] == 1 and summary["n_passed"] == summary["n_expectations"] - 1
    details = json.loads(Path("reports/validation_expectations.json").read_text())
    assert details["performances.finite"]["unexpected_count"] == 1
    page = Path("reports/data_docs/summary.html").read_text()
    assert '<tr class="failed"><td>performances</td><td>every feature value finite' in page
    assert "1 FAILED" in page
