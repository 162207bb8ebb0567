"""Evaluating a checkpoint against a task: `lmrl-ray eval CKPT`.

    result = evaluate_checkpoint("runs/ilql-maze", episodes=800)
    result["mean_return"], result["ci95"], result["normalised_paper"], result["normalised_ours"]

The checkpoint's own description (`lmrl_ray.json`, `learners/checkpoint.py`) says how its
policy acts: plain sampling from the language model, or value-guided sampling with its
ILQL heads (`checkpoint_engine`). Episodes follow the paper's evaluation protocol where it
has one (`evaluation_options`), are played by rollout workers (`actors/rollout_worker.py`)
and summarised with a 95% confidence interval (Student's t) and the normalised score,
with the paper's constants and with ours (`envs.TaskSpec.our_avg` / `our_max`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from lmrl_ray import envs
from lmrl_ray.actors.rollout_group import run_episodes
from lmrl_ray.actors.rollout_worker import DECODINGS
from lmrl_ray.actors.simulator_replicas import serve_simulator
from lmrl_ray.engines.base import Engine, SamplingParams
from lmrl_ray.engines.factory import (
    ENGINE_KINDS,
    make_engine,
    select_engine_kind,
    vllm_installed,
)
from lmrl_ray.envs.protocol import (
    MOVE_ACCURACY_TASKS,
    default_evaluation_episodes,
    episode_metrics,
    evaluation_options,
    move_probes,
    scores,
)
from lmrl_ray.learners.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    read_meta,
    resolve_checkpoint,
)
from lmrl_ray.simulators.distill import weights_hash
from lmrl_ray.simulators.lm import simulator_settings
from lmrl_ray.stats import summarize

log = logging.getLogger(__name__)

VALUE_GUIDED = "value-guided"
# The back end that ran an in-process evaluation, as `--engine` names it.
ENGINE_NAMES = {"HFEngine": "hf", "VLLMEngine": "vllm"}


def checkpoint_engine(
    path: str | os.PathLike,
    *,
    engine: str = "auto",
    device: str | None = None,
    beta: float | None = None,
) -> Engine:
    """The engine that acts as the checkpoint at `path` (a checkpoint or a run folder: its latest).

    A "value-guided" checkpoint (ILQL, MC Returns) decodes from logits + beta * (Q - V)
    with its heads, which only the Hugging Face engine does: `engine="vllm"` is then an
    error and "auto" means "hf". A plain checkpoint goes to `factory.make_engine`: "auto"
    takes vLLM where it is installed and a CUDA GPU is visible. `device`: None is CUDA when
    visible, else CPU. `beta` overrides the checkpoint's guidance strength.
    """
    folder = resolve_checkpoint(path)
    meta = read_meta(folder)
    if engine not in ENGINE_KINDS:
        raise ValueError(f"unknown engine kind {engine!r}; expected one of {', '.join(ENGINE_KINDS)}")
    if meta.decoding != VALUE_GUIDED:
        if beta is not None:
            raise CheckpointError(
                f"checkpoint {str(folder)!r} ({meta.algo}) samples from its language model and has no value heads; "
                "--beta applies only to value-guided checkpoints"
            )
        try:  # "vllm" where it cannot run is a usage error, reported as one
            select_engine_kind(engine, vllm_available=vllm_installed(), cuda_available=torch.cuda.is_available())
        except RuntimeError as err:
            raise ValueError(str(err)) from None
        return make_engine(engine, folder, device=device)
    if engine == "vllm":
        raise CheckpointError(
            f"checkpoint {str(folder)!r} ({meta.algo}) decodes with value guidance from its ILQL heads, "
            "which only the Hugging Face engine does; use --engine hf or auto"
        )
    from lmrl_ray.engines.hf_engine import HFEngine
    from lmrl_ray.models import ValueGuidance, load_policy

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_policy(folder, device=device)
    heads = _load_ilql_heads(folder, meta, model)
    # Checkpoints written before `support_min_p` existed guided over every token.
    guidance = ValueGuidance(heads, meta.beta if beta is None else beta,
                             support_min_p=float(meta.config.get("support_min_p", 0.0)))
    return HFEngine(model, tokenizer, device=device, guidance=guidance)


def _load_ilql_heads(folder: Path, meta: CheckpointMeta, model):
    """The checkpoint's `ILQLHeads`, sized from its description and the model."""
    from safetensors import SafetensorError

    from lmrl_ray.models import HEADS_FILE, ILQLHeads, load_heads

    spec = meta.heads or {}
    if spec.get("class") != "ILQLHeads":
        raise CheckpointError(
            f"checkpoint {str(folder)!r} is value-guided but describes heads {meta.heads!r}; it needs ILQLHeads"
        )
    heads = ILQLHeads(
        model.get_output_embeddings().in_features,  # the hidden size the heads read
        model.get_output_embeddings().out_features,  # one Q value per token of the vocabulary
        width=spec.get("width"),
    )
    try:
        return load_heads(folder / HEADS_FILE, heads)
    except (FileNotFoundError, ValueError, SafetensorError) as err:
        raise CheckpointError(f"checkpoint {str(folder)!r}: cannot load its value heads: {err}") from None


