"""The text-environment protocol shared by every task.

An episode is a transcript of turns: the environment speaks first (the observation
returned by `reset`), then agent and environment alternate, one turn each per `step`.
Every turn is one line of text when the policy reads it: `render_prompt` joins the
visible turns, each followed by a newline, and the policy's utterance ends at the next
newline (generation stops at `\\n`).

What the policy sees of the transcript is each task's `view` (the whole transcript,
the last 40 turns, or only the current state). It is a pure function of the transcript
so that the environment, the rollout workers and the offline collate all apply the same
rule to live episodes and stored rows.

Any text is a legal action to *send*: text that is not a valid move in the task is an
invalid action with the task's penalty, never an exception.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import gymnasium
import numpy as np
from gymnasium import spaces

ENV = "env"
AGENT = "agent"

# Generous bounds for the Gymnasium spaces; the tasks' own texts are far shorter.
MAX_OBSERVATION_CHARS = 16_384
MAX_ACTION_CHARS = 4_096
CHARSET = string.printable


@dataclass(frozen=True)
class Turn:
    """One utterance: `role` is ENV (observation) or AGENT (action)."""

    role: str
    text: str


def render_prompt(turns: Sequence[Turn]) -> str:
    """The text a policy conditions on: each visible turn followed by a newline."""
    return "".join(turn.text + "\n" for turn in turns)


def whole_transcript(transcript: Sequence[Turn]) -> list[Turn]:
    """View for tasks whose policy reads the whole dialogue."""
    return list(transcript)


def current_observation(transcript: Sequence[Turn]) -> list[Turn]:
    """View for fully observed tasks: the latest observation carries the whole state."""
    return [transcript[-1]] if transcript else []


def last_items(n: int):
    """View of the last `n` turns (observations and actions alike)."""

    def view(transcript: Sequence[Turn]) -> list[Turn]:
        return list(transcript[-n:])

    view.__name__ = f"last_{n}_items"
    return view


class TextEnv(gymnasium.Env):
    """Base class of the tasks: Gymnasium's API with text in and out.

    Subclasses set `task`, `option_names`, `view`, `max_agent_turns` and implement
    `_reset(options) -> (observation, info)` and `_step(action) -> (observation,
    reward, terminated, info)`. The base class keeps the transcript, strips the action,
    enforces the turn cap (truncation) and records `info["success"]` at the end.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"]}
    task: ClassVar[str] = ""
    option_names: ClassVar[tuple[str, ...]] = ()
    view = staticmethod(whole_transcript)

    observation_space = spaces.Text(MAX_OBSERVATION_CHARS, min_length=0, charset=CHARSET)
    action_space = spaces.Text(MAX_ACTION_CHARS, min_length=0, charset=CHARSET)

    def __init__(self, *, max_agent_turns: int, render_mode: str | None = None):
        if max_agent_turns < 1:
            raise ValueError(f"{self.task}: max_agent_turns must be at least 1, got {max_agent_turns}")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"{self.task}: render_mode must be None or 'ansi', got {render_mode!r}")
        self.max_agent_turns = max_agent_turns
        self.render_mode = render_mode
        self.transcript: list[Turn] = []
        self.agent_turns = 0
        self.done = True
        self.episode_return = 0.0

    # -- Gymnasium API -------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            valid = ", ".join(self.option_names) or "none"
            raise ValueError(f"{self.task}: unknown option(s) {', '.join(unknown)}; valid options: {valid}")
        observation, info = self._reset(options)
        self.transcript = [Turn(ENV, observation)]
        self.agent_turns = 0
        self.episode_return = 0.0
        self.done = False
        return observation, info

    def step(self, action: str):
        if self.done:
            raise RuntimeError(f"{self.task}: the episode is over; call reset() first")
        if not isinstance(action, str):
            raise TypeError(f"{self.task}: an action is text (str), got {type(action).__name__}")
        action = action.strip()
        observation, reward, terminated, info = self._step(action)
        self.agent_turns += 1
        truncated = not terminated and self.agent_turns >= self.max_agent_turns
        self.transcript += [Turn(AGENT, action), Turn(ENV, observation)]
        self.episode_return += reward
        self.done = terminated or truncated
        info.setdefault("invalid_action", False)
        if self.done:
            info.setdefault("success", False)
        return observation, float(reward), terminated, truncated, info

    def render(self) -> str:
        return render_prompt(self.transcript)

    # -- What policies read --------------------------------------------------------

    def prompt(self) -> str:
        """The policy's input now: the task's view of the transcript, rendered."""
        return render_prompt(self.view(self.transcript))

    def legal_actions(self) -> list[str] | None:
        """The valid actions now, where the task's action set is finite; else None."""
        return None

    # -- For subclasses ------------------------------------------------------------

    def _reset(self, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        raise NotImplementedError

    def _rng_choice(self, items: Sequence[Any]) -> Any:
        """A uniform draw from `items` with the episode's seeded generator."""
        return items[int(self.np_random.integers(len(items)))]


class ScriptedPolicy:
    """A policy written by hand: the tasks' behaviour mixtures, experts and random play.

    `reset(env, rng)` starts an episode, `act(env, rng)` returns the next action's text.
    Scripted policies may read the environment's state (they generate data and set the
    normalisation maximum); where a policy must not, its docstring says what it reads.
    """

    def reset(self, env: TextEnv, rng: np.random.Generator) -> None:
        pass

    def act(self, env: TextEnv, rng: np.random.Generator) -> str:
        raise NotImplementedError


class UniformLegalPolicy(ScriptedPolicy):
    """Uniformly random among `legal_actions()`: the random baseline of finite-action tasks."""

    def act(self, env: TextEnv, rng: np.random.Generator) -> str:
        actions = env.legal_actions()
        if not actions:
            raise RuntimeError(f"{env.task}: no legal actions to choose from")
        return actions[int(rng.integers(len(actions)))]
