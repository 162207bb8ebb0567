"""LM simulators: small language models that answer the agent in the dialogue tasks.

The paper's dialogue tasks answered the agent with GPT-2 models trained on dialogues;
ours are distilled from our grounded simulators' dialogues (`distill.py`), so the
reference answer is known for every line and the LM simulator can be audited against it
(`lmrl-ray audit`). Tasks: Twenty Questions and Guess My City (whose environments decide
a win from their tables, never from the simulator's text) and Car Dealer, whose LM buyer
decides the sale itself: its line `Output: Decision=Accept MSRP=$X Buy Price=$Y` (or
`Decision=Reject`) ends the episode, as the grounded buyer's does. That is where an LM
buyer can be gamed, and what the audit probes.

A simulator reads its secret and the dialogue so far, one line each, and writes its
next line:

    Secret: <the object, the city, or the buyer's persona>
    Questions:                   (the buyer's opening line instead: trained on)
    <the agent's line>
    <the simulator's answer>     <- trained on, and generated
    ...

An environment is handed its simulator (`envs.dialogue`): `lm_simulator(task, FOLDER)`
is the picklable factory it takes, answering through an `HFEngine` over that folder (one
per process and folder) or through simulator replicas (`actors.simulator_replicas`, an
engine pool given as `engine`). `simulator_settings` turns the settings a run records
(`simulator="lm", simulator_model=FOLDER`) into that factory. A rollout worker answers
all its environments' simulator turns of a step with one engine call
(`LMSimulator.request` and `provide`).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from lmrl_ray.envs.base import AGENT, ENV, Turn
from lmrl_ray.envs.dialogue import Simulator

SECRET_PREFIX = "Secret: "
# Each task's secret, read off the environment after reset, and how its simulator is told it.
SECRETS: dict[str, Callable[[Any], Any]] = {
    "twenty-questions": lambda env: env.hidden_object,
    "guess-city": lambda env: env.city,
    "car-dealer": lambda env: env.persona,
}


def describe_persona(p) -> str:
    features = ", ".join(p.features) or "nothing in particular"
    return (f"{p.personality} buyer; wants a {p.brand} {p.type}; features: {features}; budget ${p.budget}; "
            f"strategy: {p.strategy}")


SECRET_TEXT: dict[str, Callable[[Any], str]] = {
    "twenty-questions": lambda secret: secret.name,
    "guess-city": lambda secret: secret.name,
    "car-dealer": describe_persona,
}
# Tasks whose opening line is the same in every episode: context, not a target.
FIXED_OPENING = ("twenty-questions", "guess-city", "car-dealer")
MAX_REPLY_TOKENS = {"car-dealer": 64}
DEFAULT_REPLY_TOKENS = 32
# The original's reading (car_dealer/env/data.py): amounts with thousands commas, and
# an MSRP that starts with a non-zero digit (`MSRP=$0` decides nothing).
_DECISION = re.compile(r"Output: Decision=(Accept|Reject) MSRP=\$([1-9][0-9,]*)(?: Buy Price=\$([0-9][0-9,]*))?")


def read_decision(line: str):
    """The buyer's decision in `line` as a `car_dealer.Outcome` (willingness unknown), or
    None when the line decides nothing."""
    from lmrl_ray.envs.car_dealer.buyer import Outcome

    match = _DECISION.search(line)
    if match is None:
        return None
    accepted = match.group(1) == "Accept"
    if accepted and match.group(3) is None:
        return None  # an acceptance without a price decides nothing
    def amount(text: str) -> int:
        return int(text.replace(",", ""))

    return Outcome(accepted, amount(match.group(2)), amount(match.group(3)) if accepted else None, None)


def check_task(task: str) -> None:
    if task not in SECRETS:
        raise ValueError(f"no LM simulator for task {task!r}; tasks with one: {', '.join(SECRETS)}")


def simulator_transcript(secret: str, transcript: Sequence[Turn]) -> list[Turn]:
    """The dialogue as the simulator sees it: the secret first, then every line, the
    environment's (its own) lines as AGENT turns and the agent's as ENV turns."""
    swapped = [Turn(ENV, SECRET_PREFIX + secret)]
    for turn in transcript:
        swapped.append(Turn(ENV if turn.role == AGENT else AGENT, turn.text))
    return swapped


@functools.lru_cache(maxsize=4)
def _engine(folder: str):
    from lmrl_ray.engines.hf_engine import HFEngine

    return HFEngine.load(folder)


class LMSimulator(Simulator):
    """A simulator that answers with a language model (greedy, one line). `folder` is a
    model folder from `train_simulator`, loaded in this process when first needed;
    `engine` (any `Engine`, e.g. an `EnginePool` of simulator replicas from
    `serve_simulator`) serves it instead.

    A reply is a function of its prompt (`request`). A rollout worker asks every
    environment's simulator for its prompt before the environments step, answers all of
    them with one engine call, and hands each its answer (`provide`); `reply` then uses
    the answer it was given when the prompt matches, else it calls the engine itself."""

    kind = "lm"

    def __init__(self, task: str, folder: str | os.PathLike | None = None, *, engine=None):
        super().__init__()
        check_task(task)
        if folder is None and engine is None:
            raise ValueError(f"{task}: simulator 'lm' needs simulator_model, the folder of a trained simulator")
        if folder is not None and not Path(folder).is_dir():
            raise FileNotFoundError(f"{task}: simulator_model {str(folder)!r} is not a folder")
        self.task = task
        self.folder = None if folder is None else str(Path(folder).resolve())
        self._engine = engine
        self.secret_text = ""
        self.outcome = None  # Car Dealer: the decision read from the buyer's latest line
        self._provided: tuple[str, str] | None = None
        self.unbatched_calls = 0
        """Replies this simulator asked its engine for itself (not answered ahead)."""

    @property
    def engine(self):
        """The engine that answers: the one given, else this process's engine over `folder`."""
        if self._engine is None:
            self._engine = _engine(self.folder)
        return self._engine

    @property
    def sampling(self):
        """Greedy, at most the task's reply length."""
        from lmrl_ray.engines.base import SamplingParams

        return SamplingParams(temperature=0.0, max_new_tokens=MAX_REPLY_TOKENS.get(self.task, DEFAULT_REPLY_TOKENS))

    def reset(self, secret: Any, rng) -> None:
        super().reset(secret, rng)
        self.secret_text = SECRET_TEXT[self.task](secret)
        self.outcome = None
        self._provided = None

    def request(self, transcript: Sequence[Turn]) -> str:
        """The prompt whose completion is the reply after `transcript`."""
        from lmrl_ray.envs.base import render_prompt

        return render_prompt(simulator_transcript(self.secret_text, transcript))

    def provide(self, prompt: str, text: str) -> None:
        """The engine's completion `text` of `prompt`, computed ahead (by a batched call)."""
        self._provided = (prompt, text)

    def reply(self, transcript: Sequence[Turn]) -> str:
        prompt = self.request(transcript)
        provided, self._provided = self._provided, None
        if provided is not None and provided[0] == prompt:
            text = provided[1]
        else:
            self.unbatched_calls += 1
            [completion] = self.engine.generate([prompt], self.sampling)
            text = completion.text
        line = text.strip()
        if self.task == "car-dealer":
            self.outcome = read_decision(line)
        return line


