"""The protocol every task keeps: Gymnasium's checker, bad input, caps and determinism."""

from __future__ import annotations

import warnings

import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmrl_ray import envs
from lmrl_ray.envs.base import AGENT, ENV

TASKS = envs.names()


@pytest.fixture(scope="module")
def env_cache():
    """One environment per task for the whole module (chess ones hold a Stockfish process)."""
    built = {}
    yield lambda name: built.setdefault(name, envs.make(name))
    for env in built.values():
        env.close()


@pytest.mark.parametrize("name", TASKS)
def test_gymnasium_check_env(name, env_cache):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env_cache(name), skip_render_check=True)


@pytest.mark.parametrize("name", TASKS)
def test_transcript_alternates_and_prompt_ends_in_newline(name, env_cache):
    env = env_cache(name)
    obs, _ = env.reset(seed=3)
    assert env.transcript[0].role == ENV and env.transcript[0].text == obs
    legal = env.legal_actions()
    env.step(legal[0] if legal else "hello")
    assert [t.role for t in env.transcript] == [ENV, AGENT, ENV]
    assert env.prompt().endswith("\n")
    assert set(env.view(env.transcript)) <= set(env.transcript)


@pytest.mark.parametrize("name", TASKS)
def test_unknown_task_setting_and_option_are_named(name):
    with pytest.raises(ValueError, match="valid tasks"):
        envs.make(name + "-nope")
    with pytest.raises(ValueError, match="valid settings"):
        envs.make(name, not_a_setting=1)
    env = envs.make(name)
    try:
        with pytest.raises(ValueError, match="valid options"):
            env.reset(seed=0, options={"not_an_option": 1})
    finally:
        env.close()


@pytest.mark.parametrize("name", TASKS)
def test_step_after_end_and_non_text_action_raise_clearly(name, env_cache):
    env = env_cache(name)
    env.reset(seed=0)
    with pytest.raises(TypeError, match="text"):
        env.step(42)
    while not env.done:
        env.step("")
    with pytest.raises(RuntimeError, match="reset"):
        env.step("")


# An action is either adversarial text or "the k-th legal action", resolved at step time.
ACTIONS = st.one_of(
    st.text(max_size=40),
    st.just(""),
    st.text(alphabet=st.characters(min_codepoint=0x80), min_size=1, max_size=20),
    st.text(min_size=2000, max_size=6000),
    st.integers(min_value=0, max_value=10**6),
)


def _play(env, seed, actions):
    """Play `actions` cyclically until the episode ends; returns the transcript."""
    env.reset(seed=seed)
    steps = 0
    while not env.done:
        a = actions[steps % len(actions)]
        if isinstance(a, int):
            legal = env.legal_actions()
            a = legal[a % len(legal)] if legal else str(a)
        _, reward, terminated, truncated, info = env.step(a)
        assert isinstance(reward, float)
        steps += 1
        assert steps <= env.max_agent_turns, f"{env.task}: episode ran past its cap"
    assert "success" in info
    return [(t.role, t.text) for t in env.transcript]


@pytest.mark.parametrize("name", TASKS)
def test_fuzz_no_exception_capped_and_deterministic(name, env_cache):
    env = env_cache(name)

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(seed=st.integers(0, 2**31 - 1), actions=st.lists(ACTIONS, min_size=1, max_size=30))
    def check(seed, actions):
        first = _play(env, seed, actions)
        assert _play(env, seed, actions) == first

    check()


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("kind", envs.POLICY_KINDS)
def test_scripted_policies_finish_episodes(name, kind, env_cache):
    from lmrl_ray.envs.play import play_episode

    env, policy = env_cache(name), envs.policy(name, kind)
    for seed in (11, 12):
        ep = play_episode(env, policy, seed)
        assert 1 <= ep.agent_turns <= env.max_agent_turns
        assert ep.transcript[-1].role == ENV
        assert ep.episode_return == pytest.approx(env.episode_return)
