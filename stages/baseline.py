"""DVC stage `baseline`: classical cover song baselines (Qmax, key-shifted DTW) on the test
split, scored with the model's retrieval metrics; writes reports/baseline.json (quality) and
their seconds per query to reports/timings/baseline.json."""

from __future__ import annotations

from coverid.core import paths
from coverid.core.config import load_params
from coverid.core.io import write_json
from coverid.core.stage import record_timings, stage_main
from coverid.core.tracking import log_numbers, stage_run
from coverid.data.splits import load_split
from coverid.eval.baselines import run_baselines


def main() -> None:
    """Run every method of params.baseline.methods and record their metrics."""
    params = load_params()
    test = load_split(params, "test")
    result, seconds = run_baselines(test.features, test.work_id, params["baseline"],
                                    int(params["seed"]))
    write_json(paths.REPORTS / "baseline.json", result)
    timings = {f"{method}_seconds_per_query": s for method, s in seconds.items()}
    record_timings(timings)
    with stage_run("baseline", params, what="/".join(params["baseline"]["methods"])):
        log_numbers({f"{method}_{key}": value
                     for method, scores in result.items() for key, value in scores.items()})
        log_numbers(timings)


if __name__ == "__main__":
    stage_main(main)
