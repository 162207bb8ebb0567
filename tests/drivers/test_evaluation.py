"""Checkpoint evaluation end to end with the real tiny model: the evaluation protocol's
episodes, plain and value-guided checkpoints, the result's fields, rows written to a
replay store, clear errors; and our normalisation constants, re-measured."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
import torch

from lmrl_ray import envs
from lmrl_ray.data.schema import to_table
from lmrl_ray.data.store import ReplayStore
from lmrl_ray.drivers.evaluation import checkpoint_engine, evaluate_checkpoint
from lmrl_ray.engines.hf_engine import HFEngine
from lmrl_ray.envs.maze import STARTS
from lmrl_ray.envs.play import episode_seed, play_episode, scripted_summary
from lmrl_ray.envs.protocol import default_evaluation_episodes, evaluation_items, evaluation_options
from lmrl_ray.learners.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    step_dir,
    write_meta,
)
from lmrl_ray.models import HEADS_FILE, ILQLHeads, load_policy, save_checkpoint
from lmrl_ray.stats import summarize

# Wordle ends after six guesses whatever the policy says: short episodes for an untrained model.
FAST = {"task": "wordle", "episodes": 3, "temperature": 0.0, "max_new_tokens": 4, "envs_per_worker": 3}


def write_checkpoint(path, *, task="wordle", heads=None, beta=0.0, step=7):
    model, tokenizer = load_policy("tiny")
    save_checkpoint(model, tokenizer, path, heads=heads)
    decoding = "value-guided" if heads is not None else "sample"
    spec = {"class": "ILQLHeads", "width": 16} if heads is not None else None
    algo = "ilql" if heads is not None else "bc"
    write_meta(path, CheckpointMeta(algo=algo, task=task, step=step, decoding=decoding, beta=beta, heads=spec))
    return path


def zero_heads() -> ILQLHeads:
    model, _ = load_policy("tiny")
    heads = ILQLHeads(model.config.n_embd, model.config.vocab_size, width=16)
    with torch.no_grad():
        for p in heads.parameters():
            p.zero_()
    return heads


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A run folder with two checkpoints of the tiny model; the latest is step 7."""
    run = tmp_path_factory.mktemp("run")
    write_checkpoint(step_dir(run, 3), step=3)
    write_checkpoint(step_dir(run, 7))
    return run


