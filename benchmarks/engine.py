"""Engine throughput, as JSON: the batched HF engine against a naive loop of per-prompt
`model.generate` calls, side by side in one run on the same prompts.

- Prompts: policy prompts from real episodes (scripted behaviour policy, each task's
  view at a random environment turn of each episode, rendered with `render_prompt`):
  "maze" (fully observed: the current board, ~30 tokens) and "text-nav" (goal and
  current room, ~120 tokens).
- Batched: one `HFEngine.generate` call with all prompts in flight. Naive: one
  `model.generate` per prompt (greedy, newline as end-of-sequence) on the stock model
  (a copy made before the engine swaps its faster modules in). Both greedy with
  at most 32 new tokens; tokens/s counts generated tokens (the newline included) over
  the wall-clock time of the whole call, tokenization and prefill included. The engine
  computes a prefix shared by several prompts once (a task's prompts share its
  instructions and an episode's first observation, and some repeat); the JSON records
  the prompt tokens and the tokens its prefill computed.
- Models: (a) the embedded tiny GPT-2; (b) a GPT-2-small-sized model (12 layers, 12
  heads, width 768) on the tiny tokenizer's vocabulary, randomly initialised (nothing
  downloaded). For (b) the naive loop runs on an evenly spread subset of the prompts
  and its per-token rate stands for the whole set (recorded in the JSON).
- Each way runs `--repeats` times, interleaved; the fastest run counts.
- Where the time goes: the batched call with `max_new_tokens=1` (prefill and one step)
  and, unless `--no-profile`, a torch profiler table of the batched call's top ops.
- Weight broadcast: seconds for `EnginePool.set_weights` to reach 1 and 2 engine actors
  through the object store, against a plain in-memory copy of the same state dict.

    python benchmarks/engine.py [--prompts 64] [--naive-subset-big 8] [--repeats 2] [--no-profile]
                                [--skip-generate] [--skip-broadcast] [--device cpu|cuda]
                                [--threads N] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import os
import platform
import random
import time

import torch
import transformers
from report import write_json
from torch.profiler import ProfilerActivity, profile
from transformers import GPT2LMHeadModel

from lmrl_ray import envs
from lmrl_ray.actors.pool import EnginePool, EnginePoolConfig
from lmrl_ray.cluster import init_ray
from lmrl_ray.engines.base import SamplingParams
from lmrl_ray.engines.hf_engine import HFEngine
from lmrl_ray.engines.kv_cache import prefix_segments
from lmrl_ray.envs.play import rollout
from lmrl_ray.models import load_policy, newline_id
from lmrl_ray.models.tiny import TinyRecipe, gpt2_config

MAX_NEW_TOKENS = 32
TASKS = ("maze", "text-nav")
GREEDY = SamplingParams(max_new_tokens=MAX_NEW_TOKENS, temperature=0)


def task_prompts(task: str, count: int, seed: int = 0) -> list[str]:
    """One prompt per episode: the task's view at a random environment turn."""
    env = envs.make(task)
    prompts = []
    for episode in rollout(task, "behaviour", count, seed=seed):
        turn = random.Random(episode.seed).randrange(0, len(episode.transcript), 2)
        prompts.append(envs.render_prompt(env.view(episode.transcript[: turn + 1])))
    return prompts


def gpt2_small(tokenizer) -> GPT2LMHeadModel:
    """GPT-2 small's shape (124M with GPT-2's vocabulary; 89M with ours), random weights."""
    config = gpt2_config(dataclasses.replace(TinyRecipe(), n_embd=768, n_layer=12, n_head=12), tokenizer)
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).eval()


def batched(engine: HFEngine, prompts: list[str], sampling: SamplingParams = GREEDY) -> tuple[list[list[int]], float]:
    start = time.perf_counter()
    completions = engine.generate(prompts, sampling)
    return [c.token_ids for c in completions], time.perf_counter() - start


@torch.inference_mode()
def naive(model, tokenizer, prompts: list[str]) -> tuple[list[list[int]], float]:
    """Per-prompt `model.generate`, as a simple rollout loop would call it."""
    nl = newline_id(tokenizer)
    rows = []
    start = time.perf_counter()
    for prompt in prompts:
        batch = tokenizer(prompt, return_tensors="pt").to(model.device)
        out = model.generate(
            **batch,
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            eos_token_id=nl,
            pad_token_id=tokenizer.pad_token_id,
        )
        rows.append(out[0, batch["input_ids"].shape[1] :].tolist())
    return rows, time.perf_counter() - start


