"""The LMRL-Gym tasks as Gymnasium text environments.

    env = lmrl_ray.envs.make("maze")
    observation, info = env.reset(seed=0, options={"start": (1, 1)})
    observation, reward, terminated, truncated, info = env.step("move right")

`names()` lists the tasks; `spec(name)` tells about one (its summary, the paper's
normalisation constants); `policy(name, kind)` builds a scripted policy for it.
Modules are imported on first use, so listing the tasks is cheap.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field, replace
from typing import Any

from lmrl_ray.envs.base import (
    AGENT,
    ENV,
    ScriptedPolicy,
    TextEnv,
    Turn,
    render_prompt,
)

POLICY_KINDS = ("expert", "behaviour", "random")


@dataclass(frozen=True)
class TaskSpec:
    """One registered task."""

    name: str
    """The name `make` takes."""
    summary: str
    """One line for `lmrl-ray tasks`."""
    env: str
    """`module:Class` of the environment."""
    policies: dict[str, str]
    """Scripted policy kind (expert, behaviour, random) -> `module:Class`."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Defaults passed to the environment's constructor (a variant of a shared class)."""
    paper_min: float | None = None
    """The paper's task minimum m (appendix E), None where unpublished."""
    paper_avg: float | None = None
    """The paper's dataset average d."""
    paper_max: float | None = None
    """The paper's maximum M."""
    our_avg: float | None = None
    """Our dataset average d: the mean return of our scripted behaviour policy (the
    mixture that generates our offline data), measured (`OUR_CONSTANTS`)."""
    our_max: float | None = None
    """Our maximum M: the mean return of our scripted expert, measured (`OUR_CONSTANTS`)."""


_GAMES = "lmrl_ray.envs"
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec(
            "maze",
            "Fully observed 10x13 maze; reach (8, 6) with move up/down/left/right.",
            f"{_GAMES}.maze:MazeEnv",
            {kind: f"{_GAMES}.maze:{cls}" for kind, cls in
             [("expert", "ShortestPathPolicy"), ("behaviour", "MazeBehaviourPolicy"), ("random", "UniformLegalPolicy")]},
            settings={"partially_observed": False},
            paper_min=-101, paper_avg=-83, paper_max=-6.84,
        ),
        TaskSpec(
            "maze-po",
            "Partially observed maze: only the walls around you, last 40 turns in view.",
            f"{_GAMES}.maze:MazeEnv",
            {kind: f"{_GAMES}.maze:{cls}" for kind, cls in
             [("expert", "BeliefPolicy"), ("behaviour", "MazeBehaviourPolicy"), ("random", "UniformLegalPolicy")]},
            settings={"partially_observed": True},
            paper_min=-101, paper_avg=-83, paper_max=-25.75,
        ),
        TaskSpec(
            "text-nav",
            "Text adventure: put the stale food from the living-room table in the kitchen fridge.",
            f"{_GAMES}.text_nav:TextNavEnv",
            {kind: f"{_GAMES}.text_nav:{cls}" for kind, cls in
             [("expert", "WalkthroughPolicy"), ("behaviour", "TextNavBehaviourPolicy"), ("random", "UniformLegalPolicy")]},
            settings={"partially_observed": False},
            paper_min=0, paper_avg=0.26, paper_max=1,
        ),
        TaskSpec(
            "text-nav-po",
            "Text-Nav without the room name and inventory in the observations.",
            f"{_GAMES}.text_nav:TextNavEnv",
            {kind: f"{_GAMES}.text_nav:{cls}" for kind, cls in
             [("expert", "WalkthroughPolicy"), ("behaviour", "TextNavBehaviourPolicy"), ("random", "UniformLegalPolicy")]},
            settings={"partially_observed": True},
            paper_min=0, paper_avg=0.26, paper_max=1,
        ),
        TaskSpec(
            "wordle",
            "Wordle: six tries at a five-letter word, feedback g/y/b per letter.",
            f"{_GAMES}.wordle:WordleEnv",
            {kind: f"{_GAMES}.wordle:{cls}" for kind, cls in
             [("expert", "InformationGainPolicy"), ("behaviour", "WordleBehaviourPolicy"), ("random", "RandomWordPolicy")]},
            paper_min=-6, paper_avg=-4.12, paper_max=-1.94,
        ),
        TaskSpec(
            "chess",
            "Chess as White against a strength-limited Stockfish; FEN in, spaced SAN out.",
            f"{_GAMES}.chess_game:ChessEnv",
            {kind: f"{_GAMES}.chess_game:{cls}" for kind, cls in
             [("expert", "StockfishPolicy"), ("behaviour", "ChessBehaviourPolicy"), ("random", "UniformLegalPolicy")]},
            paper_min=-401, paper_avg=0.21, paper_max=1,
        ),
        TaskSpec(
            "endgames",
            "Chess endgames: K+Q, K+R, K+Q+R or K+R+R against a lone king; mate it.",
            f"{_GAMES}.endgames:EndgamesEnv",
            {kind: f"{_GAMES}.endgames:{cls}" for kind, cls in
             [("expert", "StockfishPolicy"), ("behaviour", "EndgameBehaviourPolicy"), ("random", "UniformLegalPolicy")]},
            paper_min=-1, paper_avg=0.586, paper_max=1,
        ),
        TaskSpec(
            "twenty-questions",
            "Twenty Questions: find the hidden object with yes/no questions.",
            f"{_GAMES}.twenty_questions:TwentyQuestionsEnv",
            {kind: f"{_GAMES}.twenty_questions:{cls}" for kind, cls in
             [("expert", "InformationGainQuestioner"), ("behaviour", "QuestionerMixture"), ("random", "RandomQuestioner")]},
            paper_min=-20, paper_avg=-17.3, paper_max=-12.6,
        ),
        TaskSpec(
            "guess-city",
            "Guess My City: find the hidden city with open questions; the oracle never names it.",
            f"{_GAMES}.guess_city:GuessCityEnv",
            {kind: f"{_GAMES}.guess_city:{cls}" for kind, cls in
             [("expert", "InformationGainQuestioner"), ("behaviour", "QuestionerMixture"), ("random", "RandomQuestioner")]},
            paper_min=-20, paper_avg=-18.8, paper_max=-8.56,
        ),
        TaskSpec(
            "car-dealer",
            "Car Dealer: sell a car to a simulated buyer with a hidden persona and budget.",
            f"{_GAMES}.car_dealer:CarDealerEnv",
            {kind: f"{_GAMES}.car_dealer:{cls}" for kind, cls in
             [("expert", "ExpertSeller"), ("behaviour", "SellerMixture"), ("random", "RandomSeller")]},
            paper_min=0,
        ),
    ]
}

