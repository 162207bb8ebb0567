"""Maze rules on hand-written cases, and its scripted policies."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lmrl_ray import envs
from lmrl_ray.envs.maze import (
    GOAL,
    STARTS,
    SUB_MAZES,
    BeliefPolicy,
    behaviour_region,
    move,
    walls_sentence,
)
from lmrl_ray.envs.play import play_episode


def test_layout_has_26_open_cells_and_25_starts():
    assert len(STARTS) == 25 and GOAL not in STARTS


@pytest.mark.parametrize(
    "cell, sentence",
    [
        ((1, 1), "There are walls to your left, above you, below you."),
        ((5, 6), "There is a wall above you."),
        ((5, 5), "There are walls above you, below you."),
        ((1, 11), "There are walls to your right, above you, below you."),
        ((7, 6), "There are walls to your right, to your left."),
        ((1, 3), "There is a wall above you."),
    ],
)
def test_walls_sentence(cell, sentence):
    assert walls_sentence(cell) == sentence


def test_fully_observed_text_spaces_two_digit_numbers():
    env = envs.make("maze")
    obs, _ = env.reset(seed=0, options={"start": (1, 10)})
    assert obs == (
        "The goal is at position 8, 6. Your current position is at position 1, 1 0. "
        "There are walls above you, below you."
    )
    assert env.prompt() == obs + "\n"


def test_partially_observed_text_is_the_walls_sentence_only():
    env = envs.make("maze-po")
    obs, _ = env.reset(seed=0, options={"start": (1, 10)})
    assert obs == "There are walls above you, below you."


def test_moves_walls_and_invalid_actions():
    env = envs.make("maze")
    env.reset(options={"start": (1, 1)})
    _, reward, terminated, truncated, info = env.step("move right")
    assert env.position == (1, 2) and reward == -1 and not (terminated or truncated)
    _, reward, *_ = env.step("move up")  # into the wall: stays, still a move
    assert env.position == (1, 2) and reward == -1
    before = env.transcript[-1].text
    for bad in ["go north", "Move up", "move  up", "move up please", "", "é" * 50, "x" * 10_000]:
        obs, reward, terminated, _, info = env.step(bad)
        assert (reward, terminated, info["invalid_action"]) == (-4, False, True)
        assert env.position == (1, 2) and obs == before
    _, reward, *_ = env.step("  move left\n")  # surrounding whitespace is not part of the action
    assert env.position == (1, 1) and reward == -1


def test_reaching_the_goal_is_success_with_zero_reward():
    env = envs.make("maze")
    env.reset(options={"start": (7, 6)})
    obs, reward, terminated, truncated, info = env.step("move down")
    assert (obs, reward, terminated, truncated, info["success"]) == ("Success", 0, True, False, True)


@pytest.mark.parametrize("task", ["maze", "maze-po"])
def test_the_101st_action_is_answered_with_failure(task):
    """The source allows 100 moves and answers the 101st action with `Failure` and -1
    (llm_rl_scripts/maze/env/env.py:164-165): an agent that never arrives returns -101."""
    env = envs.make(task)
    start_text, _ = env.reset(options={"start": (1, 1)})
    for _ in range(100):  # "up" from (1, 1) is a wall: never reaches the goal
        obs, reward, terminated, truncated, info = env.step("move up")
        assert (obs, reward, terminated, truncated) == (start_text, -1, False, False)
    obs, reward, terminated, truncated, info = env.step("move up")
    assert (obs, reward, terminated, truncated, info["success"]) == ("Failure", -1, False, True, False)
    assert env.episode_return == -101 == envs.spec(task).paper_min
    assert env.agent_turns == 101 == env.max_agent_turns and env.transcript[-1].text == "Failure"


def test_the_101st_action_is_not_played_even_onto_the_goal():
    env = envs.make("maze")
    env.reset(options={"start": (7, 6)})
    for _ in range(100):
        env.step("move left")  # a wall
    obs, reward, terminated, truncated, info = env.step("move down")  # would reach the goal
    assert (obs, reward, terminated, truncated, info["success"]) == ("Failure", -1, False, True, False)
    assert env.position == (7, 6)


def test_the_100th_move_may_still_reach_the_goal():
    env = envs.make("maze")
    env.reset(options={"start": (7, 6)})
    for _ in range(99):
        env.step("move left")
    obs, reward, terminated, truncated, info = env.step("move down")
    assert (obs, reward, terminated, truncated, info["success"]) == ("Success", 0, True, False, True)
    assert env.episode_return == -99


def test_invalid_actions_count_towards_the_100_and_the_101st_is_not_read():
    env = envs.make("maze-po")
    env.reset(options={"start": (5, 5)})
    for _ in range(100):
        _, reward, _, truncated, info = env.step("jump")
        assert (reward, truncated, info["invalid_action"]) == (-4, False, True)
    obs, reward, _, truncated, info = env.step("jump")
    assert (obs, reward, truncated, info["invalid_action"]) == ("Failure", -1, True, False)
    assert env.episode_return == -401  # below the paper's m = -101, which counts moves only


def test_max_moves_setting_allows_that_many_turns_then_failure():
    env = envs.make("maze", max_moves=3)
    env.reset(options={"start": (1, 1)})
    results = [env.step("move up") for _ in range(4)]
    assert [r[1] for r in results] == [-1, -1, -1, -1] and [r[3] for r in results] == [False] * 3 + [True]
    assert results[-1][0] == "Failure" and env.max_agent_turns == 4
    with pytest.raises(ValueError, match="max_moves"):
        envs.make("maze", max_moves=0)


def test_partially_observed_view_is_the_last_40_turns():
    env = envs.make("maze-po")
    env.reset(options={"start": (1, 1)})
    for _ in range(30):
        env.step("move up")
    view = env.view(env.transcript)
    assert len(env.transcript) == 61 and view == env.transcript[-40:]
    full = envs.make("maze")
    full.reset(options={"start": (1, 1)})
    full.step("move right")
    assert full.view(full.transcript) == full.transcript[-1:]


def test_partially_observed_window_survives_an_invalid_action():
    """The source restarts the history from the new observation after an invalid action
    (llm_rl_scripts/maze/env/env.py:179-180); we keep the 40-turn window (module docstring)."""
    env = envs.make("maze-po")
    env.reset(options={"start": (1, 1)})
    env.step("move right")
    env.step("go north")
    assert [t.text for t in env.view(env.transcript)] == [
        "There are walls to your left, above you, below you.",
        "move right",
        "There are walls above you, below you.",
        "go north",
        "There are walls above you, below you.",
    ]


def test_bad_start_option_names_the_valid_starts():
    env = envs.make("maze")
    with pytest.raises(ValueError, match="valid starts"):
        env.reset(options={"start": (0, 0)})
    with pytest.raises(ValueError, match="valid starts"):
        env.reset(options={"start": GOAL})


def test_expert_takes_shortest_paths_and_scores_the_paper_maximum():
    env, expert = envs.make("maze"), envs.policy("maze", "expert")
    returns = [play_episode(env, expert, 0, options={"start": s}).episode_return for s in STARTS]
    assert all(r > -20 for r in returns)
    # The paper's maximum for the fully observed maze is -6.84: the mean over the 25 starts.
    assert np.mean(returns) == pytest.approx(-6.84)


def test_partially_observed_expert_reads_only_the_transcript_and_always_arrives():
    env = envs.make("maze-po")
    rng = np.random.default_rng(0)
    returns = []
    for start in STARTS:
        env.reset(options={"start": start})
        policy = BeliefPolicy()
        # The policy is handed only the transcript: no position to peek at.
        policy.reset(SimpleNamespace(transcript=list(env.transcript)), rng)
        while not env.done:
            env.step(policy.act(SimpleNamespace(transcript=list(env.transcript)), rng))
        returns.append(env.episode_return)
        assert env.transcript[-1].text == "Success"
    assert -12 < np.mean(returns) < -6.84


def test_behaviour_stays_in_its_sub_maze_and_only_the_goal_part_succeeds():
    env, behaviour = envs.make("maze"), envs.policy("maze", "behaviour")
    rng = np.random.default_rng(1)
    for start in STARTS:
        env.reset(options={"start": start})
        behaviour.reset(env, rng)
        region = behaviour_region(start)
        home = next(r for r in SUB_MAZES if start in r)
        assert len(region - home) <= 1  # at most the junction cell at a branch's mouth
        info = {}
        while not env.done:
            _, _, _, _, info = env.step(behaviour.act(env, rng))
            assert env.position in region
        if info["success"]:
            assert GOAL in home


def test_behaviour_data_shares_the_junctions_for_stitching():
    """Trajectories from a branch reach the centre cell at its mouth, which centre
    trajectories also visit: the data holds the move out of each branch."""
    env, behaviour = envs.make("maze"), envs.policy("maze", "behaviour")
    rng = np.random.default_rng(2)
    moves_out = set()
    for start in [(1, 1), (1, 11)] * 10:
        env.reset(options={"start": start})
        behaviour.reset(env, rng)
        while not env.done:
            before = env.position
            env.step(behaviour.act(env, rng))
            if before in {(4, 3), (4, 9)} and env.position in {(5, 3), (5, 9)}:
                moves_out.add(before)
    assert moves_out == {(4, 3), (4, 9)}


def test_move_table():
    assert move((5, 6), "move down") == (6, 6)
    assert move((5, 6), "move up") == (5, 6)
    assert move((1, 5), "move right") == (1, 5)
