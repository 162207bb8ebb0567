"""The symbolic (non-text) Maze solved with RLlib: the paper's upper bound (LMRL-Gym, appendix G).

    row = run_symbolic_cell("cql", seed=0, data="data/maze", eval_episodes=100, out="runs/sym")

`env` (the environment and optimal returns), `data` (text stores as transitions) and
`policy` (greedy tables, evaluation) need no RLlib; `cql` (discrete CQL on RLlib's DQN)
and `train` (configs, training, the benchmark row) import it, so this package imports
them only when `run_symbolic_cell` is called.
"""

from __future__ import annotations

import os

from lmrl_ray.baselines.symbolic_maze.data import (
    EPS_ID,
    NEXT_OBS,
    OBS,
    REWARDS,
    TERMINATEDS,
    TRANSITION_SCHEMA,
    TRANSITIONS_FILE,
    TRUNCATEDS,
    InvalidActionError,
    SymbolicData,
    SymbolicDataError,
    T,
    convert_store,
    episode_transitions,
    open_symbolic,
)
from lmrl_ray.baselines.symbolic_maze.env import (
    NUM_CELLS,
    OPTIMAL_MEAN_RETURN,
    OPTIMAL_RETURNS,
    SymbolicMazeEnv,
    cell_of,
    one_hot,
)
from lmrl_ray.baselines.symbolic_maze.policy import (
    GreedyPolicy,
    evaluate_symbolic,
    optimal_policy,
)


def run_symbolic_cell(algo: str, seed: int, *, data: str | os.PathLike | None, eval_episodes: int,
                      out: str | os.PathLike | None, **knobs) -> dict:
    """One benchmark row: `train.run_symbolic_cell`, imported (with RLlib) on the first call."""
    from lmrl_ray.baselines.symbolic_maze.train import run_symbolic_cell as run

    return run(algo, seed, data=data, eval_episodes=eval_episodes, out=out, **knobs)


__all__ = [
    "EPS_ID",
    "NEXT_OBS",
    "NUM_CELLS",
    "OBS",
    "OPTIMAL_MEAN_RETURN",
    "OPTIMAL_RETURNS",
    "REWARDS",
    "TERMINATEDS",
    "TRANSITIONS_FILE",
    "TRANSITION_SCHEMA",
    "TRUNCATEDS",
    "GreedyPolicy",
    "InvalidActionError",
    "SymbolicData",
    "SymbolicDataError",
    "SymbolicMazeEnv",
    "T",
    "cell_of",
    "convert_store",
    "episode_transitions",
    "evaluate_symbolic",
    "one_hot",
    "open_symbolic",
    "optimal_policy",
    "run_symbolic_cell",
]
