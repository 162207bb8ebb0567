"""The collate: views, time alignment, rewards on the last token, sharing, micro-batches."""

from __future__ import annotations

import pytest
import torch

from lmrl_ray import envs
from lmrl_ray.data.collate import Collator, microbatches
from lmrl_ray.data.schema import episode_row, transcript_of
from lmrl_ray.envs.base import AGENT, render_prompt
from lmrl_ray.envs.play import rollout
from lmrl_ray.learners.ops import return_to_go
from lmrl_ray.models import load_policy


@pytest.fixture(scope="module")
def tokenizer():
    return load_policy("tiny")[1]


def rows_of(task: str, n: int, seed: int = 0) -> list[dict]:
    return [
        episode_row(task=task, episode_id=f"{task}-{i}", seed=e.seed, transcript=e.transcript, rewards=e.rewards,
                    success=e.success)
        for i, e in enumerate(rollout(task, "behaviour", n, seed=seed))
    ]


def view_of(task: str):
    env = envs.make(task)
    env.close()
    return env.view


@pytest.mark.parametrize("task", ["maze", "maze-po", "wordle", "twenty-questions", "text-nav"])
def test_every_agent_step_reads_exactly_the_prompt_the_engine_sees(tokenizer, task):
    """For each agent token, the tokens before it are the tokenized view (+ the turn's
    earlier tokens): what `env.prompt()` renders at that turn."""
    rows = rows_of(task, 3)
    view = view_of(task)
    collate = Collator(tokenizer, view, max_tokens=1024)
    batch = collate(rows)
    B, T = batch.input_ids.shape
    flat = batch.input_ids.flatten()
    n = 0
    for row in rows:
        transcript = transcript_of(row)
        for j, turn in enumerate(transcript):
            if turn.role != AGENT:
                continue
            prompt = tokenizer(render_prompt(view(transcript[:j])), add_special_tokens=False)["input_ids"]
            action = tokenizer(turn.text + "\n", add_special_tokens=False)["input_ids"]
            for k, a in enumerate(action):
                p = int(batch.positions[n])
                b, t = divmod(p, T)
                assert batch.actions[n] == a == flat[p + 1]
                context = batch.input_ids[b, : t + 1].tolist()
                assert context[-(len(prompt) + k):] == prompt + action[:k]
                n += 1
    assert n == batch.actions.numel()


def test_rewards_sit_on_the_last_token_of_each_agent_turn_and_done_on_the_last(tokenizer):
    rows = rows_of("maze", 2, seed=3)
    batch = Collator(tokenizer, view_of("maze"), max_tokens=1024)(rows)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"][0]
    is_last = batch.actions == newline  # every maze action ends with its newline token
    assert torch.all(batch.rewards[~is_last] == 0)
    expected = [t["reward"] for r in rows for t in r["turns"] if t["role"] == AGENT]
    assert batch.rewards[is_last].tolist() == expected
    ends = torch.nonzero(batch.dones).flatten().tolist()
    assert len(ends) == 2 and batch.next_step[ends].tolist() == [-1, -1]
    assert ends[-1] == batch.actions.numel() - 1
    others = torch.ones_like(batch.dones, dtype=torch.bool)
    others[ends] = False
    assert torch.equal(batch.next_step[others], torch.nonzero(others).flatten() + 1)
    assert torch.equal(batch.turn_ends, is_last.float())  # a maze turn ends with its newline


def test_turn_ends_mark_the_last_token_of_each_agent_turn_in_a_packed_transcript(tokenizer):
    rows = rows_of("wordle", 2, seed=4)
    batch = Collator(tokenizer, view_of("wordle"), max_tokens=1024)(rows)
    turns = sum(1 for r in rows for t in r["turns"] if t["role"] == AGENT)
    assert int(batch.turn_ends.sum()) == turns
    # the next step after a turn's end skips the environment's tokens; inside a turn it is the next token
    ends = (batch.turn_ends > 0) & (batch.next_step >= 0)
    gap = batch.positions[batch.next_step[ends]] - batch.positions[ends]
    assert torch.all(gap > 1)
    inside = (batch.turn_ends == 0)
    assert torch.all(batch.positions[batch.next_step[inside]] - batch.positions[inside] == 1)


