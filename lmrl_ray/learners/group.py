"""The learner group: N learners data-parallel over torch.distributed, as Ray actors in a
placement group; N = 0 runs the same learner in-process (STYLE 4).

    group = LearnerGroup(config, data="data/maze")
    metrics = group.update(indices)          # episode indices into the dataset
    group.save(run, driver_state={...})

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
from lmrl_ray.learners.learner import Learner

log = logging.getLogger(__name__)


def read_dataset(path: str | os.PathLike, config: TrainConfig) -> pa.Table:
    """The training episodes of the store at `path`: checked (every shard's checksum and
    schema), of the config's task, not empty; for filtered BC only the top fraction by
    return."""
    path = Path(path)
    if not (path / "manifest.json").is_file():
        raise StoreError(f"{path}: not a dataset (no manifest.json); generate one with `lmrl-ray datagen`")
    store = ReplayStore(path)
    table = store.top_fraction(config.top_fraction) if config.algo == "filtered-bc" else store.read()
    if table.num_rows == 0:
        raise StoreError(f"{path}: the dataset is empty")
    tasks = set(table[TASK].unique().to_pylist())
    if config.task and tasks != {config.task}:
        raise StoreError(f"{path}: a dataset of task {', '.join(sorted(tasks))}, not {config.task}")
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
    algorithms may have none: `data` None)."""

    def __init__(self, config: TrainConfig, data: str | None, *, rank: int = 0, world_size: int = 1,
                 master: tuple[str, int] | None = None):
        device = "cuda" if config.gpus_per_learner > 0 and torch.cuda.is_available() else "cpu"
        if world_size > 1:
            import torch.distributed as dist

            backend = "nccl" if device == "cuda" else "gloo"
            dist.init_process_group(
                backend, init_method=f"tcp://{master[0]}:{master[1]}", rank=rank, world_size=world_size
            )
        self.dataset = read_dataset(data, config) if data is not None else None
        self.learner = Learner(config, device=device, rank=rank, world_size=world_size)
        self._offline_rows: list[dict] | None = None
        if config.head_input_norm and self.dataset is not None and not self.learner.heads.input_norm.fitted:
            first = self.dataset.slice(0, config.head_input_norm_episodes).to_pylist()
            self.learner.fit_head_input_norm(first)

    def num_episodes(self) -> int:
        return self.dataset.num_rows if self.dataset is not None else 0

    def mean_return(self) -> float:
        return float(pc.mean(self.dataset[RETURN]).as_py()) if self.dataset is not None else float("nan")

    def update_rows(self, rows: Sequence[dict]) -> dict[str, float]:
        """One update on episodes given as rows (online filtered BC)."""
        return self.learner.update(rows)

    def ppo_iteration(self, rows: Sequence[dict], kl_coef: float) -> dict[str, float]:
        if self._offline_rows is None and self.dataset is not None and self.learner.config.offline_bc_weight > 0:
            self._offline_rows = self.dataset.to_pylist()
        return self.learner.ppo_iteration(rows, kl_coef, self._offline_rows or ())

    def put_weights(self):
        """The policy's weights in the object store, for the engines (a list holding the
        ref, so that Ray hands the ref itself back to the caller)."""
        from lmrl_ray.actors.weights import put_weights

        return [put_weights(self.learner.policy_state_dict())]

    def policy_state_dict(self) -> dict[str, torch.Tensor]:
        return self.learner.policy_state_dict()

    def update(self, indices: Sequence[int]) -> dict[str, float]:
        rows = self.dataset.take(pa.array(indices, type=pa.int64())).to_pylist()
        return self.learner.update(rows)

    def gradients(self, indices: Sequence[int]) -> torch.Tensor:
        """The batch's gradient without updating (tests compare learners with it)."""
        rows = self.dataset.take(pa.array(indices, type=pa.int64())).to_pylist()
        self.learner.compute_gradients(rows)
        return self.learner.gradients()

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
    """`config.num_learners` learner actors (0: one learner in-process)."""

    def __init__(self, config: TrainConfig, data: str | os.PathLike | None):
        self.config = config
        self.num_learners = config.num_learners
        data = str(data) if data is not None else None
        if self.num_learners == 0:
            self._local = LearnerWorker(config, data)
            self._actors = []
            return
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self._local = None
        bundle = {"CPU": config.cpus_per_learner}
        if config.gpus_per_learner > 0:
            bundle["GPU"] = config.gpus_per_learner
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
                num_cpus=config.cpus_per_learner,
                num_gpus=config.gpus_per_learner,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self._placement_group, placement_group_bundle_index=i),
            ).remote(config, data, rank=i, world_size=self.num_learners, master=master)
            for i in range(self.num_learners)
        ]
        ray.get([a.step.remote() for a in self._actors])  # every learner has joined the group

    def _call(self, method: str, *args, all_ranks: bool = True):
        """Call `method` on every learner (or rank 0 only) and return rank 0's answer."""
        if self._local is not None:
            return getattr(self._local, method)(*args)
        import ray

        actors = self._actors if all_ranks else self._actors[:1]
        return ray.get([getattr(a, method).remote(*args) for a in actors])[0]

    def num_episodes(self) -> int:
        return self._call("num_episodes", all_ranks=False)

    def mean_return(self) -> float:
        return self._call("mean_return", all_ranks=False)

    def update(self, indices: Sequence[int]) -> dict[str, float]:
        """One update on the episodes `indices`: learner r takes indices[r::N]."""
        indices = [int(i) for i in indices]
        if self._local is not None:
            return self._local.update(indices)
        import ray

        n = self.num_learners
        return ray.get([a.update.remote(indices[r::n]) for r, a in enumerate(self._actors)])[0]

    def update_rows(self, rows: Sequence[dict]) -> dict[str, float]:
        """One update on the episodes `rows`: learner r takes rows[r::N]."""
        if self._local is not None:
            return self._local.update_rows(rows)
        import ray

        n = self.num_learners
        return ray.get([a.update_rows.remote(rows[r::n]) for r, a in enumerate(self._actors)])[0]

    def ppo_iteration(self, rows: Sequence[dict], kl_coef: float) -> dict[str, float]:
        """PPO on one iteration's episodes: learner r takes rows[r::N]."""
        if self._local is not None:
            return self._local.ppo_iteration(rows, kl_coef)
        import ray

        n = self.num_learners
        return ray.get([a.ppo_iteration.remote(rows[r::n], kl_coef) for r, a in enumerate(self._actors)])[0]

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
        indices = [int(i) for i in indices]
        if self._local is not None:
            return [self._local.gradients(indices)]
        import ray

        n = self.num_learners
        return ray.get([a.gradients.remote(indices[r::n]) for r, a in enumerate(self._actors)])

    def save(self, folder: str | os.PathLike, driver_state: dict) -> Path:
        """Rank 0 writes the checkpoint (the learners hold identical state)."""
        return Path(self._call("save", str(folder), driver_state, all_ranks=False))

    def restore(self, folder: str | os.PathLike) -> dict:
        return self._call("restore", str(folder))

    def step(self) -> int:
        return self._call("step", all_ranks=False)

    def parameters_checksums(self) -> list[float]:
        if self._local is not None:
            return [self._local.parameters_checksum()]
        import ray

        return ray.get([a.parameters_checksum.remote() for a in self._actors])

    def shutdown(self) -> None:
        if self._actors:
            import ray
            from ray.util.placement_group import remove_placement_group

            for a in self._actors:
                ray.kill(a)
            self._actors = []
            remove_placement_group(self._placement_group)
