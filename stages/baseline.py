"""DVC stage `baseline`: classical cover song baselines (Qmax, key-shifted DTW) on the test
split, and on the extra corpus' hold-out (data.extra) when there is one, scored with the
model's retrieval metrics; writes reports/baseline.json and reports/baseline_holdout.json
(quality; {} without a hold-out) and their seconds per query to reports/timings/baseline.json."""

from __future__ import annotations

from coverid.core import paths
from coverid.core.config import load_params
from coverid.core.io import write_json
from coverid.core.stage import record_timings, stage_main
from coverid.core.tracking import log_numbers, stage_run
from coverid.data.splits import HOLDOUT, has_holdout, load_split
from coverid.eval.baselines import run_baselines
from coverid.eval.evaluate import split_prefix


def main() -> None:
    """Run every method of params.baseline.methods on each evaluated split; record them."""
    params = load_params()
    results, timings, scores = {}, {}, {}
    for split in ("test", HOLDOUT) if has_holdout(params) else ("test",):
        songs, prefix = load_split(params, split), split_prefix(split)
        results[split], seconds = run_baselines(songs.features, songs.work_id, params["baseline"],
                                                int(params["seed"]))
        timings.update({f"{prefix}{method}_seconds_per_query": s for method, s in seconds.items()})
        scores.update({f"{prefix}{method}_{key}": value
                       for method, row in results[split].items() for key, value in row.items()})
    write_json(paths.REPORTS / "baseline.json", results["test"])
    write_json(paths.REPORTS / "baseline_holdout.json", results.get(HOLDOUT, {}))
    record_timings(timings)
    with stage_run("baseline", params, what="/".join(params["baseline"]["methods"])):
        log_numbers(scores)
        log_numbers(timings)


if __name__ == "__main__":
    stage_main(main)
