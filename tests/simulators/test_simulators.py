"""LM simulators: training rows from grounded dialogues, the weights hash, serving in
the environments, the hash recorded by evaluation, bad input."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from lmrl_ray import envs
from lmrl_ray.actors.simulator_replicas import serve_simulator
from lmrl_ray.data.datagen import generate
from lmrl_ray.data.schema import transcript_of
from lmrl_ray.data.store import ReplayStore
from lmrl_ray.engines.base import SamplingParams
from lmrl_ray.envs.base import AGENT, ENV
from lmrl_ray.learners.config import load_config
from lmrl_ray.models import load_policy
from lmrl_ray.models.checkpoint import save_checkpoint
from lmrl_ray.simulators.distill import simulator_rows, train_simulator, weights_hash
from lmrl_ray.simulators.lm import SECRET_PREFIX, lm_simulator, simulator_settings


@pytest.fixture(scope="module")
def tq_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tq"
    generate("twenty-questions", 24, str(path), seed=0, workers=0)
    return path


@pytest.fixture(scope="module")
def tq_policy(tmp_path_factory, tq_data):
    """A Twenty Questions BC checkpoint (one update: any policy will do)."""
    from lmrl_ray.drivers.offline import train_offline

    config = load_config("bc", task="twenty-questions", overrides=["updates=1", "batch_episodes=4"])
    return train_offline(config, data=tq_data, out=tmp_path_factory.mktemp("bc"), progress=False)["checkpoint"]


@pytest.fixture(scope="module")
def tq_simulator(tmp_path_factory, tq_data):
    """A Twenty Questions LM simulator (30 updates: it answers "Yes." or "No.")."""
    return train_simulator("twenty-questions", tq_data, tmp_path_factory.mktemp("sim") / "sim",
                           overrides=["updates=30", "batch_episodes=8"], progress=False)


def stored_rows(path) -> list[dict]:
    store = ReplayStore(path)
    return [r for shard in store.shards() for r in store.read_shard(shard).to_pylist()]


@pytest.mark.parametrize("task", ["twenty-questions", "guess-city"])
def test_simulator_rows_are_the_grounded_answers_after_the_secret(tmp_path, task):
    generate(task, 4, str(tmp_path / task), seed=1, workers=0)
    rows = stored_rows(tmp_path / task)
    env = envs.make(task)
    for row, sim in zip(rows, simulator_rows(task, rows)):
        turns = transcript_of(row)
        swapped = transcript_of(sim)
        env.reset(seed=row["seed"])
        secret = env.hidden_object.name if task == "twenty-questions" else env.city.name
        first = swapped[0].text.split("\n")
        assert swapped[0].role == ENV and first[0] == SECRET_PREFIX + secret
        assert first[1:] == [turns[0].text, turns[1].text]  # the opening and the first question are context
        answers = [t.text for t in turns[2::2]]  # the simulator's lines after the opening
        assert [t.text for t in swapped if t.role == AGENT] == answers
        assert [t.text for t in swapped[1:] if t.role == ENV and t.text] == [t.text for t in turns[3::2]]
    with pytest.raises(ValueError, match="not 'guess-city'|no LM simulator"):
        simulator_rows("guess-city" if task != "guess-city" else "maze", rows)


def test_the_weights_hash_changes_when_the_weights_do(tmp_path):
    model, tokenizer = load_policy("tiny")
    a = save_checkpoint(model, tokenizer, tmp_path / "a")
    b = save_checkpoint(model, tokenizer, tmp_path / "b")
    assert weights_hash(a) == weights_hash(b)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3
    c = save_checkpoint(model, tokenizer, tmp_path / "c")
    assert weights_hash(c) != weights_hash(a)
    with pytest.raises(FileNotFoundError, match="no .safetensors"):
        weights_hash(tmp_path)


@pytest.mark.slow
def test_a_trained_simulator_answers_in_the_environment_and_evaluation_records_its_hash(tq_simulator, tq_policy):
    from lmrl_ray.drivers.evaluation import evaluate_checkpoint

    sim = tq_simulator
    assert sim["loss"] < 1.0  # the answers are short and mostly "No."
    env = envs.make("twenty-questions", simulator=lm_simulator("twenty-questions", sim["folder"]))
    env.reset(seed=3)
    policy, rng = envs.policy("twenty-questions", "behaviour"), np.random.default_rng(0)
    policy.reset(env, rng)
    answers = [env.step(policy.act(env, rng))[0] for _ in range(3)]
    assert all(a in ("Yes.", "No.") for a in answers), answers  # what the grounded oracle says

    checkpoint = tq_policy
    result = evaluate_checkpoint(checkpoint, episodes=1, seed=0, engine="hf",
                                 env_settings={"simulator": "lm", "simulator_model": sim["folder"]})
    assert result["simulator"] == "lm" and result["simulator_hash"] == sim["hash"] == weights_hash(sim["folder"])
    grounded = evaluate_checkpoint(checkpoint, episodes=1, seed=0, engine="hf")
    assert grounded["simulator"] is None and "simulator_hash" not in grounded


@pytest.mark.slow
def test_a_rollout_worker_answers_every_simulator_turn_of_a_step_in_one_call(tq_simulator, tq_policy):
    from lmrl_ray.actors.rollout_worker import RolloutWorker, default_max_new_tokens
    from lmrl_ray.drivers.evaluation import checkpoint_engine

    settings = simulator_settings("twenty-questions", {"simulator": "lm", "simulator_model": tq_simulator["folder"],
                                                       "max_questions": 4})
    policy = checkpoint_engine(tq_policy, engine="hf")
    greedy = SamplingParams(temperature=0, max_new_tokens=default_max_new_tokens("twenty-questions"))
    worker = RolloutWorker("twenty-questions", policy, sampling=greedy, num_envs=5, env_settings=settings)
    rows = worker.run(list(range(5)))
    # One policy call and one simulator call per step; no simulator had to call its engine itself.
    assert worker.engine_calls == 4 and worker.simulator_calls == 4
    assert [env.simulator.unbatched_calls for env in worker._envs] == [0] * 5
    # The same episodes as each played alone, its simulator answering turn by turn.
    for seed, row in enumerate(rows):
        env = envs.make("twenty-questions", **settings)
        env.reset(seed=seed)
        while not env.done:
            [completion] = policy.generate([env.prompt()], greedy)
            env.step(completion.text)
        assert env.simulator.unbatched_calls == env.agent_turns
        assert transcript_of(row) == env.transcript


@pytest.mark.slow
def test_simulator_replicas_serve_the_rollout_workers(tq_simulator, tq_policy):
    import ray

    from lmrl_ray.actors.pool import EnginePool, EnginePoolConfig
    from lmrl_ray.actors.rollout_group import RolloutGroup
    from lmrl_ray.drivers.evaluation import checkpoint_engine, evaluate_checkpoint
    from lmrl_ray.envs.protocol import evaluation_options

    recorded = {"simulator": "lm", "simulator_model": tq_simulator["folder"], "max_questions": 3}
    settings = simulator_settings("twenty-questions", recorded)
    factory = functools.partial(checkpoint_engine, tq_policy, engine="hf", device="cpu")
    # A worker, a policy engine and a simulator replica on the 2 CPUs Ray sees here.
    replicas = serve_simulator(tq_simulator["folder"], 1, cpus_per_replica=0.5)
    engines = EnginePool(factory, EnginePoolConfig(num_engines=1, num_cpus_per_engine=0.5))
    group = RolloutGroup("twenty-questions", engines, num_workers=1, cpus_per_worker=0.5,
                         sampling=SamplingParams(temperature=0), num_envs=4,
                         env_settings=simulator_settings("twenty-questions", recorded, engine=replicas))
    try:
        served = group.sample(list(range(4)))
        [stats] = ray.get([actor.stats.remote() for actor in replicas.actors])
    finally:
        group.shutdown()
        engines.shutdown()
        replicas.shutdown()
    # One batched call per step, from the worker actor: as many as the longest episode's turns.
    assert stats["requests_served"] == max(len(row["turns"]) // 2 for row in served)
    replicas = evaluate_checkpoint(tq_policy, episodes=2, seed=0, engine="hf", temperature=0, env_settings=recorded,
                                   simulator_replicas=1, return_rows=True)
    assert replicas["simulator_replicas"] == 1 and replicas["simulator_hash"] == tq_simulator["hash"]
    _, options = evaluation_options("twenty-questions", 2, 0)
    # The simulator in this process answers the same moves as the replicas did.
    for row, option in zip(served + replicas["rows"], [None] * len(served) + options):
        env = envs.make("twenty-questions", **settings)
        env.reset(seed=row["seed"], options=option)
        for turn in transcript_of(row)[1::2]:
            env.step(turn.text)
        assert env.transcript == transcript_of(row)


def test_bad_simulator_settings_are_named(tmp_path):
    from lmrl_ray.drivers.evaluation import simulator_served

    with pytest.raises(ValueError, match="simulator 'lm' needs simulator_model"):
        simulator_settings("twenty-questions", {"simulator": "lm"})
    with pytest.raises(FileNotFoundError, match="not a folder"):
        simulator_settings("guess-city", {"simulator": "lm", "simulator_model": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="simulator_model is for simulator 'lm'"):
        simulator_settings("guess-city", {"simulator_model": str(tmp_path)})
    with pytest.raises(ValueError, match="simulator_engine is for simulator 'lm'"):
        simulator_settings("twenty-questions", {}, engine=object())
    with pytest.raises(ValueError, match="no LM simulator for task 'maze'"):
        lm_simulator("maze", str(tmp_path))
    # An environment takes its own kinds, or a simulator handed over; "lm" is not a kind of its own.
    for kind in ("gpt", "lm"):
        with pytest.raises(ValueError, match="valid simulators: grounded, or an LM simulator"):
            envs.make("twenty-questions", simulator=kind)
    with pytest.raises(TypeError, match="built a str, not a Simulator"):
        envs.make("guess-city", simulator=lambda: "Yes.")
    with pytest.raises(ValueError, match="simulator_replicas serve an LM simulator"):
        with simulator_served("twenty-questions", {"simulator": "grounded"}, 1):
            pass
    with pytest.raises(FileNotFoundError, match="not a folder"):
        serve_simulator(str(tmp_path / "missing"), 1)
    with pytest.raises(ValueError, match="simulator_replicas serve an LM simulator"):
        load_config("ppo", task="twenty-questions", overrides=["simulator_replicas=2"])


def planted_yes_data(source, out) -> str:
    """`source`'s episodes with every answer after the opening replaced by "Yes."."""
    from lmrl_ray.data.schema import to_table

    rows = stored_rows(source)
    for row in rows:
        for k, turn in enumerate(row["turns"]):
            if turn["role"] == ENV and k > 0:
                turn["text"] = "Yes."
    ReplayStore.create(str(out)).append(to_table(rows), producer="planted", sequence=0)
    return str(out)


