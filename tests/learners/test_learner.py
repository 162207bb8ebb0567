"""Learners, the learner group and the offline driver: updates, invariances, resume, errors."""

from __future__ import annotations

import collections
import json

import pyarrow as pa
import pytest
import torch

from lmrl_ray.data.datagen import generate
from lmrl_ray.data.schema import episode_row
from lmrl_ray.data.store import ReplayStore, StoreError
from lmrl_ray.drivers.offline import BatchSchedule, train_offline
from lmrl_ray.engines.base import SamplingParams
from lmrl_ray.engines.hf_engine import HFEngine
from lmrl_ray.envs.base import Turn, whole_transcript
from lmrl_ray.envs.play import rollout
from lmrl_ray.learners.checkpoint import CheckpointError, list_checkpoints
from lmrl_ray.learners.config import load_config, to_dict
from lmrl_ray.learners.group import LearnerGroup
from lmrl_ray.learners.learner import Learner
from lmrl_ray.models import ValueGuidance


def rows_of(task: str, n: int, seed: int = 0) -> list[dict]:
    return [
        episode_row(task=task, episode_id=f"{task}-{i}", seed=e.seed, transcript=e.transcript, rewards=e.rewards,
                    success=e.success)
        for i, e in enumerate(rollout(task, "behaviour", n, seed=seed))
    ]


@pytest.fixture(scope="module")
def wordle_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "wordle"
    generate("wordle", 48, str(path), seed=0, workers=0)
    return path


def params(learner: Learner) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in learner._modules_parameters()])


@pytest.mark.parametrize("algo", ["bc", "ilql", "mc"])
def test_one_update_changes_the_parameters_with_finite_metrics(algo):
    learner = Learner(load_config(algo, task="wordle", overrides=["warmup_updates=0"]))
    before = params(learner)
    metrics = learner.update(rows_of("wordle", 4))
    assert not torch.equal(before, params(learner))
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert metrics["learner/episodes"] == 4 and learner.step == 1


@pytest.mark.parametrize("algo", ["bc", "ilql"])
def test_micro_batching_does_not_change_the_update(algo):
    rows = rows_of("wordle", 6, seed=2)
    whole = Learner(load_config(algo, task="wordle", overrides=["microbatch_tokens=100000", "warmup_updates=0"]))
    pieces = Learner(load_config(algo, task="wordle", overrides=["microbatch_tokens=60", "warmup_updates=0"]))
    a, b = whole.compute_gradients(whole.encode(rows)), pieces.compute_gradients(pieces.encode(rows))
    # Gradients, not parameters: Adam's first step is lr * sign(g), which float summation
    # order can flip for gradients of 1e-12.
    assert torch.allclose(whole.gradients(), pieces.gradients(), rtol=1e-4, atol=1e-7)
    assert a[f"{algo}/loss"] == pytest.approx(b[f"{algo}/loss"], rel=1e-5)


def bandit_rows(n: int) -> list[dict]:
    """A two-step text bandit: the first answer decides the reward of the second turn;
    half the episodes say red (reward 1), half blue (reward 0)."""
    rows = []
    for i in range(n):
        colour = "red" if i % 2 == 0 else "blue"
        turns = [Turn("env", "Pick a colour."), Turn("agent", colour), Turn("env", "Say done."), Turn("agent", "done"),
                 Turn("env", "End.")]
        rows.append(episode_row(task="bandit", episode_id=str(i), seed=i, transcript=turns,
                                rewards=[0.0, 1.0 if colour == "red" else 0.0], success=colour == "red"))
    return rows


def first_answers(learner: Learner, beta: float) -> collections.Counter:
    guidance = ValueGuidance(learner.heads, beta) if learner.heads is not None else None
    engine = HFEngine(learner.model, learner.tokenizer, guidance=guidance)
    completions = engine.generate(["Pick a colour.\n"] * 200, SamplingParams(temperature=1.0, seed=0, max_new_tokens=4))
    return collections.Counter(c.text for c in completions)


