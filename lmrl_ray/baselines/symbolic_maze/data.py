"""Text Maze replay stores (`data/datagen.py`) as symbolic transitions for RLlib's offline API.

Each stored episode is replayed in the text environment and checked against every
stored observation and reward, so a transition is exactly what the text task did. The
transitions go to one Parquet file with the column names RLlib's `OfflinePreLearner`
reads, one row per (obs_t, a_t, r_t, obs_tp1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lmrl_ray.baselines.symbolic_maze.env import NUM_CELLS, one_hot
from lmrl_ray.data.schema import EPISODE_ID, REWARD, ROLE, SEED, TASK, TEXT, TURNS
from lmrl_ray.data.store import ReplayStore, StoreError
from lmrl_ray.envs.base import AGENT, ENV
from lmrl_ray.envs.maze import ACTIONS, STARTS, MazeEnv, describe
from lmrl_ray.io import write_atomically

SYMBOLIC_DIR = "symbolic-maze"
TRANSITIONS_FILE = "transitions.parquet"
INVALID_POLICIES = ("error", "skip")
TEXT_TASKS = ("maze", "maze-po")
"""Text tasks whose stores convert: both play the same grid (the symbolic state is the position)."""

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
