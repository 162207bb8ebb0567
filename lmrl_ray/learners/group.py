"""The learner group: N learners data-parallel over torch.distributed, as Ray actors in a
placement group; N = 0 runs the same learner in-process (STYLE 4).

    group = LearnerGroup(config, data="data/maze")
    metrics = group.update(indices)          # offline: episode indices into the dataset
    metrics = group.iteration(rows)          # online: the algorithm's iteration on the episodes
    group.save(run, driver_state={...})

Every call runs a named method on each learner with its shard (`foreach_learner`, as
RLlib's learner group does); what the method does is the algorithm's.

Each learner reads the dataset itself (from the store's folder, on shared storage in a
cluster) and takes its share of every update: the episodes at indices[rank::N]. The
driver chooses the indices from a seeded, stateless schedule, so a resumed run sees the
same batches as an uninterrupted one. (Ray Data's streaming split would shard the data
as well, but its shuffle order cannot be checkpointed, and the datasets of these tasks
fit in each learner's memory.) Gradients are summed with all-reduce (gloo on CPU,
NCCL on GPU); metrics come back reduced over the group.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import torch

from lmrl_ray.data.schema import RETURN, TASK
from lmrl_ray.data.store import ReplayStore, StoreError
from lmrl_ray.learners.config import TrainConfig
from lmrl_ray.learners.learner import Learner, make_algorithm

log = logging.getLogger(__name__)


def read_dataset(path: str | os.PathLike, config: TrainConfig) -> pa.Table:
    """The training episodes of the store at `path`: checked (every shard's checksum and
    schema), of the config's task, not empty, and those the algorithm trains on (filtered
    BC: the top fraction by return)."""
    path = Path(path)
    if not (path / "manifest.json").is_file():
        raise StoreError(f"{path}: not a dataset (no manifest.json); generate one with `lmrl-ray datagen`")
    table = make_algorithm(config).dataset(ReplayStore(path))
    if table.num_rows == 0:
        raise StoreError(f"{path}: the dataset is empty")
    tasks = set(table[TASK].unique().to_pylist())
    if config.common.task and tasks != {config.common.task}:
        raise StoreError(f"{path}: a dataset of task {', '.join(sorted(tasks))}, not {config.common.task}")
    return table


def dataset_task(path: str | os.PathLike) -> str:
    """The task of the dataset at `path` (from its first shard)."""
    store = ReplayStore(path)
    shards = store.shards()
    if not shards:
        raise StoreError(f"{path}: the dataset is empty")
    return store.read_shard(shards[0], [TASK])[TASK][0].as_py()


class LearnerWorker:
    """What one learner actor holds: a `Learner` and its copy of the dataset (online
    algorithms may have none: `data` None). Its methods are what the group runs on every
    learner (`LearnerGroup.foreach_learner`)."""

    def __init__(self, config: TrainConfig, data: str | None, *, rank: int = 0, world_size: int = 1,
                 master: tuple[str, int] | None = None):
        r = config.resources
        device = "cuda" if r.gpus_per_learner > 0 and torch.cuda.is_available() else "cpu"
        if world_size > 1:
            import torch.distributed as dist

            backend = "nccl" if device == "cuda" else "gloo"
            dist.init_process_group(
                backend, init_method=f"tcp://{master[0]}:{master[1]}", rank=rank, world_size=world_size
            )
        self.dataset = read_dataset(data, config) if data is not None else None
        self.learner = Learner(config, device=device, rank=rank, world_size=world_size, dataset=self.dataset)

    def num_episodes(self) -> int:
        return self.dataset.num_rows if self.dataset is not None else 0

    def mean_return(self) -> float:
        return float(pc.mean(self.dataset[RETURN]).as_py()) if self.dataset is not None else float("nan")

    def _rows(self, indices: Sequence[int]) -> list[dict]:
        return self.dataset.take(pa.array(indices, type=pa.int64())).to_pylist()

    def update(self, indices: Sequence[int]) -> dict[str, float]:
        """One update on the dataset's episodes `indices` (this learner's share)."""
        return self.learner.update(self._rows(indices))

    def iteration(self, rows: Sequence[dict]) -> dict[str, float]:
        """The online algorithm's iteration on this learner's share of the episodes."""
        return self.learner.algo.iteration(self.learner, rows)

    def gradients(self, indices: Sequence[int]) -> torch.Tensor:
        """The batch's gradient without updating (tests compare learners with it)."""
        self.learner.compute_gradients(self.learner.encode(self._rows(indices)))
        return self.learner.gradients()

    def put_weights(self):
        """The policy's weights in the object store, for the engines (a list holding the
        ref, so that Ray hands the ref itself back to the caller)."""
        from lmrl_ray.actors.weights import put_weights

        return [put_weights(self.learner.policy_state_dict())]

    def policy_state_dict(self) -> dict[str, torch.Tensor]:
        return self.learner.policy_state_dict()

    def save(self, folder: str, driver_state: dict) -> str:
        return str(self.learner.save(folder, driver_state=driver_state))

    def restore(self, folder: str) -> dict:
        return self.learner.restore(folder)

    def step(self) -> int:
        return self.learner.step

    def parameters_checksum(self) -> float:
        """A cheap fingerprint of the model and heads (tests compare learners with it)."""
        return float(sum(p.detach().double().sum().item() for p in self.learner._modules_parameters()))