@contextmanager
def simulator_served(task: str, env_settings: dict | None, replicas: int, *, cpus_per_replica: float = 1.0):
    """The environment settings a run records with their LM simulator resolved into what
    environments take (`simulators.lm.simulator_settings`), served by `replicas` engine
    actors when replicas >= 1 (`actors.simulator_replicas`; stopped on exit)."""
    settings = dict(env_settings or {})
    if replicas and settings.get("simulator") != "lm":
        raise ValueError(f"simulator_replicas serve an LM simulator: set simulator=lm and simulator_model, "
                         f"got simulator={settings.get('simulator')!r}")
    pool = serve_simulator(settings.get("simulator_model"), replicas, cpus_per_replica=cpus_per_replica) if replicas else None
    try:
        yield simulator_settings(task, settings, engine=pool)
    finally:
        if pool is not None:
            pool.shutdown()


def move_accuracy(engine: Engine, task: str) -> float:
    """The share of the maze's open cells (the goal's aside) where the policy's likeliest
    move, re-ranked over the four (`Engine.choose`, value-guided where the engine is), is
    one that starts a shortest path to the goal (`envs.protocol.move_probes`)."""
    probes = move_probes(task)
    choices = engine.choose([prompt for prompt, _, _ in probes], [moves for _, moves, _ in probes])
    return sum(moves[k] in best for (_, moves, best), k in zip(probes, choices)) / len(probes)


def play_evaluation(task: str, engine, episodes: int, *, seed: int, sampling: SamplingParams, **worker_kwargs) -> list[dict]:
    """The rows of `episodes` evaluation episodes of `task` (`envs.protocol.evaluation_options`)
    played by `engine` (an engine, a pool, or a factory per worker) at `sampling`.
    `worker_kwargs` go to the rollout group (num_workers, decoding, num_envs, env_settings, ...)."""
    seeds, options = evaluation_options(task, episodes, seed)
    episode_ids = [f"{task}-eval-seed{seed}-{i:06d}" for i in range(episodes)]
    return run_episodes(task, engine, seeds, options, episode_ids, sampling=sampling, source="evaluation",
                        **worker_kwargs)


