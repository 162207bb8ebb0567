"""Engine pools: N engines as Ray actors behind the `Engine` interface.

    pool = EnginePool(functools.partial(HFEngine.load, "tiny"), EnginePoolConfig(num_engines=2))
    completions = pool.generate(prompts, SamplingParams(temperature=0))
    pending = [pool.generate_async(batch, sampling) for batch in batches]   # several in flight
    ready, _ = wait(pending, num_returns=1)
    pool.set_weights(learner.state_dict(), version=7)                      # broadcast to all

Ray is a thin shell here (STYLE 4): `EngineActor` is a plain class around any `Engine`
that a picklable factory builds, the pool wraps it in `ray.remote`, places, routes and
restarts; with `num_engines=0` the pool holds one engine in this process and Ray is
never started.

**Simulator replicas** are the same thing: an `EnginePool` over the simulator's model
(its factory loads the distilled simulator) whose `set_weights` is simply never called.
No separate class: routing, placement and restarts are what replicas need too.

Routing: each call goes to the engine with the fewest calls in flight from this pool
(ties: the one that has been sent the fewest calls, then the lowest index). A call is
in flight from dispatch until its result is taken (`PendingCall.result`).

Versions and faults: the pool keeps the latest weights (their object-store ref and
version) and every call carries them; an engine whose version is older, such as one Ray
restarted from its factory at version 0, loads those weights before it serves. Engine
actors are created with `max_restarts`, and a call whose actor died is sent again to
another engine (or to the restarted one), so the pool goes on. Generation is a function
of prompts, weights and seed, so running a call twice is harmless.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import ray
import torch
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from lmrl_ray.actors import weights as W
from lmrl_ray.engines.base import Completion, Engine, SamplingParams, check_version

log = logging.getLogger(__name__)

PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
SERVED_METHODS = ("generate", "choose")


@dataclass(frozen=True)
class EnginePoolConfig:
    """How many engine actors, what each reserves, and how they are placed and restarted."""

    num_engines: int = 0
    """Engine actors to start. 0: one engine in this process, no Ray (same interface)."""
    num_cpus_per_engine: float = 1.0
    """CPUs Ray reserves for each engine actor (fractions allowed)."""
    num_gpus_per_engine: float = 0.0
    """GPUs Ray reserves for each engine actor (fractions share a GPU). Engines with GPUs
    make "auto" weight transport use NCCL where this process has CUDA and NCCL."""
    placement_strategy: str | None = None
    """None: Ray places each actor where it fits. Otherwise one placement group with a
    bundle per engine, reserved all at once (gang scheduling) with Ray's strategy:
    "PACK" (as few nodes as possible), "SPREAD" (across nodes), "STRICT_PACK" (one node),
    "STRICT_SPREAD" (one engine per node)."""
    max_restarts: int = 3
    """Times Ray restarts a dead engine actor (-1: without limit). A restarted engine is
    brought to the latest weights before it serves."""
    weight_transport: str = "auto"
    """How `set_weights` moves weights: "object_store", "nccl", "gloo" (the collective
    path on CPU), or "auto" (see `weights.select_transport`)."""
    placement_timeout_s: float = 600.0
    """Seconds to wait for the placement group's resources before giving up."""
    call_retry_timeout_s: float = 120.0
    """Seconds a call keeps being re-sent while engines are dead or restarting, before
    the error reaches the caller."""

    def __post_init__(self):
        if self.num_engines < 0:
            raise ValueError(f"num_engines must be >= 0, got {self.num_engines}")
        if self.num_cpus_per_engine < 0 or self.num_gpus_per_engine < 0:
            raise ValueError("num_cpus_per_engine and num_gpus_per_engine must be >= 0")
        if self.placement_strategy is not None:
            if self.placement_strategy not in PLACEMENT_STRATEGIES:
                raise ValueError(
                    f"placement_strategy must be None or one of {PLACEMENT_STRATEGIES}, got {self.placement_strategy!r}"
                )
            if self.num_cpus_per_engine == 0 and self.num_gpus_per_engine == 0:
                raise ValueError("a placement group needs each engine to reserve some CPUs or GPUs")
        if self.max_restarts < -1:
            raise ValueError(f"max_restarts must be >= -1, got {self.max_restarts}")
        if self.call_retry_timeout_s <= 0:
            raise ValueError(f"call_retry_timeout_s must be > 0, got {self.call_retry_timeout_s}")
        if self.weight_transport not in W.TRANSPORTS:
            raise ValueError(f"weight_transport must be one of {W.TRANSPORTS}, got {self.weight_transport!r}")