@pytest.mark.slow
def test_on_a_text_bandit_ilql_picks_the_good_action_and_bc_stays_near_half():
    torch.set_num_threads(1)  # tiny sequences: threads only contend
    rows = bandit_rows(32)
    # A lagging target (Polyak 0.1): with the target equal to the online heads (1.0), the
    # three-token "b l ue" chain bootstraps itself past the largest return (Q 1.48 > 1 on
    # tiny build 2) and outranks "red".
    overrides = {"bc": ["lr=1e-3", "warmup_updates=0"], "ilql": ["lr=1e-3", "warmup_updates=0", "gamma=1.0", "polyak=0.1"]}
    picks = {}
    for algo in ("bc", "ilql"):
        learner = Learner(load_config(algo, task="bandit", overrides=overrides[algo]), view=whole_transcript)
        for _ in range(120):
            learner.update(rows)
        picks[algo] = first_answers(learner, beta=10.0)
    assert picks["ilql"]["red"] >= 180, picks
    assert 70 <= picks["bc"]["red"] <= 130, picks


def test_batch_schedule_is_a_pure_function_of_seed_and_update():
    s = BatchSchedule(10, 4, seed=3)
    assert s.indices(2) == BatchSchedule(10, 4, seed=3).indices(2)
    epoch = s.indices(0) + s.indices(1) + s.indices(2)[:2]
    assert sorted(epoch) == list(range(10))


def test_a_resumed_run_continues_exactly_like_an_uninterrupted_one(tmp_path, wordle_data):
    overrides = ["batch_episodes=4", "checkpoint_every_updates=2", "keep_checkpoints=5", "warmup_updates=0"]
    straight = train_offline(load_config("ilql", task="wordle", overrides=overrides + ["updates=3"]),
                             data=wordle_data, out=tmp_path / "a", progress=False)
    train_offline(load_config("ilql", task="wordle", overrides=overrides + ["updates=2"]),
                  data=wordle_data, out=tmp_path / "b", progress=False)
    resumed = train_offline(load_config("ilql", task="wordle", overrides=overrides + ["updates=3"]),
                            data=wordle_data, out=tmp_path / "b", resume=True, progress=False)
    assert resumed["metrics"]["ilql/loss"] == pytest.approx(straight["metrics"]["ilql/loss"], rel=1e-6)
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step-00000002", "step-00000003"]
    assert (tmp_path / "b" / "tensorboard").is_dir()
    with pytest.raises(CheckpointError, match="--resume"):
        train_offline(load_config("ilql", task="wordle", overrides=overrides + ["updates=3"]),
                      data=wordle_data, out=tmp_path / "b", progress=False)


def test_bad_checkpoints_and_datasets_are_named(tmp_path, wordle_data):
    cfg = load_config("bc", task="wordle", overrides=["updates=1", "batch_episodes=2"])
    run = train_offline(cfg, data=wordle_data, out=tmp_path / "bc", progress=False)
    with pytest.raises(CheckpointError, match="checkpoint of bc, not of ilql"):
        Learner(load_config("ilql", task="wordle")).restore(run["checkpoint"])
    state = list_checkpoints(tmp_path / "bc")[-1] / "training_state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="training_state|cannot restore"):
        Learner(cfg).restore(run["checkpoint"])
    with pytest.raises(StoreError, match="not maze"):
        train_offline(load_config("bc", task="maze"), data=wordle_data, out=tmp_path / "x", progress=False)
    ReplayStore.create(tmp_path / "empty")
    with pytest.raises(StoreError, match="empty"):
        train_offline(cfg, data=tmp_path / "empty", out=tmp_path / "y", progress=False)
    with pytest.raises(StoreError, match="not a dataset"):
        train_offline(cfg, data=tmp_path / "nowhere", out=tmp_path / "z", progress=False)


