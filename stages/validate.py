"""DVC stage `validate`: Great Expectations checks of the processed features and the split;
writes reports/validation.json (counts, a DVC metrics file), every expectation's outcome in
reports/validation_expectations.json, the HTML Data Docs in reports/data_docs with an offline
summary page (summary.html), and fails the pipeline (exit 1, one line per failed expectation)
when any expectation fails."""

from __future__ import annotations

import logging

from coverid.core import paths
from coverid.core.config import load_params
from coverid.core.io import write_json, write_text
from coverid.core.stage import stage_main
from coverid.data.splits import load_dataset
from coverid.data.validation import summary_html, validate_features

DOCS_DIR = paths.REPORTS / "data_docs"


def main() -> None:
    """Validate the feature store and splits named by params; write the reports."""
    params = load_params()
    fs, splits = load_dataset(params)
    report = validate_features(fs, splits, params["validate"], params["preprocess"], DOCS_DIR)
    write_json(paths.REPORTS / "validation.json", report.metrics())
    write_json(paths.REPORTS / "validation_expectations.json", report.details())
    summary = DOCS_DIR / "summary.html"
    write_text(summary, summary_html(report, "coverid data validation"))
    logging.getLogger("validate").info("Data Docs: %s (offline summary: %s)", report.docs_index,
                                       summary)
    report.raise_if_failed()


if __name__ == "__main__":
    stage_main(main)
