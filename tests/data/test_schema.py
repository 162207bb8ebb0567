"""The trajectory schema: hand-made episodes with hand-computed values, then every
task's scripted episodes through an Arrow table and back. No Ray, no store."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from lmrl_ray import envs
from lmrl_ray.data.schema import (
    EPISODE_ID,
    LENGTH,
    LOGPROBS,
    POLICY,
    POLICY_VERSION,
    RETURN,
    REWARD,
    ROLE,
    SCHEMA,
    SEED,
    SOURCE,
    SPLIT,
    SUCCESS,
    TASK,
    TEXT,
    TOKEN_IDS,
    TURN_TYPE,
    TURNS,
    episode_row,
    schema_difference,
    to_table,
    token_rewards,
    transcript_of,
)
from lmrl_ray.envs.base import AGENT, ENV, Turn
from lmrl_ray.envs.play import rollout

TRANSCRIPT = [
    Turn(ENV, "you stand at (1, 1)"),
    Turn(AGENT, "move right"),
    Turn(ENV, "you stand at (1, 2)"),
    Turn(AGENT, "move down"),
    Turn(ENV, "you reached the goal"),
]
# Exactly representable in float32, so the table's values compare with ==.
REWARDS = [-1.0, 2.5]


def hand_row(**overrides) -> dict:
    settings = dict(task="maze", episode_id="maze/0", seed=7, transcript=TRANSCRIPT, rewards=REWARDS, success=True)
    return episode_row(**{**settings, **overrides})


@pytest.fixture(scope="module")
def task_rows() -> dict[str, list[dict]]:
    """Two behaviour episodes of every task as rows; built once because chess and
    endgames start Stockfish."""
    rows = {}
    for task in envs.names():
        rows[task] = [
            episode_row(
                task=task,
                episode_id=f"{task}/{i}",
                seed=ep.seed,
                transcript=ep.transcript,
                rewards=ep.rewards,
                success=ep.success,
                policy="behaviour",
            )
            for i, ep in enumerate(rollout(task, "behaviour", 2, seed=3))
        ]
    return rows


# -- episode_row ----------------------------------------------------------------------


def test_episode_row_of_a_hand_made_transcript():
    row = hand_row(source="online", split="eval", policy="ppo", policy_version=4)
    assert [t[ROLE] for t in row[TURNS]] == [ENV, AGENT, ENV, AGENT, ENV]
    assert [t[TEXT] for t in row[TURNS]] == [t.text for t in TRANSCRIPT]
    # The agent turns carry their rewards in order; the environment's turns carry 0.
    assert [t[REWARD] for t in row[TURNS]] == [0.0, -1.0, 0.0, 2.5, 0.0]
    assert row[RETURN] == 1.5 and row[LENGTH] == 2 and row[SUCCESS] is True
    assert (row[TASK], row[EPISODE_ID], row[SEED]) == ("maze", "maze/0", 7)
    assert (row[SOURCE], row[SPLIT], row[POLICY], row[POLICY_VERSION]) == ("online", "eval", "ppo", 4)
    # Scripted data has no engine: no token ids or log-probs anywhere.
    assert all(t[TOKEN_IDS] is None and t[LOGPROBS] is None for t in row[TURNS])


def test_episode_row_defaults_to_offline_training_data():
    row = hand_row()
    assert (row[SOURCE], row[SPLIT], row[POLICY], row[POLICY_VERSION]) == ("offline", "train", "", 0)


@pytest.mark.parametrize("rewards", [[], [-1.0], [-1.0, 2.5, 0.0]])
def test_a_reward_count_other_than_the_agent_turns_raises(rewards):
    with pytest.raises(ValueError, match="maze/0"):
        hand_row(rewards=rewards)


@pytest.mark.parametrize("setting", [{"source": "dataset"}, {"source": ""}, {"split": "test"}, {"split": "Train"}])
def test_an_unknown_source_or_split_raises(setting):
    value = next(iter(setting.values()))
    with pytest.raises(ValueError, match=repr(value)):
        hand_row(**setting)


def test_an_unknown_role_raises():
    with pytest.raises(ValueError, match="'narrator'"):
        hand_row(transcript=[*TRANSCRIPT, Turn("narrator", "the end")])


def test_token_ids_and_logprobs_land_on_their_agent_turns():
    token_ids = [[11, 12, 13], [21]]
    logprobs = [[-0.5, -0.25, -1.0], [-2.0]]
    row = hand_row(token_ids=token_ids, logprobs=logprobs)
    assert [t[TOKEN_IDS] for t in row[TURNS]] == [None, [11, 12, 13], None, [21], None]
    assert [t[LOGPROBS] for t in row[TURNS]] == [None, [-0.5, -0.25, -1.0], None, [-2.0], None]
    # The same through the table: int32 ids and float32 log-probs keep these values.
    (stored,) = to_table([row]).to_pylist()
    assert [t[TOKEN_IDS] for t in stored[TURNS]] == [None, [11, 12, 13], None, [21], None]
    assert [t[LOGPROBS] for t in stored[TURNS]] == [None, [-0.5, -0.25, -1.0], None, [-2.0], None]


def test_an_unknown_agent_turn_keeps_null_ids_beside_known_ones():
    row = hand_row(token_ids=[None, [5, 6]], logprobs=[None, [-0.5, -0.5]])
    assert [t[TOKEN_IDS] for t in row[TURNS]] == [None, None, None, [5, 6], None]
    assert [t[LOGPROBS] for t in row[TURNS]] == [None, None, None, [-0.5, -0.5], None]


@pytest.mark.parametrize(
    "token_ids, logprobs",
    [
        # One entry per turn (environment turns included) instead of per agent turn.
        ([None, [1], None, [2], None], None),
        # Three ids but one log-prob on the first agent turn.
        ([[1, 2, 3], [4]], [[-0.5], [-0.5]]),
    ],
    ids=["ids-per-turn-not-per-agent-turn", "ids-and-logprobs-of-different-length"],
)
def test_misaligned_token_ids_or_logprobs_raise(token_ids, logprobs):
    with pytest.raises(ValueError):
        hand_row(token_ids=token_ids, logprobs=logprobs)


# -- The reward convention ---------------------------------------------------------------


def test_token_rewards_puts_the_reward_on_the_last_token():
    assert token_rewards(-1.0, 1) == [-1.0]
    assert token_rewards(2.5, 4) == [0.0, 0.0, 0.0, 2.5]
    assert token_rewards(3, 2) == [0.0, 3.0] and all(isinstance(r, float) for r in token_rewards(3, 2))
    # The turn's reward survives the spreading: what a return sums over tokens is unchanged.
    assert sum(token_rewards(2.5, 4)) == 2.5


@pytest.mark.parametrize("num_tokens", [0, -1])
def test_token_rewards_of_no_tokens_raises(num_tokens):
    with pytest.raises(ValueError):
        token_rewards(1.0, num_tokens)


# -- Tables ---------------------------------------------------------------------------


def test_transcript_of_inverts_episode_row():
    assert transcript_of(hand_row()) == TRANSCRIPT
    (stored,) = to_table([hand_row()]).to_pylist()
    assert transcript_of(stored) == TRANSCRIPT


def test_every_tasks_episodes_round_trip_through_a_table(task_rows):
    assert set(task_rows) == set(envs.names())
    for task, rows in task_rows.items():
        table = to_table(rows)
        assert table.schema.equals(SCHEMA, check_metadata=True), task
        assert table.num_rows == 2
        for row, stored in zip(rows, table.to_pylist()):
            assert transcript_of(stored) == transcript_of(row), task
            # Rewards are float32 in the table: they come back as their float32 value.
            assert [t[REWARD] for t in stored[TURNS]] == [float(np.float32(t[REWARD])) for t in row[TURNS]], task
            scalars = (TASK, EPISODE_ID, SEED, SOURCE, SPLIT, POLICY, POLICY_VERSION, RETURN, SUCCESS, LENGTH)
            assert {k: stored[k] for k in scalars} == {k: row[k] for k in scalars}, task


def test_every_tasks_rows_agree_with_their_episodes(task_rows):
    for task, rows in task_rows.items():
        for row in rows:
            agent = [t for t in row[TURNS] if t[ROLE] == AGENT]
            assert row[TURNS][0][ROLE] == ENV, task
            assert row[LENGTH] == len(agent) and row[RETURN] == pytest.approx(sum(t[REWARD] for t in agent)), task
            assert all(t[REWARD] == 0.0 for t in row[TURNS] if t[ROLE] == ENV), task


# -- schema_difference ------------------------------------------------------------------


def test_the_schema_matches_itself_with_or_without_metadata():
    assert schema_difference(SCHEMA) is None
    assert schema_difference(SCHEMA.remove_metadata()) is None
    assert schema_difference(to_table([hand_row()]).schema) is None


def test_schema_difference_names_a_missing_column():
    found = SCHEMA.remove(SCHEMA.get_field_index(RETURN))
    difference = schema_difference(found)
    assert "missing" in difference and RETURN in difference


def test_schema_difference_names_an_extra_column():
    difference = schema_difference(SCHEMA.append(pa.field("advantage", pa.float32())))
    assert "unexpected" in difference and "advantage" in difference
    assert "missing" not in difference


def test_schema_difference_names_a_changed_type():
    i = SCHEMA.get_field_index(LENGTH)
    difference = schema_difference(SCHEMA.set(i, pa.field(LENGTH, pa.int64(), nullable=False)))
    assert LENGTH in difference and "int64" in difference and "int32" in difference


def test_schema_difference_names_a_changed_type_inside_the_turns():
    turn = pa.struct([f if f.name != REWARD else pa.field(REWARD, pa.float64(), nullable=False) for f in TURN_TYPE])
    i = SCHEMA.get_field_index(TURNS)
    difference = schema_difference(SCHEMA.set(i, pa.field(TURNS, pa.list_(turn), nullable=False)))
    assert difference is not None and TURNS in difference


def test_schema_difference_notices_a_reordering():
    fields = list(SCHEMA)
    assert schema_difference(pa.schema(fields[1:] + fields[:1])) is not None
