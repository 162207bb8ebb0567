"""The embedded default model "tiny": a small GPT-2 trained from scratch later, built here.

Nothing is downloaded: the tokenizer is trained on text the tasks' scripted policies
produce, and the model is GPT-2's architecture, randomly initialised with a fixed seed.
The build is deterministic (the same recipe gives a byte-identical tokenizer.json and
identical weights) and cached: it runs once per cache directory, in a folder named by a
hash of the recipe, which later calls load.

The cache directory is `$LMRL_RAY_CACHE`, else `~/.cache/lmrl-ray`. A build writes to a
temporary sibling folder and renames it into place, under a file lock, so concurrent
builders (parallel tests, Ray workers on one machine) neither collide nor duplicate work,
and a crashed build leaves no half-written model behind.

The corpus depends on Stockfish for chess and endgames: another Stockfish build plays
other moves, so machines with different Stockfish versions can build different tiny
tokenizers under the same folder name. `build.json` records the corpus and tokenizer
checksums to tell them apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lmrl_ray import envs
from lmrl_ray.data.datagen import generate_episodes
from lmrl_ray.data.schema import transcript_of
from lmrl_ray.io import write_atomically
from lmrl_ray.models.tokenizer import train_tokenizer

logger = logging.getLogger(__name__)

TINY = "tiny"
"""The name that stands for the embedded default model wherever a model folder is taken."""
CACHE_ENV = "LMRL_RAY_CACHE"
BUILD_FILE = "build.json"
# Bump when the build code changes what it produces (corpus rendering, tokenizer
# training, initialisation) or the tasks change their texts (the corpus): the recipe
# alone would not notice.
BUILD_VERSION = 2

# Chess and endgames wait on Stockfish (about 2 episodes/s), and one episode already
# holds dozens of positions; the other tasks play hundreds of episodes a second.
_SLOW_TASK_EPISODES = {"chess": 2, "endgames": 4}


def _default_episodes() -> dict[str, int]:
    return {task: _SLOW_TASK_EPISODES.get(task, 200) for task in envs.names()}


@dataclass(frozen=True)
class TinyRecipe:
    """Everything that determines the tiny model; its hash names the cache folder."""

    episodes_per_policy: dict[str, int] = field(default_factory=_default_episodes)
    """Task -> episodes played by each of its scripted policies (expert, behaviour,
    random) for the tokenizer's corpus."""
    corpus_seed: int = 0
    """Seed of the corpus episodes (datagen's seed, train split)."""
    vocab_size: int = 4096
    """Tokens in all: 4093 learned BPE tokens, the 256 bytes among them, pad, eos and
    the newline. Small, so the embedding (4096 x 256) stays a quarter of the model."""
    n_positions: int = 1024
    """Context length, GPT-2's: the longest policy prompt plus action we measured is
    about 1,000 tokens (text-nav-po, whole transcript); the others stay under 700."""
    n_embd: int = 256
    n_layer: int = 4
    n_head: int = 4
    init_seed: int = 0
    """torch seed of the random initialisation."""

    def key(self) -> str:
        """A hash of the recipe and the build code's version."""
        blob = json.dumps({"build_version": BUILD_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """Where built models live: `$LMRL_RAY_CACHE`, else `~/.cache/lmrl-ray`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lmrl-ray").expanduser()


def corpus_lines(recipe: TinyRecipe) -> list[str]:
    """The tokenizer's corpus: every turn of the recipe's scripted episodes, one line
    each, as `render_prompt` writes them into the policy's prompts (without the newline,
    which is a token of its own). Each task's view shows a subset of these lines."""
    lines = []
    # Sorted like the recipe's hash, so the recipe's key fixes the corpus's order too.
    for task, episodes in sorted(recipe.episodes_per_policy.items()):
        for policy in envs.POLICY_KINDS:
            table = generate_episodes(task, policy, "train", recipe.corpus_seed, 0, episodes)
            for row in table.to_pylist():
                lines.extend(envs.render_prompt(transcript_of(row)).split("\n")[:-1])
    return lines


def gpt2_config(recipe: TinyRecipe, tokenizer) -> GPT2Config:
    """GPT-2's architecture at the recipe's size, with the tokenizer's special ids."""
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=recipe.n_positions,
        n_embd=recipe.n_embd,
        n_layer=recipe.n_layer,
        n_head=recipe.n_head,
        # No dropout: RL compares log-probs of the same tokens under the acting and the
        # learning model (PPO's ratio, ILQL's targets); dropout would make them disagree.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _build(recipe: TinyRecipe, folder: Path) -> None:
    started = time.perf_counter()
    lines = corpus_lines(recipe)
    corpus_seconds = time.perf_counter() - started
    tokenizer = train_tokenizer(lines, vocab_size=recipe.vocab_size, model_max_length=recipe.n_positions)
    config = gpt2_config(recipe, tokenizer)
    # A private RNG stream: the build neither depends on nor disturbs the caller's seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.init_seed)
        model = GPT2LMHeadModel(config)
    corpus_sha = hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {
            "recipe": asdict(recipe),
            "build_version": BUILD_VERSION,
            "corpus_lines": len(lines),
            "corpus_chars": sum(map(len, lines)),
            "corpus_sha256": corpus_sha,
            "tokenizer_sha256": hashlib.sha256((tmp / "tokenizer.json").read_bytes()).hexdigest(),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        (tmp / BUILD_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")

    write_atomically(folder, write, folder=True)
    logger.info(
        "built the tiny model in %s: corpus of %d lines (%.1f s), %.1f s in all",
        folder, len(lines), corpus_seconds, time.perf_counter() - started,
    )


@contextlib.contextmanager
def _locked(lock_path: Path):
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_tiny(cache: str | os.PathLike | None = None, recipe: TinyRecipe | None = None) -> Path:
    """The folder of the tiny model (a Hugging Face folder), built on first use.

    `cache` defaults to `cache_dir()`; `recipe` to the embedded default.
    """
    recipe = recipe or TinyRecipe()
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    folder = root / f"{TINY}-{recipe.key()}"
    if (folder / BUILD_FILE).is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{folder.name}.lock"):
        # Another builder may have finished while we waited for the lock.
        if not (folder / BUILD_FILE).is_file():
            logger.info("building the tiny model into %s (once per cache directory)", folder)
            _build(recipe, folder)
    return folder
