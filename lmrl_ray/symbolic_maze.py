"""The symbolic (non-text) Maze with RLlib: the paper's upper bound (LMRL-Gym, appendix G).

The paper solves a symbolic version of the fully observed Maze with DQN and CQL and
reports normalised 100. This module rebuilds that baseline on RLlib 2.60's new API stack:

    row = run_symbolic_cell("cql", seed=0, data="data/maze", eval_episodes=100, out="runs/sym")

- `SymbolicMazeEnv`: the text Maze's grid, moves and rewards (`envs/maze.py`), with the
  position as a one-hot vector over the open cells and the four moves as Discrete(4).
- `convert_store`: a text Maze replay store (`data/datagen.py`) as symbolic transitions
  in Parquet, with the column names RLlib's offline API reads (`OfflinePreLearner.SCHEMA`).
- `train_symbolic`: DQN online on the environment; CQL, MARWIL or BC offline on the
  converted data. Returns the greedy policy as a table over the 26 open cells.
- `evaluate_symbolic`: greedy episodes from the evaluation starts of the text task
  (`evaluation.evaluation_options`), summarised like a text evaluation.

CQL: RLlib 2.60's `CQL` extends SAC for continuous actions: with Discrete(4) it builds,
then its first `train()` fails in `DefaultCQLTorchRLModule._forward_train`, which draws
random actions from `action_space.low/high` ("'Discrete' object has no attribute 'low'");
its `IQL` module refuses any space but Box. The "cql" here is discrete CQL (Kumar et al.
2020, CQL(H), eq. 4) on RLlib's own pieces: the DQN module, learner and target network,
with the conservative term added to the loss (`discrete_cql_loss`), fed by RLlib's
`OfflineData` like its offline algorithms. "marwil" is RLlib's stock offline algorithm
for discrete actions, kept for comparison (see `MARWIL_NOTE`).

Optimal play: from each start, the shortest path to the goal costs -(moves - 1) (the move
that reaches the goal is rewarded 0); its mean over the 25 starts, which the evaluation
visits in turn, is `OPTIMAL_MEAN_RETURN` = -6.84, which is also the paper's and our
normalisation maximum M for the fully observed Maze (normalised 100).
"""

from __future__ import annotations

import dataclasses
import gc
import operator
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gymnasium
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from gymnasium import spaces

from lmrl_ray.data.schema import EPISODE_ID, REWARD, ROLE, SEED, TASK, TEXT, TURNS
from lmrl_ray.envs.base import AGENT, ENV
from lmrl_ray.envs.maze import (
    ACTIONS,
    GOAL,
    GOAL_REWARD,
    MAX_MOVES,
    OPEN,
    STARTS,
    STEP_REWARD,
    MazeEnv,
    describe,
    distances,
    move,
)

DEFAULT_MODULE = "default_policy"  # RLlib's DEFAULT_MODULE_ID, the single-agent module
TASK_NAME = "maze"
"""The registered text task whose normalisation and evaluation starts the rows use."""
NUM_CELLS = len(OPEN)
CELL_INDEX = {cell: i for i, cell in enumerate(OPEN)}
ALGOS = ("dqn", "cql", "marwil", "bc")
OFFLINE_ALGOS = ("cql", "marwil", "bc")
TEXT_TASKS = ("maze", "maze-po")
"""Text tasks whose stores convert: both play the same grid (the symbolic state is the position)."""

# Shortest-path return from each start: -1 for every move but the last (GOAL_REWARD).
OPTIMAL_RETURNS = {start: STEP_REWARD * (distances()[start] - 1) + GOAL_REWARD for start in STARTS}
OPTIMAL_MEAN_RETURN = float(np.mean([OPTIMAL_RETURNS[s] for s in STARTS]))

MARWIL_NOTE = (
    "RLlib 2.60's MARWIL computes its value targets once, in the OfflinePreLearner, with the module "
    "as it was when the data were first mapped (the mapped data are materialised and never "
    "recomputed), on one-step episodes (one per transition row): r + gamma * V_0(s') with V_0 the "
    "initial network. Its advantages are divided by the root of a moving average of their squares "
    "that starts at 100 and moves at rate 1e-8 (RLlib's defaults), so exp(beta * A / 10) is close to "
    "1: on this data MARWIL behaves like behaviour cloning and cannot stitch trajectories."
)


