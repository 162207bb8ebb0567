"""The training configuration: one frozen dataclass, a YAML file, `key=value` overrides.

    config = load_config("ilql", task="maze", file="my.yaml", overrides=["lr=1e-4", "updates=500"])

Keys are flat (no nesting): the common ones and each algorithm's own are in one
namespace, each documented below. Values in `key=value` are parsed as YAML scalars
(`1e-4`, `true`, `null`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

OFFLINE_ALGOS = ("bc", "filtered-bc", "mc", "ilql")


@dataclass(frozen=True)
class TrainConfig:
    """How to train; defaults are the offline algorithms' on the embedded tiny model."""

    algo: str
    """bc, filtered-bc, mc or ilql."""
    task: str = ""
    """The task; taken from the dataset when empty."""
    model: str = "tiny"
    """Where training starts: "tiny" (the embedded default) or a local Hugging Face folder,
    such as a BC checkpoint (the paper starts every RL method from BC)."""
    updates: int = 1000
    """Optimizer updates in the whole run."""
    batch_episodes: int = 16
    """Episodes per update, across all learners (each gets an equal share)."""
    microbatch_tokens: int = 16384
    """Padded tokens per forward/backward pass; gradients accumulate over micro-batches
    (whole episodes), which does not change the update."""
    lr: float = 3e-4
    """AdamW's learning rate after warm-up (the paper used 1e-4 on GPT-2 small; a model
    trained from scratch takes a larger one)."""
    warmup_updates: int = 20
    """Linear warm-up of the learning rate from 0; constant afterwards."""
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    grad_clip_norm: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    mixed_precision: bool = True
    """bfloat16 autocast on CUDA; ignored on CPU (full precision)."""
    seed: int = 0
    """Seeds the heads' initialisation and the order of the data."""
    checkpoint_every_updates: int = 200
    """Write a checkpoint every this many updates (and at the end)."""
    keep_checkpoints: int = 2
    """Keep the newest this many checkpoints."""
    log_every_updates: int = 10
    """TensorBoard and progress-bar metrics every this many updates."""

    gamma: float = 0.99
    """Discount per agent token (ILQL's bootstrap, MC's return-to-go)."""
    expectile: float = 0.7
    """ILQL's expectile tau for V (Snell et al.'s 0.7)."""
    cql_weight: float = 0.01
    """Weight of the conservative cross-entropy term on Q (ILQL, MC)."""
    polyak: float = 0.005
    """ILQL's target-head step per update: target <- polyak * online + (1 - polyak) * target."""
    bc_weight: float = 1.0
    """ILQL and MC: weight of the BC loss that keeps the language model the behaviour policy."""
    beta: float = 4.0
    """Value-guidance strength for ILQL and MC decoding: logits + beta * (Q - V)."""
    head_width: int = 0
    """Inner width of the heads' MLPs; 0 = the model's hidden size."""
    top_fraction: float = 0.1
    """Filtered BC: the fraction of episodes with the highest returns it trains on."""

    num_learners: int = 0
    """Learner actors (data-parallel, gloo on CPU, NCCL on GPU); 0 = in-process."""
    cpus_per_learner: float = 1.0
    gpus_per_learner: float = 0.0

    eval_episodes: int = 0
    """Episodes to evaluate the final checkpoint on (0 skips)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes kept with the run (not read by the code)."""

    def __post_init__(self):
        if self.algo not in OFFLINE_ALGOS:
            raise ValueError(f"unknown algorithm {self.algo!r}; valid: {', '.join(OFFLINE_ALGOS)}")
        positive = ("updates", "batch_episodes", "microbatch_tokens", "checkpoint_every_updates", "keep_checkpoints",
                    "log_every_updates")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_updates", "weight_decay", "grad_clip_norm", "num_learners", "eval_episodes", "head_width",
                     "cql_weight", "bc_weight", "beta"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("gamma", "polyak"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.expectile < 1.0:
            raise ValueError(f"expectile must be in (0, 1), got {self.expectile}")
        if not 0.0 < self.top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        if self.num_learners > 1 and self.batch_episodes % self.num_learners:
            raise ValueError(
                f"batch_episodes ({self.batch_episodes}) must be a multiple of num_learners ({self.num_learners})"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """`["lr=1e-4", "eval_episodes=50"]` -> {"lr": 0.0001, "eval_episodes": 50}."""
    valid = field_names()
    values: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not key=value")
        if key not in valid:
            raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(valid)}")
        values[key] = yaml.safe_load(raw)
    return values


def load_config(algo: str, *, file: str | Path | None = None, overrides: Sequence[str] = (), **fixed: Any) -> TrainConfig:
    """The config for `algo`: defaults, then `file` (YAML mapping), then `overrides`
    (key=value), then `fixed` (what the command line's own flags set)."""
    values: dict[str, Any] = {}
    if file is not None:
        path = Path(file)
        try:
            loaded = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"config file {str(path)!r} does not exist") from None
        except yaml.YAMLError as err:
            raise ValueError(f"config file {str(path)!r} is not valid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {str(path)!r} must hold a mapping of keys to values")
        unknown = sorted(set(loaded) - set(field_names()))
        if unknown:
            raise ValueError(f"config file {str(path)!r}: unknown key(s) {', '.join(unknown)}")
        values.update(loaded)
    values.update(parse_overrides(overrides))
    values.update({k: v for k, v in fixed.items() if v is not None})
    values["algo"] = algo
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for key, value in values.items():
        expected = types[key]
        if expected in ("int", "float") and isinstance(value, str):
            try:  # YAML 1.1 reads "1e-3" (no dot) as text
                value = values[key] = int(value) if expected == "int" else float(value)
            except ValueError:
                pass
        if expected in ("int", "float") and isinstance(value, bool):
            raise ValueError(f"config key {key!r} takes a number, got {value!r}")
        if expected == "int" and not isinstance(value, int):
            raise ValueError(f"config key {key!r} takes an integer, got {value!r}")
        if expected == "float":
            if not isinstance(value, (int, float)):
                raise ValueError(f"config key {key!r} takes a number, got {value!r}")
            values[key] = float(value)
        if expected == "str" and not isinstance(value, str):
            raise ValueError(f"config key {key!r} takes text, got {value!r}")
        if expected == "bool" and not isinstance(value, bool):
            raise ValueError(f"config key {key!r} takes true or false, got {value!r}")
    return TrainConfig(**values)
