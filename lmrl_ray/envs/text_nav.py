"""Text-Nav: carry the stale food from the living-room table to the kitchen fridge.

Our own engine for the original's TextWorld game (`llm_rl_scripts/text_nav/env/` in
LMRL-Gym, which does not run as committed). Three layers, top to bottom:

- the *house*: plain data (rooms, doors, furniture, where things lie at the start), as
  the original's `make_game.py` builds it;
- the *engine* (`House`): the rules. It lists the admissible commands together with
  their effects, so nothing is parsed: a command is valid exactly when it is one of
  them. The words are TextWorld's: `take X from Y`, `put X on table`, `insert X into
  chest|fridge`, `take X` and `drop X` (the floor), `open`, `close`, `eat`, `go DIR`;
  `examine X`, `look` and `inventory` are executable but not listed, as the original
  filters them out of TextWorld's list (env.py:34-36);
- the *environment* (`TextNavEnv`): goal, reward, observations and the view.

As in TextWorld, the room is described on arrival (and on `look`); any other command
reports only its effect. Fully observed play adds the room's name to the description
and the inventory to every observation after the first; partially observed play omits both. Every
observation ends with `Admissible commands: a, b, c`, the list that `legal_actions()`
returns, sorted as TextWorld sorts it. Both views are the whole transcript.

    env = lmrl_ray.envs.make("text-nav")
    observation, info = env.reset(seed=0, options={"start_room": "kitchen"})
    observation, reward, terminated, truncated, info = env.step("go east")
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, Callable, Sequence

import numpy as np

from lmrl_ray.envs.base import ScriptedPolicy, TextEnv, UniformLegalPolicy, whole_transcript

__all__ = [
    "DOORS",
    "FURNITURE",
    "House",
    "ROOMS",
    "START_ITEMS",
    "TextNavBehaviourPolicy",
    "TextNavEnv",
    "UniformLegalPolicy",
    "WalkthroughPolicy",
    "optimal_command",
]

# -- The house (data only) ---------------------------------------------------------

ROOMS = ("bedroom", "office", "bathroom", "living room", "kitchen", "dining room", "garden", "backyard")
DIRECTIONS = ("north", "south", "east", "west")
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}

# (room, direction, neighbour): the neighbour lies in that direction of the room, as
# TASKS.md writes them ("bedroom-west-living room": the living room is west of the
# bedroom; make_game.py:42-49). Each door is walked both ways.
DOORS = (
    ("bedroom", "west", "living room"),
    ("living room", "west", "dining room"),
    ("dining room", "west", "kitchen"),
    ("kitchen", "north", "garden"),
    ("living room", "south", "office"),
    ("office", "east", "bathroom"),
    ("bedroom", "south", "bathroom"),
    ("kitchen", "west", "backyard"),
)


@dataclass(frozen=True)
class Furniture:
    """A supporter (things go *on* it, always open) or a container (things go *in* it;
    it opens and closes)."""

    name: str
    container: bool


TABLE = Furniture("table", container=False)
CHEST = Furniture("chest", container=True)
FRIDGE = Furniture("fridge", container=True)
# Every room's floor: where `drop X` leaves a thing and `take X` picks it up again.
FLOOR = Furniture("floor", container=False)

# Room -> its furniture (make_game.py:52-64). Containers start closed.
FURNITURE = {
    "bedroom": (TABLE,),
    "living room": (TABLE,),
    "dining room": (TABLE,),
    "office": (CHEST,),
    "kitchen": (FRIDGE,),
}

STALE_FOOD = "stale food"
FRIDGE_KEY = ("kitchen", "fridge")
# The three things of TextWorld's food type "f" (make_game.py:66-72): `eat X` once carried.
EDIBLE = frozenset({STALE_FOOD, "fresh food", "fruit"})

# Where the portable things lie at the start, (room, furniture name) -> things, as
# make_game.py:74-80 places them. Fixed: only the start room varies between episodes.
START_ITEMS = {
    ("living room", "table"): (STALE_FOOD, "fresh food"),
    ("bedroom", "table"): ("bowl",),
    ("dining room", "table"): ("coffee cup", "plate"),
    ("office", "chest"): ("utensils",),
    ("kitchen", "fridge"): ("fruit",),
}

# The original's objective (make_game.py:136-137), which leaves out that the fridge
# must be closed; its win event needs it (make_game.py:93-97), so we say so.
GOAL = (
    "Your objective is to put the stale food on the table in the living room into the fridge "
    "in the kitchen and close the fridge."
)


def exits(room: str) -> dict[str, str]:
    """Direction -> neighbouring room, in the order of DIRECTIONS."""
    found = {}
    for a, direction, b in DOORS:
        if a == room:
            found[direction] = b
        if b == room:
            found[OPPOSITE[direction]] = a
    return {d: found[d] for d in DIRECTIONS if d in found}


@lru_cache(maxsize=None)
def first_step(room: str, target: str) -> str | None:
    """The direction of the first move on a shortest path from `room` to `target`
    (None when already there). Breadth-first search over the doors; ties go to the
    earlier direction in DIRECTIONS, so the walkthrough is deterministic."""
    if room == target:
        return None
    first = exits(room)
    queue = deque((n, d) for d, n in first.items())
    seen = {room, *first.values()}
    while queue:
        here, direction = queue.popleft()
        if here == target:
            return direction
        for neighbour in exits(here).values():
            if neighbour not in seen:
                seen.add(neighbour)
                queue.append((neighbour, direction))
    raise ValueError(f"text-nav: no path from {room} to {target}")


# -- The engine (rules) ------------------------------------------------------------


def _things(items: Sequence[str]) -> str:
    """'the a', 'the a and the b', 'the a, the b and the c'."""
    named = [f"the {item}" for item in items]
    return named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]


Effect = Callable[[], str]


class House:
    """The state of one game and its rules.

    `commands()` maps every admissible (listed) command to its effect and
    `unlisted_commands()` the executable ones the list leaves out; `do(command)` applies
    either and returns the text that reports it. Furniture is keyed by (room, name),
    since three rooms have a table and every room a floor.
    """

    def __init__(self, start_room: str, *, partially_observed: bool = False):
        self.room = start_room
        self.partially_observed = partially_observed
        self.inventory: list[str] = []
        self.pieces = {(room, piece.name): piece for room, pieces in FURNITURE.items() for piece in pieces}
        self.pieces.update({(room, FLOOR.name): FLOOR for room in ROOMS})
        self.contents = {key: list(START_ITEMS.get(key, ())) for key in self.pieces}
        self.open: set[tuple[str, str]] = set()
        self.stale_food_eaten = False

    # -- Outcome ------------------------------------------------------------------

    @property
    def won(self) -> bool:
        return STALE_FOOD in self.contents[FRIDGE_KEY] and self.is_closed(FRIDGE_KEY)

    @property
    def lost(self) -> bool:
        return self.stale_food_eaten

    @property
    def over(self) -> bool:
        return self.won or self.lost

    def where_is(self, item: str) -> tuple[str, str] | None:
        """The (room, furniture) holding `item` (the floor counts); None when carried or eaten."""
        return next((key for key, items in self.contents.items() if item in items), None)

    def is_closed(self, key: tuple[str, str]) -> bool:
        """Whether the furniture `key` = (room, name) is a closed container."""
        return self.pieces[key].container and key not in self.open

    # -- Commands -----------------------------------------------------------------

    def _reachable_here(self) -> list[Furniture]:
        """This room's furniture and floor whose things can be seen, taken and added."""
        pieces = (*FURNITURE.get(self.room, ()), FLOOR)
        return [piece for piece in pieces if not self.is_closed((self.room, piece.name))]

    def commands(self) -> dict[str, Effect]:
        """Admissible command -> effect: what the observation lists, sorted (TextWorld
        sorts its list, tw_inform7.py in microsoft/TextWorld). Empty once the game is over."""
        if self.over:
            return {}
        found: dict[str, Effect] = {}
        for direction, neighbour in exits(self.room).items():
            found[f"go {direction}"] = partial(self._go, direction, neighbour)
        for piece in self._reachable_here():
            for item in self.contents[self.room, piece.name]:
                command = f"take {item}" if piece is FLOOR else f"take {item} from {piece.name}"
                found[command] = partial(self._take, item, piece)
        for item in self.inventory:
            found[f"drop {item}"] = partial(self._put, item, FLOOR)
            for piece in self._reachable_here():
                if piece is not FLOOR:
                    command = f"insert {item} into {piece.name}" if piece.container else f"put {item} on {piece.name}"
                    found[command] = partial(self._put, item, piece)
            if item in EDIBLE:
                found[f"eat {item}"] = partial(self._eat, item)
        for piece in FURNITURE.get(self.room, ()):
            if piece.container:
                verb = "close" if (self.room, piece.name) in self.open else "open"
                found[f"{verb} {piece.name}"] = partial(self._open_or_close, verb, piece)
        return dict(sorted(found.items()))

    def unlisted_commands(self) -> dict[str, Effect]:
        """`look`, `inventory` and `examine X` for what is in sight or carried: the
        commands that TextWorld admits and the original leaves off the list
        (env.py:34-36). They change nothing."""
        if self.over:
            return {}
        found: dict[str, Effect] = {"look": self.describe, "inventory": self.carrying}
        for piece in FURNITURE.get(self.room, ()):
            found[f"examine {piece.name}"] = partial(self._examine_piece, piece)
        in_sight = [item for piece in self._reachable_here() for item in self.contents[self.room, piece.name]]
        for item in in_sight + self.inventory:
            found[f"examine {item}"] = partial(self._examine_item, item)
        return found

    def executable(self) -> dict[str, Effect]:
        """Every command that does something now: the listed ones and the unlisted."""
        return {**self.commands(), **self.unlisted_commands()}

    def do(self, command: str) -> str:
        """Apply an executable `command`; returns the text that reports it."""
        return self.executable()[command]()

    def _go(self, direction: str, neighbour: str) -> str:
        self.room = neighbour
        return f"You go {direction}. {self.describe()}"

    def _take(self, item: str, piece: Furniture) -> str:
        self.contents[self.room, piece.name].remove(item)
        self.inventory.append(item)
        if piece is FLOOR:
            return f"You pick up the {item} from the floor."
        return f"You take the {item} from the {piece.name}."

    def _put(self, item: str, piece: Furniture) -> str:
        self.inventory.remove(item)
        self.contents[self.room, piece.name].append(item)
        if piece is FLOOR:
            return f"You drop the {item} on the floor."
        return f"You put the {item} {'into' if piece.container else 'on'} the {piece.name}."

    def _open_or_close(self, verb: str, piece: Furniture) -> str:
        key = (self.room, piece.name)
        if verb == "close":
            self.open.discard(key)
            return f"You close the {piece.name}."
        self.open.add(key)
        inside = self.contents[key]
        return f"You open the {piece.name}, revealing {_things(inside)}." if inside else f"You open the {piece.name}. It is empty."

    def _eat(self, item: str) -> str:
        self.inventory.remove(item)
        if item == STALE_FOOD:
            self.stale_food_eaten = True
            return "You eat the stale food and feel sick. You failed."
        return f"You eat the {item}."

    def _examine_piece(self, piece: Furniture) -> str:
        key = (self.room, piece.name)
        items = self.contents[key]
        if not piece.container:
            return f"On the {piece.name} you see {_things(items)}." if items else f"There is nothing on the {piece.name}."
        if self.is_closed(key):
            return f"The {piece.name} is closed."
        return f"The {piece.name} is open and holds {_things(items)}." if items else f"The {piece.name} is open and empty."

    @staticmethod
    def _examine_item(item: str) -> str:
        return f"You see nothing special about the {item}."

    # -- Description --------------------------------------------------------------

    def describe(self) -> str:
        """The room as one sees it on arrival: furniture and what is on or in it, the
        floor, the doors; its name only when fully observed."""
        parts = [] if self.partially_observed else [f"You are in the {self.room}."]
        for piece in FURNITURE.get(self.room, ()):
            parts.append(self._describe_piece(piece))
        on_floor = self.contents[self.room, FLOOR.name]
        if on_floor:
            parts.append(f"You see {_things(on_floor)} on the floor.")
        directions = list(exits(self.room))
        if len(directions) == 1:
            parts.append(f"There is a door to the {directions[0]}.")
        else:
            parts.append(f"There are doors to the {', '.join(directions[:-1])} and {directions[-1]}.")
        return " ".join(parts)

    def carrying(self) -> str:
        """The inventory sentence (what `inventory` says; fully observed play adds it to
        every observation after a step, as the original's env.py:46-49 does)."""
        return f"You are carrying {_things(self.inventory) if self.inventory else 'nothing'}."

    def _describe_piece(self, piece: Furniture) -> str:
        items = self.contents[self.room, piece.name]
        if self.is_closed((self.room, piece.name)):
            return f"There is a closed {piece.name}."
        if piece.container:
            inside = f"with {_things(items)} in it" if items else "which is empty"
            return f"There is an open {piece.name} {inside}."
        return f"There is a table with {_things(items)} on it." if items else "There is an empty table."