def evaluate_checkpoint(
    path: str | os.PathLike,
    *,
    task: str | None = None,
    episodes: int | None = None,
    seed: int = 0,
    engine: str = "auto",
    device: str | None = None,
    decoding: str = "sample",
    temperature: float = 1.0,
    top_p: float = 1.0,
    beta: float | None = None,
    max_new_tokens: int | None = None,
    num_workers: int = 0,
    envs_per_worker: int = 16,
    env_settings: dict | None = None,
    simulator_replicas: int = 0,
    return_rows: bool = False,
    out: str | os.PathLike | None = None,
) -> dict:
    """Play `episodes` evaluation episodes of the checkpoint at `path` and summarise them
    (default: `protocol.default_evaluation_episodes`, every object or city once for
    Twenty Questions and Guess My City, 100 elsewhere).

    `task` defaults to the checkpoint's; another task is allowed (a warning is logged).
    `decoding` is "sample" (at `temperature`, `top_p`; 0 = greedy) or "rerank" (the
    policy's likeliest legal action). With `num_workers` > 0 each rollout worker is a Ray
    actor that builds its own engine. `env_settings` go to the task's environment
    (`envs.make`), e.g. Wordle's `invalid_penalty`, or an LM simulator
    (`{"simulator": "lm", "simulator_model": FOLDER}`), which `simulator_replicas` >= 1
    serves from that many engine actors (`simulator_served`). `out` writes the
    rows to a replay store there; `return_rows` adds them to the result under "rows".

    Returns a dict: task, checkpoint_task, algo, checkpoint, step, episodes, mean_return, ci95 (half-width),
    std_return, success_rate, mean_turns, normalised_paper, normalised_ours, decoding,
    value_guided, beta, temperature, seed, engine (the back end that ran: "hf" or "vllm";
    with workers, the kind asked for), seconds, simulator (the env setting or None),
    simulator_replicas (and simulator_hash under an LM simulator; rows, out); and the
    task's own metrics: move_accuracy (maze, maze-po), win_rate, draw_rate, loss_rate,
    illegal_move_rate and mean_game_turns (chess, endgames).
    """
    started = time.perf_counter()
    folder = resolve_checkpoint(path)
    meta = read_meta(folder)
    task = task or meta.task
    envs.spec(task)  # an unknown task fails now, naming the valid ones
    if episodes is None:
        episodes = default_evaluation_episodes(task)
    if task != meta.task:
        log.warning("checkpoint %s was trained on %r; evaluating it on %r", folder, meta.task, task)
    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
    factory = functools.partial(checkpoint_engine, folder, engine=engine, device=device, beta=beta)
    # In-process: build the engine here (errors surface now); workers each build their own.
    engine_or_factory = factory() if num_workers == 0 else factory
    with simulator_served(task, env_settings, simulator_replicas) as played_settings:
        rows = play_evaluation(
            task, engine_or_factory, episodes, seed=seed, num_workers=num_workers, decoding=decoding,
            sampling=SamplingParams(temperature=temperature, top_p=top_p, seed=seed), num_envs=envs_per_worker,
            max_new_tokens=max_new_tokens, policy=str(folder), env_settings=played_settings,
        )

    summary = summarize([r["return"] for r in rows], [r["success"] for r in rows], [r["length"] for r in rows])
    value_guided = meta.decoding == VALUE_GUIDED
    result = {
        "task": task,
        "checkpoint_task": meta.task,
        "algo": meta.algo,
        "checkpoint": str(folder),
        "step": meta.step,
        **scores(task, summary),
        **episode_metrics(task, rows),
        "decoding": decoding,
        "value_guided": value_guided,
        "beta": (meta.beta if beta is None else beta) if value_guided else None,
        "temperature": temperature if decoding == "sample" else None,
        "seed": seed,
        "engine": ENGINE_NAMES.get(type(engine_or_factory).__name__, engine) if num_workers == 0 else engine,
        "seconds": time.perf_counter() - started,
        "simulator": (env_settings or {}).get("simulator"),
        "simulator_replicas": simulator_replicas,
    }
    if result["simulator"] == "lm":
        result["simulator_hash"] = weights_hash(env_settings["simulator_model"])
    if task in MOVE_ACCURACY_TASKS:
        result["move_accuracy"] = move_accuracy(engine_or_factory if num_workers == 0 else factory(), task)
    if out is not None:
        from lmrl_ray.data.schema import to_table
        from lmrl_ray.data.store import ReplayStore

        # The store skips a (producer, sequence) it already holds: the key names every
        # setting that changes the rows, so another evaluation never goes missing.
        settings = [
            str(folder), task, episodes, seed, decoding, temperature, top_p, result["beta"], max_new_tokens, env_settings
        ]
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
        producer = f"eval-{task}-{meta.algo}-step{meta.step}-{digest}"
        ReplayStore.create(out).append(to_table(rows), producer=producer, sequence=0)
        result["out"] = str(out)
    if return_rows:
        result["rows"] = rows
    return result


__all__ = ["checkpoint_engine", "evaluate_checkpoint"]
