"""The rollout worker: many environments of one task, every pending agent turn batched
into one engine call per step, finished episodes out as rows of the trajectory schema.

    worker = RolloutWorker("maze", engine, sampling=SamplingParams(temperature=0), num_envs=32)
    rows = worker.run(seeds, options)                      # one row per episode, in order

Ray is a thin shell (STYLE 4): `RolloutWorker` is a plain class that runs in-process;
`rollout_group.RolloutGroup` wraps it in `ray.remote` (or runs one here, with no workers).

One step of the worker: every live environment whose episode is not over needs an agent
turn; their prompts (`env.prompt()`, the task's view) go to the engine in ONE call, and
each environment steps with its completion. A finished episode becomes a row and its
environment starts the next queued episode, so at most `num_envs` are live at once.

A dialogue environment with an LM simulator (`simulator="lm"`) answers each agent turn
with its own model call. The worker makes that a second batched phase: before the
environments step, it asks each LM simulator for the prompt of its reply to the new
action (`LMSimulator.request`), answers them all in ONE call to the simulator's engine
(the simulator replicas' pool, or the process's engine over the simulator's folder), and
hands each simulator its answer (`provide`), which its `reply` then uses. A step thus
makes one policy call and one simulator call, however many environments are live, and
the episodes are the same as unbatched (greedy replies; the prompt is checked). The car
buyer's opening line, at reset, is still one call per episode.

Decoding:

- "sample": `engine.generate` with the worker's `SamplingParams` (temperature 0 is
  greedy). An agent turn stores exactly the engine's token ids (the newline included)
  and their log-probs (see `engines/base.py`).
- "rerank": `engine.choose` over each environment's `legal_actions()`: the policy
  re-ranks the task's finite action set by its log-likelihood and plays the best; it
  never produces an invalid action. Only for tasks with a finite action set (maze,
  text-nav, wordle, chess, endgames). The engine produced no tokens, so these turns store
  no token ids or log-probs (null).

Reproducibility. An episode is fixed by its seed and options, given per episode, so it
does not depend on which worker plays it. Greedy sampling (temperature 0) and "rerank"
are functions of the prompts alone: an episode's row is the same however episodes are
batched, split among workers, or ordered (up to the engine's own batch invariance: the
HF engine's greedy output equals one-by-one decoding, tested). A seeded sampling call
(`SamplingParams.seed`) draws for the whole batch from one generator, so sampled turns
depend on the batch they were in; each step's seed is derived from the seed given and the
(episode seed, turn) pairs it serves, so a sampled run is reproducible for the same
episodes, `num_envs` and `num_workers`, but not across different batchings. (Exact
batch independence needs one seed per prompt in the engine interface, as vLLM has.)
`SamplingParams.seed=None` draws fresh randomness every step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Literal, Sequence

import numpy as np

from lmrl_ray import envs
from lmrl_ray.data.schema import SOURCES, episode_row
from lmrl_ray.engines.base import Engine, SamplingParams
from lmrl_ray.envs.base import AGENT, TextEnv, Turn

Decoding = Literal["sample", "rerank"]
DECODINGS = ("sample", "rerank")

DEFAULT_MAX_NEW_TOKENS = 64
# Room for one utterance, a few times the longest our scripted policies say in the tiny
# tokenizer's tokens (maze 3, text-nav 6, wordle 6, chess about 10, twenty-questions 13,
# guess-city 20, car-dealer 50), so an untrained policy that never emits the newline
# costs little per turn.
MAX_NEW_TOKENS = {
    "maze": 32,
    "maze-po": 32,
    "text-nav": 32,
    "text-nav-po": 32,
    "wordle": 32,
    "chess": 32,
    "endgames": 32,
    "twenty-questions": 64,
    "guess-city": 64,
    "car-dealer": 128,
}


def default_max_new_tokens(task: str) -> int:
    """Tokens an agent turn may take in `task` (`MAX_NEW_TOKENS`, else 64)."""
    return MAX_NEW_TOKENS.get(task, DEFAULT_MAX_NEW_TOKENS)


def step_seed(seed: int, keys: Sequence[tuple[int, int]]) -> int:
    """The sampling seed of one engine call: a function of the run's seed and the
    (episode seed, turn) pairs the call serves, in order."""
    entropy = [seed, *(x for key in keys for x in key)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


@dataclass
class _Live:
    """An episode being played: its environment and what the row needs."""

    index: int
    seed: int
    env: TextEnv
    token_ids: list = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    version: int | None = None
    """The oldest policy version that acted in this episode."""
    success: bool = False


class RolloutWorker:
    """Plays episodes of one task against an engine, `num_envs` at a time.

    `engine` is an `Engine` (an `HFEngine`, a `VLLMEngine`, an `EnginePool`) or a
    callable that builds one (a picklable factory: how a worker in another process gets
    its own engine). The worker holds no optimizer and no loss (STYLE 3).
    """

    def __init__(
        self,
        task: str,
        engine: Engine | Callable[[], Engine],
        *,
        decoding: Decoding = "sample",
        sampling: SamplingParams | None = None,
        num_envs: int = 16,
        max_new_tokens: int | None = None,
        source: str = "evaluation",
        split: str | None = None,
        policy: str = "",
        env_settings: dict | None = None,
        batch_simulator: bool = True,
    ):
        """
        decoding: "sample" (`engine.generate`) or "rerank" (`engine.choose` over the legal actions).
        sampling: for "sample"; its `max_new_tokens` is replaced by `max_new_tokens`, and
            its seed, when set, seeds each step (see the module docstring). Default:
            temperature 1, unseeded.
        num_envs: episodes live at once; each step makes one engine call for all of them.
        max_new_tokens: tokens per agent turn; default `default_max_new_tokens(task)`.
        source, split, policy: the rows' provenance columns; split defaults to "eval"
            for source "evaluation", else "train".
        env_settings: passed to `envs.make(task, ...)`.
        batch_simulator: answer the LM simulators' turns of a step in one call (see the
            module docstring); False lets each simulator call its engine itself (the
            same episodes, slower; for comparison).
        """
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        self.env_settings = dict(env_settings or {})
        # Environments are reused from episode to episode and run to run (a chess
        # environment holds a Stockfish process); `close` ends them.
        self._envs = [envs.make(task, **self.env_settings)]
        # A task with a finite action set lists it (overrides `legal_actions`).
        if decoding == "rerank" and type(self._envs[0]).legal_actions is TextEnv.legal_actions:
            self.close()
            raise ValueError(
                f"decoding 'rerank' chooses among legal actions, and task {task!r} has no finite action set; "
                "use decoding 'sample'"
            )
        self.task = task
        self.engine = engine if isinstance(engine, Engine) else engine()
        self.decoding = decoding
        sampling = sampling or SamplingParams(temperature=1.0)
        self.sampling = replace(sampling, max_new_tokens=max_new_tokens or default_max_new_tokens(task))
        self.num_envs = num_envs
        self.batch_simulator = batch_simulator
        self.source = source
        self.split = split or ("eval" if source == "evaluation" else "train")
        self.policy = policy
        self.engine_calls = 0
        """Engine calls made so far: one per step."""
        self.simulator_calls = 0
        """Batched LM-simulator calls made so far: at most one per step."""
        self.seconds = 0.0
        """Time spent in `run` so far."""

    def run(
        self,
        seeds: Sequence[int],
        options: Sequence[dict | None] | None = None,
        episode_ids: Sequence[str] | None = None,
        *,
        engine_latest: tuple | None = None,
    ) -> list[dict]:
        """Play one episode per seed (with its options, when given) and return their rows
        in the order given. `episode_ids` default to `"{task}-{seed}"`. `engine_latest`
        is the driver's `EnginePool.latest()`, for a worker whose engine is a copy of
        that pool (see `EnginePool.follow`)."""
        if engine_latest is not None:
            self.engine.follow(engine_latest)
        options = list(options) if options is not None else [None] * len(seeds)
        episode_ids = list(episode_ids) if episode_ids is not None else [f"{self.task}-{s}" for s in seeds]
        if not len(seeds) == len(options) == len(episode_ids):
            raise ValueError(f"{len(seeds)} seeds, {len(options)} options and {len(episode_ids)} episode ids")
        started = time.perf_counter()
        rows: list[dict | None] = [None] * len(seeds)
        queue = list(range(len(seeds)))[::-1]  # popped from the end: episode 0 first
        while len(self._envs) < min(self.num_envs, len(seeds)):
            self._envs.append(envs.make(self.task, **self.env_settings))
        idle = list(self._envs[: self.num_envs])
        live: list[_Live] = []
        try:
            while queue or live:
                while queue and idle:
                    i = queue.pop()
                    env = idle.pop()
                    env.reset(seed=int(seeds[i]), options=options[i])
                    live.append(_Live(i, int(seeds[i]), env))
                self._step(live)
                for episode in [e for e in live if e.env.done]:
                    live.remove(episode)
                    rows[episode.index] = self._row(episode, episode_ids[episode.index])
                    idle.append(episode.env)
        finally:
            self.seconds += time.perf_counter() - started
        return rows

    def close(self) -> None:
        """Close the environments (a chess environment's Stockfish process ends)."""
        for env in self._envs:
            env.close()
        self._envs = []

    def _step(self, live: list[_Live]) -> None:
        """One agent turn in every live episode, from one engine call."""
        prompts = [e.env.prompt() for e in live]
        version = self.engine.version  # an engine pool reports the version that served the call
        self.engine_calls += 1
        if self.decoding == "rerank":
            candidates = [self._legal(e.env) for e in live]
            choices = self.engine.choose(prompts, candidates)
            actions = [c[k] for c, k in zip(candidates, choices)]
            token_ids, logprobs = [None] * len(live), [None] * len(live)
        else:
            sampling = self.sampling
            if sampling.seed is not None:
                sampling = replace(sampling, seed=step_seed(sampling.seed, [(e.seed, e.env.agent_turns) for e in live]))
            if hasattr(self.engine, "generate_async"):  # an EnginePool
                call = self.engine.generate_async(prompts, sampling)
                completions, version = call.result(), call.version
            else:
                completions = self.engine.generate(prompts, sampling)
            actions = [c.text for c in completions]
            token_ids = [c.token_ids for c in completions]
            logprobs = [c.logprobs for c in completions]
        if self.batch_simulator:
            self._answer_ahead(live, actions)
        for episode, action, ids, lps in zip(live, actions, token_ids, logprobs):
            _, reward, _, _, info = episode.env.step(action)
            episode.rewards.append(reward)
            episode.token_ids.append(ids)
            episode.logprobs.append(lps)
            episode.version = version if episode.version is None else min(episode.version, version)
            if episode.env.done:
                episode.success = bool(info.get("success", False))

    def _answer_ahead(self, live: list[_Live], actions: list[str]) -> None:
        """The LM simulators' replies to `actions`, one engine call per simulator engine,
        handed to each simulator before its environment steps (see the module docstring)."""
        calls: dict[tuple, list] = {}
        for episode, action in zip(live, actions):
            simulator = getattr(episode.env, "simulator", None)
            if not hasattr(simulator, "request") or not isinstance(action, str):
                continue
            # What the environment's step will pass its simulator: the transcript and the stripped action.
            prompt = simulator.request([*episode.env.transcript, Turn(AGENT, action.strip())])
            engine, sampling = simulator.engine, simulator.sampling
            calls.setdefault((id(engine), sampling), [engine, []])[1].append((simulator, prompt))
        for (_, sampling), (engine, pending) in calls.items():
            self.simulator_calls += 1
            completions = engine.generate([prompt for _, prompt in pending], sampling)
            for (simulator, prompt), completion in zip(pending, completions):
                simulator.provide(prompt, completion.text)

    def _legal(self, env: TextEnv) -> list[str]:
        actions = env.legal_actions()
        if not actions:
            raise RuntimeError(f"{self.task}: decoding 'rerank' found no legal actions to choose from")
        return actions

    def _row(self, episode: _Live, episode_id: str) -> dict:
        return episode_row(
            task=self.task,
            episode_id=episode_id,
            seed=episode.seed,
            transcript=episode.env.transcript,
            rewards=episode.rewards,
            success=episode.success,
            source=self.source,
            split=self.split,
            policy=self.policy,
            policy_version=episode.version or 0,
            token_ids=episode.token_ids,
            logprobs=episode.logprobs,
        )


__all__ = ["DECODINGS", "MAX_NEW_TOKENS", "RolloutWorker", "default_max_new_tokens", "step_seed"]
