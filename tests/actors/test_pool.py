"""Engine pools on Ray (local, 2 CPUs) with the real tiny model: routing, weight broadcast,
restarts, in-process mode and simulator replicas; the weight transports' pure parts."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
import torch

from lmrl_ray.actors import weights as W
from lmrl_ray.actors.pool import EnginePool, EnginePoolConfig, wait
from lmrl_ray.engines.base import SamplingParams, StaleWeightsError
from lmrl_ray.engines.hf_engine import HFEngine

FACTORY = functools.partial(HFEngine.load, "tiny")
GREEDY = SamplingParams(temperature=0, max_new_tokens=6)
PROMPTS = [
    "You are in a maze. The goal is at (3, 5).\n",
    "Is it an animal?\nNo.\n",
    "word: crane\nfeedback: _ y _ _ g\n",
    "I would like a car under $20000.\n",
]
CANDIDATES = [["move up", "move down", "move left"], ["Yes.", "No."], ["slate", "crane"], ["Sure.", "No way."]]


@pytest.fixture(scope="module")
def reference():
    """The in-process engine every pool must agree with; tests that set the pool's
    weights set its weights too."""
    return HFEngine.load("tiny")


@pytest.fixture(scope="module")
def pool(ray_local):
    # Half a CPU each, in a placement group: the replica pool's two actors fit beside them.
    pool = EnginePool(
        FACTORY, EnginePoolConfig(num_engines=2, num_cpus_per_engine=0.5, placement_strategy="PACK", max_restarts=2)
    )
    yield pool
    pool.shutdown()


def perturbed(state_dict: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """New weights that change every output: seeded noise on each float tensor."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: t + 0.05 * torch.randn(t.shape, generator=generator) if t.is_floating_point() else t.clone()
        for name, t in state_dict.items()
    }


def same(got: list, want: list) -> bool:
    """Completions equal up to float rounding of the log-probs: engine actors run torch on
    one thread, this process on several, so sums are taken in another order."""
    if len(got) != len(want):
        return False
    for a, b in zip(got, want):
        if isinstance(a, list):
            if not same(a, b):
                return False
        elif (a.text, a.token_ids, a.finish_reason, a.prompt_truncated) != (
            b.text, b.token_ids, b.finish_reason, b.prompt_truncated
        ) or not np.allclose(a.logprobs, b.logprobs, rtol=0, atol=1e-4):
            return False
    return True


def new_weights(pool: EnginePool, reference: HFEngine, **transport) -> int:
    """Set fresh weights on the pool and the reference alike; returns their version."""
    version = pool.version + 1
    state = perturbed(reference.model.state_dict(), seed=version)
    pool.set_weights(state, version, **transport)
    reference.set_weights(state, version)
    return version


