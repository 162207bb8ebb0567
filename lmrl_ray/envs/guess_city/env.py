"""Guess My City: find the hidden city by asking its inhabitant questions.

The hidden city is one of the original's 100 cities (`data/cities.json`, see `cities`),
drawn from the seed or pinned with `options={"city": name}` (the per-item evaluation
plays `cities.city_names()` in order). The episode starts with the observation
`Questions:` (as in Twenty Questions). Each agent turn is one question, open ("What is
the weather like?") or yes/no ("Is it in Asia?"); the simulator answers it in one line
but never names the city or its country. A guess is `Is the city you are from X?`, or,
as in the original, any question that ends with the city's name and asks only whether
it is the city ("Is it X?", "Are you from X?"; see `reader`).

Reward: -1 per question, 0 for the question that guesses the city, which ends the
episode (`info["success"]`); after `max_questions` (20) questions the episode is
truncated. Any text is a turn: what is not a question (empty, several lines, longer
than `reader.MAX_QUESTION_CHARS`, not ending in `?`) costs -1 like any other turn, gets
the fallback answer and sets `info["invalid_action"]`. `info["unresolved"]` counts this
episode's turns that the simulator could not ground (its fallback answer).

Whether a guess is right is decided here, from the table, not from the simulator's
text, so a simulator that could be talked into "Yes, I am from X!" would still pay
nothing for it. The policy sees the whole transcript. `env.city` is the hidden `City`
(for recording data; policies must not read it).
"""

from __future__ import annotations

from typing import Any

from lmrl_ray.envs.base import AGENT, TextEnv, Turn
from lmrl_ray.envs.dialogue import build_simulator
from lmrl_ray.envs.guess_city.cities import City, city_named, table
from lmrl_ray.envs.guess_city.oracle import GroundedCityOracle
from lmrl_ray.envs.guess_city.reader import GUESS, INVALID, Query, parse

OBSERVATION = "Questions:"
SIMULATORS = {"grounded": GroundedCityOracle}


class GuessCityEnv(TextEnv):
    """Guess My City. `options={"city": "Tokyo"}` pins the hidden city (name or alias)."""

    task = "guess-city"
    option_names = ("city",)

    def __init__(self, *, simulator="grounded", max_questions: int = 20, render_mode: str | None = None):
        if max_questions < 1:
            raise ValueError(f"{self.task}: max_questions must be at least 1, got {max_questions}")
        super().__init__(max_agent_turns=max_questions, render_mode=render_mode)
        self.simulator = build_simulator(self.task, simulator, SIMULATORS)
        self.city: City | None = None

    def _reset(self, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if "city" in options:
            if not isinstance(options["city"], str):
                raise ValueError(f"{self.task}: option city must be a city's name, got {options['city']!r}")
            self.city = city_named(options["city"])
        else:
            self.city = self._rng_choice(table().cities)
        self.simulator.reset(self.city, self.np_random)
        return OBSERVATION, {}

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        query = parse(action)
        observation = self.simulator.reply([*self.transcript, Turn(AGENT, action)])
        info = {"invalid_action": query.intent == INVALID, "unresolved": self.simulator.unresolved}
        if query == Query(GUESS, self.city.name):
            info["success"] = True
            return observation, 0.0, True, info
        return observation, -1.0, False, info
