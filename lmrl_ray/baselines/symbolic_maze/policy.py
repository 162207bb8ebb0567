"""Symbolic Maze policies as tables (the greedy action in each open cell), the
shortest-path table, and their evaluation from the text task's evaluation starts,
summarised like a text evaluation. A table is the whole policy: it is saved and
replayed without pickled weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lmrl_ray.baselines.symbolic_maze.env import (
    CELL_INDEX,
    NUM_CELLS,
    TASK_NAME,
    SymbolicMazeEnv,
    one_hot,
)
from lmrl_ray.envs.maze import ACTIONS, GOAL, OPEN, WALLS, distances, move
from lmrl_ray.envs.protocol import evaluation_options, scores
from lmrl_ray.stats import summarize


@dataclass(frozen=True)
class GreedyPolicy:
    """A symbolic Maze policy as a table: the greedy action in every open cell.

    The state space is the 26 open cells, so a trained network's greedy choices are
    exactly this table (the network is evaluated on all 26 one-hot observations once).
    """

    actions: tuple[int, ...]
    """(NUM_CELLS,) index into `maze.ACTIONS` for each cell of `maze.OPEN`, in order."""

    def __post_init__(self):
        if len(self.actions) != NUM_CELLS or any(a not in range(len(ACTIONS)) for a in self.actions):
            raise ValueError(f"a greedy policy has one action in [0, {len(ACTIONS)}) for each of {NUM_CELLS} cells")

    def __call__(self, observation: np.ndarray) -> int:
        return self.actions[int(np.argmax(observation))]

    def to_text(self) -> str:
        """The table drawn on the grid: arrows on open cells, G on the goal, # on walls."""
        arrows = "^v<>"
        return "\n".join(
            "".join("#" if WALLS[r, c] else "G" if (r, c) == GOAL else arrows[self.actions[CELL_INDEX[(r, c)]]]
                    for c in range(WALLS.shape[1]))
            for r in range(WALLS.shape[0])
        )


def optimal_policy() -> GreedyPolicy:
    """A shortest-path policy (the text task's expert, `maze.ShortestPathPolicy`)."""
    dist = distances()
    return GreedyPolicy(tuple(min(range(len(ACTIONS)), key=lambda a: dist[move(cell, ACTIONS[a])]) for cell in OPEN))


def evaluate_symbolic(policy: Callable[[np.ndarray], int], episodes: int, seed: int = 0) -> dict:
    """Play `episodes` episodes of `policy` (observation -> action) on `SymbolicMazeEnv`
    from the text Maze's evaluation starts and seeds (`evaluation_options("maze", ...)`).

    Returns mean_return, ci95 (95% Student-t half-width), std_return, success_rate,
    mean_turns, normalised_paper and normalised_ours (the Maze task's constants), episodes,
    and move_accuracy: the share of the 25 starts where the policy's move begins a
    shortest path to the goal (the text Maze's metric, `envs.protocol.move_probes`).
    """
    seeds, options = evaluation_options(TASK_NAME, episodes, seed)
    env = SymbolicMazeEnv()
    returns, successes, turns = [], [], []
    for s, o in zip(seeds, options):
        observation, _ = env.reset(seed=s, options=o)
        total, done, info = 0.0, False, {}
        while not done:
            observation, reward, terminated, truncated, info = env.step(policy(observation))
            total += reward
            done = terminated or truncated
        returns.append(total)
        successes.append(info["success"])
        turns.append(env.moves)
    dist = distances()
    best = [cell for cell in OPEN if dist[cell] > 0
            and dist[move(cell, ACTIONS[policy(one_hot(cell))])] == dist[cell] - 1]
    accuracy = len(best) / sum(dist[cell] > 0 for cell in OPEN)
    return {**scores(TASK_NAME, summarize(returns, successes, turns)), "move_accuracy": accuracy}