# Our normalisation constants, measured: the normalised score "with our constants" is
# `stats.normalised_score(x, paper_min, our_avg, our_max)` (car dealer: m = 0 too).
# task: (our_avg d, episodes, our_max M, episodes), each the mean return of
# `play.scripted_summary(task, "behaviour" | "expert", episodes, seed=0)`, except the maze
# experts: their exact mean over the 25 starts (the evaluation's distribution; the
# policy is deterministic). Measured with lmrl-ray 0.1.0 and the system's Stockfish.
OUR_CONSTANTS: dict[str, tuple[float, int, float, int]] = {
    "maze": (-73.84, 20_000, -6.84, 25),
    "maze-po": (-73.84, 20_000, -7.24, 25),
    "text-nav": (0.2606, 20_000, 1.0, 20_000),
    "text-nav-po": (0.2606, 20_000, 1.0, 20_000),
    "wordle": (-4.112, 20_000, -1.937, 20_000),
    "chess": (-0.295, 200, 1.0, 200),
    "endgames": (0.648, 500, 0.998, 500),
    "twenty-questions": (-17.347, 20_000, -6.888, 20_000),
    "guess-city": (-18.089, 20_000, -1.0, 20_000),
    "car-dealer": (0.5223, 20_000, 0.8781, 20_000),
}
TASKS = {
    name: replace(spec, our_avg=OUR_CONSTANTS[name][0], our_max=OUR_CONSTANTS[name][2]) for name, spec in TASKS.items()
}


def names() -> list[str]:
    """The registered task names, in the paper's order."""
    return list(TASKS)


def spec(name: str) -> TaskSpec:
    """The registration of `name`; an unknown name raises an error listing the valid ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}") from None


def _load(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def settings_of(name: str) -> list[str]:
    """The settings `make(name, ...)` accepts."""
    params = inspect.signature(_load(spec(name).env).__init__).parameters
    return [p for p in params if p != "self" and params[p].kind == inspect.Parameter.KEYWORD_ONLY]


def make(name: str, **settings: Any) -> TextEnv:
    """Build the environment of task `name`; `settings` go to its constructor."""
    task = spec(name)
    valid = settings_of(name)
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(unknown)} for task {name!r}; valid settings: {', '.join(valid)}"
        )
    env = _load(task.env)(**{**task.settings, **settings})
    env.task = name
    return env


def policy(name: str, kind: str, **settings: Any) -> ScriptedPolicy:
    """A scripted policy of `kind` (expert, behaviour or random) for task `name`."""
    task = spec(name)
    if kind not in task.policies:
        raise ValueError(f"unknown policy {kind!r} for task {name!r}; valid policies: {', '.join(task.policies)}")
    return _load(task.policies[kind])(**settings)


__all__ = [
    "AGENT",
    "ENV",
    "OUR_CONSTANTS",
    "POLICY_KINDS",
    "ScriptedPolicy",
    "TASKS",
    "TaskSpec",
    "TextEnv",
    "Turn",
    "make",
    "names",
    "policy",
    "render_prompt",
    "settings_of",
    "spec",
]