# -- The environment ---------------------------------------------------------------------


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
    and 0 for the move that reaches the goal, which terminates; truncated after
    `max_moves` moves. Every action is valid: the text task's invalid-action penalty has
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
        self.position = move(self.position, ACTIONS[a])
        self.moves += 1
        terminated = self.position == GOAL
        truncated = not terminated and self.moves >= self.max_moves
        self.done = terminated or truncated
        info: dict[str, Any] = {"position": self.position}
        if self.done:
            info["success"] = terminated
        reward = GOAL_REWARD if terminated else STEP_REWARD
        return one_hot(self.position), float(reward), terminated, truncated, info


# -- Text replay store -> symbolic transitions -----------------------------------------

SYMBOLIC_DIR = "symbolic-maze"
TRANSITIONS_FILE = "transitions.parquet"
INVALID_POLICIES = ("error", "skip")

# RLlib's column names (ray.rllib.core.columns.Columns), which its OfflinePreLearner reads
# from tabular data; one row is one transition (obs_t, a_t, r_t, obs_tp1).
EPS_ID, T, OBS, ACTIONS_COL, REWARDS, NEXT_OBS, TERMINATEDS, TRUNCATEDS = (
    "eps_id", "t", "obs", "actions", "rewards", "new_obs", "terminateds", "truncateds",
)
TRANSITION_SCHEMA = pa.schema(
    [
        pa.field(EPS_ID, pa.string(), nullable=False),
        pa.field(T, pa.int32(), nullable=False),
        pa.field(OBS, pa.list_(pa.float32(), NUM_CELLS), nullable=False),
        pa.field(ACTIONS_COL, pa.int64(), nullable=False),
        pa.field(REWARDS, pa.float32(), nullable=False),
        pa.field(NEXT_OBS, pa.list_(pa.float32(), NUM_CELLS), nullable=False),
        pa.field(TERMINATEDS, pa.bool_(), nullable=False),
        pa.field(TRUNCATEDS, pa.bool_(), nullable=False),
    ]
)


class SymbolicDataError(ValueError):
    """A dataset that cannot be converted or read as symbolic Maze data; names its folder."""


class InvalidActionError(SymbolicDataError):
    """A stored episode with an action that is not one of the four moves."""


@dataclass(frozen=True)
class SymbolicData:
    """A converted dataset: `path` is the folder holding `TRANSITIONS_FILE`."""

    path: str
    episodes: int
    transitions: int
    skipped_invalid: int
    """Episodes left out because an agent turn was not one of the four moves (invalid="skip")."""
    source: str

    @property
    def file(self) -> str:
        return str(Path(self.path) / TRANSITIONS_FILE)


def _start_cell(first_observation: str, seed: int, partially_observed: bool) -> tuple[int, int] | None:
    """The start cell that produced `first_observation`.

    Fully observed text names the position: exactly one start describes itself so. The
    partially observed walls sentence is shared by several cells; the start is then the
    one the row's seed draws (datagen resets with the seed alone), if it fits.
    """
    fits = [cell for cell in STARTS if describe(cell, partially_observed) == first_observation]
    if len(fits) == 1:
        return fits[0]
    drawn = MazeEnv(partially_observed=partially_observed).reset(seed=seed)[1]["position"]
    return drawn if drawn in fits else None


