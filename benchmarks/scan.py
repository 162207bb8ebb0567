"""The discounted scan (GAE, TD(lambda) targets, return-to-go) against a Python loop, as JSON.

A PPO iteration's worth of agent steps (20,000 by default) in episodes of 1 to 600
steps, laid out as the collate lists them. `ops.discounted_scan`, through `gae`, runs by
pointer doubling (log2 of the longest episode rounds of gathers); the baseline is the
sequential recursion A_t = delta_t + gamma * lam * A_{t+1} in Python, on the same
inputs. One torch thread, best of `--repeats`, the two timed alternately; both results
are checked equal.

    python benchmarks/scan.py [--steps 20000] [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from report import machine, write_json

from lmrl_ray.learners.ppo_math import gae


def layout(steps: int, longest: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """next_step and dones of episodes of random lengths (1..longest) summing to `steps`."""
    rng, lengths = random.Random(seed), []
    while sum(lengths) < steps:
        lengths.append(min(rng.randint(1, longest), steps - sum(lengths)))
    next_step, dones = [], []
    for length in lengths:
        start = len(next_step)
        next_step += [start + k + 1 for k in range(length - 1)] + [-1]
        dones += [0.0] * (length - 1) + [1.0]
    return torch.tensor(next_step), torch.tensor(dones)


def python_gae(rewards, values, next_step, dones, gamma: float, lam: float) -> list[float]:
    adv = [0.0] * len(rewards)
    for t in range(len(rewards) - 1, -1, -1):
        nxt = next_step[t]
        v_next = values[nxt] if nxt >= 0 else 0.0
        delta = rewards[t] + gamma * (1 - dones[t]) * v_next - values[t]
        adv[t] = delta + (gamma * lam * (1 - dones[t]) * adv[nxt] if nxt >= 0 else 0.0)
    return adv


def best_of(repeats: int, fn) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--longest", type=int, default=600, help="the longest episode, in agent steps")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/scan.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    next_step, dones = layout(args.steps, args.longest)
    rewards, values = torch.randn(args.steps), torch.randn(args.steps)
    lists = rewards.tolist(), values.tolist(), next_step.tolist(), dones.tolist()
    scan = lambda: gae(rewards, values, next_step, dones, gamma=0.99, lam=0.95)  # noqa: E731
    loop = lambda: python_gae(*lists, 0.99, 0.95)  # noqa: E731
    got, want = scan()[0].tolist(), loop()
    error = max(abs(a - b) for a, b in zip(got, want))
    scan_s, loop_s = [], []
    for _ in range(args.repeats):  # alternately, so both see the same machine
        scan_s.append(best_of(1, scan))
        loop_s.append(best_of(1, loop))
    write_json({
        "benchmark": "scan",
        "machine": machine(),
        "settings": {"steps": args.steps, "longest_episode": args.longest, "torch_threads": 1,
                     "repeats": args.repeats},
        "scan_ms": round(min(scan_s) * 1e3, 2),
        "python_loop_ms": round(min(loop_s) * 1e3, 2),
        "ratio_loop_over_scan": round(min(loop_s) / min(scan_s), 1),
        "max_abs_difference": error,
    }, args.out)


if __name__ == "__main__":
    main()
