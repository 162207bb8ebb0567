"""Text-Nav: the house of TASKS.md, the rules, the observations and the scripted policies."""

from __future__ import annotations

import numpy as np
import pytest

from lmrl_ray import envs
from lmrl_ray.envs.base import AGENT, ENV
from lmrl_ray.envs.play import play_episode, scripted_summary
from lmrl_ray.envs.text_nav import DOORS, OPPOSITE, ROOMS, House, optimal_command

VARIANTS = ("text-nav", "text-nav-po")
ADMISSIBLE = " Admissible commands: "

# Walkthrough length by start room, counted by hand on the map: moves to the living
# room, take, two moves west to the kitchen, open, put, close.
WALKTHROUGH_TURNS = {
    "living room": 0 + 6,
    "bedroom": 1 + 6,
    "office": 1 + 6,
    "dining room": 1 + 6,
    "bathroom": 2 + 6,
    "kitchen": 2 + 6,
    "garden": 3 + 6,
    "backyard": 3 + 6,
}


def snapshot(house: House):
    return (house.room, list(house.inventory), {k: list(v) for k, v in house.contents.items()}, set(house.open))


def admissible(observation: str) -> list[str]:
    listed = observation.rsplit(ADMISSIBLE, 1)[1]
    return [] if listed == "none" else listed.split(", ")


def play(env, commands, start_room="living room"):
    env.reset(seed=0, options={"start_room": start_room})
    results = []
    for command in commands:
        assert command in env.legal_actions(), command
        results.append(env.step(command))
    return results


# -- The house -----------------------------------------------------------------------


def test_door_graph_is_the_one_of_tasks_md():
    expected = {
        ("bedroom", "west", "living room"),
        ("living room", "west", "dining room"),
        ("dining room", "west", "kitchen"),
        ("kitchen", "north", "garden"),
        ("living room", "south", "office"),
        ("office", "east", "bathroom"),
        ("bedroom", "south", "bathroom"),
        ("kitchen", "west", "backyard"),
    }
    assert set(DOORS) == expected and len(DOORS) == 8
    assert set(ROOMS) == {"bedroom", "office", "bathroom", "living room", "kitchen", "dining room", "garden", "backyard"}
    # Walk every door through the engine, both ways.
    for room, direction, neighbour in expected:
        house = House(room)
        house.do(f"go {direction}")
        assert house.room == neighbour
        house.do(f"go {OPPOSITE[direction]}")
        assert house.room == room
    # No other door exists: 8 doors give 16 go commands in all.
    moves = [c for room in ROOMS for c in House(room).commands() if c.startswith("go ")]
    assert len(moves) == 16


def test_door_graph_lays_out_on_a_grid():
    # Place the rooms on a grid by walking the doors: no room may land in two places
    # and no two rooms on one spot.
    step = {"north": (0, 1), "south": (0, -1), "east": (1, 0), "west": (-1, 0)}
    where = {"bedroom": (0, 0)}
    frontier = ["bedroom"]
    while frontier:
        room = frontier.pop()
        for direction, (dx, dy) in step.items():
            house = House(room)
            if f"go {direction}" not in house.commands():
                continue
            house.do(f"go {direction}")
            spot = (where[room][0] + dx, where[room][1] + dy)
            if house.room not in where:
                where[house.room] = spot
                frontier.append(house.room)
            assert where[house.room] == spot, f"{house.room} lies in two places"
    assert len(where) == 8 and len(set(where.values())) == 8


def test_start_layout():
    house = House("kitchen")
    assert house.contents["living room", "table"][0] == "stale food"
    carried = [item for items in house.contents.values() for item in items]
    assert sorted(carried) == sorted(["stale food", "fresh food", "bowl", "coffee cup", "plate", "utensils", "fruit"])
    assert house.contents["office", "chest"] == [] and house.contents["kitchen", "fridge"] == []
    assert house.is_closed(("office", "chest")) and house.is_closed(("kitchen", "fridge"))
    assert set(House("bedroom").commands()) >= {"take coffee cup from table", "take bowl from table"}


# -- Rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("room", ROOMS)
def test_walkthrough_wins_from_every_room(name, room):
    env = envs.make(name)
    episode = play_episode(env, envs.policy(name, "expert"), seed=0, options={"start_room": room})
    assert episode.success
    assert episode.rewards.count(1.0) == 1 and episode.rewards[-1] == 1.0 and sum(episode.rewards) == 1.0
    assert episode.agent_turns == WALKTHROUGH_TURNS[room]
    assert episode.transcript[-1].text.endswith("Admissible commands: none")


def test_eating_the_stale_food_fails():
    env = envs.make("text-nav")
    *_, (observation, reward, terminated, truncated, info) = play(env, ["take stale food from table", "eat stale food"])
    assert (reward, terminated, truncated, info["success"]) == (0.0, True, False, False)
    assert "failed" in observation and env.legal_actions() == []
    assert env.episode_return == 0.0


def test_eating_other_food_goes_on():
    env = envs.make("text-nav")
    _, (_, reward, terminated, _, _) = play(env, ["take fruit from table", "eat fruit"], start_room="dining room")
    assert (reward, terminated) == (0.0, False)
    assert "fruit" not in env.house.inventory and "fruit" not in env.house.contents["dining room", "table"]
    assert not any("fruit" in command for command in env.legal_actions())


def test_fridge_must_be_closed_to_succeed():
    env = envs.make("text-nav")
    route = ["take stale food from table", "go west", "go west", "open fridge", "put stale food in fridge"]
    results = play(env, route)
    assert all(r[1] == 0.0 and not r[2] and not r[3] for r in results)
    assert "success" not in results[-1][4]
    assert "take stale food from fridge" in env.legal_actions()
    observation, reward, terminated, truncated, info = env.step("close fridge")
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)