def episode_transitions(row: dict, *, partially_observed: bool = False) -> list[dict]:
    """One stored Maze episode (a row of the trajectory schema) as symbolic transitions.

    The cells are recovered by replaying the text environment from the episode's start
    with the stored actions, and the replay is checked against every stored observation
    and reward, so a transition is exactly what the text environment did (a mismatch is a
    `SymbolicDataError`). An agent turn that is not one of the four moves (the text task's
    invalid action: -4, the position stays) has no symbolic action: `InvalidActionError`.
    """
    episode = row[EPISODE_ID]
    turns = row[TURNS]
    roles = [t[ROLE] for t in turns]
    if not turns or roles[0] != ENV or any(r != (ENV if i % 2 == 0 else AGENT) for i, r in enumerate(roles)):
        raise SymbolicDataError(f"episode {episode}: turns do not alternate environment, agent, environment, ...")
    start = _start_cell(turns[0][TEXT], row[SEED], partially_observed)
    if start is None:
        raise SymbolicDataError(f"episode {episode}: no start cell gives the first observation {turns[0][TEXT]!r}")
    env = MazeEnv(partially_observed=partially_observed)
    env.reset(seed=row[SEED], options={"start": start})
    transitions = []
    for k in range(len(turns) // 2):
        action, stored = turns[2 * k + 1], turns[2 * k + 2]
        if action[TEXT].strip() not in ACTIONS:
            raise InvalidActionError(f"episode {episode}: agent turn {k} {action[TEXT]!r} is not one of {ACTIONS}")
        if env.done:
            raise SymbolicDataError(f"episode {episode}: turns continue after the episode ended at agent turn {k}")
        cell = env.position
        observation, reward, terminated, truncated, _ = env.step(action[TEXT])
        if observation != stored[TEXT] or reward != action[REWARD]:
            raise SymbolicDataError(
                f"episode {episode}: agent turn {k} replays to ({observation!r}, {reward}) "
                f"but the row stores ({stored[TEXT]!r}, {action[REWARD]})"
            )
        transitions.append({
            EPS_ID: episode, T: k, OBS: one_hot(cell), ACTIONS_COL: ACTIONS.index(action[TEXT].strip()),
            REWARDS: reward, NEXT_OBS: one_hot(env.position), TERMINATEDS: terminated, TRUNCATEDS: truncated,
        })
    if not env.done:
        raise SymbolicDataError(f"episode {episode}: the row ends before the episode does ({len(transitions)} moves)")
    return transitions


def convert_store(store: str | os.PathLike, out_dir: str | os.PathLike, *, invalid: str = "error") -> SymbolicData:
    """Convert the text Maze replay store at `store` into `out_dir/symbolic-maze/transitions.parquet`.

    `invalid`: what to do with an episode holding an invalid action (text that is not a
    move; datagen's behaviour policy never writes one, a language model's may): "error"
    raises `InvalidActionError`, "skip" leaves the whole episode out (dropping only the
    turn would break the episode's return and its move count) and counts it.
    The file is written to a temporary name and renamed, so a reader never sees half of it.
    """
    from lmrl_ray.benchmark_table import write_atomically
    from lmrl_ray.data.store import ReplayStore, StoreError

    if invalid not in INVALID_POLICIES:
        raise ValueError(f"invalid must be one of {', '.join(INVALID_POLICIES)}, got {invalid!r}")
    source = Path(store)
    try:
        table = ReplayStore(source).read([TASK, EPISODE_ID, SEED, TURNS])
    except StoreError as err:
        raise SymbolicDataError(f"{source}: not a readable replay store: {err}") from None
    if table.num_rows == 0:
        raise SymbolicDataError(f"{source}: the replay store has no episodes")
    tasks = set(table[TASK].unique().to_pylist())
    if not tasks <= set(TEXT_TASKS):
        raise SymbolicDataError(
            f"{source} holds data of task(s) {', '.join(sorted(tasks))}; the symbolic Maze converts only {', '.join(TEXT_TASKS)}"
        )
    rows, skipped = [], 0
    for row in table.to_pylist():
        try:
            rows += episode_transitions(row, partially_observed=row[TASK] == "maze-po")
        except InvalidActionError as err:
            if invalid == "error":
                raise InvalidActionError(f"{source}: {err} (invalid='skip' leaves such episodes out)") from None
            skipped += 1
        except SymbolicDataError as err:
            raise SymbolicDataError(f"{source}: {err}") from None
    if not rows:
        raise SymbolicDataError(f"{source}: every episode was skipped ({skipped} with invalid actions)")
    folder = Path(out_dir) / SYMBOLIC_DIR
    folder.mkdir(parents=True, exist_ok=True)
    episodes = table.num_rows - skipped
    meta = {"source": str(source.resolve()), "episodes": str(episodes), "skipped_invalid": str(skipped)}
    out = pa.Table.from_pylist(rows, schema=TRANSITION_SCHEMA).replace_schema_metadata(meta)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            pq.write_table(out, f)
            f.flush()
            os.fsync(f.fileno())

    write_atomically(folder / TRANSITIONS_FILE, write)
    return SymbolicData(str(folder), episodes, len(rows), skipped, str(source))


def open_symbolic(data: str | os.PathLike | SymbolicData) -> SymbolicData:
    """A converted dataset (the folder `convert_store` made, or its `SymbolicData`), checked."""
    folder = Path(data.path if isinstance(data, SymbolicData) else data)
    if (folder / SYMBOLIC_DIR / TRANSITIONS_FILE).exists():  # the `out_dir` given to convert_store
        folder = folder / SYMBOLIC_DIR
    file = folder / TRANSITIONS_FILE
    if not file.exists():
        what = "does not exist" if not folder.exists() else f"holds no {TRANSITIONS_FILE}"
        raise SymbolicDataError(f"{folder} {what}; convert a text Maze store with convert_store first")
    try:
        schema = pq.read_schema(file)
    except (OSError, pa.ArrowInvalid) as err:
        raise SymbolicDataError(f"{folder}: unreadable {TRANSITIONS_FILE}: {err}") from None
    if not schema.equals(TRANSITION_SCHEMA, check_metadata=False):
        raise SymbolicDataError(f"{folder}: {TRANSITIONS_FILE} is not symbolic Maze transitions (schema {schema})")
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    rows = pq.read_metadata(file).num_rows
    return SymbolicData(str(folder), int(meta.get("episodes", 0)), rows, int(meta.get("skipped_invalid", 0)), meta.get("source", ""))


# -- Greedy policies and their evaluation -----------------------------------------------


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

    @classmethod
    def from_module(cls, module) -> "GreedyPolicy":
        """The greedy table of an RLlib RLModule: its inference actions (DQN: argmax Q), or
        the argmax of its action logits (BC, MARWIL), as RLlib's deterministic sampling does."""
        import torch

        with torch.no_grad():
            out = module.forward_inference({"obs": torch.eye(NUM_CELLS)})  # (NUM_CELLS, ...)
        actions = out["actions"] if "actions" in out else torch.argmax(out["action_dist_inputs"], dim=-1)
        return cls(tuple(int(a) for a in actions))

    def to_text(self) -> str:
        """The table drawn on the grid: arrows on open cells, G on the goal, # on walls."""
        from lmrl_ray.envs.maze import WALLS

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
    mean_turns, normalised_paper and normalised_ours (the Maze task's constants), episodes.
    """
    from lmrl_ray.evaluation import evaluation_options
    from lmrl_ray.rollout import scores, summarize

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
    return scores(TASK_NAME, summarize(returns, successes, turns))


# -- Discrete CQL: the loss, and RLlib's DQN pieces around it ---------------------------


def discrete_cql_loss(q, q_target_next, q_next, actions, rewards, terminateds, *, gamma: float, alpha: float):
    """Discrete CQL(H) (Kumar et al. 2020, eq. 4): the TD loss of (double) Q-learning
    plus alpha * E_s[logsumexp_a Q(s, a) - Q(s, a_data)], which pushes down the values of
    actions the data did not take. Tensors in, (loss, metrics) out.

    q, q_target_next, q_next: (B, A) Q(s_t, .) online, Q(s_tp1, .) target and online
    (q_next None: plain max over the target); actions (B,) a_t; rewards (B,) r_t, the
    reward of a_t; terminateds (B,) whether s_tp1 ended the episode (no bootstrap).
    """
    import torch
    import torch.nn.functional as F

    q_t = q.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)  # (B,) Q(s_t, a_t)
    with torch.no_grad():
        if q_next is None:
            v_tp1 = q_target_next.max(dim=-1).values  # (B,)
        else:  # double Q: the online network picks a_tp1, the target network values it
            v_tp1 = q_target_next.gather(-1, q_next.argmax(dim=-1, keepdim=True)).squeeze(-1)
        target = rewards + gamma * (1.0 - terminateds.float()) * v_tp1  # (B,)
    td_loss = F.huber_loss(q_t, target)
    cql_gap = (torch.logsumexp(q, dim=-1) - q_t).mean()
    loss = td_loss + alpha * cql_gap
    metrics = {"cql/td_loss": td_loss.detach(), "cql/gap": cql_gap.detach(), "cql/q_mean": q_t.detach().mean()}
    return loss, metrics


_RLLIB_CLASSES = ("DiscreteCQL", "DiscreteCQLConfig", "DiscreteCQLTorchLearner")


def __getattr__(name: str):
    # RLlib is an optional extra: its subclasses are built on first use. Ray pickles the
    # config (and with it these classes) by reference to this module, which resolves them here.
    if name in _RLLIB_CLASSES:
        return _rllib_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_CLASSES: dict[str, type] = {}


def _rllib_classes() -> dict[str, type]:
    """DiscreteCQL(DQN), its config and its learner: RLlib's DQN module, learner and
    target network, trained offline from `OfflineData` with `discrete_cql_loss`."""
    if _CLASSES:
        return _CLASSES
    from ray.rllib.algorithms.algorithm_config import NotProvided
    from ray.rllib.algorithms.dqn import DQN, DQNConfig
    from ray.rllib.algorithms.dqn.dqn_learner import QF_NEXT_PREDS, QF_PREDS, QF_TARGET_NEXT_PREDS
    from ray.rllib.algorithms.dqn.torch.dqn_torch_learner import DQNTorchLearner
    from ray.rllib.connectors.common.add_observations_from_episodes_to_batch import (
        AddObservationsFromEpisodesToBatch,
    )
    from ray.rllib.connectors.learner.add_next_observations_from_episodes_to_train_batch import (
        AddNextObservationsFromEpisodesToTrainBatch,
    )
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.learner.training_data import TrainingData
    from ray.rllib.utils.metrics import (
        LEARNER_RESULTS,
        LEARNER_UPDATE_TIMER,
        NUM_ENV_STEPS_SAMPLED_LIFETIME,
        OFFLINE_SAMPLING_TIMER,
        TIMERS,
    )

    class DiscreteCQLTorchLearner(DQNTorchLearner):
        def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
            loss, metrics = discrete_cql_loss(
                fwd_out[QF_PREDS], fwd_out[QF_TARGET_NEXT_PREDS], fwd_out.get(QF_NEXT_PREDS),
                batch[Columns.ACTIONS], batch[Columns.REWARDS], batch[Columns.TERMINATEDS],
                gamma=config.gamma, alpha=config.cql_alpha,
            )
            self.metrics.log_dict(metrics, key=module_id, window=1)
            return loss

    class DiscreteCQLConfig(DQNConfig):
        def __init__(self, algo_class=None):
            super().__init__(algo_class=algo_class or DiscreteCQL)
            self.cql_alpha = 1.0
            self._is_online = False  # no EnvRunners: as MARWILConfig (and so CQLConfig) sets
            # DQN asks for 1000 sampled env steps per iteration, which offline never come:
            # Algorithm.train() would loop forever. One training_step per iteration.
            self.min_sample_timesteps_per_iteration = 0

        def training(self, *, cql_alpha=NotProvided, **kwargs):
            super().training(**kwargs)
            if cql_alpha is not NotProvided:
                self.cql_alpha = cql_alpha
            return self

        def get_default_learner_class(self):
            return DiscreteCQLTorchLearner

        def build_learner_connector(self, input_observation_space, input_action_space, device=None):
            # Offline batches are made by the OfflinePreLearner with this pipeline, not by
            # the learner's own (where DQNLearner.build adds s_tp1): add s_tp1 here, as
            # RLlib's CQLConfig does.
            pipeline = super().build_learner_connector(input_observation_space, input_action_space, device)
            pipeline.insert_after(AddObservationsFromEpisodesToBatch, AddNextObservationsFromEpisodesToTrainBatch())
            return pipeline

    class DiscreteCQL(DQN):
        @classmethod
        def get_default_config(cls):
            return DiscreteCQLConfig()

        def training_step(self) -> None:
            # Sample from the offline data -> update (dataset_num_iters_per_learner steps)
            # -> the learner syncs its target network. As MARWIL's training_step.
            with self.metrics.log_time((TIMERS, OFFLINE_SAMPLING_TIMER)):
                iterators = self.offline_data.sample(
                    num_samples=self.config.train_batch_size_per_learner,
                    num_shards=self.config.num_learners,
                    return_iterator=True,
                )
                self.metrics.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, self.config.train_batch_size_per_learner,
                                       reduce="lifetime_sum")
            with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
                results = self.learner_group.update(
                    training_data=TrainingData(data_iterators=iterators),
                    minibatch_size=self.config.train_batch_size_per_learner,
                    num_iters=self.config.dataset_num_iters_per_learner,
                    timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(NUM_ENV_STEPS_SAMPLED_LIFETIME)},
                    **self.offline_data.iter_batches_kwargs,
                )
                self.metrics.aggregate(results, key=LEARNER_RESULTS)

    for cls in (DiscreteCQLTorchLearner, DiscreteCQLConfig, DiscreteCQL):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
        _CLASSES[cls.__name__] = cls
    return _CLASSES


# -- Training ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SymbolicConfig:
    """Knobs of `train_symbolic`; the defaults fit a 2-core laptop (about a minute each)."""

    env_steps_per_iteration: int = 1000
    """DQN: environment steps sampled per iteration."""
    rollout_fragment_steps: int = 8
    """DQN: environment steps sampled between two gradient updates."""
    epsilon_decay_steps: int = 3000
    """DQN: environment steps over which epsilon falls linearly from 1 to `epsilon_final`."""
    epsilon_final: float = 0.05
    """DQN: exploration rate after `epsilon_decay_steps` (training only; evaluation is greedy)."""
    warmup_steps: int = 256
    """DQN: environment steps sampled before the first update."""
    target_tau: float = 0.1
    """DQN: soft target update after every gradient update (Polyak weight of the online net)."""
    updates_per_iteration: int = 50
    """Offline: gradient updates per iteration (RLlib's `dataset_num_iters_per_learner`);
    CQL syncs its target network (hard) once per iteration."""
    batch_size: int = 128
    """Transitions per gradient update."""
    lr: float = 3e-3
    """Adam learning rate of every network."""
    gamma: float = 0.95
    """Discount. Any gamma < 1 makes the shortest path the optimal policy (-1 per move)."""
    hidden_units: int = 64
    """One hidden layer (ReLU) in every network."""
    cql_alpha: float = 0.03
    """CQL: weight of the conservative term (Kumar et al.'s alpha). On 1,240 datagen
    episodes (seed 0) 0.03 and 0 reach the shortest paths within 20 iterations; 0.1
    stalls near -40 and 1.0 stays at behaviour cloning's -72.68: at the junction cells
    the move out of a branch is rare in the data, and a strong penalty keeps it down."""
    marwil_beta: float = 1.0
    """MARWIL: advantage temperature beta (0 is behaviour cloning)."""

    def __post_init__(self):
        for name in ("env_steps_per_iteration", "rollout_fragment_steps", "epsilon_decay_steps",
                     "warmup_steps", "updates_per_iteration", "batch_size", "hidden_units"):
            if getattr(self, name) < (0 if name == "warmup_steps" else 1):
                raise ValueError(f"SymbolicConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.gamma < 1 or not 0 < self.target_tau <= 1 or not 0 <= self.marwil_beta <= 1:
            raise ValueError("SymbolicConfig: need 0 < gamma < 1, 0 < target_tau <= 1 and 0 <= marwil_beta <= 1")


# `Algorithm.train()` calls by default: DQN 8,000 environment steps; offline 50 updates each.
DEFAULT_ITERATIONS = {"dqn": 8, "cql": 40, "marwil": 30, "bc": 30}


@dataclass(frozen=True)
class TrainedSymbolic:
    """What `train_symbolic` returns."""

    algo: str
    policy: GreedyPolicy
    checkpoint: str
    """The greedy table (`out/greedy_policy.json`), or "" without `out`."""
    iterations: int
    seconds: float
    metrics: dict[str, float]
    """The last iteration's learner results for the module (RLlib's names, e.g.
    `policy_loss`, `qf_loss`; `cql/td_loss`, `cql/gap`, `cql/q_mean` for CQL)."""


def symbolic_config(**knobs) -> SymbolicConfig:
    """A `SymbolicConfig` with `knobs` set; an unknown knob is an error listing the valid ones."""
    valid = [f.name for f in dataclasses.fields(SymbolicConfig)]
    unknown = sorted(set(knobs) - set(valid))
    if unknown:
        raise ValueError(f"unknown symbolic knob(s) {', '.join(unknown)}; valid knobs: {', '.join(valid)}")
    return SymbolicConfig(**knobs)


def rllib_config(algo: str, config: SymbolicConfig, *, seed: int, data: SymbolicData | None = None):
    """The RLlib AlgorithmConfig of `algo`: new API stack, torch, the EnvRunner (DQN) and
    the Learner in this process; offline data through one Ray Data pre-learner actor."""
    env = SymbolicMazeEnv()
    model = {"fcnet_hiddens": [config.hidden_units], "fcnet_activation": "relu"}
    if algo == "dqn":
        from ray.rllib.algorithms.dqn import DQNConfig

        return (
            DQNConfig()
            .environment(SymbolicMazeEnv, env_config={"max_moves": MAX_MOVES})
            .env_runners(num_env_runners=0, rollout_fragment_length=config.rollout_fragment_steps)
            .training(
                lr=config.lr, gamma=config.gamma, train_batch_size_per_learner=config.batch_size,
                num_steps_sampled_before_learning_starts=config.warmup_steps,
                # tau after every update (frequency 0 env steps) rather than hard copies.
                target_network_update_freq=0, tau=config.target_tau,
                replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": 50_000},
                epsilon=[(0, 1.0), (config.epsilon_decay_steps, config.epsilon_final)],
                double_q=True, dueling=False,
            )
            .rl_module(model_config={**model, "head_fcnet_hiddens": []})
            .reporting(min_sample_timesteps_per_iteration=config.env_steps_per_iteration)
            .debugging(seed=seed)
        )
    if data is None:
        raise ValueError(f"{algo} trains offline: pass data (a folder made by convert_store)")
    if algo == "cql":
        builder = _rllib_classes()["DiscreteCQLConfig"]().training(
            cql_alpha=config.cql_alpha, target_network_update_freq=0, tau=1.0, double_q=True, dueling=False,
        )
        model = {**model, "head_fcnet_hiddens": []}
    elif algo == "marwil":
        from ray.rllib.algorithms.marwil import MARWILConfig

        builder = MARWILConfig().training(beta=config.marwil_beta)
    elif algo == "bc":
        from ray.rllib.algorithms.bc import BCConfig

        builder = BCConfig()
    else:
        raise ValueError(f"unknown symbolic algorithm {algo!r}; valid: {', '.join(ALGOS)}")
    return (
        builder.environment(observation_space=env.observation_space, action_space=env.action_space)
        .training(lr=config.lr, gamma=config.gamma, train_batch_size_per_learner=config.batch_size)
        .offline_data(
            input_=[data.file],
            dataset_num_iters_per_learner=config.updates_per_iteration,
            # One pre-learner actor that holds no CPU: inside a 1-CPU benchmark cell it must
            # not wait for a core the cell itself holds.
            map_batches_kwargs={"concurrency": 1, "num_cpus": 0},
        )
        .rl_module(model_config=model)
        .debugging(seed=seed)
    )


def greedy_policy(algorithm) -> GreedyPolicy:
    """The greedy table of a built RLlib Algorithm's (local) learner module: the trained
    weights themselves, which offline algorithms (without EnvRunners) have only there."""
    results = algorithm.learner_group.foreach_learner(lambda learner: GreedyPolicy.from_module(learner.module[DEFAULT_MODULE]))
    return next(iter(results)).get()


def train_symbolic(
    algo: str,
    *,
    data: str | os.PathLike | SymbolicData | None = None,
    seed: int = 0,
    iterations: int | None = None,
    out: str | os.PathLike | None = None,
    **knobs,
) -> TrainedSymbolic:
    """Train `algo` on the symbolic Maze with RLlib and return its greedy policy.

    "dqn": online on `SymbolicMazeEnv`; "cql", "marwil", "bc": offline on `data`, a
    folder made by `convert_store`. `iterations`: `Algorithm.train()` calls (None: the
    algorithm's `DEFAULT_ITERATIONS`); `knobs` set `SymbolicConfig` fields. Ray is joined
    or started (`ray_utils.init_ray`); everything runs in this process but the offline
    data's pre-learner actor. With `out`, the greedy table (the whole policy) goes to
    `out/greedy_policy.json` (no RLlib checkpoint: those pickle the weights).
    """
    import json

    from lmrl_ray.benchmark_table import write_atomically
    from lmrl_ray.ray_utils import init_ray

    if algo not in ALGOS:
        raise ValueError(f"unknown symbolic algorithm {algo!r}; valid: {', '.join(ALGOS)}")
    if algo == "dqn" and data is not None:
        raise ValueError("dqn trains online on SymbolicMazeEnv; it takes no data")
    if algo in OFFLINE_ALGOS and data is None:
        raise ValueError(f"{algo} trains offline: pass data (a folder made by convert_store)")
    config = symbolic_config(**knobs)
    iterations = DEFAULT_ITERATIONS[algo] if iterations is None else iterations
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    dataset = open_symbolic(data) if data is not None else None
    started = time.perf_counter()
    init_ray()
    algorithm = rllib_config(algo, config, seed=seed, data=dataset).build_algo()
    try:
        for _ in range(iterations):
            result = algorithm.train()  # sample (online) or read (offline) -> update -> sync
        policy = greedy_policy(algorithm)
        learned = result.get("learners", {}).get(DEFAULT_MODULE, {})
        metrics = {k: float(v) for k, v in learned.items() if isinstance(v, (int, float, np.number))}
        checkpoint = ""
        if out is not None:
            folder = Path(out)
            folder.mkdir(parents=True, exist_ok=True)
            # The greedy table is the whole policy. RLlib's own checkpoints pickle the
            # module's state; weights here are never pickled, so none is written.
            checkpoint = folder / "greedy_policy.json"
            record = {"algo": algo, "seed": seed, "iterations": iterations, "actions": list(policy.actions),
                      "cells": [list(c) for c in OPEN], "config": dataclasses.asdict(config)}
            write_atomically(checkpoint, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
    finally:
        algorithm.stop()
        # RLlib's learner keeps a suspended Ray Data iterator, inside reference cycles:
        # collect it while Ray is up, or it reports errors when the interpreter exits.
        del algorithm
        gc.collect()
    return TrainedSymbolic(algo, policy, str(checkpoint), iterations, time.perf_counter() - started, metrics)


def run_symbolic_cell(
    algo: str,
    seed: int,
    *,
    data: str | os.PathLike | None,
    eval_episodes: int,
    out: str | os.PathLike | None,
    **knobs,
) -> dict:
    """Train `algo` and evaluate its greedy policy: one row of the benchmark table.

    `data`: the text Maze replay store (datagen's) for the offline algorithms, converted
    to `out/symbolic-maze` (a temporary folder without `out`), or a folder `convert_store`
    already made; DQN ignores it. Evaluation: `eval_episodes` episodes from
    `evaluation_options("maze", eval_episodes, seed)`. The row's task is "maze" (whose
    normalisation it uses) and its algo "symbolic-<algo>".
    """
    started = time.perf_counter()
    scratch = None
    try:
        dataset = None
        if algo in OFFLINE_ALGOS:
            if data is None:
                raise ValueError(f"{algo} trains offline: pass data (a text Maze replay store)")
            if (Path(data) / "manifest.json").exists():
                target = Path(out) if out is not None else Path(scratch := tempfile.mkdtemp(prefix="symbolic-maze-"))
                dataset = convert_store(data, target)
            else:
                dataset = open_symbolic(data)
        checkpoint_dir = Path(out) / f"symbolic-{algo}-seed{seed}" if out is not None else None
        trained = train_symbolic(algo, data=dataset, seed=seed, out=checkpoint_dir, **knobs)
        result = evaluate_symbolic(trained.policy, eval_episodes, seed)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return {
        "task": TASK_NAME, "algo": f"symbolic-{algo}", "seed": seed,
        **{k: result[k] for k in ("mean_return", "ci95", "success_rate", "mean_turns", "normalised_paper",
                                  "normalised_ours", "episodes")},
        "decoding": "greedy", "checkpoint": trained.checkpoint, "seconds": time.perf_counter() - started,
    }


__all__ = [
    "ALGOS",
    "DEFAULT_ITERATIONS",
    "GreedyPolicy",
    "InvalidActionError",
    "MARWIL_NOTE",
    "OPTIMAL_MEAN_RETURN",
    "OPTIMAL_RETURNS",
    "SymbolicConfig",
    "SymbolicData",
    "SymbolicDataError",
    "SymbolicMazeEnv",
    "TrainedSymbolic",
    "cell_of",
    "convert_store",
    "discrete_cql_loss",
    "episode_transitions",
    "evaluate_symbolic",
    "greedy_policy",
    "one_hot",
    "open_symbolic",
    "optimal_policy",
    "rllib_config",
    "run_symbolic_cell",
    "symbolic_config",
    "train_symbolic",
]