def top_ops(engine: HFEngine, prompts: list[str], rows: int = 6) -> list[dict]:
    """The batched call's ops with the most self CPU time."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        engine.generate(prompts, GREEDY)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [
        {
            "op": e.key,
            "self_cpu_s": round(e.self_cpu_time_total / 1e6, 3),
            "share": round(e.self_cpu_time_total / total, 3),
            "calls": e.count,
        }
        for e in events[:rows]
    ]


def measure(
    name: str,
    model,
    tokenizer,
    prompts_by_task: dict[str, list[str]],
    *,
    naive_subset: int | None,
    repeats: int,
    profile_ops: bool,
    device: str = "cpu",
) -> dict:
    # The naive loop runs the stock model, as a simple rollout loop would: the engine
    # swaps faster modules into the model it takes over (`lmrl_ray.models.fused`).
    stock = copy.deepcopy(model).to(device)
    engine = HFEngine(model, tokenizer, device=device)
    # Warm-up: first calls pay for thread pools and allocator growth.
    sample = next(iter(prompts_by_task.values()))[:2]
    engine.generate(sample, SamplingParams(max_new_tokens=2, temperature=0))
    naive(stock, tokenizer, sample[:1])

    workloads, totals = [], {"batched_tokens": 0, "batched_s": 0.0, "naive_tokens": 0, "naive_s": 0.0}
    for task, prompts in prompts_by_task.items():
        step = max(1, len(prompts) // naive_subset) if naive_subset else 1
        subset = list(range(0, len(prompts), step))[: naive_subset or len(prompts)]
        # Best of `repeats`, the two ways interleaved: other work on the machine slows a
        # run down, never speeds it up. Greedy decoding gives the same tokens each time.
        batch_times, naive_times = [], []
        for _ in range(repeats):
            batch_rows, seconds = batched(engine, prompts)
            batch_times.append(seconds)
            naive_rows, seconds = naive(stock, tokenizer, [prompts[i] for i in subset])
            naive_times.append(seconds)
        batch_s, naive_s = min(batch_times), min(naive_times)
        _, prefill_s = batched(engine, prompts, SamplingParams(max_new_tokens=1, temperature=0))

        identical = sum(batch_rows[i] == row for i, row in zip(subset, naive_rows))
        batch_tokens = sum(map(len, batch_rows))
        naive_tokens = sum(map(len, naive_rows))
        prompt_ids = tokenizer(prompts)["input_ids"]
        prompt_tokens = [len(ids) for ids in prompt_ids]
        computed = sum(len(segment.ids) for segment in prefix_segments(prompt_ids)[0])
        batched_rate, naive_rate = batch_tokens / batch_s, naive_tokens / naive_s
        workloads.append(
            {
                "task": task,
                "prompts": len(prompts),
                "prompt_tokens_mean": round(sum(prompt_tokens) / len(prompts), 1),
                "prompt_tokens_max": max(prompt_tokens),
                "prompt_tokens_total": sum(prompt_tokens),
                "prompt_tokens_computed_by_batched_prefill": computed,
                "batched": {
                    "tokens": batch_tokens,
                    "seconds": round(batch_s, 3),
                    "seconds_each_run": [round(t, 3) for t in batch_times],
                    "tokens_per_s": round(batched_rate, 1),
                    "prefill_and_first_step_seconds": round(prefill_s, 3),
                },
                "naive": {
                    "prompts_run": len(subset),
                    "tokens": naive_tokens,
                    "seconds": round(naive_s, 3),
                    "seconds_each_run": [round(t, 3) for t in naive_times],
                    "tokens_per_s": round(naive_rate, 1),
                    "prompt_tokens_mean_of_run": round(sum(prompt_tokens[i] for i in subset) / len(subset), 1),
                },
                "speedup": round(batched_rate / naive_rate, 2),
                "identical_completions": f"{identical}/{len(subset)}",
            }
        )
        totals["batched_tokens"] += batch_tokens
        totals["batched_s"] += batch_s
        # The naive rate of a subset stands for the whole workload: scale its time.
        totals["naive_tokens"] += batch_tokens
        totals["naive_s"] += batch_tokens / naive_rate
        print(f"{name:>11} {task:>8}: batched {batched_rate:7.1f} tok/s, naive {naive_rate:6.1f} tok/s, "
              f"x{batched_rate / naive_rate:.2f}", flush=True)

    result = {
        "model": name,
        "parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "workloads": workloads,
        "batched_tokens_per_s": round(totals["batched_tokens"] / totals["batched_s"], 1),
        "naive_tokens_per_s": round(totals["naive_tokens"] / totals["naive_s"], 1),
        "speedup": round(totals["naive_s"] / totals["batched_s"], 2),
    }
    if naive_subset:
        result["naive_note"] = (
            f"naive loop run on {naive_subset} evenly spread prompts per workload; its tokens/s stands for the "
            "whole workload (overall naive tokens/s = the batched token counts over the scaled naive times)"
        )
    if profile_ops:
        heaviest = max(workloads, key=lambda w: w["batched"]["seconds"])["task"]
        result["profile"] = {"workload": heaviest, "top_ops": top_ops(engine, prompts_by_task[heaviest])}
    return result


def gpt2_small_engine() -> HFEngine:
    """An engine over the GPT-2-small-sized model (a picklable factory for the pool)."""
    _, tokenizer = load_policy("tiny")
    return HFEngine(gpt2_small(tokenizer), tokenizer)


def broadcast(name: str, factory, state_dict: dict, repeats: int) -> dict:
    """Seconds to broadcast `state_dict` to 1 and to 2 engine actors through the object
    store (`EnginePool.set_weights` returns once every engine has loaded it), against a
    plain in-memory copy of the same state dict; best of `repeats`, side by side."""
    init_ray(num_cpus=2)
    copies = []
    for _ in range(repeats):
        start = time.perf_counter()
        {k: v.clone() for k, v in state_dict.items()}
        copies.append(time.perf_counter() - start)
    row = {
        "model": name,
        "state_dict_mb": round(sum(v.numel() * v.element_size() for v in state_dict.values()) / 2**20, 1),
        "in_memory_copy_s": round(min(copies), 4),
    }
    for engines in (1, 2):
        pool = EnginePool(factory, EnginePoolConfig(num_engines=engines, num_cpus_per_engine=1))
        try:
            times = []
            for version in range(1, repeats + 1):
                start = time.perf_counter()
                pool.set_weights(state_dict, version)
                times.append(time.perf_counter() - start)
        finally:
            pool.shutdown()
        row[f"broadcast_{engines}_engines_s"] = round(min(times), 4)
        row[f"broadcast_{engines}_engines_over_copy"] = round(min(times) / min(copies), 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64, help="prompts in flight per workload")
    parser.add_argument("--naive-subset-big", type=int, default=8, help="prompts of the naive loop on the big model")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each way; the best counts")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiler tables")
    parser.add_argument("--skip-generate", action="store_true", help="only the weight-broadcast timings")
    parser.add_argument("--skip-broadcast", action="store_true", help="only the generation timings")
    parser.add_argument("--device", default="cpu", help="where both ways generate (the profile reads CPU ops only)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: one per core); fewer on a busy machine"
    )
    parser.add_argument("--out", default="benchmarks/results/engine.json")
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(args.threads or cores)
    started = time.perf_counter()
    tiny, tokenizer = load_policy("tiny")
    prompts = {task: task_prompts(task, args.prompts) for task in TASKS}
    common = {"repeats": args.repeats, "profile_ops": not args.no_profile, "device": args.device}
    load_before = os.getloadavg()[0]
    models = [] if args.skip_generate else [
        measure("tiny", tiny.eval(), tokenizer, prompts, naive_subset=None, **common),
        measure("gpt2-small", gpt2_small(tokenizer), tokenizer, prompts, naive_subset=args.naive_subset_big, **common),
    ]
    broadcasts = [] if args.skip_broadcast else [
        broadcast("tiny", functools.partial(HFEngine.load, "tiny"), tiny.state_dict(), args.repeats + 3),
        broadcast("gpt2-small", gpt2_small_engine, gpt2_small(tokenizer).state_dict(), args.repeats + 3),
    ]
    result = {
        "benchmark": "engine",
        "machine": {
            "python": platform.python_version(),
            "processor": platform.machine(),
            "cpus": cores,
            "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            # Other work on the (shared) machine slows runs down: the 1-minute load
            # average before and after tells whether it was busy.
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "settings": {
            "prompts_in_flight": args.prompts,
            "max_new_tokens": MAX_NEW_TOKENS,
            "timing": f"best of {args.repeats} runs of each way, interleaved",
            "decoding": "greedy; generation stops at the newline token",
            "prompts_from": "behaviour-policy episodes, task view at a random environment turn, render_prompt",
            "target_speedup": 8.0,
        },
        "models": models,
        "weight_broadcast": broadcasts,
        "seconds_total": round(time.perf_counter() - started, 1),
    }
    write_json(result, args.out)


if __name__ == "__main__":
    main()
