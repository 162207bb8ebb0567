"""Measure our normalisation constants (`lmrl_ray.envs.OUR_CONSTANTS`): each task's
dataset average d, the mean return of its behaviour mixture, and its maximum M, the mean
return of its scripted expert, both with `envs.play.scripted_summary(task, kind, N, seed=0)`;
the maze experts are exact, their mean over the 25 starts (the evaluation's episodes).
Prints the table's lines and writes them, with the intervals, as JSON.

    python scripts/measure_constants.py [--tasks maze wordle ...] [--out constants.json]
"""

from __future__ import annotations

import argparse
import json
import time

from lmrl_ray import envs
from lmrl_ray.envs.maze import STARTS
from lmrl_ray.envs.play import play_episode, scripted_summary

# Episodes per measurement: chess and endgames wait on Stockfish (about 2 episodes/s).
EPISODES = {"chess": 200, "endgames": 500}
DEFAULT_EPISODES = 20_000


def maze_expert(task: str) -> float:
    """The deterministic maze experts' exact mean return over the 25 starts."""
    env, policy = envs.make(task), envs.policy(task, "expert")
    try:
        returns = [play_episode(env, policy, seed=0, options={"start": s}).episode_return for s in STARTS]
    finally:
        env.close()
    return sum(returns) / len(returns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", default=envs.names())
    parser.add_argument("--out", default="constants.json")
    args = parser.parse_args()
    results = {}
    for task in args.tasks:
        started = time.perf_counter()
        n = EPISODES.get(task, DEFAULT_EPISODES)
        d = scripted_summary(task, "behaviour", n, progress=True)
        if task in ("maze", "maze-po"):
            m_value, m_n, m_ci = maze_expert(task), len(STARTS), 0.0
        else:
            m = scripted_summary(task, "expert", n, progress=True)
            m_value, m_n, m_ci = m.mean_return, n, m.ci95
        results[task] = {"our_avg": d.mean_return, "avg_ci95": d.ci95, "avg_episodes": n,
                         "our_max": m_value, "max_ci95": m_ci, "max_episodes": m_n,
                         "seconds": time.perf_counter() - started}
        print(f'    "{task}": ({d.mean_return:.4g}, {n:_}, {m_value:.4g}, {m_n:_}),', flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
