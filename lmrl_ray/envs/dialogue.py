"""The partner in a dialogue task: the simulator interface.

Twenty Questions, Guess My City and Car Dealer each have a hidden *secret* (the object,
the city, the buyer's persona) that the agent does not see. A simulator answers the
agent from the secret and the dialogue so far. Two kinds stand behind this interface:

- *grounded* simulators answer from a knowledge table written by us: exact, and they
  cannot be talked into a wrong answer (the reference);
- *LM* simulators (`lmrl_ray/simulators.py`; Twenty Questions, Guess My City, the car buyer)
  are small language models distilled from grounded dialogues, as in the paper.

An environment takes `simulator="grounded"` (the default) or `simulator="lm"` with
`simulator_model=FOLDER` (and optionally `simulator_engine=POOL`: simulator replicas
serving that folder, from `simulators.serve_simulator`), and builds its simulator with
`build_simulator`, which names the valid kinds when asked for another.
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


def lm_simulator(task: str, folder: str | None, engine=None) -> Simulator:
    """The LM simulator of `task` from the model folder `folder`, served by `engine` when
    given (imported here: the grounded environments need no torch)."""
    from lmrl_ray.simulators import LMSimulator

    return LMSimulator(task, folder, engine=engine)


def build_simulator(task: str, kind: str, builders: Mapping[str, Callable[[], Simulator]],
                    simulator_model: str | None = None, simulator_engine=None) -> Simulator:
    """The simulator of `kind` for `task`, from the task's `builders` by kind, or "lm":
    the LM simulator in the folder `simulator_model`, answered by `simulator_engine` (an
    engine pool of simulator replicas) when given, else by an engine in this process."""
    for name, value in (("simulator_model", simulator_model), ("simulator_engine", simulator_engine)):
        if value is not None and kind != "lm":
            raise ValueError(f"{task}: {name} is for simulator 'lm', not {kind!r}")
    if kind == "lm" and simulator_model is None:
        raise ValueError(f"{task}: simulator 'lm' needs simulator_model, the folder of a trained simulator")
    builders = {**builders, "lm": lambda: lm_simulator(task, simulator_model, simulator_engine)}
    if kind not in builders:
        raise ValueError(f"{task}: unknown simulator {kind!r}; valid simulators: {', '.join(builders)}")
    return builders[kind]()