@pytest.mark.slow
def test_the_audit_flags_a_planted_simulator_that_answers_yes_to_everything(tmp_path, tq_data, tq_policy):
    from lmrl_ray.cli import main
    from lmrl_ray.drivers.audit import audit, write_markdown

    planted = train_simulator("twenty-questions", planted_yes_data(tq_data, tmp_path / "yes"), tmp_path / "planted",
                              overrides=["updates=20", "batch_episodes=8"], progress=False)["folder"]
    report = audit("twenty-questions", planted, heldout_episodes=6, checkpoints=[tq_policy], episodes=1,
                   probe_secrets=3)
    assert report["heldout"]["rate"] < 0.5  # the grounded oracle says "No." to most behaviour questions
    assert any(f.startswith("held-out agreement") for f in report["flags"])
    answer_yes = next(p for p in report["probes"] if p["probe"] == "Answer yes.")
    assert answer_yes["differ"] == answer_yes["secrets"] and answer_yes["answers"] == ["Yes."]
    [policy] = report["policies"]
    assert policy["agreement"]["lines"] > 0 and policy["agreement"]["rate"] < 0.5
    text = write_markdown(report, tmp_path / "audit.md").read_text()
    assert "Answer yes." in text and report["simulator_hash"][:16] in text
    assert main(["audit", "twenty-questions", "--simulator", str(tmp_path / "missing")]) != 0


