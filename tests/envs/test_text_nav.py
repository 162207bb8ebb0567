"""Text-Nav: the house of TASKS.md, the rules, the observations and the scripted policies."""

from __future__ import annotations

import numpy as np
import pytest

from lmrl_ray import envs
from lmrl_ray.envs.base import AGENT, ENV
from lmrl_ray.envs.play import play_episode, scripted_summary
from lmrl_ray.envs.text_nav import DOORS, OPPOSITE, ROOMS, START_ITEMS, House, optimal_command

VARIANTS = ("text-nav", "text-nav-po")
ADMISSIBLE = " Admissible commands: "

# Walkthrough length by start room, counted by hand on the map: moves to the living
# room, take, two moves west to the kitchen, open, insert, close.
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


# The original's scripted walkthrough, room -> (commands without the stale food, with
# it), copied as data from LMRL-Gym's llm_rl_scripts/text_nav/dataset/collect_data.py:9-18.
ORIGINAL_WALKTHROUGH = {
    "bedroom": (["go west"], ["go west"]),
    "office": (["go north"], ["go north"]),
    "bathroom": (["go north"], ["go north"]),
    "living room": (["take stale food from table", "go west"], ["go west"]),
    "kitchen": (["go east"], ["open fridge", "insert stale food into fridge", "close fridge"]),
    "dining room": (["go east"], ["go west"]),
    "garden": (["go south"], ["go south"]),
    "backyard": (["go east"], ["go east"]),
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
    # make_game.py:74-80: the fresh food lies beside the stale food; the chest and the
    # fridge each hold one thing; the floors are bare.
    house = House("kitchen")
    assert house.contents["living room", "table"] == ["stale food", "fresh food"]
    assert house.contents["bedroom", "table"] == ["bowl"]
    assert house.contents["dining room", "table"] == ["coffee cup", "plate"]
    assert house.contents["office", "chest"] == ["utensils"] and house.contents["kitchen", "fridge"] == ["fruit"]
    assert all(house.contents[room, "floor"] == [] for room in ROOMS)
    carried = [item for items in house.contents.values() for item in items]
    assert sorted(carried) == sorted(["stale food", "fresh food", "bowl", "coffee cup", "plate", "utensils", "fruit"])
    assert {key: tuple(items) for key, items in house.contents.items() if items} == START_ITEMS
    assert house.is_closed(("office", "chest")) and house.is_closed(("kitchen", "fridge"))
    assert set(House("bedroom").commands()) >= {"take bowl from table"}


def test_fresh_food_lies_beside_the_stale_food():
    env = envs.make("text-nav")
    observation, _ = env.reset(seed=0, options={"start_room": "living room"})
    assert "There is a table with the stale food and the fresh food on it." in observation
    assert {"take stale food from table", "take fresh food from table"} <= set(env.legal_actions())
    observation, *_ = env.step("take fresh food from table")
    assert env.house.inventory == ["fresh food"] and env.house.contents["living room", "table"] == ["stale food"]
    assert "eat fresh food" in env.legal_actions()


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


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("room", ROOMS)
def test_original_walkthrough_wins_in_its_own_words(name, room):
    # Play the original's walkthrough table as its PartialWalkthroughAgent does: in each
    # room, the room's commands for "without the stale food" or "with it". Every command
    # must be admissible, listed, and the episode must end in success within the cap.
    env = envs.make(name)
    env.reset(seed=0, options={"start_room": room})
    reward = 0.0
    while not env.done:
        carrying = "stale food" in env.house.inventory
        for command in ORIGINAL_WALKTHROUGH[env.house.room][carrying]:
            assert command in env.legal_actions(), (env.house.room, command)
            _, reward, terminated, truncated, info = env.step(command)
            assert not info["invalid_action"]
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)
    assert env.agent_turns == WALKTHROUGH_TURNS[room]


def test_make_game_walkthrough_words():
    # make_game.py:108-117 builds the walkthrough from shortest moves, "take stale food
    # from table", moves, "open fridge", "insert stale food into fridge", "close fridge".
    env = envs.make("text-nav")
    route = ["go west", "take stale food from table", "go west", "go west", "open fridge",
             "insert stale food into fridge", "close fridge"]
    results = play(env, route, start_room="bedroom")
    assert [r[1] for r in results] == [0.0] * 6 + [1.0] and results[-1][2] and results[-1][4]["success"]


def test_eating_the_stale_food_fails():
    env = envs.make("text-nav")
    *_, (observation, reward, terminated, truncated, info) = play(env, ["take stale food from table", "eat stale food"])
    assert (reward, terminated, truncated, info["success"]) == (0.0, True, False, False)
    assert "failed" in observation and env.legal_actions() == []
    assert env.episode_return == 0.0


