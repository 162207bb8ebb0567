"""LM-simulator rollouts, as JSON: a rollout worker's batched simulator turns against
each environment calling its simulator itself, side by side in one run.

Twenty Questions against an LM simulator (the embedded tiny model trained on the
grounded oracle's dialogues, `--sim-updates` updates), played by a BC policy (the tiny
model, `--bc-updates` updates on the same data), both greedy, with the HF engine on CPU:
- batched: `RolloutWorker(batch_simulator=True)`, the default: per step one policy call
  and one simulator call for all `--num-envs` live environments;
- per environment: `batch_simulator=False`: one policy call per step, then each
  environment's simulator calls the engine for its own reply.
Both play the same seeds; greedy decoding makes the episodes identical (checked and
recorded as `same_episodes`). Each way runs `--repeats` times, interleaved; the fastest
counts. The ratio is batched over per-environment episodes/s.

    python benchmarks/simulator.py [--episodes 32] [--num-envs 32] [--repeats 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from report import machine, write_json

from lmrl_ray.actors.rollout_worker import RolloutWorker, default_max_new_tokens
from lmrl_ray.data.datagen import generate
from lmrl_ray.data.schema import transcript_of
from lmrl_ray.drivers.evaluation import checkpoint_engine
from lmrl_ray.drivers.offline import train_offline
from lmrl_ray.engines.base import SamplingParams
from lmrl_ray.learners.config import load_config
from lmrl_ray.simulators.distill import train_simulator
from lmrl_ray.simulators.lm import lm_simulator

TASK = "twenty-questions"


def play(policy, settings: dict, seeds: list[int], num_envs: int,
         batch_simulator: bool) -> tuple[list[dict], float, int]:
    greedy = SamplingParams(temperature=0, max_new_tokens=default_max_new_tokens(TASK))
    worker = RolloutWorker(TASK, policy, sampling=greedy, num_envs=num_envs, env_settings=settings,
                           batch_simulator=batch_simulator)
    try:
        start = time.perf_counter()
        rows = worker.run(seeds)
        seconds = time.perf_counter() - start
        simulator_calls = worker.simulator_calls + sum(env.simulator.unbatched_calls for env in worker._envs)
        return rows, seconds, simulator_calls
    finally:
        worker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--num-envs", type=int, default=32)
    parser.add_argument("--data-episodes", type=int, default=64)
    parser.add_argument("--sim-updates", type=int, default=30)
    parser.add_argument("--bc-updates", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/simulator.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(TASK, args.data_episodes, str(root / "data"), seed=0, workers=0, progress=False)
        started = time.perf_counter()
        sim = train_simulator(TASK, root / "data", root / "sim", progress=False,
                              overrides=[f"updates={args.sim_updates}", "batch_episodes=16"])
        sim_seconds = time.perf_counter() - started
        config = load_config("bc", task=TASK, model="tiny",
                             overrides=[f"updates={args.bc_updates}", "batch_episodes=16", "lr=1e-3"])
        bc = train_offline(config, data=str(root / "data"), out=str(root / "bc"), progress=False)["checkpoint"]
        policy = checkpoint_engine(bc, engine="hf", device="cpu")
        settings = {"simulator": lm_simulator(TASK, sim["folder"])}
        seeds = list(range(1000, 1000 + args.episodes))
        play(policy, settings, seeds[:2], 2, True)  # warm-up: loads the simulator in this process
        runs: dict[str, list] = {"batched": [], "per_environment": []}
        for _ in range(args.repeats):
            for name, batch in (("batched", True), ("per_environment", False)):
                runs[name].append(play(policy, settings, seeds, args.num_envs, batch))
    result: dict = {"machine": machine(), "task": TASK, "episodes": args.episodes, "num_envs": args.num_envs,
                    "simulator_updates": args.sim_updates, "simulator_train_seconds": round(sim_seconds, 1),
                    "threads": torch.get_num_threads()}
    for name, timed in runs.items():
        rows, seconds, calls = min(timed, key=lambda run: run[1])
        turns = sum(r["length"] for r in rows)
        result[name] = {"seconds": round(seconds, 3), "seconds_each_run": [round(t[1], 3) for t in timed],
                        "episodes_per_s": round(len(rows) / seconds, 3), "agent_turns": turns,
                        "simulator_engine_calls": calls, "mean_return": sum(r["return"] for r in rows) / len(rows)}
    batched_rows, unbatched_rows = runs["batched"][0][0], runs["per_environment"][0][0]
    result["same_episodes"] = [transcript_of(r) for r in batched_rows] == [transcript_of(r) for r in unbatched_rows]
    result["ratio_episodes_per_s"] = round(result["batched"]["episodes_per_s"]
                                           / result["per_environment"]["episodes_per_s"], 2)
    write_json(result, args.out)


if __name__ == "__main__":
    main()
