"""Distilling an LM simulator from the grounded simulator's dialogues.

    rows = simulator_rows("twenty-questions", dataset_rows)      # the simulator's side of each
    result = train_simulator("twenty-questions", "data/tq", "sims/tq")

Training is BC on the simulator's lines of a dataset's episodes (the learners' BC loss);
the simulator is a Hugging Face folder (safetensors), the embedded tiny model by
default. `weights_hash` names its weights: evaluation records it with every result
under an LM simulator.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from lmrl_ray import envs
from lmrl_ray.data.schema import episode_row, transcript_of
from lmrl_ray.envs.base import AGENT, ENV, Turn, whole_transcript
from lmrl_ray.learners.config import load_config
from lmrl_ray.learners.group import read_dataset
from lmrl_ray.learners.learner import Learner
from lmrl_ray.models.checkpoint import save_checkpoint
from lmrl_ray.simulators.lm import (
    FIXED_OPENING,
    SECRET_TEXT,
    SECRETS,
    check_task,
    simulator_transcript,
)


def simulator_rows(task: str, rows: Sequence[dict]) -> list[dict]:
    """Training rows for the simulator of `task` from stored episodes of it: each episode
    replayed for its secret (its seed resets the environment to the same one), then
    written from the simulator's side. The first line (the environment's opening, the
    same in every episode) is context, not a target."""
    check_task(task)
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
    check_task(task)
    config = load_config("bc", task=task, model=model, overrides=["lr=1e-3", "updates=200", *overrides])
    table = read_dataset(data, config)
    rows = simulator_rows(task, table.to_pylist())
    learner = Learner(config, view=whole_transcript)
    rng = np.random.default_rng(config.common.seed)
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