def kill_until_down(pool: EnginePool, index: int) -> int:
    """Kill engine `index` the way a crash would (Ray restarts it) and return once its old
    process no longer answers; returns that process's pid."""
    import ray

    actor = pool.actors[index]
    pid = ray.get(actor.stats.remote())["pid"]
    ray.kill(actor, no_restart=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ray.get(actor.stats.remote())
        except ray.exceptions.RayActorError:
            return pid
        time.sleep(0.05)
    raise AssertionError(f"engine {index} still answers 30 s after ray.kill")


def test_pool_of_two_matches_the_in_process_engine_and_spreads_requests(pool, reference):
    assert same(pool.generate(PROMPTS, GREEDY), reference.generate(PROMPTS, GREEDY))
    assert pool.choose(PROMPTS, CANDIDATES) == reference.choose(PROMPTS, CANDIDATES)
    sampled = SamplingParams(temperature=1.0, max_new_tokens=6, seed=3)
    assert same(pool.generate(PROMPTS, sampled), reference.generate(PROMPTS, sampled))

    served_before = [s["requests_served"] for s in pool.engine_stats()]
    pending = [pool.generate_async([prompt], GREEDY) for prompt in PROMPTS]
    # Four in flight at once over two idle engines: the least loaded takes each in turn.
    assert sorted(p.engine_index for p in pending) == [0, 0, 1, 1]
    ready, not_ready = wait(pending, num_returns=len(pending))
    assert len(ready) == len(pending) and not not_ready
    assert same([p.result() for p in pending], [reference.generate([prompt], GREEDY) for prompt in PROMPTS])
    assert all(p.version == pool.version for p in pending)
    served = [s["requests_served"] - b for s, b in zip(pool.engine_stats(), served_before)]
    assert served == [2, 2]

    # A copy (what a rollout worker in another process holds) routes to the same engines.
    import ray

    copy = ray.get(ray.put(pool))
    assert same(copy.generate(PROMPTS[:1], GREEDY), reference.generate(PROMPTS[:1], GREEDY))


def test_set_weights_reaches_every_engine_and_older_versions_are_refused(pool, reference):
    before = pool.call_each("generate", PROMPTS, GREEDY)
    version = new_weights(pool, reference)
    after = pool.call_each("generate", PROMPTS, GREEDY)
    expected = reference.generate(PROMPTS, GREEDY)
    assert after[0] == after[1] and same(after[0], expected)
    assert not same(after[0], before[0]) and not same(after[1], before[1])
    assert pool.version == version
    assert [s["version"] for s in pool.engine_stats()] == [version, version]

    stale = perturbed(reference.model.state_dict(), seed=999)
    with pytest.raises(StaleWeightsError):
        pool.set_weights(stale, version - 1)
    # The engines refuse too, when handed an old version directly; the error reaches the caller.
    import ray

    with pytest.raises(StaleWeightsError):
        ray.get(pool.actors[0].load_weights.remote([W.put_weights(stale)], version - 1))
    assert [s["version"] for s in pool.engine_stats()] == [version, version]
    assert same(pool.call_each("generate", PROMPTS, GREEDY), [expected, expected])


def test_a_broadcast_puts_the_weights_in_the_object_store_once(pool, reference, monkeypatch):
    import ray

    puts = []
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda value, **kw: puts.append(value) or real_put(value, **kw))
    new_weights(pool, reference)
    pool.generate(PROMPTS, GREEDY)
    pool.call_each("generate", PROMPTS, GREEDY)
    assert len(puts) == 1 and isinstance(puts[0], W.PackedWeights)
    # Every engine loaded that one object: the same ref, not a copy per engine.
    loaded = [s["weight_refs_loaded"][-1] for s in pool.engine_stats()]
    assert loaded[0] == loaded[1] == pool.weights_ref.hex()

    # A learner in another process puts the weights itself; the pool passes its ref on.
    version = pool.version + 1
    state = perturbed(reference.model.state_dict(), seed=version)
    ref = W.put_weights(state)
    pool.set_weights_from_ref(ref, version)
    reference.set_weights(state, version)
    assert len(puts) == 2 and pool.weights_ref == ref
    assert [s["weight_refs_loaded"][-1] for s in pool.engine_stats()] == [ref.hex(), ref.hex()]
    assert same(pool.generate(PROMPTS, GREEDY), reference.generate(PROMPTS, GREEDY))


def test_a_killed_engine_is_restarted_at_the_latest_version_and_the_pool_goes_on(pool, reference):
    version = new_weights(pool, reference)
    expected = reference.generate(PROMPTS, GREEDY)
    pid_before = kill_until_down(pool, 0)
    pending = [pool.generate_async(PROMPTS, GREEDY) for _ in range(2)]
    assert sorted(p.engine_index for p in pending) == [0, 1]
    assert same([p.result() for p in pending], [expected, expected])
    assert [p.engine_index for p in pending] == [1, 1]  # the call sent to the dead engine went to the other
    each = pool.call_each("generate", PROMPTS, GREEDY)
    assert each[0] == each[1] and same(each[0], expected)  # the restarted engine answers as the other
    stats = pool.engine_stats()
    assert stats[0]["pid"] != pid_before  # a new process, built by the factory at version 0 ...
    assert [s["version"] for s in stats] == [version, version]  # ... brought to the latest
    assert stats[0]["weight_refs_loaded"] == [pool.weights_ref.hex()]