def lm_simulator(task: str, folder: str | os.PathLike | None = None, *, engine=None) -> Callable[[], LMSimulator]:
    """The factory an environment of `task` takes as its simulator (`simulator=...`): an
    `LMSimulator` over the model folder `folder`, answered by `engine` (simulator
    replicas) when given. Picklable, so rollout workers in other processes build their own."""
    check_task(task)
    if folder is None and engine is None:
        raise ValueError(f"{task}: simulator 'lm' needs simulator_model, the folder of a trained simulator")
    if folder is not None and not Path(folder).is_dir():
        raise FileNotFoundError(f"{task}: simulator_model {str(folder)!r} is not a folder")
    return functools.partial(LMSimulator, task, None if folder is None else str(Path(folder).resolve()), engine=engine)


def simulator_settings(task: str, settings: dict | None, *, engine=None) -> dict:
    """Environment settings with the simulator a run records resolved into what the
    environment takes: `{"simulator": "lm", "simulator_model": FOLDER, ...}` becomes
    `{"simulator": lm_simulator(task, FOLDER, engine=engine), ...}`; "grounded" (or no
    simulator) stays as it is. The other settings pass through."""
    out = dict(settings or {})
    kind, folder = out.get("simulator", "grounded"), out.pop("simulator_model", None)
    if kind != "lm":
        for name, value in (("simulator_model", folder), ("simulator_engine", engine)):
            if value is not None:
                raise ValueError(f"{task}: {name} is for simulator 'lm', not {kind!r}")
        return out
    out["simulator"] = lm_simulator(task, folder, engine=engine)
    return out
