"""The main job (`make demo`): the paper's headline on a laptop.

Generate the fully observed Maze's offline data (the paper's 1,240 episodes), train BC on
the embedded tiny model, train ILQL from the BC checkpoint (as the paper starts every RL
method from BC), evaluate both on the 25 starts, and print the table with 95% intervals
and normalised scores. Every step resumes: a second run reuses what the first finished.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from lmrl_ray.data.datagen import generate
from lmrl_ray.drivers.evaluation import evaluate_checkpoint
from lmrl_ray.drivers.offline import train_offline
from lmrl_ray.learners.config import load_config

TASK = "maze"
DATA_EPISODES = 1240
# Sized for 2 CPU cores; why each ILQL key is what it is: docs/training.md, "The main job".
RUNS = {
    "bc": ["updates=40", "batch_episodes=32", "lr=1e-3", "checkpoint_every_updates=40", "keep_checkpoints=1"],
    "ilql": ["updates=400", "batch_episodes=32", "lr=1e-3", "polyak=0.1", "freeze_lm=true", "head_input_norm=true",
             "bootstrap=turn", "td_lambda=0.5", "checkpoint_every_updates=100", "keep_checkpoints=1"],
}
# How each policy acts in the table: (label, algo, decoding).
POLICIES = [("BC", "bc", "sample"), ("ILQL", "ilql", "sample"), ("ILQL, re-ranked", "ilql", "rerank")]


def run_demo(out: str | Path = "runs/demo", *, seed: int = 0, eval_episodes: int = 100, progress: bool = True) -> list[dict]:
    out = Path(out)
    data = out / "data"
    generate(TASK, DATA_EPISODES, str(data), seed=seed, workers=0, progress=progress)
    checkpoints: dict[str, str] = {}
    for algo, overrides in RUNS.items():
        model = checkpoints["bc"] if algo != "bc" else "tiny"
        config = load_config(algo, task=TASK, overrides=overrides + [f"seed={seed}"], model=model)
        result = train_offline(config, data=data, out=out / algo, resume=True, progress=progress)
        checkpoints[algo] = result["checkpoint"]
    rows = []
    for label, algo, decoding in POLICIES:
        result = evaluate_checkpoint(checkpoints[algo], episodes=eval_episodes, seed=seed, engine="hf",
                                     decoding=decoding, envs_per_worker=min(eval_episodes, 100))
        rows.append({"policy": label, **{k: v for k, v in result.items() if k != "rows"}})
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    return rows


def format_table(rows: list[dict]) -> str:
    def fmt(x, digits=1):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"

    lines = [
        f"Fully observed Maze, {rows[0]['episodes']} evaluation episodes per policy (the 25 starts in turn).",
        "norm. = normalised score (paper's constants / ours: our behaviour data's mean and our expert).",
        "",
        f"{'policy':<18} {'return':>8} {'± 95% CI':>9} {'success':>8} {'turns':>6} {'norm. paper':>12} {'norm. ours':>11}",
    ]
    lines.append("-" * len(lines[-1]))
    for r in rows:
        lines.append(
            f"{r['policy']:<18} {r['mean_return']:>8.2f} {fmt(r['ci95'], 2):>9} {r['success_rate']:>8.2f} "
            f"{r['mean_turns']:>6.1f} {fmt(r['normalised_paper']):>12} {fmt(r['normalised_ours']):>11}"
        )
    return "\n".join(lines)