def test_containers_open_close_and_hold_things():
    house = House("living room")
    house.do("take plate from table")
    house.do("go south")
    assert "put plate in chest" not in house.commands()
    house.do("open chest")
    house.do("put plate in chest")
    assert house.contents["office", "chest"] == ["plate"] and house.inventory == []
    house.do("close chest")
    assert "take plate from chest" not in house.commands() and "There is a closed chest." in house.describe(True)
    house.do("open chest")
    assert "with the plate in it" in house.describe(True)
    assert "take plate from chest" in house.commands()


def test_walkthrough_recovers_the_food_from_anywhere():
    house = House("living room")
    for command in ["take stale food from table", "go south", "open chest", "put stale food in chest", "close chest"]:
        house.do(command)
    house.room = "garden"
    for _ in range(15):
        if house.won:
            break
        house.do(optimal_command(house))
    assert house.won


def test_turn_cap_truncates():
    env = envs.make("text-nav", max_steps=4)
    env.reset(seed=1, options={"start_room": "kitchen"})
    for _ in range(4):
        _, reward, terminated, truncated, info = env.step("go east" if env.house.room == "kitchen" else "go west")
    assert (reward, terminated, truncated, info["success"]) == (0.0, False, True, False)
    assert env.max_agent_turns == 4 and envs.make("text-nav").max_agent_turns == 15


# -- Observations, invalid commands, options and views ----------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_observations_end_with_the_admissible_commands(name):
    env = envs.make(name)
    policy = envs.policy(name, "random")
    for seed in range(20):
        observation, _ = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        while True:
            assert "\n" not in observation
            assert admissible(observation) == env.legal_actions()
            fully = "You are in the " in observation and "You are carrying " in observation
            assert fully == (name == "text-nav")
            if name == "text-nav-po" and len(env.transcript) > 1:
                assert not any(room in observation for room in ROOMS)
            if env.done:
                break
            observation, *_ = env.step(policy.act(env, rng))


def test_fully_observed_names_room_and_inventory():
    env = envs.make("text-nav")
    observation, _ = env.reset(seed=0, options={"start_room": "living room"})
    assert observation.startswith("Your goal is to put the stale food")
    assert "You are in the living room." in observation and "You are carrying nothing." in observation
    observation, *_ = env.step("take stale food from table")
    assert "You take the stale food from the table." in observation
    assert "You are carrying the stale food." in observation


@pytest.mark.parametrize(
    "action", ["", "go up", "GO WEST", "take stale food", "open fridge", "eat stale food", "héllo ☃", "x" * 5000]
)
def test_invalid_command_changes_nothing(action):
    env = envs.make("text-nav")
    env.reset(seed=0, options={"start_room": "living room"})
    env.step("go west")
    before, legal = snapshot(env.house), env.legal_actions()
    observation, reward, terminated, truncated, info = env.step(action)
    assert info["invalid_action"] and reward == 0.0 and not terminated and not truncated
    assert snapshot(env.house) == before and env.legal_actions() == legal
    assert observation.startswith("I did not understand that command.")
    assert admissible(observation) == legal
    assert observation.isascii()


def test_start_room_option():
    env = envs.make("text-nav")
    env.reset(seed=0, options={"start_room": "garden"})
    assert env.house.room == "garden"
    drawn = {env.reset(seed=seed)[1]["start_room"] for seed in range(60)}
    assert drawn == set(ROOMS)
    assert env.reset(seed=5)[0] == env.reset(seed=5)[0]
    with pytest.raises(ValueError, match="valid rooms: bedroom, office"):
        env.reset(seed=0, options={"start_room": "attic"})


def test_views():
    fo, po = envs.make("text-nav"), envs.make("text-nav-po")
    for env in (fo, po):
        play(env, ["take stale food from table", "go west"])
        assert [t.role for t in env.transcript] == [ENV, AGENT, ENV, AGENT, ENV]
    assert fo.view(fo.transcript) == [fo.transcript[0], fo.transcript[-1]]
    assert fo.prompt().startswith("Your goal") and "You are carrying the stale food." in fo.prompt()
    assert po.view(po.transcript) == po.transcript
    fo.reset(seed=0)
    assert fo.view(fo.transcript) == fo.transcript


# -- Behaviour data ----------------------------------------------------------------------


def test_behaviour_mixture_matches_paper_success_rate():
    # 2,000 episodes: the standard error of a 0.26 rate is 0.0098, so the paper's 0.26
    # +-10% (relative) is about 2.6 standard errors wide.
    summary = scripted_summary("text-nav", "behaviour", 2000)
    assert abs(summary.success_rate - 0.26) <= 0.026
    assert summary.mean_return == pytest.approx(summary.success_rate)
    assert 11.0 <= summary.mean_turns <= 13.5


def test_behaviour_policy_is_optimal_in_its_rooms_only():
    env = envs.make("text-nav")
    policy = envs.policy("text-nav", "behaviour", random_prob=0.0)
    rng = np.random.default_rng(0)
    policy.reset(env, rng)
    corridor = {"bedroom", "living room", "dining room", "kitchen"}
    assert policy.optimal_rooms in (frozenset(corridor), frozenset(set(ROOMS) - corridor))
    for room in ROOMS:
        env.reset(seed=0, options={"start_room": room})
        actions = {policy.act(env, rng) for _ in range(40)}
        if room in policy.optimal_rooms:
            assert actions == {optimal_command(env.house)}
        else:
            assert actions <= set(env.legal_actions()) and (len(actions) > 1 or len(env.legal_actions()) == 1)
    with pytest.raises(ValueError, match="random_prob"):
        envs.policy("text-nav", "behaviour", random_prob=1.5)
