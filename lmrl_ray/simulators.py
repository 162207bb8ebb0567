"""LM simulators: small language models distilled from the grounded simulators' dialogues.

The paper's dialogue tasks answered the agent with GPT-2 models trained on dialogues;
ours are trained on the dialogues of our grounded simulators (`envs/dialogue.py`), so
the reference answer is known for every line and the LM simulator can be audited
against it. Tasks: Twenty Questions and Guess My City (whose environments decide a
win from their tables, never from the simulator's text) and Car Dealer, whose LM buyer
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

Training (`train_simulator`) is BC on the simulator's lines of a dataset's episodes,
with the learners' BC loss; the simulator is a Hugging Face folder (safetensors), the
embedded tiny model by default. `weights_hash` names its weights; evaluation records
it with every result under an LM simulator. At play time an environment built with
`simulator="lm", simulator_model=FOLDER` answers through an `HFEngine` over that folder,
one per process and folder, or through simulator replicas (`serve_simulator`: an engine
pool over the folder, passed to the environment as `simulator_engine`). A rollout worker
answers all its environments' simulator turns of a step with one engine call
(`LMSimulator.request` and `provide`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from lmrl_ray import envs
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
FIXED_OPENING = ("twenty-questions", "guess-city")
MAX_REPLY_TOKENS = {"car-dealer": 64}
DEFAULT_REPLY_TOKENS = 32
_DECISION = re.compile(r"Output: Decision=(Accept|Reject) MSRP=\$(\d+)(?: Buy Price=\$(\d+))?")


def read_decision(line: str):
    """The buyer's decision in `line` as a `car_buyer.Outcome` (willingness unknown), or
    None when the line decides nothing."""
    from lmrl_ray.envs.car_buyer import Outcome

    match = _DECISION.search(line)
    if match is None:
        return None
    accepted = match.group(1) == "Accept"
    if accepted and match.group(3) is None:
        return None  # an acceptance without a price decides nothing
    return Outcome(accepted, int(match.group(2)), int(match.group(3)) if accepted else None, None)


def _check_task(task: str) -> None:
    if task not in SECRETS:
        raise ValueError(f"no LM simulator for task {task!r}; tasks with one: {', '.join(SECRETS)}")


def simulator_transcript(secret: str, transcript: Sequence[Turn]) -> list[Turn]:
    """The dialogue as the simulator sees it: the secret first, then every line, the
    environment's (its own) lines as AGENT turns and the agent's as ENV turns."""
    swapped = [Turn(ENV, SECRET_PREFIX + secret)]
    for turn in transcript:
        swapped.append(Turn(ENV if turn.role == AGENT else AGENT, turn.text))
    return swapped


def simulator_rows(task: str, rows: Sequence[dict]) -> list[dict]:
    """Training rows for the simulator of `task` from stored episodes of it: each episode
    replayed for its secret (its seed resets the environment to the same one), then
    written from the simulator's side. The first line (the environment's opening, the
    same in every episode) is context, not a target."""
    from lmrl_ray.data.schema import episode_row, transcript_of

    _check_task(task)
    env = envs.make(task)
    out = []
    try:
        for row in rows:
            if row["task"] != task:
                raise ValueError(f"episode {row['episode_id']!r} is of task {row['task']!r}, not {task!r}")
            env.reset(seed=row["seed"])
            transcript = transcript_of(row)
            if transcript[0].text != env.transcript[0].text:
                raise ValueError(f"episode {row['episode_id']!r} does not replay from its seed")
            swapped = simulator_transcript(SECRET_TEXT[task](SECRETS[task](env)), transcript)
            if task in FIXED_OPENING:
                swapped[1] = Turn(ENV, swapped[1].text)  # the opening line: context
            # Merge runs of ENV lines (the secret, a fixed opening, the first question) into one turn.
            merged: list[Turn] = []
            for turn in swapped:
                if merged and merged[-1].role == ENV == turn.role:
                    merged[-1] = Turn(ENV, merged[-1].text + "\n" + turn.text)
                else:
                    merged.append(turn)
            if merged[-1].role == AGENT:  # a transcript must end with the environment's turn
                merged.append(Turn(ENV, ""))
            replies = sum(1 for t in merged if t.role == AGENT)
            out.append(episode_row(task=task, episode_id=f"{row['episode_id']}-simulator", seed=row["seed"],
                                   transcript=merged, rewards=[0.0] * replies, success=False))
    finally:
        env.close()
    return out


def train_simulator(task: str, data: str | os.PathLike, out: str | os.PathLike, *, model: str = "tiny",
                    overrides: Sequence[str] = (), progress: bool = True) -> dict:
    """Train the LM simulator of `task` on the dataset `data` (a replay store of that
    task's episodes) and write it to `out` as a Hugging Face folder; returns {"folder",
    "updates", "loss", "hash"}."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from lmrl_ray.envs.base import whole_transcript
    from lmrl_ray.learners.config import load_config
    from lmrl_ray.learners.group import read_dataset
    from lmrl_ray.learners.learner import Learner
    from lmrl_ray.models.checkpoint import save_checkpoint

    _check_task(task)
    config = load_config("bc", task=task, model=model, overrides=["lr=1e-3", "updates=200", *overrides])
    table = read_dataset(data, config)
    rows = simulator_rows(task, table.to_pylist())
    learner = Learner(config, view=whole_transcript)
    rng = np.random.default_rng(config.seed)
    loss = float("nan")
    bar = tqdm(range(config.updates), desc=f"simulator {task}", unit="update", disable=not progress)
    for _ in bar:
        picks = rng.choice(len(rows), size=min(config.batch_episodes, len(rows)), replace=False)
        loss = learner.update([rows[i] for i in picks])["bc/loss"]
        bar.set_postfix(loss=f"{loss:.3f}")
    with torch.no_grad():
        folder = save_checkpoint(learner.model, learner.tokenizer, out)
    return {"folder": str(folder), "updates": config.updates, "loss": loss, "hash": weights_hash(folder)}


