"""Environment throughput: agent steps and episodes per second of every task under
random, behaviour and expert play (the scripted policies' own time included), as JSON.

    python benchmarks/env_steps.py [--seconds 2] [--tasks maze wordle ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import time

from report import machine, write_json

from lmrl_ray import envs
from lmrl_ray.envs.play import episode_seed, play_episode


def measure(task: str, kind: str, seconds: float, min_episodes: int = 3) -> dict:
    env, policy = envs.make(task), envs.policy(task, kind)
    try:
        steps = episodes = 0
        start = time.perf_counter()
        while episodes < min_episodes or time.perf_counter() - start < seconds:
            steps += play_episode(env, policy, episode_seed(0, None, episodes)).agent_turns
            episodes += 1
        elapsed = time.perf_counter() - start
    finally:
        env.close()
    return {
        "task": task,
        "policy": kind,
        "episodes": episodes,
        "steps": steps,
        "seconds": round(elapsed, 3),
        "steps_per_s": round(steps / elapsed, 1),
        "episodes_per_s": round(episodes / elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="time budget per (task, policy)")
    parser.add_argument("--tasks", nargs="*", default=envs.names())
    parser.add_argument("--out", default="benchmarks/results/env_steps.json")
    args = parser.parse_args()
    rows = [measure(t, k, args.seconds) for t in args.tasks for k in ("random", "behaviour", "expert")]
    result = {
        "benchmark": "env_steps",
        "machine": machine(),
        "seconds_per_cell": args.seconds,
        "results": rows,
    }
    write_json(result, args.out)


if __name__ == "__main__":
    main()
