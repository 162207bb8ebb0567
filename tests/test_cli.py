"""The command line, run as a person would run it."""

from __future__ import annotations

import json
import subprocess
import sys

from lmrl_ray import envs


def lmrl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lmrl_ray.cli", *args], input=stdin, capture_output=True, text=True, timeout=300
    )


def test_tasks_lists_every_task_with_a_line():
    out = lmrl("tasks")
    assert out.returncode == 0
    lines = out.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == envs.names()


def test_rollout_json_reports_mean_ci_and_success():
    out = lmrl("rollout", "maze", "--policy", "expert", "--episodes", "25", "--json")
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)
    assert row["episodes"] == 25 and row["success_rate"] == 1.0
    assert -12 < row["mean_return"] < -3 and row["ci95"] > 0
    assert row["normalised_paper"] > 80


def test_play_reads_moves_from_the_terminal():
    moves = "move down\nnot a move\n" + "move up\n" * 200
    out = lmrl("play", "maze", "--seed", "3", stdin=moves)
    assert out.returncode == 0, out.stderr
    assert "reward -4 (invalid)" in out.stdout
    assert "Episode over after 100 turns" in out.stdout


def test_unknown_task_is_refused_with_the_valid_names():
    out = lmrl("rollout", "mazes")
    assert out.returncode != 0
    assert "invalid choice" in out.stderr and "maze" in out.stderr