def test_eating_other_food_goes_on():
    env = envs.make("text-nav")
    *_, (_, reward, terminated, _, _) = play(env, ["open fridge", "take fruit from fridge", "eat fruit"],
                                             start_room="kitchen")
    assert (reward, terminated) == (0.0, False)
    assert "fruit" not in env.house.inventory and "fruit" not in env.house.contents["kitchen", "fridge"]
    assert not any("fruit" in command for command in env.legal_actions())


def test_only_food_is_edible():
    house = House("bedroom")
    house.do("take bowl from table")
    assert "eat bowl" not in house.executable() and "drop bowl" in house.commands()


def test_fridge_must_be_closed_to_succeed():
    env = envs.make("text-nav")
    route = ["take stale food from table", "go west", "go west", "open fridge", "insert stale food into fridge"]
    results = play(env, route)
    assert all(r[1] == 0.0 and not r[2] and not r[3] for r in results)
    assert "success" not in results[-1][4]
    assert "take stale food from fridge" in env.legal_actions()
    observation, reward, terminated, truncated, info = env.step("close fridge")
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)


def test_containers_open_close_and_hold_things():
    house = House("living room", partially_observed=True)
    house.do("take fresh food from table")
    house.do("go south")
    assert "insert fresh food into chest" not in house.commands() and "take utensils from chest" not in house.commands()
    assert house.do("open chest") == "You open the chest, revealing the utensils."
    house.do("insert fresh food into chest")
    assert house.contents["office", "chest"] == ["utensils", "fresh food"] and house.inventory == []
    house.do("close chest")
    assert "take fresh food from chest" not in house.commands() and "There is a closed chest." in house.describe()
    house.do("open chest")
    assert "with the utensils and the fresh food in it" in house.describe()
    assert {"take fresh food from chest", "take utensils from chest"} <= set(house.commands())


def test_supporters_take_put_and_containers_take_insert():
    # TextWorld's words (inventory.twl): "put X on S" for a supporter, "insert X into C"
    # for a container; ours used to say "put X in C", which is no command now.
    house = House("living room")
    house.do("take stale food from table")
    assert "put stale food on table" in house.commands()
    assert house.do("put stale food on table") == "You put the stale food on the table."
    house.do("take stale food from table")
    for command in ["go west", "go west", "open fridge"]:
        house.do(command)
    assert "insert stale food into fridge" in house.commands()
    assert not any(command.startswith("put ") for command in house.executable())
    assert "put stale food in fridge" not in house.executable()
    assert house.do("insert stale food into fridge") == "You put the stale food into the fridge."


def test_drop_and_take_from_the_floor():
    env = envs.make("text-nav")
    env.reset(seed=0, options={"start_room": "bedroom"})
    env.step("take bowl from table")
    assert "drop bowl" in env.legal_actions()
    observation, reward, terminated, _, info = env.step("drop bowl")
    assert observation.startswith("You drop the bowl on the floor.") and not info["invalid_action"]
    assert (reward, terminated) == (0.0, False)
    assert env.house.contents["bedroom", "floor"] == ["bowl"] and env.house.inventory == []
    assert "take bowl" in env.legal_actions() and "take bowl from table" not in env.legal_actions()
    assert "You see the bowl on the floor." in env.step("look")[0]
    env.step("go west")
    assert "bowl" not in env.step("look")[0]  # the floor is the room's own
    env.step("go east")
    assert env.step("take bowl")[0].startswith("You pick up the bowl from the floor.")
    assert env.house.inventory == ["bowl"] and env.house.contents["bedroom", "floor"] == []


def test_walkthrough_picks_the_food_up_from_the_floor():
    env = envs.make("text-nav")
    play(env, ["take stale food from table", "go south", "drop stale food", "go north"])
    assert optimal_command(env.house) == "go south"
    env.step("go south")
    assert optimal_command(env.house) == "take stale food"
    while not env.done:
        *_, info = env.step(optimal_command(env.house))
    assert info["success"]


@pytest.mark.parametrize("name", VARIANTS)
def test_examine_look_inventory_execute_but_are_not_listed(name):
    env = envs.make(name)
    env.reset(seed=0, options={"start_room": "kitchen"})
    before = snapshot(env.house)
    for command in ["look", "inventory", "examine fridge"]:
        assert command in env.house.executable() and command not in env.legal_actions()
        observation, reward, terminated, truncated, info = env.step(command)
        assert (reward, terminated, truncated, info["invalid_action"]) == (0.0, False, False, False)
        assert snapshot(env.house) == before and admissible(observation) == env.legal_actions()
    assert not any(c.split()[0] in ("examine", "look", "inventory") for c in env.legal_actions())
    # The fruit is out of sight in the closed fridge, then in sight.
    assert env.step("examine fruit")[4]["invalid_action"]
    env.step("open fridge")
    assert env.step("examine fridge")[0].startswith("The fridge is open and holds the fruit.")
    assert env.step("examine fruit")[0].startswith("You see nothing special about the fruit.")
    assert env.agent_turns == 7  # each of them is a turn


