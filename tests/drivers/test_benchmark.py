"""`lmrl-ray benchmark`: cells as Ray tasks, the report with intervals over seeds, resume."""

from __future__ import annotations

import csv
import math

import pytest

from lmrl_ray.cli import main
from lmrl_ray.drivers.benchmark import applicable, run_benchmark
from lmrl_ray.drivers.report import mean_ci

TINY = ["updates=1", "batch_episodes=4"]


@pytest.mark.slow
def test_a_tiny_benchmark_writes_the_table_csv_and_plot_with_intervals_over_seeds(ray_local, tmp_path):
    out = tmp_path / "bench"
    result = run_benchmark(["text-nav", "wordle"], ["bc", "filtered-bc"], 2, out=out, overrides=TINY, data_episodes=12,
                           eval_episodes=3, workers=2, progress=False)
    cells = result["cells"]
    assert sorted((c["task"], c["algo"], c["seed"]) for c in cells) == sorted(
        (t, a, s) for t in ("text-nav", "wordle") for a in ("bc", "filtered-bc") for s in (0, 1))
    assert all(c["episodes"] == 3 and math.isfinite(c["mean_return"]) for c in cells)
    with open(out / "table.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4
    for row in table:
        mine = [c["mean_return"] for c in cells if (c["task"], c["algo"]) == (row["task"], row["algo"])]
        mean, half = mean_ci(mine)
        # Student's t with 1 degree of freedom for two seeds
        assert half == pytest.approx(12.706 * abs(mine[0] - mine[1]) / 2, rel=1e-3)
        assert float(row["mean_return"]) == pytest.approx(mean) and float(row["mean_return_ci95"]) == pytest.approx(half)
        assert row["seeds"] == "2"
    assert (out / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "text-nav" in (out / "table.md").read_text()
    assert len(list((out / "cells").glob("*.json"))) == 8

    # Run again: every cell is read back, none retrained (the saved seconds stay).
    before = {p.name: p.read_text() for p in (out / "cells").glob("*.json")}
    again = run_benchmark(["text-nav", "wordle"], ["bc", "filtered-bc"], 2, out=out, overrides=TINY, data_episodes=12,
                          eval_episodes=3, progress=False)
    assert {p.name: p.read_text() for p in (out / "cells").glob("*.json")} == before
    assert [r["mean_return"] for r in again["rows"]] == [r["mean_return"] for r in result["rows"]]


@pytest.mark.slow
@pytest.mark.timeout(600)  # two offline symbolic cells on the 2 CPUs once waited forever for their data
def test_the_symbolic_maze_baseline_is_a_row_of_the_maze_table(ray_local, tmp_path):
    pytest.importorskip("ray.rllib", reason="the symbolic Maze baseline needs RLlib (pip install 'lmrl-ray[rllib]')")
    from lmrl_ray.baselines.symbolic_maze import OPTIMAL_MEAN_RETURN

    out = tmp_path / "bench"
    # A symbolic algorithm is skipped for the other task; two cells at a time on 2 CPUs.
    result = run_benchmark(["maze", "text-nav"], ["symbolic-bc"], 2, out=out, data_episodes=300, eval_episodes=25,
                           workers=2, progress=False)
    assert [(c["task"], c["algo"], c["seed"]) for c in result["cells"]] == [("maze", "symbolic-bc", s) for s in (0, 1)]
    cell = result["cells"][0]
    assert cell["episodes"] == 25
    # BC imitates data whose trajectories never leave their branch: it cannot reach the
    # shortest paths (offline CQL does; tests/baselines/test_symbolic_maze.py).
    assert cell["mean_return"] < OPTIMAL_MEAN_RETURN - 10 and cell["success_rate"] < 1.0
    assert math.isfinite(cell["normalised_paper"]) and cell["decoding"] == "greedy"
    with open(out / "table.csv") as f:
        assert [(r["task"], r["algo"], r["seeds"]) for r in csv.DictReader(f)] == [("maze", "symbolic-bc", "2")]


def test_bad_benchmark_input_is_named(tmp_path, capsys):
    assert main(["benchmark", "--tasks", "mazes", "--algos", "bc", "--out", str(tmp_path)]) != 0
    assert "mazes" in capsys.readouterr().err
    assert main(["benchmark", "--tasks", "maze", "--algos", "bc,dqn", "--out", str(tmp_path)]) != 0
    assert "dqn" in capsys.readouterr().err
    assert main(["benchmark", "--tasks", "maze", "--algos", "bc", "--preset", "paper", "--out", str(tmp_path)]) != 0
    assert "--model" in capsys.readouterr().err
    assert main(["benchmark", "--tasks", "maze", "--algos", "bc", "--seeds", "0", "--out", str(tmp_path)]) != 0
    assert "--seeds" in capsys.readouterr().err
    assert main(["benchmark", "--tasks", "wordle", "--algos", "symbolic-dqn", "--out", str(tmp_path)]) != 0
    assert "add maze to --tasks" in capsys.readouterr().err
    assert main(["benchmark", "--tasks", "maze", "--algos", "bc,ppo", "--out", str(tmp_path), "expectile=0.5"]) != 0
    assert "'expectile' is a key of none of bc, ppo" in capsys.readouterr().err
    assert not (tmp_path / "cells").exists()


def test_overrides_for_every_run_reach_the_runs_whose_algorithm_has_them():
    shared = ["updates=5", "lr=1e-3", "iterations=2", "freeze_lm=true"]
    assert applicable("bc", shared) == ["updates=5", "lr=1e-3"]
    assert applicable("ppo", shared) == ["lr=1e-3", "iterations=2"]
    assert applicable("ilql", shared) == ["updates=5", "lr=1e-3", "freeze_lm=true"]
