"""The symbolic Maze baseline (lmrl_ray/baselines/symbolic_maze/): environment, conversion, RLlib training."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

pytest.importorskip("ray.rllib", reason="the symbolic Maze baseline needs RLlib: pip install 'ray[rllib]'")

from lmrl_ray import envs  # noqa: E402
from lmrl_ray.baselines import symbolic_maze as sm  # noqa: E402
from lmrl_ray.baselines.symbolic_maze import cql, train  # noqa: E402
from lmrl_ray.data.datagen import generate  # noqa: E402
from lmrl_ray.data.schema import episode_row, to_table  # noqa: E402
from lmrl_ray.data.store import ReplayStore  # noqa: E402
from lmrl_ray.envs.maze import ACTIONS, GOAL, MAX_MOVES, OPEN, STARTS, MazeEnv  # noqa: E402

# -- Environment (no Ray) ----------------------------------------------------------------


def test_transitions_equal_the_text_env_for_every_cell_and_action():
    text, symbolic = MazeEnv(), sm.SymbolicMazeEnv()
    for cell in STARTS:
        for a, action in enumerate(ACTIONS):
            text.reset(options={"start": cell})
            obs, _ = symbolic.reset(options={"start": cell})
            assert sm.cell_of(obs) == cell
            _, t_reward, t_term, t_trunc, _ = text.step(action)
            obs, s_reward, s_term, s_trunc, _ = symbolic.step(a)
            assert (sm.cell_of(obs), s_reward, s_term, s_trunc) == (text.position, t_reward, t_term, t_trunc)
            assert obs.dtype == np.float32 and obs.sum() == 1.0 and symbolic.observation_space.contains(obs)
    assert len(OPEN) == sm.NUM_CELLS == 26


def test_unpinned_reset_draws_the_text_envs_start_and_truncates_after_max_moves():
    text, symbolic = MazeEnv(), sm.SymbolicMazeEnv()
    for seed in range(20):
        assert sm.cell_of(symbolic.reset(seed=seed)[0]) == text.reset(seed=seed)[1]["position"]
    symbolic.reset(options={"start": (1, 1)})
    text.reset(options={"start": (1, 1)})
    for move in range(MAX_MOVES + 1):  # "up" from (1, 1) is a wall: never reaches the goal
        _, s_reward, s_term, s_trunc, info = symbolic.step(ACTIONS.index("move up"))
        _, t_reward, t_term, t_trunc, _ = text.step("move up")
        assert (s_reward, s_term, s_trunc) == (t_reward, t_term, t_trunc) == (-1.0, False, move == MAX_MOVES)
    # The 101st action is the text task's Failure turn: -1, and a failed episode returns -101.
    assert info["success"] is False and text.transcript[-1].text == "Failure" and text.episode_return == -101
    with pytest.raises(RuntimeError, match="episode is over"):
        symbolic.step(0)
    with pytest.raises(ValueError, match="valid starts"):
        symbolic.reset(options={"start": GOAL})
    symbolic.reset(options={"start": (1, 1)})
    for action in (4, -1, 1.0, "move up"):
        with pytest.raises(ValueError, match="an action is an integer"):
            symbolic.step(action)


def test_the_failure_turn_is_not_played_as_in_the_text_task():
    symbolic = sm.SymbolicMazeEnv({"max_moves": 1})
    text = MazeEnv(max_moves=1)
    for env in (symbolic, text):
        env.reset(options={"start": (7, 6)})
    steps = [(ACTIONS.index("move left"), "move left"), (ACTIONS.index("move down"), "move down")]  # a wall, the goal
    for a, action in steps:
        obs, s_reward, s_term, s_trunc, s_info = symbolic.step(a)
        _, t_reward, t_term, t_trunc, t_info = text.step(action)
        assert (sm.cell_of(obs), s_reward, s_term, s_trunc) == (text.position, t_reward, t_term, t_trunc)
    assert (sm.cell_of(obs), s_reward, s_trunc, s_info["success"]) == ((7, 6), -1.0, True, False)
    with pytest.raises(RuntimeError, match="episode is over"):
        symbolic.step(0)


def test_optimal_return_is_the_normalisation_maximum():
    result = sm.evaluate_symbolic(sm.optimal_policy(), 50, seed=0)
    assert result["mean_return"] == pytest.approx(sm.OPTIMAL_MEAN_RETURN) == pytest.approx(-6.84)
    assert sm.OPTIMAL_MEAN_RETURN == pytest.approx(envs.spec("maze").paper_max)
    assert result["success_rate"] == 1.0 and result["normalised_paper"] == pytest.approx(100.0)
    assert result["normalised_ours"] == pytest.approx(100.0) and result["episodes"] == 50
    # 50 episodes visit the 25 starts twice: the interval is the spread over the starts.
    returns = [sm.OPTIMAL_RETURNS[STARTS[i % 25]] for i in range(50)]
    assert result["ci95"] == pytest.approx(2.0096 * np.std(returns, ddof=1) / math.sqrt(50), rel=1e-4)


def test_discrete_cql_loss_by_hand():
    import torch

    q = torch.tensor([[0.0, math.log(2.0)], [1.0, 1.0]])  # (B=2, A=2)
    q_target_next = torch.tensor([[2.0, 4.0], [5.0, 6.0]])
    q_next = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # double Q: a_tp1 = 0 in row 0
    actions, rewards, terminateds = torch.tensor([1, 0]), torch.tensor([-1.0, 0.0]), torch.tensor([False, True])
    loss, metrics = cql.discrete_cql_loss(q, q_target_next, q_next, actions, rewards, terminateds, gamma=0.5, alpha=2.0)
    # Targets: -1 + 0.5 * Q_target(s'_0, 0) = 0, and 0 (terminal). Q(s, a_data): log 2, 1.
    td = (0.5 * math.log(2.0) ** 2 + 0.5 * 1.0 ** 2) / 2  # Huber: quadratic up to |error| = 1
    gap = (math.log(3.0) - math.log(2.0) + (1.0 + math.log(2.0)) - 1.0) / 2  # logsumexp - Q(s, a_data)
    assert metrics["cql/td_loss"].item() == pytest.approx(td, rel=1e-5)
    assert metrics["cql/gap"].item() == pytest.approx(gap, rel=1e-5)
    assert loss.item() == pytest.approx(td + 2.0 * gap, rel=1e-5)
    # Without double Q the target network's max values s_tp1: -1 + 0.5 * 4 = 1.
    plain, _ = cql.discrete_cql_loss(q, q_target_next, None, actions, rewards, terminateds, gamma=0.5, alpha=0.0)
    assert plain.item() == pytest.approx((0.5 * (math.log(2.0) - 1.0) ** 2 + 0.5) / 2, rel=1e-5)


# -- Conversion (no Ray) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def maze_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "maze"
    generate("maze", 40, str(path), seed=0, episodes_per_shard=16)
    return path


def test_conversion_reproduces_every_return(maze_store, tmp_path):
    po_store = tmp_path / "maze-po"
    generate("maze-po", 20, str(po_store), seed=3)
    for store, task in ((maze_store, "maze"), (po_store, "maze-po")):
        data = sm.convert_store(store, tmp_path / task)
        rows = ReplayStore(store).read().to_pylist()
        table = sm.open_symbolic(tmp_path / task)  # the out_dir resolves to its symbolic-maze folder
        assert (table.episodes, table.transitions, table.skipped_invalid) == (len(rows), data.transitions, 0)
        import pyarrow.parquet as pq

        t = pq.read_table(data.file).to_pydict()
        by_episode: dict[str, list[int]] = {}
        for i, eps in enumerate(t[sm.EPS_ID]):
            by_episode.setdefault(eps, []).append(i)
        assert set(by_episode) == {r["episode_id"] for r in rows}
        for row in rows:
            idx = by_episode[row["episode_id"]]
            assert sum(t[sm.REWARDS][i] for i in idx) == row["return"]
            assert len(idx) == row["length"] and [t[sm.T][i] for i in idx] == list(range(len(idx)))
            for i, j in zip(idx, idx[1:]):  # s_tp1 of one transition is s_t of the next
                assert t[sm.NEXT_OBS][i] == t[sm.OBS][j]
            assert t[sm.TERMINATEDS][idx[-1]] == row["success"]
            assert t[sm.TRUNCATEDS][idx[-1]] == (not row["success"])
            assert sm.cell_of(np.array(t[sm.NEXT_OBS][idx[-1]])) == GOAL or not row["success"]


def _store_with(tmp_path, name, rows):
    ReplayStore.create(tmp_path / name).append(to_table(rows), producer="hand", sequence=0)
    return tmp_path / name


def _play(actions, start=(5, 5), task="maze", episode_id="hand-0"):
    env = MazeEnv()
    env.reset(seed=7, options={"start": start})
    rewards = []
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
    return episode_row(task=task, episode_id=episode_id, seed=7, transcript=env.transcript, rewards=rewards,
                       success=info.get("success", False))


def test_invalid_actions_are_an_error_or_skipped(tmp_path):
    good = _play(["move right", "move down", "move down", "move down"], start=(5, 5), episode_id="good")
    bad = _play(["move right", "jump", "move down", "move down", "move down"], start=(5, 5), episode_id="bad")
    assert good["success"] and bad["success"] and bad["return"] == good["return"] - 4
    store = _store_with(tmp_path, "mixed", [good, bad])
    with pytest.raises(sm.InvalidActionError, match="episode bad: agent turn 1 'jump'"):
        sm.convert_store(store, tmp_path / "out")
    data = sm.convert_store(store, tmp_path / "out", invalid="skip")
    assert (data.episodes, data.transitions, data.skipped_invalid) == (1, 4, 1)


def test_bad_inputs_give_errors_naming_the_folder(tmp_path, maze_store):
    missing = tmp_path / "nowhere"
    with pytest.raises(sm.SymbolicDataError, match=str(missing)):
        sm.convert_store(missing, tmp_path / "out")
    with pytest.raises(sm.SymbolicDataError, match=str(missing)):
        sm.open_symbolic(missing)
    with pytest.raises(sm.SymbolicDataError, match=re.escape(f"{maze_store} holds no transitions.parquet")):
        sm.open_symbolic(maze_store)  # a text store, not converted
    other = tmp_path / "wordle"
    generate("wordle", 2, str(other), seed=0)
    with pytest.raises(sm.SymbolicDataError, match=re.escape(f"{other} holds data of task(s) wordle")):
        sm.convert_store(other, tmp_path / "out")
    tampered = _play(["move right", "move down"], start=(5, 5))
    tampered["turns"][2]["text"] = tampered["turns"][2]["text"].replace("5, 6", "5, 7")
    store = _store_with(tmp_path, "tampered", [tampered])
    with pytest.raises(sm.SymbolicDataError, match=re.escape(f"{store}: episode hand-0: agent turn 0 replays")):
        sm.convert_store(store, tmp_path / "out")
    with pytest.raises(ValueError, match="unknown symbolic knob"):
        train.train_symbolic("bc", data=tmp_path / "out", lr_typo=1.0)
    with pytest.raises(ValueError, match="valid: dqn, cql, marwil, bc"):
        train.train_symbolic("ppo")


# -- RLlib (Ray in local mode) -----------------------------------------------------------


@pytest.mark.slow
def test_dqn_online_beats_random_play(ray_local):
    trained = train.train_symbolic("dqn", seed=0, iterations=3)  # 3,000 environment steps
    result = sm.evaluate_symbolic(trained.policy, 50, seed=0)
    rng = np.random.default_rng(0)
    random = sm.evaluate_symbolic(lambda obs: int(rng.integers(len(ACTIONS))), 50, seed=0)
    assert random["mean_return"] < -60  # the random policy's level on these starts (about -85)
    assert result["mean_return"] >= random["mean_return"] + 30 and result["mean_return"] >= -50
    assert result["success_rate"] >= 0.6
    assert all(math.isfinite(v) for v in trained.metrics.values() if not math.isnan(v))
    assert "qf_loss" in trained.metrics


@pytest.fixture(scope="module")
def symbolic_300(tmp_path_factory):
    root = tmp_path_factory.mktemp("sym300")
    generate("maze", 300, str(root / "text"), seed=0)
    return sm.convert_store(root / "text", root)


@pytest.mark.slow
def test_offline_cql_stitches_beyond_behaviour_cloning(ray_local, symbolic_300):
    trained = train.train_symbolic("cql", data=symbolic_300, seed=0, iterations=25)
    result = sm.evaluate_symbolic(trained.policy, 50, seed=0)
    # BC on this data reaches -72.68 (branch starts fail); CQL must find the way out of them.
    assert result["mean_return"] >= -40 and result["success_rate"] >= 0.7
    assert math.isfinite(trained.metrics["cql/td_loss"]) and trained.metrics["num_target_updates"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["bc", "marwil"])
def test_offline_cells_run_end_to_end(ray_local, maze_store, tmp_path, algo):
    row = sm.run_symbolic_cell(algo, 1, data=maze_store, eval_episodes=25, out=tmp_path, iterations=2)
    assert row["task"] == "maze" and row["algo"] == f"symbolic-{algo}" and row["seed"] == 1
    assert row["episodes"] == 25 and row["decoding"] == "greedy" and row["seconds"] > 0
    assert -101 <= row["mean_return"] <= sm.OPTIMAL_MEAN_RETURN and 0 <= row["success_rate"] <= 1
    assert row["normalised_paper"] is not None and math.isfinite(row["ci95"])
    assert (tmp_path / "symbolic-maze" / sm.TRANSITIONS_FILE).exists()
    checkpoint = tmp_path / f"symbolic-{algo}-seed1"
    assert row["checkpoint"] == str(checkpoint / "greedy_policy.json")
    # The saved table is the policy that was evaluated (nothing pickled is written).
    record = json.loads((checkpoint / "greedy_policy.json").read_text())
    replayed = sm.evaluate_symbolic(sm.GreedyPolicy(tuple(record["actions"])), 25, seed=1)
    assert replayed["mean_return"] == row["mean_return"]
    assert not [f for f in checkpoint.rglob("*") if f.suffix in (".pkl", ".pickle")]