def test_collective_broadcast_over_gloo_and_a_restart_between_broadcasts(pool, reference):
    version = new_weights(pool, reference, transport="gloo")
    expected = reference.generate(PROMPTS, GREEDY)
    assert same(pool.call_each("generate", PROMPTS, GREEDY), [expected, expected])
    assert pool.weights_ref is None  # nothing went through the object store

    # A restarted engine has no copy of these weights to catch up from: its calls go to
    # the other engine until the next broadcast, which forms the group again with it.
    kill_until_down(pool, 1)
    assert pool.engine_stats()[1]["version"] == 0  # back up (engine_stats waits), from the factory
    pending = [pool.generate_async(PROMPTS, GREEDY) for _ in range(2)]
    assert same([p.result() for p in pending], [expected, expected])
    assert [p.engine_index for p in pending] == [0, 0]
    assert pool.engine_stats()[1]["requests_served"] == 0
    version = new_weights(pool, reference, transport="gloo")
    expected = reference.generate(PROMPTS, GREEDY)
    assert same(pool.call_each("generate", PROMPTS, GREEDY), [expected, expected])
    assert [s["version"] for s in pool.engine_stats()] == [version, version]


def test_in_process_pool_behaves_like_the_engine():
    engine, pool = HFEngine.load("tiny"), EnginePool(FACTORY, EnginePoolConfig(num_engines=0))
    assert pool.actors == [] and pool.version == engine.version == 0
    assert pool.generate(PROMPTS, GREEDY) == engine.generate(PROMPTS, GREEDY)
    assert pool.choose(PROMPTS, CANDIDATES) == engine.choose(PROMPTS, CANDIDATES)
    pending = pool.generate_async(PROMPTS, GREEDY)
    assert wait([pending]) == ([pending], []) and pending.done()
    assert pending.result() == engine.generate(PROMPTS, GREEDY) and pending.version == 0

    state = perturbed(engine.model.state_dict(), seed=1)
    pool.set_weights(state, 1)
    engine.set_weights(state, 1)
    assert pool.version == 1
    assert pool.call_each("generate", PROMPTS, GREEDY) == [engine.generate(PROMPTS, GREEDY)]
    with pytest.raises(StaleWeightsError):
        pool.set_weights(state, 0)


def test_simulator_replicas_are_a_pool_with_a_fixed_model(ray_local):
    """Two replicas of a fixed model answer a dialogue's questions; nothing sets weights."""
    simulator = HFEngine.load("tiny")
    replicas = EnginePool(FACTORY, EnginePoolConfig(num_engines=2, num_cpus_per_engine=0.5))
    try:
        questions = [f"Is it a {thing}?\n" for thing in ("dog", "car", "tree", "river", "pen", "cloud")]
        pending = [replicas.generate_async([q], GREEDY) for q in questions]
        assert same([p.result() for p in pending], [simulator.generate([q], GREEDY) for q in questions])
        stats = replicas.engine_stats()
        assert [s["requests_served"] for s in stats] == [3, 3]
        assert [s["version"] for s in stats] == [0, 0] and replicas.version == 0
    finally:
        replicas.shutdown()


# -- Transports: the pure parts and the GPU path --------------------------------------