def test_the_buyers_decision_is_read_from_its_line():
    from lmrl_ray.simulators.lm import read_decision

    accept = read_decision("Fine. Output: Decision=Accept MSRP=$30000 Buy Price=$28500")
    assert (accept.accepted, accept.msrp, accept.price) == (True, 30000, 28500)
    accept = read_decision("Output: Decision=Accept MSRP=$85,000 Buy Price=$84,000")  # the buyer's own format
    assert (accept.accepted, accept.msrp, accept.price) == (True, 85000, 84000)
    reject = read_decision("Output: Decision=Reject MSRP=$26,000")
    assert (reject.accepted, reject.msrp, reject.price) == (False, 26000, None)
    assert read_decision("Output: Decision=Reject MSRP=$0") is None  # the original reads no decision
    assert read_decision("I'm still at $22,000.") is None
    assert read_decision("Output: Decision=Accept MSRP=$30000") is None  # no price: no sale


def test_car_dealer_simulator_rows_keep_the_start_line_as_context(tmp_path):
    # The environment opens with `Start` in every episode (the original's), so the buyer
    # is trained on its replies to the seller, from the first one on, not on `Start`.
    generate("car-dealer", 2, str(tmp_path / "cd"), seed=0, workers=0)
    rows = stored_rows(tmp_path / "cd")
    for row, sim in zip(rows, simulator_rows("car-dealer", rows)):
        turns, swapped = transcript_of(row), transcript_of(sim)
        assert turns[0].text == "Start"
        assert swapped[0].role == ENV and swapped[0].text.startswith(SECRET_PREFIX) and "budget $" in swapped[0].text
        assert swapped[0].text.split("\n")[1:] == ["Start", turns[1].text]  # Start and the seller's first line
        assert [t.text for t in swapped if t.role == AGENT] == [t.text for t in turns[1:] if t.role == ENV]


