"""Table 1 of the paper for a dataset in the store: size, turns, success and return."""

from __future__ import annotations

from dataclasses import dataclass

from lmrl_ray.data.datagen import PAPER_TABLE_1
from lmrl_ray.data.schema import LENGTH, RETURN, SUCCESS, TASK
from lmrl_ray.data.store import ReplayStore, StoreError


@dataclass(frozen=True)
class DatasetStats:
    task: str
    trajectories: int
    mean_turns: float
    std_turns: float
    success_rate: float
    mean_return: float
    std_return: float


def dataset_stats(store: ReplayStore) -> list[DatasetStats]:
    """One row per task in the store (population standard deviations)."""
    table = store.read([TASK, LENGTH, SUCCESS, RETURN])
    if table.num_rows == 0:
        raise StoreError(f"{store.path}: the store is empty")
    tasks = table[TASK].to_numpy(zero_copy_only=False)
    rows = []
    for task in sorted(set(tasks)):
        keep = tasks == task
        turns = table[LENGTH].to_numpy()[keep].astype(float)
        returns = table[RETURN].to_numpy()[keep]
        success = table[SUCCESS].to_numpy(zero_copy_only=False)[keep]
        rows.append(
            DatasetStats(
                task=str(task),
                trajectories=int(keep.sum()),
                mean_turns=float(turns.mean()),
                std_turns=float(turns.std()),
                success_rate=float(success.mean()),
                mean_return=float(returns.mean()),
                std_return=float(returns.std()),
            )
        )
    return rows


def paper_row(task: str) -> dict | None:
    """The paper's Table 1 row for `task` (None where it has none)."""
    if task not in PAPER_TABLE_1:
        return None
    n, turns, success, ret = PAPER_TABLE_1[task]
    return {"trajectories": n, "mean_turns": turns, "success_rate": success, "mean_return": ret}