def test_nccl_is_chosen_only_with_gpu_engines_cuda_and_nccl():
    select = functools.partial(W.select_transport, "auto")
    assert select(engines_on_gpu=True, cuda_available=True, nccl_available=True) == "nccl"
    for gpu, cuda, nccl in [(False, True, True), (True, False, True), (True, True, False), (False, False, False)]:
        assert select(engines_on_gpu=gpu, cuda_available=cuda, nccl_available=nccl) == "object_store"
    with pytest.raises(ValueError, match="CUDA, NCCL"):
        W.select_transport("nccl", engines_on_gpu=True, cuda_available=False, nccl_available=False)
    forced = W.select_transport("object_store", engines_on_gpu=True, cuda_available=True, nccl_available=True)
    assert forced == "object_store"
    assert W.select_transport("gloo", engines_on_gpu=False) == "gloo"
    with pytest.raises(ValueError, match="unknown weight transport"):
        W.select_transport("rdma", engines_on_gpu=True)
    with pytest.raises(ValueError, match="weight_transport"):
        EnginePoolConfig(weight_transport="rdma")
    with pytest.raises(ValueError, match="placement_strategy"):
        EnginePoolConfig(num_engines=2, placement_strategy="pack")


def test_packing_is_lossless_and_unpacking_copies_nothing():
    state = {
        "w": torch.randn(3, 4),
        "half": torch.randn(5, dtype=torch.bfloat16),
        "steps": torch.tensor(7),
        "view": torch.randn(4, 3).t(),  # not contiguous: packed as a contiguous copy
    }
    packed = W.pack(state)
    assert all(isinstance(a, np.ndarray) for a in packed.arrays.values())
    assert packed.bit_dtypes == {"half": torch.bfloat16}
    unpacked = W.unpack(packed)
    for name, tensor in state.items():
        assert unpacked[name].dtype == tensor.dtype and torch.equal(unpacked[name], tensor)
        assert unpacked[name].data_ptr() == packed.arrays[name].ctypes.data
    assert W.spec_of(state)[1] == ("half", (5,), torch.bfloat16)


@pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.device_count() >= 2 and torch.distributed.is_nccl_available()),
    reason="the NCCL broadcast needs CUDA, NCCL and two GPUs (one for the sender, one for the engine)",
)
def test_nccl_broadcast_to_a_gpu_engine(ray_local, reference):
    # Ray gives the engine actor the first free GPU; the sender (this process) takes the last.
    torch.cuda.set_device(torch.cuda.device_count() - 1)
    factory = functools.partial(HFEngine.load, "tiny", device="cuda")
    pool = EnginePool(factory, EnginePoolConfig(num_engines=1, num_cpus_per_engine=0.5, num_gpus_per_engine=1))
    try:
        state = perturbed(reference.model.state_dict(), seed=123)
        pool.set_weights(state, 1)  # "auto": NCCL
        assert pool.weights_ref is None
        expected = HFEngine.load("tiny", device="cuda")
        expected.set_weights(state, 1)
        greedy = pool.generate(PROMPTS, GREEDY)
        assert [c.token_ids for c in greedy] == [c.token_ids for c in expected.generate(PROMPTS, GREEDY)]
    finally:
        pool.shutdown()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for the engine actor")
def test_a_gpu_engine_actor_takes_weights_through_the_object_store(ray_local, reference):
    """One engine actor holding a GPU: new weights reach it through the object store and
    its greedy output equals an in-process CUDA engine's with the same weights."""
    factory = functools.partial(HFEngine.load, "tiny", device="cuda")
    pool = EnginePool(factory, EnginePoolConfig(num_engines=1, num_cpus_per_engine=0.5, num_gpus_per_engine=1))
    try:
        state = perturbed(reference.model.state_dict(), seed=321)
        pool.set_weights(state, 1, transport="object_store")
        expected = HFEngine.load("tiny", device="cuda")
        expected.set_weights(state, 1)
        greedy = pool.generate(PROMPTS, GREEDY)
        assert [c.token_ids for c in greedy] == [c.token_ids for c in expected.generate(PROMPTS, GREEDY)]
        assert pool.version == 1
    finally:
        pool.shutdown()
