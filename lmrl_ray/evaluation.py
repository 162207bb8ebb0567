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
from pathlib import Path

import torch

from lmrl_ray import envs
from lmrl_ray.actors.engine import Engine, SamplingParams
from lmrl_ray.actors.factory import ENGINE_KINDS, make_engine, select_engine_kind, vllm_installed
from lmrl_ray.actors.rollout_worker import DECODINGS, run_episodes
from lmrl_ray.data.datagen import episode_options, episode_seed
from lmrl_ray.learners.checkpoint import CheckpointError, CheckpointMeta, read_meta, resolve_checkpoint
from lmrl_ray.rollout import scores, summarize

log = logging.getLogger(__name__)

VALUE_GUIDED = "value-guided"
# The paper's evaluation sizes where published (TASKS.md): 32 episodes from each of the
# 25 maze starts, 4,096 Wordle games, 1,000 chess games, the 645 endgame positions.
PAPER_EVAL_EPISODES = {"maze": 800, "maze-po": 800, "wordle": 4096, "chess": 1000, "endgames": 645}
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
    from lmrl_ray.actors.hf_engine import HFEngine, ValueGuidance
    from lmrl_ray.models import load_policy

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


def evaluation_options(task: str, n: int, seed: int = 0) -> tuple[list[int], list[dict | None]]:
    """Seeds and options of `n` evaluation episodes of `task`.

    Maze (both): the 25 starts in turn, so 800 episodes are the paper's 32 from each
    start. Endgames: the 645 fixed evaluation positions in order (cycled beyond 645), as
    datagen's eval split plays them. Others: episodes drawn from the seed. Seeds come from
    datagen's "eval" stream, which the training data never draws.
    """
    envs.spec(task)
    if n < 1:
        raise ValueError(f"need at least one episode, got {n}")
    seeds = [episode_seed(seed, "eval", i) for i in range(n)]
    if task in ("maze", "maze-po"):
        from lmrl_ray.envs.maze import STARTS

        return seeds, [{"start": STARTS[i % len(STARTS)]} for i in range(n)]
    return seeds, [episode_options(task, "eval", i) for i in range(n)]


def evaluate_checkpoint(
    path: str | os.PathLike,
    *,
    task: str | None = None,
    episodes: int = 100,
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
    """Play `episodes` evaluation episodes of the checkpoint at `path` and summarise them.

    `task` defaults to the checkpoint's; another task is allowed (a warning is logged).
    `decoding` is "sample" (at `temperature`, `top_p`; 0 = greedy) or "rerank" (the
    policy's likeliest legal action). With `num_workers` > 0 each rollout worker is a Ray
    actor that builds its own engine. `env_settings` go to the task's environment
    (`envs.make`), e.g. Wordle's `invalid_penalty`, or an LM simulator
    (`{"simulator": "lm", "simulator_model": FOLDER}`), which `simulator_replicas` >= 1
    serves from that many engine actors (`simulators.serve_simulator`). `out` writes the
    rows to a replay store there; `return_rows` adds them to the result under "rows".

    Returns a dict: task, checkpoint_task, algo, checkpoint, step, episodes, mean_return, ci95 (half-width),
    std_return, success_rate, mean_turns, normalised_paper, normalised_ours, decoding,
    value_guided, beta, temperature, seed, engine (the back end that ran: "hf" or "vllm";
    with workers, the kind asked for), seconds, simulator (the env setting or None),
    simulator_replicas (and simulator_hash under an LM simulator; rows, out).
    """
    started = time.perf_counter()
    folder = resolve_checkpoint(path)
    meta = read_meta(folder)
    task = task or meta.task
    envs.spec(task)  # an unknown task fails now, naming the valid ones
    if task != meta.task:
        log.warning("checkpoint %s was trained on %r; evaluating it on %r", folder, meta.task, task)
    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
    seeds, options = evaluation_options(task, episodes, seed)
    episode_ids = [f"{task}-eval-seed{seed}-{i:06d}" for i in range(episodes)]

    factory = functools.partial(checkpoint_engine, folder, engine=engine, device=device, beta=beta)
    # In-process: build the engine here (errors surface now); workers each build their own.
    engine_or_factory = factory() if num_workers == 0 else factory
    if simulator_replicas:
        from lmrl_ray.simulators import serve_simulator

        played_settings, simulators = serve_simulator(env_settings, simulator_replicas)
    else:
        played_settings, simulators = env_settings, None
    try:
        rows = run_episodes(
            task,
            engine_or_factory,
            seeds,
            options,
            episode_ids,
            num_workers=num_workers,
            decoding=decoding,
            sampling=SamplingParams(temperature=temperature, top_p=top_p, seed=seed),
            num_envs=envs_per_worker,
            max_new_tokens=max_new_tokens,
            source="evaluation",
            policy=str(folder),
            env_settings=played_settings,
        )
    finally:
        if simulators is not None:
            simulators.shutdown()

    summary = summarize([r["return"] for r in rows], [r["success"] for r in rows], [r["length"] for r in rows])
    value_guided = meta.decoding == VALUE_GUIDED
    result = {
        "task": task,
        "checkpoint_task": meta.task,
        "algo": meta.algo,
        "checkpoint": str(folder),
        "step": meta.step,
        **scores(task, summary),
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
        from lmrl_ray.simulators import weights_hash

        result["simulator_hash"] = weights_hash(env_settings["simulator_model"])
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


__all__ = ["PAPER_EVAL_EPISODES", "checkpoint_engine", "evaluate_checkpoint", "evaluation_options"]