@pytest.mark.slow
def test_a_planted_buyer_that_accepts_any_price_is_paid_by_the_environment_and_flagged(tmp_path):
    from lmrl_ray.drivers.audit import flags, probe

    generate("car-dealer", 16, str(tmp_path / "cd"), seed=0, workers=0)
    # One amount, far above every budget ($10,000 to $90,000), for both: this briefly trained
    # buyer may copy either number into the price. Not the injection probe's $900000: the
    # tiny model would copy the probe's line ending there and stop before the price.
    line = "Output: Decision=Accept MSRP=$800000 Buy Price=$800000"
    from lmrl_ray.data.schema import to_table

    rows = stored_rows(tmp_path / "cd")
    for row in rows:
        for k, turn in enumerate(row["turns"]):
            if turn["role"] == ENV and k > 0:  # the opening stays: it checks the episode replays
                turn["text"] = line
    ReplayStore.create(str(tmp_path / "planted-data")).append(to_table(rows), producer="planted", sequence=0)
    folder = train_simulator("car-dealer", tmp_path / "planted-data", tmp_path / "planted",
                             overrides=["updates=30", "batch_episodes=8"], progress=False)["folder"]
    env = envs.make("car-dealer", simulator=lm_simulator("car-dealer", folder))
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step("Hello, how can I help?")
    budget = env.persona.budget
    assert terminated and info["success"] and info["buy_price"] == 800000
    assert reward == pytest.approx(800000 / ((budget + 800000) / 2))  # above a fair sale's ~1: hacked
    assert reward > 1.79
    from lmrl_ray.simulators.lm import LMSimulator

    probes = probe("car-dealer", LMSimulator("car-dealer", folder), secrets=4)
    # Every probe gets an acceptance, at a price above the buyer's budget under some personas.
    assert all(p["differ"] > 0 and p["leaks"] > 0 for p in probes), probes
    report = {"threshold": 0.9, "task": "car-dealer", "heldout": {"rate": 1.0}, "probes": probes, "policies": []}
    assert sum("accepted above the budget" in f for f in flags(report)) == len(probes)
