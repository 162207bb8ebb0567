"""Offline data generation: reproducible for a seed whatever the workers, resumable, split."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lmrl_ray.data import schema as S
from lmrl_ray.data.datagen import _make_shard, generate, run_name
from lmrl_ray.data.stats import dataset_stats
from lmrl_ray.data.store import ReplayStore, StoreError
from lmrl_ray.envs.base import AGENT, ENV, Turn
from lmrl_ray.envs.chess_game import unspaced
from lmrl_ray.envs.endgames import eval_positions
from lmrl_ray.envs.play import episode_seed


def _rows(store: ReplayStore) -> list[dict]:
    return sorted(store.read().to_pylist(), key=lambda r: r[S.EPISODE_ID])


def test_same_seed_same_data_in_process_and_on_two_ray_workers(tmp_path, ray_local):
    a = generate("wordle", 23, tmp_path / "a", seed=5, workers=0, episodes_per_shard=5)
    b = generate("wordle", 23, tmp_path / "b", seed=5, workers=2, episodes_per_shard=5)
    assert a.shards == b.shards == 5
    rows_a, rows_b = _rows(ReplayStore(tmp_path / "a")), _rows(ReplayStore(tmp_path / "b"))
    assert len(rows_a) == 23 and rows_a == rows_b
    # The shard size changes the files, not the episodes.
    generate("wordle", 23, tmp_path / "c", seed=5, workers=0, episodes_per_shard=23)
    assert _rows(ReplayStore(tmp_path / "c")) == rows_a
    generate("wordle", 23, tmp_path / "d", seed=6, workers=0, episodes_per_shard=23)
    assert _rows(ReplayStore(tmp_path / "d")) != rows_a


def test_rows_hold_the_episodes_and_their_rewards(tmp_path):
    generate("maze", 6, tmp_path, seed=1, episodes_per_shard=4)
    for row in ReplayStore(tmp_path).read().to_pylist():
        turns = row[S.TURNS]
        assert turns[0][S.ROLE] == ENV and [t[S.ROLE] for t in turns[1::2]] == [AGENT] * row[S.LENGTH]
        assert sum(t[S.REWARD] for t in turns) == row[S.RETURN]
        assert row[S.SOURCE] == "offline" and row[S.SPLIT] == "train" and row[S.POLICY] == "behaviour"
        assert row[S.SEED] == episode_seed(1, "train", int(row[S.EPISODE_ID].rsplit("-", 1)[1]))


def test_resume_skips_committed_shards_and_never_duplicates(tmp_path):
    name = run_name("text-nav", "behaviour", "train", 0, 4)
    ReplayStore.create(tmp_path)
    _make_shard(str(tmp_path), name, 1, "text-nav", "behaviour", "train", 0, 4, 8)  # as if an earlier run died
    report = generate("text-nav", 10, tmp_path, episodes_per_shard=4)
    assert (report.shards, report.shards_skipped) == (3, 1)
    again = generate("text-nav", 10, tmp_path, episodes_per_shard=4)
    assert again.shards_skipped == 3
    ids = ReplayStore(tmp_path).read([S.EPISODE_ID])[S.EPISODE_ID].to_pylist()
    assert len(ids) == len(set(ids)) == 10
    fresh = tmp_path.parent / "fresh"
    generate("text-nav", 10, fresh, episodes_per_shard=4)
    assert _rows(ReplayStore(fresh)) == _rows(ReplayStore(tmp_path))


def test_resume_with_another_size_and_another_task_are_refused(tmp_path):
    generate("maze", 6, tmp_path, episodes_per_shard=4)
    with pytest.raises(StoreError, match="another --episodes"):
        generate("maze", 7, tmp_path, episodes_per_shard=4)
    with pytest.raises(StoreError, match="holds data of task"):
        generate("wordle", 4, tmp_path, episodes_per_shard=4)


def test_bad_arguments_name_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="valid tasks"):
        generate("mazes", 4, tmp_path)
    with pytest.raises(ValueError, match="valid splits"):
        generate("maze", 4, tmp_path, split="test")
    with pytest.raises(ValueError, match="valid policies"):
        generate("maze", 4, tmp_path, policy="oracle")


def test_train_and_eval_splits_use_separate_seeds(tmp_path):
    train = {episode_seed(0, "train", i) for i in range(5000)}
    evals = {episode_seed(0, "eval", i) for i in range(5000)}
    assert not train & evals


def test_endgame_eval_split_plays_the_evaluation_positions_and_train_never_does(tmp_path):
    generate("endgames", 3, tmp_path / "eval", split="eval", policy="random", episodes_per_shard=3)
    generate("endgames", 6, tmp_path / "train", split="train", policy="random", episodes_per_shard=6)
    first_fen = lambda row: unspaced(row[S.TURNS][0][S.TEXT])  # noqa: E731
    eval_rows = sorted(ReplayStore(tmp_path / "eval").read().to_pylist(), key=lambda r: r[S.EPISODE_ID])
    assert [first_fen(r) for r in eval_rows] == eval_positions()[:3]
    held_out = set(eval_positions())
    assert not {first_fen(r) for r in ReplayStore(tmp_path / "train").read().to_pylist()} & held_out


def _hand_row(task: str, i: int, rewards: list[float], success: bool) -> dict:
    transcript = [Turn(ENV, "start")]
    for k in range(len(rewards)):
        transcript += [Turn(AGENT, f"a{k}"), Turn(ENV, f"o{k}")]
    return S.episode_row(task=task, episode_id=f"{task}-{i}", seed=i, transcript=transcript, rewards=rewards, success=success)


def test_data_stats_on_a_hand_made_store(tmp_path):
    store = ReplayStore.create(tmp_path)
    rows = [
        _hand_row("maze", 0, [-1.0, 0.0], True),  # 2 turns, return -1
        _hand_row("maze", 1, [-1.0, -1.0, -1.0, -1.0], False),  # 4 turns, return -4
        _hand_row("maze", 2, [-4.0, -1.0, -1.0], False),  # 3 turns, return -6
    ]
    store.append(S.to_table(rows[:2]), producer="hand", sequence=0)
    store.append(S.to_table(rows[2:]), producer="hand", sequence=1)
    (stats,) = dataset_stats(store)
    assert stats.task == "maze" and stats.trajectories == 3
    assert stats.mean_turns == pytest.approx(3.0) and stats.std_turns == pytest.approx((2 / 3) ** 0.5)
    assert stats.success_rate == pytest.approx(1 / 3)
    assert stats.mean_return == pytest.approx(-11 / 3)
    assert stats.std_return == pytest.approx(((8 / 3) ** 2 + (1 / 3) ** 2 + (7 / 3) ** 2) ** 0.5 / 3**0.5)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmrl_ray.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_datagen_then_stats(tmp_path):
    out = _cli("datagen", "maze", "--episodes", "12", "--out", str(tmp_path), "--workers", "0", "--episodes-per-shard", "5")
    assert out.returncode == 0, out.stderr
    assert "12 maze episodes in 3 shards" in out.stdout
    stats = json.loads(_cli("data", "stats", str(tmp_path), "--json").stdout)
    assert stats[0]["trajectories"] == 12 and stats[0]["paper"]["trajectories"] == 1240
    missing = _cli("data", "stats", str(tmp_path / "nope"))
    assert missing.returncode == 1 and str(tmp_path / "nope") in missing.stderr and "Traceback" not in missing.stderr
    bad = _cli("datagen", "maze", "--episodes", "lots", "--out", str(tmp_path))
    assert bad.returncode == 2 and "'paper'" in bad.stderr
