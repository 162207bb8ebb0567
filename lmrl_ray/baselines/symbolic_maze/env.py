"""The fully observed Maze without text: the text task's grid, moves and rewards
(`envs/maze.py`) with the position as a one-hot vector over the open cells and the four
moves as Discrete(4), so RLlib can solve it and give the paper's upper bound.

Optimal play: from each start the shortest path returns -(moves - 1) (the move that
reaches the goal is rewarded 0); its mean over the 25 starts, which the evaluation visits
in turn, is `OPTIMAL_MEAN_RETURN` = -6.84, the Maze's normalisation maximum (100).
"""

from __future__ import annotations

import operator
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from lmrl_ray.envs.maze import (
    ACTIONS,
    FAILURE_REWARD,
    GOAL,
    GOAL_REWARD,
    MAX_MOVES,
    OPEN,
    STARTS,
    STEP_REWARD,
    distances,
    move,
)

TASK_NAME = "maze"
"""The registered text task whose normalisation and evaluation starts the rows use."""
NUM_CELLS = len(OPEN)
CELL_INDEX = {cell: i for i, cell in enumerate(OPEN)}

# Shortest-path return from each start: -1 for every move but the last (GOAL_REWARD).
OPTIMAL_RETURNS = {start: STEP_REWARD * (distances()[start] - 1) + GOAL_REWARD for start in STARTS}
OPTIMAL_MEAN_RETURN = float(np.mean([OPTIMAL_RETURNS[s] for s in STARTS]))


def one_hot(cell: tuple[int, int]) -> np.ndarray:
    """The observation of `cell`: (NUM_CELLS,) float32, 1 at the cell's index in `OPEN`."""
    obs = np.zeros(NUM_CELLS, dtype=np.float32)
    obs[CELL_INDEX[cell]] = 1.0
    return obs


def cell_of(observation: np.ndarray) -> tuple[int, int]:
    """The cell a one-hot observation encodes."""
    return OPEN[int(np.argmax(observation))]


class SymbolicMazeEnv(gymnasium.Env):
    """The fully observed Maze without text.

    Observation: one-hot float32 over `maze.OPEN` (Box). Action: Discrete(4), the index
    into `maze.ACTIONS` (up, down, left, right). Transition `maze.move`; reward -1 a move
    and 0 for the move that reaches the goal, which terminates. The cap is the text
    task's: `max_moves` moves are allowed and the next action is not played but answered
    with -1 (the text task's `Failure`) and truncates, so a failed episode returns
    -(max_moves + 1). Every action is valid: the text task's invalid-action penalty has
    no symbolic counterpart.

    RLlib builds it from its class with `env_config` (`config`): {"max_moves": int}.
    """

    metadata = {"render_modes": []}
    option_names = ("start",)

    def __init__(self, config: dict | None = None):
        config = dict(config or {})
        unknown = sorted(set(config) - {"max_moves"})
        if unknown:
            raise ValueError(f"SymbolicMazeEnv: unknown setting(s) {', '.join(unknown)}; valid settings: max_moves")
        self.max_moves = int(config.get("max_moves", MAX_MOVES))
        if self.max_moves < 1:
            raise ValueError(f"SymbolicMazeEnv: max_moves must be at least 1, got {self.max_moves}")
        self.observation_space = spaces.Box(0.0, 1.0, (NUM_CELLS,), np.float32)
        self.action_space = spaces.Discrete(len(ACTIONS))
        self.position = STARTS[0]
        self.moves = 0
        self.done = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            raise ValueError(f"SymbolicMazeEnv: unknown option(s) {', '.join(unknown)}; valid options: start")
        if "start" in options:
            start = tuple(options["start"])
            if start not in STARTS:
                raise ValueError(f"SymbolicMazeEnv: start {start} is not an open cell other than the goal; valid starts: {STARTS}")
        else:
            # The same draw as the text environment's (`TextEnv._rng_choice`).
            start = STARTS[int(self.np_random.integers(len(STARTS)))]
        self.position, self.moves, self.done = start, 0, False
        return one_hot(start), {"position": start}

    def step(self, action):
        if self.done:
            raise RuntimeError("SymbolicMazeEnv: the episode is over; call reset() first")
        try:
            a = operator.index(action)  # int, numpy integer or 0-d integer array (RLlib's)
        except TypeError:
            a = -1
        if not 0 <= a < len(ACTIONS):
            raise ValueError(f"SymbolicMazeEnv: an action is an integer in [0, {len(ACTIONS)}), got {action!r}")
        if self.moves >= self.max_moves:  # the text task's Failure turn: the action is not played
            self.done = True
            return one_hot(self.position), FAILURE_REWARD, False, True, {"position": self.position, "success": False}
        self.position = move(self.position, ACTIONS[a])
        self.moves += 1
        terminated = self.position == GOAL
        self.done = terminated
        info: dict[str, Any] = {"position": self.position}
        if terminated:
            info["success"] = True
        reward = GOAL_REWARD if terminated else STEP_REWARD
        return one_hot(self.position), float(reward), terminated, False, info