def _free_port() -> tuple[str, int]:
    import ray

    host = ray.util.get_node_ip_address()
    with socket.socket() as s:
        s.bind((host, 0))
        return host, s.getsockname()[1]


class LearnerGroup:
    """`num_learners` learner actors (0: one learner in-process)."""

    def __init__(self, config: TrainConfig, data: str | os.PathLike | None):
        self.config = config
        self.algo = make_algorithm(config)  # for its driver-side step, `select`
        r = config.resources
        self.num_learners = r.num_learners
        data = str(data) if data is not None else None
        if self.num_learners == 0:
            self._local = LearnerWorker(config, data)
            self._actors = []
            return
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self._local = None
        bundle = {"CPU": r.cpus_per_learner}
        if r.gpus_per_learner > 0:
            bundle["GPU"] = r.gpus_per_learner
        self._placement_group = placement_group([bundle] * self.num_learners, strategy="PACK")
        try:
            ray.get(self._placement_group.ready(), timeout=120)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(self._placement_group)
            raise RuntimeError(
                f"{self.num_learners} learner bundles of {bundle} did not fit: {ray.available_resources()} available"
            ) from None
        master = ray.get(ray.remote(_free_port).options(
            num_cpus=0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(self._placement_group, placement_group_bundle_index=0),
        ).remote())
        remote = ray.remote(LearnerWorker)
        self._actors = [
            remote.options(
                num_cpus=r.cpus_per_learner,
                num_gpus=r.gpus_per_learner,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self._placement_group, placement_group_bundle_index=i),
            ).remote(config, data, rank=i, world_size=self.num_learners, master=master)
            for i in range(self.num_learners)
        ]
        ray.get([a.step.remote() for a in self._actors])  # every learner has joined the group

    def foreach_learner(self, method: str, *args, shards: Sequence | None = None) -> list:
        """Run `method` of every learner (a `LearnerWorker` method), learner r with
        `shards[r]` as its first argument when shards are given; their answers in rank order."""
        if shards is not None and len(shards) != max(1, self.num_learners):
            raise ValueError(f"{len(shards)} shards for {max(1, self.num_learners)} learners")
        per_rank = [((shards[r],) if shards is not None else ()) + args for r in range(max(1, self.num_learners))]
        if self._local is not None:
            return [getattr(self._local, method)(*per_rank[0])]
        import ray

        return ray.get([getattr(a, method).remote(*per_rank[r]) for r, a in enumerate(self._actors)])

    def _first(self, method: str, *args):
        """Run `method` on rank 0 only (the learners hold identical state)."""
        if self._local is not None:
            return getattr(self._local, method)(*args)
        import ray

        return ray.get(getattr(self._actors[0], method).remote(*args))

    def shard(self, items: Sequence) -> list[list]:
        """Learner r's share of a batch: items[r::N]."""
        n = max(1, self.num_learners)
        return [list(items[r::n]) for r in range(n)]

    def num_episodes(self) -> int:
        return self._first("num_episodes")

    def mean_return(self) -> float:
        return self._first("mean_return")

    def update(self, indices: Sequence[int]) -> dict[str, float]:
        """One update on the dataset's episodes `indices`; returns the batch's metrics."""
        return self.foreach_learner("update", shards=self.shard([int(i) for i in indices]))[0]

    def iteration(self, rows: Sequence[dict]) -> dict[str, float]:
        """The online algorithm's iteration on the episodes it selects from `rows`
        (`Algorithm.select`, here, then shared out); returns its metrics."""
        kept, metrics = self.algo.select(rows)
        return {**self.foreach_learner("iteration", shards=self.shard(kept))[0], **metrics}

    def broadcast(self, engines, version: int) -> None:
        """Send the policy's weights to `engines` (an `EnginePool`) as `version`: from a
        learner actor through the object store (one put, every engine reads it), or from
        this process."""
        if self._local is not None:
            engines.set_weights(self._local.policy_state_dict(), version)
            return
        import ray

        (ref,) = ray.get(self._actors[0].put_weights.remote())
        engines.set_weights_from_ref(ref, version)

    def gradients(self, indices: Sequence[int]) -> list[torch.Tensor]:
        """Each learner's gradient for the batch `indices` (split as in `update`), summed
        over the group: all equal."""
        return self.foreach_learner("gradients", shards=self.shard([int(i) for i in indices]))

    def save(self, folder: str | os.PathLike, driver_state: dict) -> Path:
        """Rank 0 writes the checkpoint (the learners hold identical state)."""
        return Path(self._first("save", str(folder), driver_state))

    def restore(self, folder: str | os.PathLike) -> dict:
        return self.foreach_learner("restore", str(folder))[0]

    def step(self) -> int:
        return self._first("step")

    def parameters_checksums(self) -> list[float]:
        return self.foreach_learner("parameters_checksum")

    def shutdown(self) -> None:
        if self._actors:
            import ray
            from ray.util.placement_group import remove_placement_group

            for a in self._actors:
                ray.kill(a)
            self._actors = []
            remove_placement_group(self._placement_group)
