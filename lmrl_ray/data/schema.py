"""The one trajectory schema: offline datasets, online trajectories and evaluations alike.

A row is one episode. Its turns are in order, environment first; each turn has its
role, its text, and for agent turns the token ids the engine produced (exactly those,
so nothing is re-tokenised differently) with their log-probs. Scripted data has no
engine, so its token ids and log-probs are null and the collate tokenises the text.

Reward convention: a turn's reward is the reward the environment returned for that
agent turn (environment turns carry 0). When turns become tokens, the reward sits on
the turn's *last* token and every other token carries 0 (`token_rewards`).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import pyarrow as pa

from lmrl_ray.envs.base import AGENT, ENV, Turn
from lmrl_ray.envs.play import SPLITS

SCHEMA_VERSION = 1

# Column names, defined once.
TASK = "task"
EPISODE_ID = "episode_id"
SEED = "seed"
SOURCE = "source"
SPLIT = "split"
POLICY = "policy"
POLICY_VERSION = "policy_version"
TURNS = "turns"
RETURN = "return"
SUCCESS = "success"
LENGTH = "length"

ROLE = "role"
TEXT = "text"
TOKEN_IDS = "token_ids"
LOGPROBS = "logprobs"
REWARD = "reward"

SOURCES = ("offline", "online", "evaluation")

TURN_TYPE = pa.struct(
    [
        pa.field(ROLE, pa.string(), nullable=False),
        pa.field(TEXT, pa.string(), nullable=False),
        pa.field(TOKEN_IDS, pa.list_(pa.int32())),
        pa.field(LOGPROBS, pa.list_(pa.float32())),
        pa.field(REWARD, pa.float32(), nullable=False),
    ]
)

SCHEMA = pa.schema(
    [
        pa.field(TASK, pa.string(), nullable=False),
        pa.field(EPISODE_ID, pa.string(), nullable=False),
        pa.field(SEED, pa.int64(), nullable=False),
        pa.field(SOURCE, pa.string(), nullable=False),
        pa.field(SPLIT, pa.string(), nullable=False),
        pa.field(POLICY, pa.string(), nullable=False),
        pa.field(POLICY_VERSION, pa.int64(), nullable=False),
        pa.field(TURNS, pa.list_(TURN_TYPE), nullable=False),
        pa.field(RETURN, pa.float64(), nullable=False),
        pa.field(SUCCESS, pa.bool_(), nullable=False),
        pa.field(LENGTH, pa.int32(), nullable=False),
    ],
    metadata={"lmrl_ray.schema_version": str(SCHEMA_VERSION)},
)


def episode_row(
    *,
    task: str,
    episode_id: str,
    seed: int,
    transcript: Sequence[Turn],
    rewards: Sequence[float],
    success: bool,
    source: str = "offline",
    split: str = "train",
    policy: str = "",
    policy_version: int = 0,
    token_ids: Sequence[Sequence[int] | None] | None = None,
    logprobs: Sequence[Sequence[float] | None] | None = None,
) -> dict:
    """One row from an episode's transcript and the rewards of its agent turns.

    `token_ids` and `logprobs`, when given, hold one entry per agent turn (None where
    unknown). The return is the sum of the rewards; the length counts agent turns.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    agent_turns = [t for t in transcript if t.role == AGENT]
    if len(rewards) != len(agent_turns):
        raise ValueError(f"episode {episode_id}: {len(rewards)} rewards for {len(agent_turns)} agent turns")
    token_ids = list(token_ids) if token_ids is not None else [None] * len(agent_turns)
    logprobs = list(logprobs) if logprobs is not None else [None] * len(agent_turns)
    for name, per_turn in (("token_ids", token_ids), ("logprobs", logprobs)):
        if len(per_turn) != len(agent_turns):
            raise ValueError(f"episode {episode_id}: {len(per_turn)} {name} entries for {len(agent_turns)} agent turns")
    for k, (ids, lps) in enumerate(zip(token_ids, logprobs)):
        if ids is not None and lps is not None and len(ids) != len(lps):
            raise ValueError(f"episode {episode_id}: agent turn {k} has {len(ids)} token ids but {len(lps)} log-probs")
    turns, k = [], 0
    for turn in transcript:
        if turn.role == AGENT:
            turns.append({ROLE: AGENT, TEXT: turn.text, TOKEN_IDS: token_ids[k], LOGPROBS: logprobs[k], REWARD: float(rewards[k])})
            k += 1
        elif turn.role == ENV:
            turns.append({ROLE: ENV, TEXT: turn.text, TOKEN_IDS: None, LOGPROBS: None, REWARD: 0.0})
        else:
            raise ValueError(f"episode {episode_id}: unknown role {turn.role!r}")
    return {
        TASK: task,
        EPISODE_ID: episode_id,
        SEED: int(seed),
        SOURCE: source,
        SPLIT: split,
        POLICY: policy,
        POLICY_VERSION: int(policy_version),
        TURNS: turns,
        RETURN: float(sum(rewards)),
        SUCCESS: bool(success),
        LENGTH: len(agent_turns),
    }


def to_table(rows: Iterable[dict]) -> pa.Table:
    """Rows (as from `episode_row`) as a table of the schema."""
    return pa.Table.from_pylist(list(rows), schema=SCHEMA)


def transcript_of(row: dict) -> list[Turn]:
    """The transcript of a stored row (the inverse of `episode_row` on the text)."""
    return [Turn(t[ROLE], t[TEXT]) for t in row[TURNS]]


def token_rewards(reward: float, num_tokens: int) -> list[float]:
    """A turn's reward spread over its tokens: all of it on the last token, 0 elsewhere.

    The one place this convention lives; the collate and the losses rely on it.
    """
    if num_tokens < 1:
        raise ValueError("a turn has at least one token")
    return [0.0] * (num_tokens - 1) + [float(reward)]


def schema_difference(found: pa.Schema, expected: pa.Schema = SCHEMA) -> str | None:
    """A sentence naming how `found` differs from `expected`, or None if they match
    (field names, types and order; metadata ignored)."""
    if found.equals(expected, check_metadata=False):
        return None
    found_fields = {f.name: f for f in found}
    expected_fields = {f.name: f for f in expected}
    missing = [n for n in expected_fields if n not in found_fields]
    extra = [n for n in found_fields if n not in expected_fields]
    changed = [
        f"{n}: {found_fields[n].type} instead of {expected_fields[n].type}"
        for n in expected_fields
        if n in found_fields and not found_fields[n].type.equals(expected_fields[n].type)
    ]
    parts = []
    if missing:
        parts.append(f"missing columns {', '.join(missing)}")
    if extra:
        parts.append(f"unexpected columns {', '.join(extra)}")
    if changed:
        parts.append("; ".join(changed))
    if not parts:
        parts.append("same columns in another order or nullability")
    return "; ".join(parts)
