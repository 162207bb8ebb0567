"""Maze, fully and partially observed (LMRL-Gym; ../shared/TASKS.md).

A 10 x 13 grid with 26 open cells; the goal is fixed at (8, 6) and every other open cell
is a start. Actions are exactly `move up|down|left|right`; a move into a wall leaves the
position. Reward -1 per move, 0 for the move that reaches the goal (text `Success`),
-4 for an invalid action. As in the source, 100 agent turns (moves and invalid actions
alike) are allowed and the 101st action, whatever it says, is answered with `Failure`
and -1 (llm_rl_scripts/maze/env/env.py:164-165), so an episode that never arrives
returns -101, the paper's minimum.

Fully observed, the policy sees only the current observation, which states the goal,
the position and the walls around it. Partially observed, an observation is only the
walls sentence and the policy sees the last 40 turns, invalid actions included. (The
source's environment instead restarts the history from the new observation after an
invalid action, env.py:179-180: a shortcut that is harmless in the fully observed task,
whose view is one observation anyway, but erases what a partially observed agent knows
of its position because of one bad word. We keep the window.)
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache
from typing import Any

import numpy as np

from lmrl_ray.envs.base import (
    ScriptedPolicy,
    TextEnv,
    UniformLegalPolicy,
    current_observation,
    last_items,
)

LAYOUT = """\
1111111111111
1000001000001
1110111110111
1110111110111
1110111110111
1110000000111
1111110111111
1111110111111
1111110111111
1111111111111"""
WALLS = np.array([[c == "1" for c in row] for row in LAYOUT.splitlines()])  # (rows, cols)
GOAL = (8, 6)
OPEN = [(r, c) for r in range(WALLS.shape[0]) for c in range(WALLS.shape[1]) if not WALLS[r, c]]
STARTS = [cell for cell in OPEN if cell != GOAL]

# Action text -> (d_row, d_col); up is row - 1, right is col + 1.
MOVES = {"move up": (-1, 0), "move down": (1, 0), "move left": (0, -1), "move right": (0, 1)}
ACTIONS = list(MOVES)

STEP_REWARD = -1.0
GOAL_REWARD = 0.0
INVALID_REWARD = -4.0
FAILURE_REWARD = -1.0  # the action after the last allowed turn, whatever it says
MAX_MOVES = 100
PO_WINDOW = 40

# Order and wording of the walls sentence, as in the source: right, left, above, below.
_WALL_PHRASES = [((0, 1), "to your right"), ((0, -1), "to your left"), ((-1, 0), "above you"), ((1, 0), "below you")]


def move(cell: tuple[int, int], action: str) -> tuple[int, int]:
    """The cell after `action`; a move into a wall stays put."""
    dr, dc = MOVES[action]
    nxt = (cell[0] + dr, cell[1] + dc)
    return cell if WALLS[nxt] else nxt


def walls_sentence(cell: tuple[int, int]) -> str:
    near = [phrase for (dr, dc), phrase in _WALL_PHRASES if WALLS[cell[0] + dr, cell[1] + dc]]
    if not near:
        return "There are no walls near you."
    if len(near) == 1:
        return f"There is a wall {near[0]}."
    return f"There are walls {', '.join(near)}."


def _number(n: int) -> str:
    """The source writes a two-digit number with its digits apart: 10 -> '1 0'."""
    return " ".join(str(n))


def describe(cell: tuple[int, int], partially_observed: bool) -> str:
    if partially_observed:
        return walls_sentence(cell)
    return (
        f"The goal is at position {_number(GOAL[0])}, {_number(GOAL[1])}. "
        f"Your current position is at position {_number(cell[0])}, {_number(cell[1])}. "
        f"{walls_sentence(cell)}"
    )


@lru_cache(maxsize=None)
def distances(target: tuple[int, int] = GOAL, region: frozenset | None = None) -> dict[tuple[int, int], int]:
    """Moves from every cell (of `region`, if given) to `target`, by breadth-first search."""
    dist = {target: 0}
    queue = deque([target])
    while queue:
        cell = queue.popleft()
        for action in ACTIONS:
            nxt = move(cell, action)
            if nxt not in dist and (region is None or nxt in region):
                dist[nxt] = dist[cell] + 1
                queue.append(nxt)
    return dist


class MazeEnv(TextEnv):
    option_names = ("start",)

    def __init__(self, *, partially_observed: bool = False, max_moves: int = MAX_MOVES, render_mode: str | None = None):
        """
        partially_observed: observations are the walls sentence only, the view the last 40 turns.
        max_moves: agent turns allowed (the source's `max_steps`, 100), invalid ones
            included; the next action is answered with `Failure` and -1, so an episode
            lasts at most max_moves + 1 agent turns.
        """
        if max_moves < 1:
            raise ValueError(f"maze: max_moves must be at least 1, got {max_moves}")
        super().__init__(max_agent_turns=max_moves + 1, render_mode=render_mode)
        self.task = "maze-po" if partially_observed else "maze"  # one class, two tasks
        self.max_moves = max_moves
        self.partially_observed = partially_observed
        # What the policy sees: the current state, or the last 40 turns when partially observed.
        self.view = last_items(PO_WINDOW) if partially_observed else current_observation
        self.position = STARTS[0]

    def _reset(self, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if "start" in options:
            start = tuple(options["start"])
            if start not in STARTS:
                raise ValueError(f"{self.task}: start {start} is not an open cell other than the goal; valid starts: {STARTS}")
        else:
            start = self._rng_choice(STARTS)
        self.position = start
        return describe(start, self.partially_observed), {"position": start}

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        if self.agent_turns >= self.max_moves:
            # The source checks the step count before it reads the action (env.py:164):
            # the action is not played, even one that would reach the goal. The base
            # class ends the episode here, as truncated (the turn cap).
            return "Failure", FAILURE_REWARD, False, {"position": self.position}
        if action not in MOVES:
            return describe(self.position, self.partially_observed), INVALID_REWARD, False, {"invalid_action": True}
        self.position = move(self.position, action)
        info = {"position": self.position}
        if self.position == GOAL:
            return "Success", GOAL_REWARD, True, {**info, "success": True}
        return describe(self.position, self.partially_observed), STEP_REWARD, False, info

    def legal_actions(self) -> list[str]:
        return list(ACTIONS)


class ShortestPathPolicy(ScriptedPolicy):
    """The fully observed expert: a shortest path to the goal (reads the position)."""

    def act(self, env: MazeEnv, rng: np.random.Generator) -> str:
        dist = distances()
        return min(ACTIONS, key=lambda a: dist[move(env.position, a)])


# The three sub-mazes of the data: the left and right branches and the centre with the goal.
SUB_MAZES = [
    frozenset([(1, c) for c in range(1, 6)] + [(r, 3) for r in (2, 3, 4)]),
    frozenset([(1, c) for c in range(7, 12)] + [(r, 9) for r in (2, 3, 4)]),
    frozenset([(5, c) for c in range(3, 10)] + [(r, 6) for r in (6, 7, 8)]),
]
assert sorted(set().union(*SUB_MAZES)) == sorted(OPEN)
# Each branch's data may also step onto the centre cell at its mouth: trajectories from
# a branch and from the centre then share a state, which is what trajectory stitching
# needs (without it the move out of a branch never appears in the data, and no offline
# method could learn it). A branch trajectory still cannot reach the goal.
JUNCTIONS = [frozenset({(5, 3)}), frozenset({(5, 9)}), frozenset()]


def behaviour_region(start: tuple[int, int]) -> frozenset:
    """The cells a behaviour trajectory from `start` may visit: its sub-maze and its junction."""
    home = next(i for i, region in enumerate(SUB_MAZES) if start in region)
    return SUB_MAZES[home] | JUNCTIONS[home]


class MazeBehaviourPolicy(ScriptedPolicy):
    """The data policy: `solver_fraction` of actions from a solver, the rest random, and
    every trajectory stays inside the sub-maze it starts in (a branch's may also step
    onto the centre cell at its mouth, where stitching happens), so only those that
    start in the goal's part can succeed (credit assignment and stitching, as in the paper).

    The solver heads for the cell of its region nearest the goal along paths inside the
    region; outside the goal's part that is the centre cell at the branch's mouth, (5, 3)
    or (5, 9), where it then stays: a dead end, which makes it suboptimal.
    Moves that would leave the sub-maze are replaced by a random move that stays in it.
    """

    def __init__(self, solver_fraction: float = 0.15):
        self.solver_fraction = solver_fraction

    def reset(self, env: MazeEnv, rng: np.random.Generator) -> None:
        self.region = behaviour_region(env.position)
        to_goal = distances()
        self.target = min(self.region, key=lambda cell: to_goal[cell])
        self.dist = distances(self.target, self.region)

    def act(self, env: MazeEnv, rng: np.random.Generator) -> str:
        inside = [a for a in ACTIONS if move(env.position, a) in self.region]
        if rng.random() < self.solver_fraction:
            return min(inside, key=lambda a: self.dist[move(env.position, a)])
        return inside[int(rng.integers(len(inside)))]


class BeliefPolicy(ScriptedPolicy):
    """The partially observed expert. It reads only its own moves and the walls sentences:
    it keeps the set of cells consistent with everything seen (the belief) and picks the
    move that minimises the expected distance to the goal after `lookahead` moves, taking
    the expectation over the observations each move can bring (expectimax)."""

    def __init__(self, lookahead: int = 3):
        self.lookahead = lookahead

    def reset(self, env: MazeEnv, rng: np.random.Generator) -> None:
        first = env.transcript[0].text
        self.belief = frozenset(c for c in STARTS if walls_sentence(c) == first)
        self.seen = 1

    def _update(self, env: MazeEnv) -> None:
        # Fold in every (move, observation) pair the transcript gained since the last call.
        turns = env.transcript
        while self.seen + 1 < len(turns):
            action, observation = turns[self.seen].text, turns[self.seen + 1].text
            if action in MOVES:
                moved = {move(c, action) for c in self.belief}
                self.belief = frozenset(c for c in moved if walls_sentence(c) == observation) or frozenset(moved)
            self.seen += 2

    def act(self, env: MazeEnv, rng: np.random.Generator) -> str:
        self._update(env)
        return min(ACTIONS, key=lambda a: _expected_cost(self.belief, a, self.lookahead))


@lru_cache(maxsize=200_000)
def _expected_cost(belief: frozenset, action: str, depth: int) -> float:
    """Expected moves to the goal if `action` is taken from `belief`, then the best moves
    for `depth - 1` more turns, then the remaining shortest-path distance."""
    dist = distances()
    outcomes: dict[str, set] = {}
    for cell in belief:
        nxt = move(cell, action)
        key = "Success" if nxt == GOAL else walls_sentence(nxt)
        outcomes.setdefault(key, set()).add(nxt)
    total = 0.0
    for key, cells in outcomes.items():
        weight = len(cells) / len(belief)
        if key == "Success":
            continue
        branch = frozenset(cells)
        if depth <= 1:
            rest = float(np.mean([dist[c] for c in branch]))
        else:
            rest = min(_expected_cost(branch, a, depth - 1) for a in ACTIONS)
        total += weight * (1.0 + rest)
    return total


__all__ = [
    "ACTIONS",
    "BeliefPolicy",
    "FAILURE_REWARD",
    "GOAL",
    "MAX_MOVES",
    "MazeBehaviourPolicy",
    "MazeEnv",
    "ShortestPathPolicy",
    "STARTS",
    "SUB_MAZES",
    "UniformLegalPolicy",
    "describe",
    "walls_sentence",
]
