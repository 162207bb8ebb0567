"""`lmrl-ray benchmark`'s own cost, as JSON: the wall time of the same set of cells run
with 1 and with 2 cells at a time (Ray tasks), side by side in one run, and the
speed-up. Each run starts from an empty folder except the shared datasets, which are
generated first and not counted.

    python benchmarks/benchmark_cells.py [--tasks maze,wordle] [--algos bc,filtered-bc] [--seeds 2]
        [--preset local] [--data-episodes N] [--eval-episodes N] [key=value ...] [--out FILE]

The defaults run the local preset's cells with fewer updates than the preset's
(`updates=5`), so that both runs together take minutes on 2 cores; pass no overrides
(`--full`) for the preset as it is.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from report import machine, write_json

from lmrl_ray.cluster import init_ray
from lmrl_ray.data.datagen import generate
from lmrl_ray.drivers.benchmark import run_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="maze,wordle")
    parser.add_argument("--algos", default="bc,filtered-bc")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--preset", default="local")
    parser.add_argument("--data-episodes", type=int, default=128)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--full", action="store_true", help="the preset's own updates (no default overrides)")
    parser.add_argument("--out", default="benchmarks/results/benchmark_cells.json")
    args, overrides = parser.parse_known_args()
    overrides = overrides or ([] if args.full else ["updates=5", "batch_episodes=16"])
    tasks, algos = args.tasks.split(","), args.algos.split(",")
    init_ray()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        for task in tasks:  # shared by both runs, generated once, not timed
            generate(task, args.data_episodes, str(data / task), seed=0, workers=0)
        for workers in (1, 2):
            out = Path(tmp) / f"workers{workers}"
            out.mkdir()
            shutil.copytree(data, out / "data")
            started = time.perf_counter()
            result = run_benchmark(tasks, algos, args.seeds, out=out, preset=args.preset, workers=workers,
                                   overrides=overrides, data_episodes=args.data_episodes,
                                   eval_episodes=args.eval_episodes, progress=False)
            runs[workers] = {"seconds": time.perf_counter() - started,
                             "cell_seconds": [round(c["seconds"], 2) for c in result["cells"]],
                             "table": [{k: r[k] for k in ("task", "algo", "mean_return", "mean_return_ci95",
                                                          "normalised_paper") if k in r} for r in result["rows"]]}
    write_json({
        "benchmark": "benchmark_cells",
        "machine": machine(),
        "tasks": tasks, "algos": algos, "seeds": args.seeds, "preset": args.preset, "overrides": overrides,
        "data_episodes": args.data_episodes, "eval_episodes": args.eval_episodes,
        "cells": len(runs[1]["cell_seconds"]),
        "wall_seconds_1_worker": round(runs[1]["seconds"], 1),
        "wall_seconds_2_workers": round(runs[2]["seconds"], 1),
        "speedup_2_over_1": round(runs[1]["seconds"] / runs[2]["seconds"], 2),
        "runs": runs,
    }, args.out)


if __name__ == "__main__":
    main()