def test_returns_to_go_along_the_steps_are_discounted_sums_within_each_episode(tokenizer):
    """The return-to-go MC Returns regresses on: the discounted scan along `next_step`
    stops at each episode's last step."""
    rows = rows_of("wordle", 3, seed=1)
    gamma = 0.9
    batch = Collator(tokenizer, view_of("wordle"), max_tokens=1024)(rows)
    r, done = batch.rewards.tolist(), batch.dones.tolist()
    naive = []
    for n in range(len(r)):
        g, k, discount = 0.0, n, 1.0
        while True:
            g += discount * r[k]
            if done[k]:
                break
            k, discount = k + 1, discount * gamma
        naive.append(g)
    returns = return_to_go(batch.rewards, batch.dones, batch.next_step, gamma=gamma)
    assert returns.tolist() == pytest.approx(naive, abs=1e-5)


def test_whole_transcript_tasks_pack_an_episode_into_one_sequence_and_windows_do_not(tokenizer):
    wordle = Collator(tokenizer, view_of("wordle"), max_tokens=1024)
    assert all(len(wordle.encode(r).sequences) == 1 for r in rows_of("wordle", 5))
    maze = Collator(tokenizer, view_of("maze"), max_tokens=1024)
    for r in rows_of("maze", 3):
        assert len(maze.encode(r).sequences) == r["length"]
    po = Collator(tokenizer, view_of("maze-po"), max_tokens=4096)
    long = next(r for r in rows_of("maze-po", 10) if r["length"] > 30)
    # 40 items in view: the first 20 agent turns extend one sequence, then one per turn.
    assert len(po.encode(long).sequences) == 1 + (long["length"] - 20)


def test_identical_sequences_are_computed_once_but_every_step_is_kept(tokenizer):
    rows = rows_of("maze", 8)
    collate = Collator(tokenizer, view_of("maze"), max_tokens=1024)
    batch = collate(rows)
    turns = sum(r["length"] for r in rows)
    assert batch.input_ids.shape[0] < turns / 4
    assert batch.num_agent_tokens == sum(e.num_agent_tokens for e in map(collate.encode, rows))


def test_engine_token_ids_are_used_as_stored(tokenizer):
    row = rows_of("maze", 1)[0]
    first = next(t for t in row["turns"] if t["role"] == AGENT)
    first["token_ids"] = [7, 8, 9]
    first["logprobs"] = [-0.1, -0.2, -0.3]
    batch = Collator(tokenizer, view_of("maze"), max_tokens=1024)([row])
    assert batch.actions[:3].tolist() == [7, 8, 9]


def test_long_sequences_keep_their_last_tokens(tokenizer):
    rows = rows_of("wordle", 2)
    collate = Collator(tokenizer, view_of("wordle"), max_tokens=24)
    batch = collate(rows)
    assert batch.input_ids.shape[1] <= 24
    assert batch.actions.numel() > 0
    with pytest.raises(ValueError, match="does not fit"):
        Collator(tokenizer, view_of("wordle"), max_tokens=3)(rows)


def test_microbatches_keep_episodes_whole_and_within_budget(tokenizer):
    collate = Collator(tokenizer, view_of("wordle"), max_tokens=1024)
    episodes = [collate.encode(r) for r in rows_of("wordle", 12)]
    groups = microbatches(episodes, 200)
    assert [e for g in groups for e in g] == episodes
    for g in groups:
        width = max(len(s.ids) for e in g for s in e.sequences)
        assert len(g) == 1 or len(g) * width <= 200
    with pytest.raises(ValueError):
        microbatches(episodes, 0)
