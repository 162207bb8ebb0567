"""The partner in a dialogue task: the simulator interface.

Twenty Questions, Guess My City and Car Dealer each have a hidden *secret* (the object,
the city, the buyer's persona) that the agent does not see. A simulator answers the
agent from the secret and the dialogue so far. Two kinds stand behind this interface:

- *grounded* simulators answer from a knowledge table written by us: exact, and they
  cannot be talked into a wrong answer (the reference); each task builds its own;
- *LM* simulators (`lmrl_ray.simulators`) are small language models distilled from
  grounded dialogues, as in the paper. An environment does not build one: it is handed
  one, as `simulator=FACTORY` (`simulators.lm_simulator(task, FOLDER)`, picklable, so
  every rollout worker builds its own) or as a `Simulator` instance.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lmrl_ray.envs.base import Turn


class Simulator:
    """Answers the agent. `reset` starts an episode with its secret; `reply` gives the
    partner's next utterance after the agent's latest turn (the last item of
    `transcript`). `unresolved` counts the agent turns this episode that the simulator
    could not ground (it gave its documented fallback answer)."""

    kind = ""

    def __init__(self) -> None:
        self.unresolved = 0

    def reset(self, secret: Any, rng: np.random.Generator) -> None:
        self.secret = secret
        self.rng = rng
        self.unresolved = 0

    def reply(self, transcript: Sequence[Turn]) -> str:
        raise NotImplementedError


def build_simulator(task: str, simulator: "str | Simulator | Callable[[], Simulator]",
                    builders: Mapping[str, Callable[[], Simulator]]) -> Simulator:
    """The simulator of an environment of `task`: one of the task's own kinds (`builders`
    by name, "grounded" among them), a `Simulator` handed over as it is, or what a
    factory handed over builds."""
    if isinstance(simulator, Simulator):
        return simulator
    if callable(simulator):
        built = simulator()
        if not isinstance(built, Simulator):
            raise TypeError(f"{task}: the simulator factory built a {type(built).__name__}, not a Simulator")
        return built
    if simulator not in builders:
        raise ValueError(
            f"{task}: unknown simulator {simulator!r}; valid simulators: {', '.join(builders)}, or an LM "
            "simulator handed over as a factory (lmrl_ray.simulators.lm.lm_simulator)"
        )
    return builders[simulator]()