# -- The environment ---------------------------------------------------------------


class TextNavEnv(TextEnv):
    """Put the stale food in the kitchen fridge and close it: reward 1, success.

    Settings: `partially_observed` (omit the room name and the inventory), `max_steps`
    (the turn cap, 15 as in the paper's data). Option `start_room` pins the start room;
    by default it is drawn uniformly. Eating the stale food ends the episode as a
    failure. A command that is not executable changes nothing and earns 0. The policy
    reads the whole transcript in both variants, as the original's data do
    (dataset/utils.py:17-19 joins the whole history into every prompt).
    """

    task = "text-nav"
    option_names = ("start_room",)
    view = staticmethod(whole_transcript)

    def __init__(self, *, partially_observed: bool = False, max_steps: int = 15, render_mode: str | None = None):
        super().__init__(max_agent_turns=max_steps, render_mode=render_mode)
        self.partially_observed = partially_observed
        self.house: House | None = None

    def _reset(self, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        start_room = options.get("start_room")
        if start_room is None:
            start_room = self._rng_choice(ROOMS)
        elif start_room not in ROOMS:
            raise ValueError(f"{self.task}: unknown start_room {start_room!r}; valid rooms: {', '.join(ROOMS)}")
        self.house = House(start_room, partially_observed=self.partially_observed)
        # The first observation has no inventory line: the original adds it after steps only
        # (env.py:46-49 in `_step`, not in `_reset`).
        return self._observation(f"{GOAL} {self.house.describe()}", carrying=False), {"start_room": start_room}

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        effect = self.house.executable().get(action)
        if effect is None:
            return self._observation("I did not understand that command."), 0.0, False, {"invalid_action": True}
        result = effect()
        info: dict[str, Any] = {}
        if self.house.won:
            result += " The stale food is in the closed fridge. You succeeded."
        if self.house.over:
            info["success"] = self.house.won
        return self._observation(result), float(self.house.won), self.house.over, info

    def _observation(self, lead: str, carrying: bool = True) -> str:
        parts = [lead, self.house.carrying()] if carrying and not self.partially_observed else [lead]
        commands = self.legal_actions()
        parts.append(f"Admissible commands: {', '.join(commands) if commands else 'none'}")
        return " ".join(parts)

    def legal_actions(self) -> list[str] | None:
        return list(self.house.commands()) if self.house is not None else None


# -- Scripted policies -------------------------------------------------------------


def optimal_command(house: House) -> str:
    """The next command of a shortest walkthrough from the current state, in the
    original's words (make_game.py:108-117): fetch the stale food (opening its
    container if needed), carry it to the kitchen, open the fridge, insert it, close
    the fridge."""
    if STALE_FOOD in house.inventory:
        if house.room != "kitchen":
            return f"go {first_step(house.room, 'kitchen')}"
        return "open fridge" if house.is_closed(FRIDGE_KEY) else "insert stale food into fridge"
    room, piece = house.where_is(STALE_FOOD)
    if house.room != room:
        return f"go {first_step(house.room, room)}"
    if (room, piece) == FRIDGE_KEY:
        return "close fridge"
    if house.is_closed((room, piece)):
        return f"open {piece}"
    return "take stale food" if piece == FLOOR.name else f"take stale food from {piece}"


class WalkthroughPolicy(ScriptedPolicy):
    """The expert: the optimal walkthrough from any state (reads the engine state)."""

    def act(self, env: TextNavEnv, rng: np.random.Generator) -> str:
        return optimal_command(env.house)


class TextNavBehaviourPolicy(ScriptedPolicy):
    """The data mixture of TASKS.md: two behaviour policies, each optimal in half of the
    rooms and uniformly random among the admissible commands elsewhere; every episode
    draws one of the two. In its own rooms a policy still acts randomly with
    probability `random_prob` (reads the engine state).

    The halves are the original's (dataset/collect_data.py:65-68): the east-west row
    from the bedroom to the kitchen, which holds the whole living room -> kitchen
    route, and the rooms off it (office, bathroom, garden, backyard). The original
    draws the row's policy a quarter of the time and acts optimally in its rooms only
    one time in ten (collect_data.py:42); its script, run on our engine, lands far
    below the paper's 0.26, so we draw the halves evenly and tune `random_prob`. No
    split of the rooms reaches 0.26 with `random_prob=0`: a policy that is random
    anywhere on the route almost never succeeds in 15 turns, one that owns the route
    almost always does. With `random_prob=0.33` the mixture succeeds in 0.261 of 20,000
    episodes (seed 0) in 12.5 mean turns (paper: 0.26, 12.2); the original's own mixture,
    run on this engine, succeeds in 0.003.
    """

    HALVES = (
        frozenset({"bedroom", "living room", "dining room", "kitchen"}),
        frozenset({"office", "bathroom", "garden", "backyard"}),
    )

    def __init__(self, random_prob: float = 0.33):
        if not 0.0 <= random_prob <= 1.0:
            raise ValueError(f"text-nav: random_prob must lie in [0, 1], got {random_prob}")
        self.random_prob = random_prob
        self.optimal_rooms = self.HALVES[0]

    def reset(self, env: TextNavEnv, rng: np.random.Generator) -> None:
        self.optimal_rooms = self.HALVES[int(rng.integers(len(self.HALVES)))]

    def act(self, env: TextNavEnv, rng: np.random.Generator) -> str:
        if env.house.room in self.optimal_rooms and rng.random() >= self.random_prob:
            return optimal_command(env.house)
        actions = env.legal_actions()
        return actions[int(rng.integers(len(actions)))]