@pytest.fixture(scope="module")
def guided(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ilql") / "ckpt", heads=zero_heads(), beta=4.0)


def test_evaluation_episodes_follow_the_papers_protocol():
    seeds, options = evaluation_options("maze", 800, seed=0)
    assert Counter(o["start"] for o in options) == {start: 32 for start in STARTS}
    assert seeds == [episode_seed(0, "eval", i) for i in range(800)] and len(set(seeds)) == 800
    _, options = evaluation_options("endgames", 646)
    assert [o["eval_index"] for o in options[:3]] == [0, 1, 2] and options[645] == {"eval_index": 0}
    seeds, options = evaluation_options("wordle", 5, seed=1)
    assert options == [None] * 5 and seeds == evaluation_options("wordle", 5, seed=1)[0]
    assert seeds != evaluation_options("wordle", 5, seed=2)[0]
    # The evaluation split never draws a training seed.
    assert not set(seeds) & {episode_seed(1, "train", i) for i in range(1000)}


def test_twenty_questions_and_guess_city_evaluate_every_item_once_in_order():
    # The original's protocol: every object (158) or city (100) once, in the table's order.
    for task, key, count in (("twenty-questions", "object", 158), ("guess-city", "city", 100)):
        items = evaluation_items(task)
        assert len(items) == len(set(items)) == count == default_evaluation_episodes(task)
        seeds, options = evaluation_options(task, count, seed=0)
        assert [o[key] for o in options] == list(items) and len(set(seeds)) == count
        # Beyond one pass the items cycle; a shorter evaluation spreads over the table.
        _, options = evaluation_options(task, count + 2)
        assert [o[key] for o in options[count:]] == list(items[:2])
        _, options = evaluation_options(task, 4)
        assert [o[key] for o in options] == [items[0], items[count // 4], items[count // 2], items[3 * count // 4]]
        env = envs.make(task)
        try:
            for option in options:  # each pinned item is the episode's secret
                env.reset(seed=0, options=option)
        finally:
            env.close()
    assert default_evaluation_episodes("maze") == 100
    with pytest.raises(ValueError, match="no per-item evaluation; tasks that have: twenty-questions, guess-city"):
        evaluation_items("wordle")


def test_plain_checkpoint_end_to_end(plain, tmp_path):
    out = tmp_path / "evals"
    settings = {k: v for k, v in FAST.items() if k != "task"}  # the task comes from the checkpoint
    result = evaluate_checkpoint(plain, seed=3, out=out, return_rows=True, **settings)
    assert result["checkpoint"].endswith("step-00000007") and result["step"] == 7
    assert (result["task"], result["algo"], result["episodes"], result["decoding"]) == ("wordle", "bc", 3, "sample")
    assert (result["value_guided"], result["beta"], result["temperature"], result["seed"]) == (False, None, 0.0, 3)
    assert result["engine"] == "hf"
    rows = result["rows"]
    summary = summarize([r["return"] for r in rows], [r["success"] for r in rows], [r["length"] for r in rows])
    assert result["mean_return"] == summary.mean_return and result["success_rate"] == summary.success_rate
    assert result["mean_turns"] == summary.mean_turns and result["ci95"] == summary.ci95
    spec = envs.spec("wordle")
    assert result["mean_return"] >= spec.paper_min and 0 <= result["normalised_paper"] <= 50
    assert result["normalised_ours"] is not None
    assert all(r["source"] == "evaluation" and r["split"] == "eval" for r in rows)
    stored = ReplayStore(out).read()
    assert stored.num_rows == 3 and stored.equals(to_table(rows))


def test_zero_value_heads_decode_like_the_plain_checkpoint(plain, guided):
    plain_result = evaluate_checkpoint(step_dir(plain, 7), return_rows=True, **FAST)
    guided_result = evaluate_checkpoint(guided, return_rows=True, **FAST)
    assert (guided_result["algo"], guided_result["value_guided"], guided_result["beta"]) == ("ilql", True, 4.0)
    # Q - V = 0 everywhere: the guided logits are the model's own.
    assert [r["turns"] for r in guided_result["rows"]] == [r["turns"] for r in plain_result["rows"]]
    engine = checkpoint_engine(guided, engine="auto", device="cpu", beta=1.5)
    assert isinstance(engine, HFEngine) and engine.guidance.beta == 1.5


def test_rerank_evaluation(guided):
    result = evaluate_checkpoint(guided, task="maze", episodes=2, decoding="rerank", env_settings={"max_moves": 3},
                                 return_rows=True)
    assert result["decoding"] == "rerank" and result["temperature"] is None
    moves = {"move up", "move down", "move left", "move right"}
    assert all(t["text"] in moves for r in result["rows"] for t in r["turns"] if t["role"] == "agent")


def test_another_task_than_the_checkpoints_is_allowed_with_a_warning(plain, caplog):
    with caplog.at_level(logging.WARNING, logger="lmrl_ray.drivers.evaluation"):
        result = evaluate_checkpoint(plain, task="maze", episodes=1, temperature=0.0, max_new_tokens=2,
                                     env_settings={"max_moves": 2})
    assert result["task"] == "maze" and result["checkpoint_task"] == "wordle"
    assert "trained on 'wordle'" in caplog.text


def test_clear_errors_name_the_path(plain, guided, tmp_path):
    with pytest.raises(CheckpointError, match="nowhere"):
        evaluate_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty.*neither a checkpoint"):
        evaluate_checkpoint(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="only the Hugging Face engine"):
        checkpoint_engine(guided, engine="vllm")
    with pytest.raises(CheckpointError, match="--beta applies only to value-guided"):
        checkpoint_engine(plain, beta=1.0)
    with pytest.raises(ValueError, match="unknown task"):
        evaluate_checkpoint(plain, task="mazes")
    corrupt = write_checkpoint(tmp_path / "corrupt", heads=zero_heads())
    (corrupt / HEADS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=f"{corrupt}.*value heads"):
        checkpoint_engine(corrupt)
    missing = write_checkpoint(tmp_path / "missing", heads=zero_heads())
    (missing / HEADS_FILE).unlink()
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint_engine(missing)


# -- Our normalisation constants ------------------------------------------------------


def test_maze_expert_is_exactly_our_maximum():
    env, expert = envs.make("maze"), envs.policy("maze", "expert")
    returns = [play_episode(env, expert, i, options={"start": start}).episode_return for i, start in enumerate(STARTS)]
    assert sum(returns) / len(returns) == pytest.approx(-6.84) == envs.spec("maze").our_max


def test_wordle_behaviour_average_matches_our_constant():
    s = scripted_summary("wordle", "behaviour", 1000, seed=1)
    assert abs(s.mean_return - envs.spec("wordle").our_avg) < max(3 * s.ci95, 0.05)


def test_every_task_has_our_constants():
    for name in envs.names():
        spec = envs.spec(name)
        assert spec.paper_min is not None and spec.our_avg is not None and spec.our_max is not None
        assert spec.paper_min < spec.our_avg < spec.our_max


def test_maze_evaluations_report_move_accuracy_by_the_policys_likeliest_move(guided):
    """Move accuracy: the share of the 25 starts where the engine's re-ranked move is a
    shortest-path move, the same engine `evaluate_checkpoint` plays with."""
    from lmrl_ray.envs.protocol import move_probes

    result = evaluate_checkpoint(guided, task="maze", episodes=1, decoding="rerank", env_settings={"max_moves": 2})
    probes = move_probes("maze")
    engine = checkpoint_engine(guided, engine="hf", device="cpu")
    choices = engine.choose([p for p, _, _ in probes], [m for _, m, _ in probes])
    by_hand = sum(m[k] in best for (_, m, best), k in zip(probes, choices)) / 25
    assert result["move_accuracy"] == pytest.approx(by_hand) and 0.0 <= by_hand <= 1.0
    assert "move_accuracy" not in evaluate_checkpoint(guided, **FAST)  # Wordle has none
