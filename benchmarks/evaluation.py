"""How fast the protocol runs: a cached evaluation with N worker processes against one, same data, same process.

Run from the project root: ``python benchmarks/evaluation.py [--subjects 6] [--jobs 2] [--repeats 3]``.
Crops and features come from the cache (the first run fills it and is not
timed). Needs ../shared/data (Taiwanese). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--conditions", nargs="+", default=["mlp", "gdm", "replay", "imagination"])
    args = parser.parse_args()

    from clifer_core.data.datasets import default_data_dir, load_dataset
    from clifer_core.evaluation.runner import evaluate

    if default_data_dir() is None:
        print(json.dumps({"skipped": "no ../shared/data"}))
        return 0
    subjects = sorted({s.subject for s in load_dataset("taiwanese")})[:args.subjects]
    evaluate("taiwanese", "fixed", args.conditions, subjects=subjects, show_progress=False)
    timings = {1: [], args.jobs: []}
    for _ in range(args.repeats):
        for jobs in timings:
            started = time.perf_counter()
            result = evaluate("taiwanese", "fixed", args.conditions, subjects=subjects, jobs=jobs, show_progress=False)
            timings[jobs].append(time.perf_counter() - started)
    runs = len(subjects) * len(result.orders) * len(args.conditions)
    serial, parallel = statistics.median(timings[1]), statistics.median(timings[args.jobs])
    print(json.dumps({"subjects": len(subjects), "runs": runs, "conditions": args.conditions,
                      "median_seconds_1_job": round(serial, 2), f"median_seconds_{args.jobs}_jobs": round(parallel, 2),
                      "speedup": round(serial / parallel, 2), "seconds_per_run_1_job": round(serial / runs, 3),
                      "projected_full_taiwanese_seconds": round(parallel * 29 / len(subjects), 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