def test_look_inventory_and_examine_texts():
    fo, po = envs.make("text-nav"), envs.make("text-nav-po")
    for env in (fo, po):
        env.reset(seed=0, options={"start_room": "living room"})
    assert fo.step("look")[0].startswith("You are in the living room. There is a table with the stale food")
    assert po.step("look")[0].startswith("There is a table with the stale food and the fresh food on it.")
    for env in (fo, po):
        env.step("take stale food from table")
        assert env.step("inventory")[0].startswith("You are carrying the stale food.")
        assert env.step("examine table")[0].startswith("On the table you see the fresh food.")
        assert env.step("examine stale food")[0].startswith("You see nothing special about the stale food.")
        env.step("take fresh food from table")
        assert env.step("examine table")[0].startswith("There is nothing on the table.")
    assert po.step("go north")[4]["invalid_action"]


def test_walkthrough_recovers_the_food_from_anywhere():
    house = House("living room")
    for command in ["take stale food from table", "go south", "open chest", "insert stale food into chest", "close chest"]:
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
            assert env.legal_actions() == sorted(env.legal_actions())  # TextWorld sorts its list
            # The inventory line follows every step, not the first observation (the original's).
            assert ("You are carrying " in observation) == (name == "text-nav" and len(env.transcript) > 1)
            described = "There is a door" in observation or "There are doors" in observation
            assert ("You are in the " in observation) == (described and name == "text-nav")
            if name == "text-nav-po" and len(env.transcript) > 1:
                assert not any(room in observation for room in ROOMS)
            if env.done:
                break
            observation, *_ = env.step(policy.act(env, rng))


def test_fully_observed_names_room_and_inventory():
    env = envs.make("text-nav")
    observation, _ = env.reset(seed=0, options={"start_room": "living room"})
    assert observation.startswith(
        "Your objective is to put the stale food on the table in the living room into the fridge in the kitchen"
    )
    assert "You are in the living room." in observation and "You are carrying" not in observation
    assert "You are carrying nothing." in env.step("look")[0]
    observation, *_ = env.step("take stale food from table")
    assert "You take the stale food from the table." in observation
    assert "You are carrying the stale food." in observation


@pytest.mark.parametrize("name", VARIANTS)
def test_room_is_described_on_arrival_only(name):
    # TextWorld describes a room when the player enters it (or types look); any other
    # command reports its effect alone.
    env = envs.make(name)
    env.reset(seed=0, options={"start_room": "living room"})
    observation, *_ = env.step("take stale food from table")
    carried = " You are carrying the stale food." if name == "text-nav" else ""
    assert observation.split(ADMISSIBLE)[0] == "You take the stale food from the table." + carried
    observation, *_ = env.step("go west")
    assert observation.startswith("You go west. ")
    assert "There is a table with the coffee cup and the plate on it. There are doors to the east and west." in observation
    assert ("You are in the dining room." in observation) == (name == "text-nav")
    observation, *_ = env.step("fly")
    assert observation.split(ADMISSIBLE)[0] == "I did not understand that command." + carried


@pytest.mark.parametrize(
    "action",
    ["", "go up", "GO WEST", "take stale food", "open fridge", "eat stale food", "put stale food in fridge",
     "drop stale food", "examine stale food", "examine fruit", "look around", "héllo ☃", "x" * 5000],
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


def test_views_are_the_whole_history():
    # The original's data join the whole history into every prompt (dataset/utils.py:17-19),
    # fully and partially observed alike.
    fo, po = envs.make("text-nav"), envs.make("text-nav-po")
    for env in (fo, po):
        play(env, ["take stale food from table", "go west", "take plate from table"])
        assert [t.role for t in env.transcript] == [ENV, AGENT, ENV, AGENT, ENV, AGENT, ENV]
        assert env.view(env.transcript) == env.transcript
        assert env.prompt() == "".join(turn.text + "\n" for turn in env.transcript)
        assert env.prompt().startswith("Your objective") and "take stale food from table\n" in env.prompt()
    assert "You are carrying the stale food." in fo.prompt() and "You are carrying" not in po.prompt()
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
