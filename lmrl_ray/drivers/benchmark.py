"""`lmrl-ray benchmark`: the table of algorithms against tasks, with seeds and intervals.

Every (task, algorithm, seed) cell is its own Ray task (one CPU, or `gpus_per_cell`
GPUs), so a cluster runs the cells side by side and a laptop runs as many as it has
cores. A cell generates nothing itself: each task's offline data is generated once
(seed 0, shared by every cell of that task, as the paper's algorithms shared one
dataset), then the cell trains BC from the preset's model and, for every other
algorithm, trains that algorithm from its own BC checkpoint (the paper starts every RL
method from BC), and evaluates the final checkpoint. Its result is written to
`cells/<task>-<algo>-seed<k>.json` (whole, then renamed), so a benchmark that is stopped
and run again keeps the cells already done. The summary (mean and 95% interval over
seeds, raw and normalised) goes to table.md, table.csv, cells.csv and table.png
(`report.write_report`).

Presets:
- `local`: small datasets, short runs, the embedded tiny model; for a 2-core laptop.
- `paper`: the paper's dataset sizes (its Table 1) and longer runs on a model from a
  local folder (`--model`, e.g. GPT-2 saved with `save_pretrained`); for clusters.

The algorithms `symbolic-dqn|cql|bc|marwil` add the paper's symbolic Maze baseline (its
appendix G upper bound) as rows of the fully observed Maze: RLlib on the maze without
text, offline on the same dataset (`baselines.symbolic_maze.run_symbolic_cell`); they need the
`rllib` extra and are skipped for other tasks.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from lmrl_ray import envs
from lmrl_ray.data.datagen import PAPER_TABLE_1
from lmrl_ray.drivers.report import TASK_MEASURES, write_report
from lmrl_ray.io import write_atomically
from lmrl_ray.learners.config import (
    ALGOS,
    config_class,
    keys,
    load_config,
    parse_overrides,
)

# The symbolic Maze baseline (`baselines/symbolic_maze`, RLlib): rows of task "maze" only.
SYMBOLIC = ("symbolic-dqn", "symbolic-cql", "symbolic-bc", "symbolic-marwil")
BENCHMARK_ALGOS = ALGOS + SYMBOLIC


@dataclass(frozen=True)
class Preset:
    data_episodes: dict[str, int]  # per task; tasks not named take `default_episodes`
    default_episodes: int
    train: dict[str, list[str]]  # per algorithm: key=value overrides of its config
    eval_episodes: int
    model: str | None  # None: --model is required
    common: list[str] = field(default_factory=list)  # overrides for every algorithm that has the key

    def episodes(self, task: str) -> int:
        return self.data_episodes.get(task, self.default_episodes)


PRESETS = {
    "local": Preset(
        data_episodes={"maze": 1240, "maze-po": 1240},
        default_episodes=256,
        train={
            "bc": ["updates=40"], "filtered-bc": ["updates=40"], "mc": ["updates=100", "freeze_lm=true"],
            # the demo's ILQL (lmrl_ray/demo.py), which beats BC on fully observed Maze
            "ilql": ["updates=400", "freeze_lm=true", "polyak=0.1", "head_input_norm=true", "bootstrap=turn",
                     "td_lambda=0.5"],
            "ppo": ["iterations=4", "episodes_per_iteration=32"],
            "online-filtered-bc": ["iterations=4", "episodes_per_iteration=32"],
        },
        common=["batch_episodes=32", "lr=1e-3", "keep_checkpoints=1"],
        eval_episodes=50,
        model="tiny",
    ),
    # The paper's Table 1 dataset sizes; its GPT-2 runs used lr 1e-4.
    "paper": Preset(
        data_episodes={task: row[0] for task, row in PAPER_TABLE_1.items()},
        default_episodes=10_000,
        train={
            "bc": ["updates=5000"], "filtered-bc": ["updates=5000"], "mc": ["updates=5000"], "ilql": ["updates=5000"],
            "ppo": ["iterations=100"], "online-filtered-bc": ["iterations=100"],
        },
        common=["batch_episodes=64", "lr=1e-4", "keep_checkpoints=2"],
        eval_episodes=100,
        model=None,
    ),
}


@dataclass(frozen=True)
class Cell:
    task: str
    algo: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.task}-{self.algo}-seed{self.seed}"


def run_cell(cell: Cell, *, data: str, out: str, preset: Preset, model: str, overrides: Sequence[str] = (),
             progress: bool = False) -> dict:
    """Train and evaluate one cell under `out/runs/<cell>`; returns its result row (also
    written to `out/cells/<cell>.json`). Resumes the training runs it finds."""
    import torch

    from lmrl_ray.drivers.evaluation import evaluate_checkpoint
    from lmrl_ray.drivers.offline import train_offline

    torch.set_num_threads(1)  # one core per cell: cells run side by side
    started = time.perf_counter()
    root = Path(out) / "runs" / cell.name
    if cell.algo in SYMBOLIC:
        from lmrl_ray.baselines.symbolic_maze import run_symbolic_cell

        row = run_symbolic_cell(cell.algo.removeprefix("symbolic-"), cell.seed, data=data,
                                eval_episodes=preset.eval_episodes, out=root)
        return _save_cell(out, cell, {**row, "seconds": time.perf_counter() - started})

    def train(algo: str, start: str) -> str:
        config = load_config(algo, task=cell.task, model=start, overrides=[
            *applicable(algo, preset.common), *preset.train.get(algo, []), *applicable(algo, overrides),
            f"seed={cell.seed}"])
        if config.online:
            from lmrl_ray.drivers.online import train_online

            return train_online(config, out=root / algo, data=data, resume=True, progress=progress)["checkpoint"]
        return train_offline(config, data=data, out=root / algo, resume=True, progress=progress)["checkpoint"]

    checkpoint = train("bc", model)
    if cell.algo != "bc":
        checkpoint = train(cell.algo, checkpoint)
    result = evaluate_checkpoint(checkpoint, episodes=preset.eval_episodes, seed=cell.seed, engine="hf")
    row = {
        "task": cell.task, "algo": cell.algo, "seed": cell.seed,
        **{k: result[k] for k in ("mean_return", "ci95", "success_rate", "mean_turns", "normalised_paper",
                                  "normalised_ours", "episodes", "decoding")},
        **{k: result[k] for k in TASK_MEASURES if k in result},
        "checkpoint": str(checkpoint), "seconds": time.perf_counter() - started,
    }
    return _save_cell(out, cell, row)


def applicable(algo: str, overrides: Sequence[str]) -> list[str]:
    """The overrides meant for every run that are keys of `algo`'s config (`updates=`
    reaches the offline runs, `iterations=` the online ones)."""
    valid = set(keys(config_class(algo)))
    return [o for o in overrides if parse_overrides([o]).popitem()[0] in valid]


def _save_cell(out: str, cell: Cell, row: dict) -> dict:
    cells = Path(out) / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    write_atomically(cells / f"{cell.name}.json", lambda tmp: tmp.write_text(json.dumps(row, indent=2)))
    return row


def _check(tasks: Sequence[str], algos: Sequence[str], seeds: int, preset: str, overrides: Sequence[str]) -> Preset:
    for task in tasks:
        envs.spec(task)  # names the valid tasks when it is not one
    unknown = [a for a in algos if a not in BENCHMARK_ALGOS]
    if unknown:
        raise ValueError(f"unknown algorithms {unknown}; valid: {', '.join(BENCHMARK_ALGOS)}")
    if any(a in SYMBOLIC for a in algos) and "maze" not in tasks:
        raise ValueError(f"the symbolic algorithms ({', '.join(SYMBOLIC)}) are rows of task maze; add maze to --tasks")
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    trained = ["bc", *(a for a in algos if a in ALGOS)]  # every cell trains BC first
    valid = sorted({k for a in trained for k in keys(config_class(a))})
    for key in parse_overrides(overrides):
        if key not in valid:
            raise ValueError(f"benchmark override {key!r} is a key of none of {', '.join(dict.fromkeys(trained))}; "
                             f"valid keys: {', '.join(valid)}")
    return PRESETS[preset]


def run_benchmark(
    tasks: Sequence[str],
    algos: Sequence[str],
    seeds: int,
    *,
    out: str | os.PathLike,
    preset: str = "local",
    model: str | None = None,
    workers: int | None = None,
    overrides: Sequence[str] = (),
    data_episodes: int | None = None,
    eval_episodes: int | None = None,
    gpus_per_cell: float = 0.0,
    progress: bool = True,
) -> dict:
    """Run every (task, algo, seed) cell, at most `workers` at a time (None: as many as
    the cluster's CPUs allow), and write the report under `out`. `data_episodes` and
    `eval_episodes` override the preset's. Returns {"rows": summary rows, "cells": cell
    rows, "seconds": wall time, "workers": workers}."""
    import ray

    from lmrl_ray.cluster import init_ray
    from lmrl_ray.data.datagen import generate

    chosen = _check(tasks, algos, seeds, preset, overrides)
    model = model or chosen.model
    if model is None:
        raise ValueError(f"the {preset!r} preset needs --model (a local Hugging Face folder, e.g. GPT-2)")
    if data_episodes is not None or eval_episodes is not None:
        chosen = Preset({} if data_episodes else chosen.data_episodes, data_episodes or chosen.default_episodes,
                        chosen.train, eval_episodes or chosen.eval_episodes, chosen.model, chosen.common)
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    started = time.perf_counter()
    out = Path(out).resolve()  # Ray workers may run in another directory
    data = {}
    for task in tasks:
        data[task] = str(out / "data" / task)
        generate(task, chosen.episodes(task), data[task], seed=0, workers=0, progress=progress)

    init_ray()
    remote = ray.remote(num_cpus=1, num_gpus=gpus_per_cell, max_retries=1)(run_cell)
    # An offline symbolic cell reserves no CPU: RLlib reads its data with Ray Data tasks
    # that each need a free CPU (the file listing's cannot be told otherwise), so cells
    # holding every CPU would wait on them forever (2 such cells on 2 cores did).
    offline_symbolic = ray.remote(num_cpus=0, max_retries=1)(run_cell)
    cells = [Cell(t, a, s) for t in tasks for a in algos for s in range(seeds) if a not in SYMBOLIC or t == "maze"]
    done: list[dict] = []
    todo = []
    for cell in cells:
        saved = out / "cells" / f"{cell.name}.json"
        if saved.is_file():
            done.append(json.loads(saved.read_text()))
        else:
            todo.append(cell)
    limit = workers or len(todo) or 1
    pending: dict = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cells), initial=len(done), desc="benchmark", unit="cell")
    try:
        while todo or pending:
            while todo and len(pending) < limit:
                cell = todo.pop(0)
                runner = offline_symbolic if cell.algo in SYMBOLIC and cell.algo != "symbolic-dqn" else remote
                ref = runner.remote(cell, data=data[cell.task], out=str(out), preset=chosen, model=model,
                                    overrides=list(overrides))
                pending[ref] = cell
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                cell = pending.pop(ref)
                try:
                    done.append(ray.get(ref))
                except ray.exceptions.RayTaskError as err:
                    raise RuntimeError(f"benchmark cell {cell.name} failed: {err.cause!r}") from None
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        for ref in pending:
            ray.cancel(ref)
    order = {c.name: i for i, c in enumerate(cells)}
    done.sort(key=lambda r: order.get(Cell(r["task"], r["algo"], r["seed"]).name, len(order)))
    rows = write_report(done, out)
    return {"rows": rows, "cells": done, "seconds": time.perf_counter() - started, "workers": workers}