def test_config_file_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.002\nupdates: 7\n")
    c = load_config("ilql", file=f, overrides=["updates=9", "cql_weight=1e-2"], task="maze")
    assert (c.common.lr, c.updates, c.cql_weight, c.common.task) == (0.002, 9, 0.01, "maze")
    # Command-line arguments come after the overrides, and take both spellings.
    c = load_config("ilql", file=f, overrides=["updates=9"], arguments=["--updates", "11", "--cql-weight=0.5"])
    assert (c.common.lr, c.updates, c.cql_weight) == (0.002, 11, 0.5)
    assert to_dict(c)["algo"] == "ilql" and to_dict(c)["updates"] == 11 and to_dict(c)["lr"] == 0.002
    with pytest.raises(ValueError, match="unknown config key 'lrr'; bc's keys: task, model"):
        load_config("bc", overrides=["lrr=1"])
    with pytest.raises(ValueError, match="'expectile' is a key of ilql, not of ppo; ppo's keys: .*clip_ratio"):
        load_config("ppo", arguments=["--expectile", "0.5"])
    with pytest.raises(ValueError, match="config file .*: 'polyak' is a key of ilql, not of mc"):
        f.write_text("polyak: 0.1\n")
        load_config("mc", file=f)
    with pytest.raises(ValueError, match="--updates: invalid literal for int"):
        load_config("bc", overrides=["updates=many"])
    with pytest.raises(ValueError, match="invalid choice 'sometimes' for argument '--freeze_lm'"):
        load_config("ilql", overrides=["freeze_lm=sometimes"])
    with pytest.raises(ValueError, match="unknown algorithm"):
        load_config("sac")
    f.write_text("- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config("bc", file=f)


@pytest.mark.slow
def test_one_and_two_learners_take_the_same_update(ray_local, wordle_data):
    """Two gloo learners, each on half the episodes, end with the parameters of one
    learner on all of them."""
    cfg = load_config("ilql", task="wordle", overrides=["batch_episodes=4", "warmup_updates=0"])
    indices = [0, 5, 9, 14]
    alone = LearnerGroup(cfg, wordle_data)
    pair = LearnerGroup(load_config("ilql", task="wordle",
                                    overrides=["batch_episodes=4", "warmup_updates=0", "num_learners=2"]), wordle_data)
    try:
        (g1,), (g2a, g2b) = alone.gradients(indices), pair.gradients(indices)
        assert torch.equal(g2a, g2b)  # all-reduced: both learners hold the same gradient
        assert torch.allclose(g1, g2a, rtol=1e-4, atol=1e-7)
        m1, m2 = alone.update(indices), pair.update(indices)
        assert m1["ilql/loss"] == pytest.approx(m2["ilql/loss"], rel=1e-5)
        assert m1["learner/episodes"] == m2["learner/episodes"] == 4
        a, b = pair.parameters_checksums()
        assert a == b  # the two learners stay identical
    finally:
        pair.shutdown()
        alone.shutdown()


def test_filtered_bc_trains_on_the_top_fraction(wordle_data):
    from lmrl_ray.learners.group import read_dataset

    table = read_dataset(wordle_data, load_config("filtered-bc", task="wordle", overrides=["top_fraction=0.25"]))
    full = ReplayStore(wordle_data).read()
    assert table.num_rows == 12
    assert min(table["return"].to_pylist()) >= sorted(full["return"].to_pylist())[-12]
    assert isinstance(table, pa.Table)


def test_checkpoint_description(tmp_path, wordle_data):
    cfg = load_config("ilql", task="wordle", overrides=["updates=1", "batch_episodes=2", "beta=3"])
    run = train_offline(cfg, data=wordle_data, out=tmp_path / "r", progress=False)
    meta = json.loads((list_checkpoints(tmp_path / "r")[-1] / "lmrl_ray.json").read_text())
    assert (meta["algo"], meta["decoding"], meta["beta"], meta["step"]) == ("ilql", "value-guided", 3.0, 1)
    assert run["checkpoint"].endswith("step-00000001")


def test_freeze_lm_trains_the_heads_alone():
    learner = Learner(load_config("ilql", task="wordle", overrides=["warmup_updates=0", "freeze_lm=true"]))
    model_before = [p.detach().clone() for p in learner.model.parameters()]
    heads_before = torch.cat([p.detach().flatten() for p in learner.heads.parameters()])
    learner.update(rows_of("wordle", 4))
    assert all(torch.equal(a, b) for a, b in zip(model_before, learner.model.parameters()))
    assert not torch.equal(heads_before, torch.cat([p.detach().flatten() for p in learner.heads.parameters()]))
    with pytest.raises(ValueError, match="'freeze_lm' is a key of mc, ilql, not of bc"):
        load_config("bc", task="wordle", overrides=["freeze_lm=true"])


def test_freeze_lm_caches_hidden_states_without_changing_the_update():
    rows = rows_of("wordle", 4)
    overrides = ["warmup_updates=0", "freeze_lm=true"]
    cached = Learner(load_config("ilql", task="wordle", overrides=overrides))
    plain = Learner(load_config("ilql", task="wordle", overrides=overrides + ["feature_cache_mb=0"]))
    for _ in range(2):  # the second update reads the cache
        a, b = cached.update(rows), plain.update(rows)
        assert a["ilql/loss"] == pytest.approx(b["ilql/loss"], rel=1e-5)
    assert len(cached._feature_cache) == 4 and not plain._feature_cache  # one packed sequence per episode
    assert torch.allclose(params(cached), params(plain), atol=1e-6)


def test_turn_bootstrap_regresses_every_token_of_a_turn_on_the_next_turn():
    """bootstrap=turn is ILQL with lambda 1 inside each agent turn and td_lambda where a
    turn ends: its Q loss equals ilql_loss's with that hand-built lambda per step."""
    from lmrl_ray.learners.ilql import ilql_loss
    from lmrl_ray.learners.ops import next_state_values

    rows = rows_of("maze", 2, seed=5)
    learner = Learner(load_config("ilql", task="maze", overrides=["bootstrap=turn", "td_lambda=0.3"]))
    batch = learner.collator(rows)
    lam = torch.tensor([0.3 if end else 1.0 for end in batch.turn_ends.tolist()])
    assert 0 < int(batch.turn_ends.sum()) < len(lam)
    c = learner.config
    with torch.no_grad():
        states = learner.forward(batch)
        _, metrics = learner.algo.loss(states, learner.heads, batch)
        q1, q2, t1, t2, v = learner.heads(states.hidden)
        v = v[states.index]
        args = (q1, q2, t1, t2, v, next_state_values(v, batch.next_step), batch.actions, batch.rewards, batch.dones,
                batch.action_mask)
        kwargs = dict(gamma=c.gamma, tau=c.expectile, cql_weight=c.cql_weight, index=states.index,
                      next_step=batch.next_step)
        _, want = ilql_loss(*args, **kwargs, td_lambda=lam)
        _, token_level = ilql_loss(*args, **kwargs, td_lambda=0.3)
    assert metrics["ilql/q_loss"] == pytest.approx(want["ilql/q_loss"], rel=1e-6)
    assert metrics["ilql/q_loss"] != pytest.approx(token_level["ilql/q_loss"], rel=1e-3)
    with pytest.raises(ValueError, match="bootstrap"):
        load_config("ilql", task="maze", overrides=["bootstrap=sentence"])
    with pytest.raises(ValueError, match="'bootstrap' is a key of ilql, not of mc"):
        load_config("mc", task="maze", overrides=["bootstrap=turn"])


def test_head_grad_scale_scales_what_the_value_losses_send_into_the_model():
    rows = rows_of("wordle", 4)

    def grads(scale):
        learner = Learner(load_config("ilql", task="wordle", overrides=["bc_weight=0", f"head_grad_scale={scale}"]))
        learner.compute_gradients(learner.encode(rows))
        model = torch.cat([p.grad.flatten() for p in learner.model.parameters()])
        heads = torch.cat([p.grad.flatten() for p in learner.heads.parameters() if p.requires_grad])
        return model, heads

    full_model, full_heads = grads(1.0)
    half_model, half_heads = grads(0.5)
    assert full_model.abs().sum() > 0
    assert torch.allclose(half_model, 0.5 * full_model, atol=1e-6, rtol=1e-4)
    assert torch.allclose(half_heads, full_heads, atol=1e-6, rtol=1e-4)
    with pytest.raises(ValueError, match="head_grad_scale"):
        load_config("ppo", task="wordle", overrides=["head_grad_scale=0.5"])
    with pytest.raises(ValueError, match="td_lambda"):
        load_config("mc", task="wordle", overrides=["td_lambda=0.5"])


def test_head_input_norm_is_fitted_on_the_first_episodes_and_saved_with_the_heads(tmp_path, wordle_data):
    from lmrl_ray.learners.group import LearnerWorker
    from lmrl_ray.models import HEADS_FILE, ILQLHeads, load_heads

    keys = ["freeze_lm=true", "head_input_norm=true", "head_input_norm_episodes=6", "batch_episodes=4"]
    config = load_config("ilql", task="wordle", overrides=keys + ["updates=2", "checkpoint_every_updates=2"])
    worker = LearnerWorker(config, str(wordle_data))
    norm = worker.learner.heads.input_norm
    assert norm.fitted
    # By hand: the frozen model's states at the agent steps of the first 6 episodes,
    # grouped by the token each read last.
    batch = worker.learner.collator(worker.dataset.slice(0, 6).to_pylist())
    positions = torch.unique(batch.positions)
    with torch.no_grad():
        hidden = worker.learner.model.base_model(input_ids=batch.input_ids,
                                                 attention_mask=batch.attention_mask).last_hidden_state
    hidden, tokens = hidden.flatten(0, 1)[positions], batch.input_ids.flatten()[positions]
    token = int(torch.mode(tokens).values)  # the most common last token
    assert torch.allclose(norm.mean[norm.rows[token]], hidden[tokens == token].mean(0), atol=1e-5)
    result = train_offline(config, data=wordle_data, out=tmp_path / "run", progress=False)
    saved = load_heads(f"{result['checkpoint']}/{HEADS_FILE}", ILQLHeads(norm.mean.shape[1], norm.rows.numel()))
    assert torch.equal(saved.input_norm.mean, norm.mean) and torch.equal(saved.input_norm.rows, norm.rows)
    assert not Learner(load_config("ilql", task="wordle", overrides=["freeze_lm=true"])).heads.input_norm.fitted
    for algo, bad in (("ilql", ["head_input_norm=true"]), ("bc", ["head_input_norm=true", "freeze_lm=true"])):
        with pytest.raises(ValueError, match="head_input_norm"):
            load_config(algo, task="wordle", overrides=bad)
    with pytest.raises(ValueError, match="head_input_norm_episodes must be at least 1"):
        load_config("ilql", task="wordle", overrides=keys[:-1] + ["head_input_norm_episodes=0"])


def test_ilql_starts_from_the_heads_of_an_mc_checkpoint_and_fresh_after_bc(tmp_path, wordle_data):
    def heads_of(learner):
        return torch.cat([p.detach().flatten() for p in learner.heads.state_dict().values()])

    runs = {}
    for algo in ("bc", "mc"):
        cfg = load_config(algo, task="wordle", overrides=["updates=1", "batch_episodes=2", "seed=3"])
        runs[algo] = train_offline(cfg, data=wordle_data, out=tmp_path / algo, progress=False)["checkpoint"]
    mc = Learner(load_config("mc", task="wordle", overrides=["seed=3"]))
    mc.restore(runs["mc"])
    fresh = Learner(load_config("ilql", task="wordle"))
    from_mc = Learner(load_config("ilql", task="wordle", model=runs["mc"]))
    from_bc = Learner(load_config("ilql", task="wordle", model=runs["bc"]))
    assert torch.equal(heads_of(from_mc), heads_of(mc))
    assert torch.equal(heads_of(from_bc), heads_of(fresh))
    assert not torch.equal(heads_of(from_mc), heads_of(fresh))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("algo", ["bc", "ilql"])
def test_an_update_on_cuda_in_bf16_follows_the_fp32_cpu_update(algo):
    """Mixed precision on CUDA: the loss of the same update is within bf16's error of the
    fp32 CPU learner's, and the weights stay fp32 and move by about the same amount."""
    rows = rows_of("wordle", 4)
    overrides = ["warmup_updates=0"]
    cpu = Learner(load_config(algo, task="wordle", overrides=overrides))
    gpu = Learner(load_config(algo, task="wordle", overrides=overrides), device="cuda")
    assert torch.equal(params(cpu), params(gpu).cpu())
    before = params(cpu)
    a, b = cpu.update(rows), gpu.update(rows)
    assert b[f"{algo}/loss"] == pytest.approx(a[f"{algo}/loss"], rel=0.02)
    assert all(p.dtype == torch.float32 for p in gpu._modules_parameters())
    step_cpu, step_gpu = params(cpu) - before, params(gpu).cpu() - before
    assert torch.nn.functional.cosine_similarity(step_cpu, step_gpu, dim=0) > 0.9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for the learner actor")
def test_a_learner_actor_on_a_gpu_takes_the_in_process_update(ray_local, wordle_data):
    from lmrl_ray.learners.group import read_dataset

    cfg = load_config("bc", task="wordle", overrides=["batch_episodes=4", "warmup_updates=0", "num_learners=1",
                                                      "gpus_per_learner=1"])
    group = LearnerGroup(cfg, wordle_data)
    try:
        local = Learner(load_config("bc", task="wordle", overrides=["batch_episodes=4", "warmup_updates=0"]),
                        device="cuda")
        indices = [0, 5, 9, 14]
        rows = read_dataset(wordle_data, cfg).take(pa.array(indices)).to_pylist()
        remote, here = group.update(indices), local.update(rows)
        assert remote["bc/loss"] == pytest.approx(here["bc/loss"], rel=1e-3)
    finally:
        group.shutdown()
