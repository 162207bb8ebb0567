"""The offline driver: the training loop of BC, filtered BC, MC Returns and ILQL.

    result = train_offline(config, data="data/maze", out="runs/maze-ilql")

It reads like the algorithm (STYLE 1): for each update, take the scheduled batch, update
the learner group, log, checkpoint. A run killed at any moment resumes (`resume=True`) from its newest complete checkpoint and
continues exactly as the uninterrupted run would have, since the batch of update k is a
pure function of (seed, k).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from lmrl_ray.learners.checkpoint import (
    CheckpointError,
    list_checkpoints,
    read_meta,
    step_dir,
)
from lmrl_ray.learners.config import OfflineConfig
from lmrl_ray.learners.group import LearnerGroup

log = logging.getLogger(__name__)


class BatchSchedule:
    """Which episodes update k trains on: epochs of seeded permutations of the dataset,
    read `batch_episodes` at a time; a pure function of (seed, k), so resumable."""

    def __init__(self, num_episodes: int, batch_episodes: int, seed: int):
        self.num_episodes, self.batch_episodes, self.seed = num_episodes, batch_episodes, seed

    def _epoch(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_episodes)

    def indices(self, update: int) -> list[int]:
        start = update * self.batch_episodes
        out: list[int] = []
        while len(out) < self.batch_episodes:
            epoch, offset = divmod(start + len(out), self.num_episodes)
            take = min(self.batch_episodes - len(out), self.num_episodes - offset)
            out += self._epoch(epoch)[offset:offset + take].tolist()
        return out


def log_scalars(writer, metrics: dict[str, float], step: int) -> None:
    """The metrics as TensorBoard scalars at `step`."""
    for key, value in metrics.items():
        writer.add_scalar(key, value, step)


def save_and_prune(group: LearnerGroup, out: Path, step: int, driver_state: dict, keep: int) -> None:
    """The group's checkpoint of `step` under `out`; only the newest `keep` stay."""
    group.save(step_dir(out, step), driver_state=driver_state)
    for old in list_checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def resume_point(out: Path, resume: bool) -> Path | None:
    """The checkpoint a run folder resumes from (None: a fresh run); a run folder with
    checkpoints is an error unless resuming."""
    existing = list_checkpoints(out)
    if existing and not resume:
        raise CheckpointError(f"{out} already holds checkpoints; pass --resume to continue it, or choose another --out")
    if not existing:
        return None
    read_meta(existing[-1])  # a clear error before the learners try
    return existing[-1]


def train_offline(config: OfflineConfig, *, data: str | os.PathLike, out: str | os.PathLike, resume: bool = False,
                  progress: bool = True) -> dict:
    """Train `config.algo` on the dataset `data`, writing checkpoints and TensorBoard
    scalars under `out`; returns {"checkpoint": newest checkpoint, "updates": ...,
    "metrics": the last update's metrics}."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    out = Path(out)
    checkpoint = resume_point(out, resume)
    group = LearnerGroup(config, data)
    try:
        first = 0
        if checkpoint is not None:
            group.restore(checkpoint)
            first = group.step()
            log.info("resumed %s at update %d", checkpoint, first)
        schedule = BatchSchedule(group.num_episodes(), config.batch_episodes, config.common.seed)
        writer = SummaryWriter(str(out / "tensorboard"))
        metrics: dict[str, float] = {}
        bar = tqdm(range(first, config.updates), initial=first, total=config.updates, desc=config.name,
                   unit="update", disable=not progress)
        for update in bar:
            metrics = group.update(schedule.indices(update))
            done = update + 1
            if done % config.log_every_updates == 0 or done == config.updates:
                log_scalars(writer, metrics, done)
                bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in metrics.items() if k.endswith("loss")})
            if done % config.common.checkpoint_every_updates == 0 or done == config.updates:
                save_and_prune(group, out, done, {"update": done}, config.common.keep_checkpoints)
        writer.close()
        final = list_checkpoints(out)
        return {"checkpoint": str(final[-1]) if final else None, "updates": config.updates, "metrics": metrics,
                "dataset_mean_return": group.mean_return()}
    finally:
        group.shutdown()