class WeightsUnavailableError(RuntimeError):
    """An engine is behind the pool's version and no object-store copy of the latest
    weights exists (they came over a collective): it waits for the next broadcast."""


class EngineActor:
    """What runs inside each engine actor: an engine plus the pool's bookkeeping.

    A plain class (tests can build one in-process); the pool wraps it in `ray.remote`.
    """

    def __init__(self, factory: Callable[[], Engine]):
        self.engine = factory()
        self.incarnation = uuid.uuid4().hex  # new on every (re)start: tells a restart apart
        self.requests_served = 0
        self.weight_refs_loaded: list[str] = []
        self._receiver: W.CollectiveReceiver | None = None
        self._group_id: str | None = None

    def serve(self, method: str, args: tuple, latest_version: int, latest_weights: list | None) -> tuple[int, Any]:
        """Catch up to the latest weights if behind, then run `engine.<method>(*args)`.
        Returns (the version that served, the result).

        `latest_weights` is `[ObjectRef]` or None. The ref travels inside a list so Ray
        passes the ref itself instead of fetching the object for every call: it is read
        only when this engine is behind.
        """
        if method not in SERVED_METHODS:
            raise ValueError(f"an engine actor serves {SERVED_METHODS}, not {method!r}")
        if self.engine.version < latest_version:
            if latest_weights is None:
                raise WeightsUnavailableError(
                    f"engine at version {self.engine.version} needs version {latest_version}, "
                    "which has no object-store copy; it waits for the next broadcast"
                )
            self.load_weights(latest_weights, latest_version)
        self.requests_served += 1
        return self.engine.version, getattr(self.engine, method)(*args)

    def load_weights(self, weights_ref: list, version: int) -> int:
        """Load `[ObjectRef]` from `weights.put_weights` as `version` (the engine refuses
        older versions). Returns the engine's version."""
        (ref,) = weights_ref
        self.engine.set_weights(W.get_weights(ref), version)
        self.weight_refs_loaded.append(ref.hex())
        return self.engine.version

    def join_weight_group(
        self, address: tuple[str, int], rank: int, world_size: int, backend: str, group_id: str
    ) -> None:
        self._receiver = W.CollectiveReceiver(address, rank, world_size, backend)
        self._group_id = group_id

    def receive_weights(self, spec: list, version: int) -> int:
        """Receive one broadcast over the weight group and load it as `version`."""
        if self._receiver is None:
            raise RuntimeError("receive_weights before join_weight_group")
        state = self._receiver.receive(spec)
        # The broadcast completes whatever the version, so the group stays in step;
        # only then may the engine refuse a stale version.
        self.engine.set_weights(state, version)
        return self.engine.version

    def group_id(self) -> str | None:
        return self._group_id

    def stats(self) -> dict:
        return {
            "version": self.engine.version,
            "requests_served": self.requests_served,
            "weight_refs_loaded": list(self.weight_refs_loaded),
            "incarnation": self.incarnation,
            "pid": os.getpid(),
        }


class PendingCall:
    """A call in flight: `result()` waits for it (re-sending it if its engine died).

    `version` is the policy version of the weights that served it, set once the result
    is taken: the tag for the trajectories built from it.
    """

    def __init__(self, method: str, args: tuple, *, pool: "EnginePool | None" = None, engine: int | None = None,
                 value: Any = None, version: int | None = None):
        self.method = method
        self.args = args
        self.version = version
        self._pool = pool
        self._value = value
        self._taken = pool is None  # an in-process call is done when it is made
        self._pinned = engine is not None  # call_each: this engine or none
        self.engine_index: int | None = None
        self.ref = None
        if pool is not None:
            self.engine_index, self.ref = pool._dispatch(method, args, only=engine)

    def done(self) -> bool:
        if self._taken:
            return True
        ready, _ = ray.wait([self.ref], timeout=0)
        return bool(ready)

    def result(self, timeout: float | None = None) -> Any:
        if not self._taken:
            self._value, self.version = self._pool._collect(self, timeout)
            self._taken = True
        return self._value


