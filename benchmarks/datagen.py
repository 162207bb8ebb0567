"""Offline data generation and the replay store, as JSON.

1. Episodes per second of `lmrl-ray datagen` per task with 1 and 2 Ray workers (Ray's
   start-up excluded: it is started once, before the timings).
2. Store write and read throughput against plain `pyarrow.parquet.write_table` /
   `read_table` of the same rows, measured side by side: the ratio is the price of the
   atomic commit (fsync, rename, manifest) and of the checksum check on read.

    python benchmarks/datagen.py [--episodes-scale 1.0] [--tasks ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from report import machine, write_json

from lmrl_ray import envs
from lmrl_ray.cluster import init_ray
from lmrl_ray.data.datagen import generate, generate_episodes
from lmrl_ray.data.store import ReplayStore

# Episodes per (task, worker count): enough for a few seconds of work each.
EPISODES = {
    "maze": 2000, "maze-po": 2000, "text-nav": 4000, "text-nav-po": 4000, "wordle": 10000,
    "chess": 16, "endgames": 120, "twenty-questions": 4000, "guess-city": 4000, "car-dealer": 2000,
}


def datagen_rate(task: str, episodes: int, workers: int, root: Path) -> dict:
    out = root / f"{task}-w{workers}"
    # Four shards per worker so that both workers stay busy to the end.
    per_shard = max(1, episodes // (4 * workers))
    start = time.perf_counter()
    generate(task, episodes, out, workers=workers, episodes_per_shard=per_shard)
    seconds = time.perf_counter() - start
    shutil.rmtree(out)
    return {"task": task, "workers": workers, "episodes": episodes, "seconds": round(seconds, 3),
            "episodes_per_s": round(episodes / seconds, 2)}


def store_throughput(table, root: Path, repeats: int = 5) -> dict:
    """Best of `repeats` for each of the four operations, interleaved."""
    mb = table.nbytes / 2**20
    best = {"plain_write": 1e9, "store_write": 1e9, "plain_read": 1e9, "store_read": 1e9}
    for r in range(repeats):
        plain = root / f"plain-{r}.parquet"
        t = time.perf_counter()
        pq.write_table(table, plain)
        best["plain_write"] = min(best["plain_write"], time.perf_counter() - t)
        store = ReplayStore.create(root / f"store-{r}")
        t = time.perf_counter()
        store.append(table, producer="bench", sequence=0)
        best["store_write"] = min(best["store_write"], time.perf_counter() - t)
        t = time.perf_counter()
        pq.read_table(plain)
        best["plain_read"] = min(best["plain_read"], time.perf_counter() - t)
        t = time.perf_counter()
        store.read()
        best["store_read"] = min(best["store_read"], time.perf_counter() - t)
    return {
        "rows": table.num_rows,
        "arrow_mb": round(mb, 2),
        **{f"{k}_mb_per_s": round(mb / v, 1) for k, v in best.items()},
        "write_ratio_store_to_plain": round(best["plain_write"] / best["store_write"], 3),
        "read_ratio_store_to_plain": round(best["plain_read"] / best["store_read"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", default=envs.names())
    parser.add_argument("--episodes-scale", type=float, default=1.0, help="scale the episode counts")
    parser.add_argument("--out", default="benchmarks/results/datagen.json")
    args = parser.parse_args()

    init_ray(num_cpus=2)
    root = Path(tempfile.mkdtemp(prefix="lmrl-bench-"))
    try:
        rates = []
        for task in args.tasks:
            n = max(4, int(EPISODES[task] * args.episodes_scale))
            one, two = datagen_rate(task, n, 1, root), datagen_rate(task, n, 2, root)
            rates += [one, two, {"task": task, "speedup_2_over_1": round(two["episodes_per_s"] / one["episodes_per_s"], 2)}]
        table = generate_episodes("wordle", "behaviour", "train", 0, 0, int(20000 * args.episodes_scale) or 100)
        store = store_throughput(table, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "benchmark": "datagen",
        "machine": machine(),
        "datagen": rates,
        "store_vs_plain_parquet": {"rows_of": "wordle behaviour episodes", **store},
    }
    write_json(result, args.out)


if __name__ == "__main__":
    main()