def weights_hash(folder: str | os.PathLike) -> str:
    """SHA-256 of a model folder's weights (its safetensors files, by name, in order): the
    name of a simulator that every result under it records."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .safetensors weights to hash")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=4)
def _engine(folder: str):
    from lmrl_ray.actors.hf_engine import HFEngine

    return HFEngine.load(folder)


def serve_simulator(env_settings: dict | None, replicas: int, *, engine: str = "hf", cpus_per_replica: float = 1.0,
                    gpus_per_replica: float = 0.0):
    """Simulator replicas for environments built with `env_settings`: with `replicas` >= 1
    and an LM simulator (`simulator="lm"`), an `EnginePool` of that many engine actors over
    `simulator_model` (its weights never change), added to the settings as
    `simulator_engine`. Returns (settings, pool or None); the caller shuts the pool down."""
    settings = dict(env_settings or {})
    if replicas < 0:
        raise ValueError(f"simulator_replicas must be >= 0, got {replicas}")
    if replicas == 0:
        return settings, None
    if settings.get("simulator") != "lm":
        raise ValueError(f"simulator_replicas serve an LM simulator: set simulator=lm and simulator_model, "
                         f"got simulator={settings.get('simulator')!r}")
    folder = settings.get("simulator_model")
    if not folder or not Path(folder).is_dir():
        raise FileNotFoundError(f"simulator_model {folder!r} is not a folder (the simulator's weights)")
    from lmrl_ray.actors.factory import make_engine
    from lmrl_ray.actors.pool import EnginePool, EnginePoolConfig
    from lmrl_ray.ray_utils import init_ray

    init_ray()
    factory = functools.partial(make_engine, engine, str(Path(folder).resolve()),
                                device=None if gpus_per_replica > 0 else "cpu")
    pool = EnginePool(factory, EnginePoolConfig(num_engines=replicas, num_cpus_per_engine=cpus_per_replica,
                                                num_gpus_per_engine=gpus_per_replica))
    return {**settings, "simulator_engine": pool}, pool


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
        _check_task(task)
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
        from lmrl_ray.actors.engine import SamplingParams

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