def wait(pending: Sequence[PendingCall], num_returns: int = 1, timeout: float | None = None):
    """Like `ray.wait` over pending calls: (ready, not ready), each in the given order."""
    remote = [p for p in pending if not p._taken]
    needed = min(num_returns - (len(pending) - len(remote)), len(remote))
    ready_refs: set = set()
    if needed > 0:
        ready_list, _ = ray.wait([p.ref for p in remote], num_returns=needed, timeout=timeout)
        ready_refs = set(ready_list)
    ready = [p for p in pending if p._taken or p.ref in ready_refs]
    return ready, [p for p in pending if not (p._taken or p.ref in ready_refs)]


class EnginePool(Engine):
    """N engine actors behind the `Engine` interface (see the module docstring)."""

    def __init__(self, factory: Callable[[], Engine], config: EnginePoolConfig = EnginePoolConfig()):
        self.config = config
        self._lock = threading.Lock()
        self._sender: W.CollectiveSender | None = None
        self._group_id: str | None = None
        self._placement_group = None
        if config.num_engines == 0:
            self._local: Engine | None = factory()
            self._latest = (self._local.version, None)
            self.actors: list = []
            return
        self._local = None
        self.actors = self._start_actors(factory)
        try:
            versions = ray.get([a.stats.remote() for a in self.actors])  # surfaces factory errors now
        except BaseException:
            self.shutdown()
            raise
        found = {s["version"] for s in versions}
        if len(found) != 1:
            raise ValueError(f"the factory built engines at different versions {sorted(found)}")
        # (version, ObjectRef or None), replaced as one tuple so that a call dispatched
        # from another thread never pairs one broadcast's version with another's weights.
        # Holding the ref keeps the object alive for engines that restart later.
        self._latest: tuple[int, Any] = (found.pop(), None)
        self._in_flight = [0] * len(self.actors)
        self._dispatched = [0] * len(self.actors)

    def _start_actors(self, factory: Callable[[], Engine]) -> list:
        c = self.config
        options = dict(
            num_cpus=c.num_cpus_per_engine,
            num_gpus=c.num_gpus_per_engine,
            max_restarts=c.max_restarts,
            # Ray itself does not re-run calls (at-most-once); the pool re-sends a failed
            # call, possibly to another engine, which Ray's per-actor retry cannot do.
            max_task_retries=0,
        )
        remote_class = ray.remote(EngineActor)
        if c.placement_strategy is None:
            return [remote_class.options(**options).remote(factory) for _ in range(c.num_engines)]
        bundle = {k: v for k, v in (("CPU", c.num_cpus_per_engine), ("GPU", c.num_gpus_per_engine)) if v > 0}
        self._placement_group = placement_group([bundle] * c.num_engines, strategy=c.placement_strategy)
        try:
            ray.get(self._placement_group.ready(), timeout=c.placement_timeout_s)
        except ray.exceptions.GetTimeoutError:
            ray.util.remove_placement_group(self._placement_group)
            raise RuntimeError(
                f"{c.num_engines} engine bundles of {bundle} ({c.placement_strategy}) did not fit "
                f"within {c.placement_timeout_s} s: {ray.available_resources()} available"
            ) from None
        return [
            remote_class.options(
                **options,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    self._placement_group, placement_group_bundle_index=i
                ),
            ).remote(factory)
            for i in range(c.num_engines)
        ]

    # -- The Engine interface ------------------------------------------------------

    @property
    def version(self) -> int:
        return self._local.version if self._local is not None else self._latest[0]

    @property
    def weights_ref(self):
        """The object-store ref of the latest weights: None before any broadcast, in
        process, and after a collective broadcast."""
        return self._latest[1]

    def generate(self, prompts: list[str], sampling: SamplingParams) -> list[Completion]:
        return self.generate_async(prompts, sampling).result()

    def choose(self, prompts: list[str], candidates: list[list[str]]) -> list[int]:
        return self.choose_async(prompts, candidates).result()

    def generate_async(self, prompts: list[str], sampling: SamplingParams) -> PendingCall:
        """Send a `generate` to the least loaded engine; take its completions with `.result()`."""
        return self._submit("generate", (prompts, sampling))

    def choose_async(self, prompts: list[str], candidates: list[list[str]]) -> PendingCall:
        return self._submit("choose", (prompts, candidates))

    def set_weights(
        self, state_dict: Mapping[str, torch.Tensor], version: int, *, transport: str | None = None
    ) -> None:
        """Broadcast `state_dict` as policy `version` to every engine (refusing an older version).

        Object store: one `ray.put`, the same ref to every engine; an engine that is
        restarting gets it with its next call. Collective: one broadcast over the weight
        group (formed on first use, formed again when an engine restarted). `transport`
        overrides `config.weight_transport` for this broadcast.
        """
        check_version(self.version, version)
        if self._local is not None:
            self._local.set_weights(state_dict, version)
            return
        transport = W.select_transport(
            transport or self.config.weight_transport, engines_on_gpu=self.config.num_gpus_per_engine > 0
        )
        if transport == "object_store":
            self._set_weights_from_store(W.put_weights(state_dict), version)
        else:
            self._set_weights_collective(state_dict, version, backend=transport)

    def latest(self) -> tuple[int, list | None]:
        """(version, [weights ref] or None): the latest broadcast, for a copy of this pool
        in another process (a rollout worker's) to `follow`."""
        return self._serve_args()

    def follow(self, latest: tuple[int, list | None]) -> None:
        """Adopt the original pool's `latest()` (a copy does not see its broadcasts), so
        that calls from this copy bring a restarted engine to the latest weights."""
        version, refs = latest
        if self._local is None and version >= self._latest[0]:
            self._latest = (version, None if refs is None else refs[0])

    def set_weights_from_ref(self, ref, version: int) -> None:
        """Distribute weights another process already put with `weights.put_weights`
        (a learner actor); the pool keeps the ref for engines that restart later."""
        check_version(self.version, version)
        if self._local is not None:
            self._local.set_weights(W.get_weights(ref), version)
            return
        self._set_weights_from_store(ref, version)

    # -- Inspection ------------------------------------------------------------------

    def call_each(self, method: str, *args) -> list:
        """Run `method` once on every engine (each brought to the latest weights first),
        bypassing routing: for checks and evaluation. Results in engine order."""
        if method not in SERVED_METHODS:
            raise ValueError(f"engines serve {SERVED_METHODS}, not {method!r}")
        if self._local is not None:
            return [getattr(self._local, method)(*args)]
        calls = [PendingCall(method, args, pool=self, engine=i) for i in range(len(self.actors))]
        return [call.result() for call in calls]

    def engine_stats(self) -> list[dict]:
        """Each engine's version, requests served, weight refs loaded (hex ids) and process."""
        if self._local is not None:
            return [{"version": self._local.version, "requests_served": None, "pid": os.getpid()}]
        return self._ask_each("stats")

    def shutdown(self) -> None:
        """Stop the engine actors and free their placement group."""
        if self._local is not None:
            return
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        if self._placement_group is not None:
            ray.util.remove_placement_group(self._placement_group)
            self._placement_group = None
        self.actors = []

    # -- Pickling: a rollout worker in another process can hold the pool ---------------

    def __getstate__(self):
        state = dict(self.__dict__)
        # A lock and a process group live in this process only; a copy balances its own
        # load and cannot send collective broadcasts (its original does).
        del state["_lock"]
        state["_sender"] = None
        if self._local is None:
            state["_in_flight"] = [0] * len(self.actors)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- Routing and retries ----------------------------------------------------------

    def _serve_args(self) -> tuple[int, list | None]:
        """What every call carries for `EngineActor.serve`: the latest version and its weights."""
        version, ref = self._latest
        return version, None if ref is None else [ref]

    def _submit(self, method: str, args: tuple) -> PendingCall:
        if self._local is not None:
            value = getattr(self._local, method)(*args)
            return PendingCall(method, args, value=value, version=self._local.version)
        return PendingCall(method, args, pool=self)

    def _dispatch(self, method: str, args: tuple, *, avoid: Sequence[int] = (), only: int | None = None):
        """Send a call to engine `only`, else to the least loaded engine not in `avoid`."""
        with self._lock:
            if only is not None:
                index = only
            else:
                candidates = [i for i in range(len(self.actors)) if i not in avoid]
                index = min(candidates, key=lambda i: (self._in_flight[i], self._dispatched[i], i))
            self._in_flight[index] += 1
            self._dispatched[index] += 1
        return index, self.actors[index].serve.remote(method, args, *self._serve_args())

    def _ask_each(self, method: str, *args) -> list:
        """`EngineActor.<method>(*args)` on every engine, waiting out engines that Ray is
        restarting (until `config.call_retry_timeout_s`)."""
        deadline = time.monotonic() + self.config.call_retry_timeout_s
        results: dict[int, Any] = {}
        pause_s = 0.25
        while len(results) < len(self.actors):
            refs = {i: getattr(a, method).remote(*args) for i, a in enumerate(self.actors) if i not in results}
            for i, ref in refs.items():
                try:
                    results[i] = ray.get(ref)
                except ray.exceptions.RayActorError:
                    if time.monotonic() > deadline:
                        raise
            if len(results) < len(self.actors):
                time.sleep(pause_s)
                pause_s = min(2 * pause_s, 4.0)
        return [results[i] for i in range(len(self.actors))]

    def _release(self, index: int) -> None:
        with self._lock:
            self._in_flight[index] -= 1

    def _collect(self, call: PendingCall, timeout: float | None) -> tuple[Any, int]:
        """The result of `call`, re-sending it while its engine is dead or restarting.

        A failed call goes next to an engine that has not failed it yet; once every one
        has, the pool waits (Ray is restarting them: that takes seconds) and tries them
        all again, until `config.call_retry_timeout_s` has passed.
        """
        deadline = time.monotonic() + self.config.call_retry_timeout_s
        failed: set[int] = set()
        pause_s = 0.25
        while True:
            try:
                version, value = ray.get(call.ref, timeout=timeout)
            except ray.exceptions.GetTimeoutError:
                raise  # still in flight: the caller may wait again
            except (ray.exceptions.RayActorError, WeightsUnavailableError) as error:
                self._release(call.engine_index)
                if time.monotonic() > deadline:
                    raise
                log.warning("engine %d failed a %s call (%s); sending it again", call.engine_index, call.method, error)
                failed.add(call.engine_index)
                if call._pinned or len(failed) == len(self.actors):
                    time.sleep(pause_s)
                    pause_s = min(2 * pause_s, 4.0)
                    failed.clear()
                only = call.engine_index if call._pinned else None
                call.engine_index, call.ref = self._dispatch(call.method, call.args, avoid=failed, only=only)
            except BaseException:
                self._release(call.engine_index)
                raise
            else:
                self._release(call.engine_index)
                return value, version

    # -- Weight transports ----------------------------------------------------------

    def _set_weights_from_store(self, ref, version: int) -> None:
        loads = [actor.load_weights.remote([ref], version) for actor in self.actors]
        for index, load in enumerate(loads):
            try:
                ray.get(load)
            except ray.exceptions.RayActorError:
                # It loads the same ref with its next call, once Ray has restarted it.
                log.warning("engine %d is down; it will load version %d when it next serves", index, version)
        # Recorded only once every live engine took them: weights that fail to load
        # (a wrong state dict) must not become what every later call catches up to.
        self._latest = (version, ref)

    def _set_weights_collective(self, state_dict: Mapping[str, torch.Tensor], version: int, backend: str) -> None:
        ids = self._ask_each("group_id")  # waits out restarts: the broadcast needs every engine
        if self._sender is None or any(i != self._group_id for i in ids):
            self._form_weight_group(backend)
        receives = [actor.receive_weights.remote(W.spec_of(state_dict), version) for actor in self.actors]
        self._sender.send(state_dict)
        ray.get(receives)
        # No object-store copy: an engine that restarts before the next broadcast waits
        # for it (WeightsUnavailableError routes its calls elsewhere).
        self._latest = (version, None)

    def _form_weight_group(self, backend: str) -> None:
        """A new group of this process (rank 0) and every engine: on first use, and when an
        engine restarted, since a collective cannot go on with a member gone."""
        self._sender = W.CollectiveSender(backend, len(self.actors) + 1)
        self._group_id = uuid.uuid4().hex
        joins = [
            actor.join_weight_group.remote(self._sender.address, rank, len(self.actors) + 1, backend, self._group_id)
            for rank, actor in enumerate(self.actors, start=1)
        ]
        self._sender.connect()
        ray.get(joins)


__all__ = [
    "EngineActor",
    "EnginePool",
    "EnginePoolConfig",
    "PendingCall",
    "WeightsUnavailableError",
    "wait",
]
