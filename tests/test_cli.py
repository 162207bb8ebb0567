"""The command line, run as a person would run it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lmrl_ray import envs
from lmrl_ray.cli import main


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
    # 100 turns are played; the 101st is answered `Failure` (-1), as in the original.
    assert "> Failure\n  reward -1" in out.stdout
    assert "Episode over after 101 turns: return -104, no success." in out.stdout


def test_unknown_task_is_refused_with_the_valid_names():
    out = lmrl("rollout", "mazes")
    assert out.returncode != 0
    assert "invalid choice" in out.stderr and "maze" in out.stderr


# -- lmrl-ray eval ----------------------------------------------------------------------


def _tiny_checkpoint(path, task: str = "wordle") -> str:
    from lmrl_ray.learners.checkpoint import CheckpointMeta, write_meta
    from lmrl_ray.models import load_policy, save_checkpoint

    model, tokenizer = load_policy("tiny")
    save_checkpoint(model, tokenizer, path)
    write_meta(path, CheckpointMeta(algo="bc", task=task, step=5))
    return str(path)


def test_eval_json_reports_the_fields(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path / "ckpt")
    args = ["--episodes", "2", "--temperature", "0", "--max-new-tokens", "3", "--engine", "hf", "--json"]
    out = lmrl("eval", ckpt, *args)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["task"], result["algo"], result["step"], result["episodes"]) == ("wordle", "bc", 5, 2)
    assert result["checkpoint"] == ckpt and result["engine"] == "hf" and result["decoding"] == "sample"
    for key in ("mean_return", "ci95", "success_rate", "mean_turns", "normalised_paper", "normalised_ours", "seed"):
        assert key in result
    # The sentence form, on another task than the checkpoint's: allowed, with a warning.
    out = lmrl("eval", ckpt, "--task", "text-nav", "--episodes", "1", "--decoding", "rerank")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("text-nav / bc step 5 (rerank)") and "normalised score" in out.stdout
    assert "trained on 'wordle'" in out.stderr


def test_eval_errors_name_the_path(tmp_path):
    out = lmrl("eval", str(tmp_path / "missing"))
    assert out.returncode == 1 and "lmrl-ray: error:" in out.stderr and "missing" in out.stderr
    (tmp_path / "plain").mkdir()
    out = lmrl("eval", str(tmp_path / "plain"))
    assert out.returncode == 1 and "plain" in out.stderr and "neither a checkpoint" in out.stderr
    assert "Traceback" not in out.stderr


def test_train_runs_resumes_and_names_bad_input(tmp_path):
    from lmrl_ray.data.datagen import generate

    data = tmp_path / "wordle"
    generate("wordle", 8, str(data), seed=0, workers=0)
    out = tmp_path / "run"
    args = ["train", "wordle", "--algo", "bc", "--data", str(data), "--out", str(out), "--json",
            "updates=2", "batch_episodes=2", "checkpoint_every_updates=1"]
    result = lmrl(*args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["updates"] == 2 and report["checkpoint"].endswith("step-00000002")
    assert any((out / "tensorboard").iterdir())
    again = lmrl(*args)
    assert again.returncode == 1 and "--resume" in again.stderr
    wrong = lmrl("train", "maze", "--algo", "bc", "--data", str(data))
    assert wrong.returncode == 1 and "not maze" in wrong.stderr
    bad = lmrl(*args[:-3], "--resume", "lr=fast")
    assert bad.returncode == 1 and "--lr: could not convert string to float: 'fast'" in bad.stderr


def test_train_help_is_short_and_per_algorithm(capsys):
    assert main(["train", "--help"]) == 0
    general = capsys.readouterr().out
    assert "--algo" in general and "online-filtered-bc" in general and "--expectile" not in general
    assert len(general.splitlines()) < 40
    assert main(["train", "maze", "--algo", "ilql", "--help"]) == 0
    ilql = capsys.readouterr().out
    assert "--expectile" in ilql and "--bootstrap {token,turn}" in ilql and "--lr" in ilql
    assert "--clip_ratio" not in ilql and "--num_rollout_workers" not in ilql  # PPO's keys, not ILQL's
    assert main(["train", "maze", "--algo", "ppo", "--help"]) == 0
    ppo = capsys.readouterr().out
    assert "--clip_ratio" in ppo and "--num_rollout_workers" in ppo and "--expectile" not in ppo


def test_train_names_a_wrong_key_and_the_algorithm_a_key_belongs_to(tmp_path, capsys):
    base = ["train", "maze", "--algo", "ppo", "--init", str(tmp_path), "--out", str(tmp_path / "run")]
    assert main([*base, "expectile=0.5"]) == 1
    assert "'expectile' is a key of ilql, not of ppo; ppo's keys:" in capsys.readouterr().err
    assert main([*base, "--lrr", "1"]) == 1
    err = capsys.readouterr().err
    assert "unknown config key 'lrr'" in err and "clip_ratio" in err
    with pytest.raises(SystemExit):  # an option of no command is argparse's usage error
        main(["tasks", "--lr", "1"])
