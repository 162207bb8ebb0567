"""Generate every task's default dataset with `lmrl-ray datagen` (2 Ray workers) and
read its Table 1 columns with `lmrl-ray data stats`, beside the paper's: the figures of
docs/data.md's "Default sizes" table and the README's. Writes them as JSON after every
task, merged into what `--out` already holds, so tasks can be measured in several runs.

    python scripts/data_stats.py [--tasks maze wordle ...] [--out docs/results/data_stats.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lmrl_ray import envs
from lmrl_ray.io import write_atomically

CLI = [sys.executable, "-m", "lmrl_ray.cli"]


def measure(task: str, folder: Path) -> dict:
    started = time.perf_counter()
    subprocess.run([*CLI, "datagen", task, "--out", str(folder)], check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    out = subprocess.run([*CLI, "data", "stats", str(folder), "--json"], check=True, capture_output=True, text=True)
    [row] = json.loads(out.stdout)
    return {**row, "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", default=envs.names())
    parser.add_argument("--out", default="docs/results/data_stats.json")
    args = parser.parse_args()
    out = Path(args.out)
    rows = {r["task"]: r for r in json.loads(out.read_text())["rows"]} if out.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            r = rows[task] = measure(task, Path(tmp) / task)
            p = r["paper"] or {}
            print(f"| {task} | {r['trajectories']:,} | {r['seconds']:.0f} s | {r['mean_turns']:.2f} / {p.get('mean_turns')} "
                  f"| {r['success_rate']:.3f} / {p.get('success_rate')} | {r['mean_return']:.3f} / {p.get('mean_return')} |",
                  flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            ordered = [rows[t] for t in envs.names() if t in rows]
            text = json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(),
                               "command": "python scripts/data_stats.py", "rows": ordered}, indent=1) + "\n"
            write_atomically(out, lambda tmp: tmp.write_text(text))


if __name__ == "__main__":
    main()
