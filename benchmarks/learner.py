"""Learner throughput, as JSON.

1. Tokens per second of each algorithm's update (BC, ILQL, MC Returns; filtered BC is
   BC on other rows) against a bare forward + masked cross-entropy + backward + AdamW
   step of the same model on the same batch, measured side by side: the ratio shows the
   learner's overhead (collate, heads, losses, reductions). Target: at least 0.8.
2. One against two learner actors (gloo) on CPU: seconds per update of the same batch.

Tokens are the batch's sequence tokens (padding excluded) as the bare loop sees them.

    python benchmarks/learner.py [--task wordle] [--episodes 32] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from report import machine, write_json

from lmrl_ray.cluster import init_ray
from lmrl_ray.data.datagen import generate
from lmrl_ray.data.schema import episode_row
from lmrl_ray.envs.play import rollout
from lmrl_ray.learners.config import load_config
from lmrl_ray.learners.group import LearnerGroup
from lmrl_ray.learners.learner import Learner


def rows_of(task: str, n: int) -> list[dict]:
    return [
        episode_row(task=task, episode_id=f"{task}-{i}", seed=e.seed, transcript=e.transcript, rewards=e.rewards,
                    success=e.success)
        for i, e in enumerate(rollout(task, "behaviour", n, seed=0))
    ]


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bare_step(learner: Learner, rows: list[dict]):
    """The plain loop: the model's full forward, cross-entropy on agent tokens, backward, AdamW."""
    batch = learner.collator(rows)
    model, optimizer = learner.model, learner.optimizer
    targets = batch.input_ids.flatten()[batch.positions + 1]
    tokens = int(batch.attention_mask.sum())

    def step():
        optimizer.zero_grad()
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1)[batch.positions], targets)
        loss.backward()
        optimizer.step()

    return step, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="wordle")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/learner.json")
    args = parser.parse_args()

    rows = rows_of(args.task, args.episodes)
    overrides = [f"batch_episodes={args.episodes}", "warmup_updates=0", "microbatch_tokens=1000000"]
    algos = []
    for algo in ("bc", "ilql", "mc"):
        learner = Learner(load_config(algo, task=args.task, overrides=overrides))
        bare, tokens = bare_step(learner, rows)
        bare()  # warm-up
        learner.update(rows)
        # Interleaved, best of `repeats` each.
        bare_s = best_of(args.repeats, bare)
        algo_s = best_of(args.repeats, lambda: learner.update(rows))
        algos.append({
            "algo": algo, "sequence_tokens": tokens,
            "bare_seconds": round(bare_s, 4), "update_seconds": round(algo_s, 4),
            "bare_tokens_per_s": round(tokens / bare_s, 1), "update_tokens_per_s": round(tokens / algo_s, 1),
            "ratio_update_to_bare": round(bare_s / algo_s, 3),
        })
        print(algos[-1], flush=True)

    init_ray(num_cpus=2)
    groups = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(args.task, args.episodes, str(data), seed=0, workers=0)
        indices = list(range(args.episodes))
        for n in (1, 2):
            cfg = load_config("bc", task=args.task, overrides=overrides + [f"num_learners={n}", "cpus_per_learner=1"])
            group = LearnerGroup(cfg, data)
            try:
                group.update(indices)  # warm-up
                seconds = best_of(args.repeats, lambda: group.update(indices))
            finally:
                group.shutdown()
            groups.append({"learners": n, "seconds_per_update": round(seconds, 4)})
            print(groups[-1], flush=True)
    result = {
        "benchmark": "learner",
        "machine": machine(),
        "settings": {"task": args.task, "episodes_per_update": args.episodes, "repeats": args.repeats,
                     "timing": "best of repeats; bare and algorithm interleaved per algorithm"},
        "algorithms": algos,
        "learners": groups,
        "speedup_2_over_1": round(groups[0]["seconds_per_update"] / groups[1]["seconds_per_update"], 3),
    }
    write_json(result, args.out)


if __name__ == "__main__":
    main()
