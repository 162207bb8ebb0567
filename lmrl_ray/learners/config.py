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
ONLINE_ALGOS = ("ppo", "online-filtered-bc")
ALGOS = OFFLINE_ALGOS + ONLINE_ALGOS


@dataclass(frozen=True)
class TrainConfig:
    """How to train; defaults are the offline algorithms' on the embedded tiny model."""

    algo: str
    """Offline: bc, filtered-bc, mc, ilql. Online: ppo, online-filtered-bc."""
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
    support_min_p: float = 0.1
    """ILQL and MC decoding: guide only among the tokens whose language-model probability
    is at least this fraction of the most likely token's (the behaviour policy's support,
    where the heads were trained); 0 lets every token through."""
    freeze_lm: bool = False
    """ILQL and MC: train the heads only; the language model stays the checkpoint's
    (pi_beta is then exactly the starting policy, and an update needs no backward pass
    through the model). The hidden states of the sequences seen are then cached (see
    `feature_cache_mb`), so later batches run only the heads on them."""
    feature_cache_mb: int = 1024
    """With freeze_lm: at most this many MiB of cached hidden states (one entry per
    distinct sequence; once full, new sequences are computed each time); 0 turns the cache
    off."""
    td_lambda: float = 0.0
    """ILQL: lambda of the TD(lambda) Q targets along each episode (0: the paper's one-step
    target; larger values carry rewards back over more steps per update)."""
    bootstrap: str = "token"
    """ILQL: where Q's targets bootstrap from V. "token" (the paper's): V at the next
    token. "turn": V at the first token of the next agent turn, for every token of a turn
    (lambda 1 inside the turn, `td_lambda` across turns), so a reward crosses a whole
    utterance in one step."""
    head_grad_scale: float = 1.0
    """ILQL and MC: the fraction of the heads' gradient that reaches the language model
    (1: all of it; small values let the value losses shape the hidden states without
    swamping the BC term that keeps the model the behaviour policy)."""
    head_input_norm: bool = False
    """ILQL and MC with freeze_lm: the heads read each hidden state standardised by the
    mean and standard deviation of the states that read the same last token, fitted once
    on the first `head_input_norm_episodes` episodes of the dataset and saved with the
    heads (`models.TokenNorm`). A small model's states at one token differ in directions
    of tiny variance, which TD on the raw states does not pick up."""
    head_input_norm_episodes: int = 128
    head_width: int = 0
    """Inner width of the heads' MLPs; 0 = the model's hidden size."""
    top_fraction: float = 0.1
    """Filtered BC: the fraction of episodes with the highest returns it trains on."""

    # -- Online RL (ppo, online-filtered-bc) --------------------------------------------
    iterations: int = 50
    """Online: rounds of (broadcast weights, collect episodes, update)."""
    episodes_per_iteration: int = 64
    """Online: episodes collected per iteration, across all rollout workers."""
    temperature: float = 1.0
    """Online: sampling temperature of the rollouts."""
    ppo_epochs: int = 4
    """PPO: passes over each iteration's episodes."""
    minibatches_per_epoch: int = 4
    """PPO: optimizer updates per epoch (the episodes split evenly, whole episodes)."""
    clip_ratio: float = 0.2
    """PPO's epsilon: the ratio pi/pi_old is clipped to [1 - eps, 1 + eps]."""
    value_clip: float = 0.2
    """PPO: the value prediction moves at most this far from the old one (0 disables)."""
    vf_coef: float = 0.5
    """PPO: weight of the value loss."""
    gae_lambda: float = 0.95
    """PPO: GAE's lambda (per agent token, like gamma)."""
    kl_coef: float = 0.01
    """PPO: initial weight of the per-token KL to the reference (initial) policy folded
    into the reward; 0 turns the reference model off."""
    kl_target: float = 0.0
    """PPO: target KL per agent token for the adaptive coefficient; 0 keeps kl_coef fixed."""
    kl_horizon_tokens: int = 10000
    """PPO: the adaptive controller's horizon, in agent tokens."""
    whiten_advantages: bool = True
    """PPO: normalise advantages to mean 0, std 1 over each iteration's agent tokens."""
    offline_bc_weight: float = 0.0
    """PPO: weight of a BC loss on offline data (needs --data), a batch of as many
    offline episodes as each minibatch holds; 0 turns it off."""
    updates_per_iteration: int = 4
    """Online filtered BC: BC updates per iteration on the kept (top_fraction) episodes."""
    num_rollout_workers: int = 0
    """Online: rollout-worker actors (0: one worker in this process)."""
    num_engines: int = 0
    """Online: inference-engine actors the workers share (0: an engine in this process,
    or one per worker when there are workers)."""
    envs_per_worker: int = 64
    """Online: environments each rollout worker runs at once (one engine call per step)."""
    engine: str = "auto"
    """Online: the engines' back end: auto, hf or vllm."""
    cpus_per_rollout_worker: float = 1.0
    cpus_per_engine: float = 1.0
    gpus_per_engine: float = 0.0
    simulator: str = ""
    """Dialogue tasks: the partner in online rollouts and evaluations, "grounded" or "lm"
    ("": the task's default, grounded)."""
    simulator_model: str = ""
    """Simulator "lm": the folder of the trained LM simulator."""
    simulator_replicas: int = 0
    """Simulator "lm": engine actors serving the LM simulator, shared by every rollout
    worker (0: each rollout process loads the simulator itself)."""
    eval_every_iterations: int = 0
    """Online: evaluate the policy (eval_episodes episodes, sampled at `temperature`) every
    this many iterations (0: only at the end when eval_episodes > 0)."""

    num_learners: int = 0
    """Learner actors (data-parallel, gloo on CPU, NCCL on GPU); 0 = in-process."""
    cpus_per_learner: float = 1.0
    gpus_per_learner: float = 0.0

    eval_episodes: int = 0
    """Episodes to evaluate the final checkpoint on (0 skips)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes kept with the run (not read by the code)."""

    def __post_init__(self):
        if self.algo not in ALGOS:
            raise ValueError(f"unknown algorithm {self.algo!r}; valid: {', '.join(ALGOS)}")
        positive = ("updates", "batch_episodes", "microbatch_tokens", "checkpoint_every_updates", "keep_checkpoints",
                    "log_every_updates", "iterations", "episodes_per_iteration", "ppo_epochs", "minibatches_per_epoch",
                    "updates_per_iteration", "envs_per_worker", "kl_horizon_tokens", "head_input_norm_episodes")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_updates", "weight_decay", "grad_clip_norm", "num_learners", "eval_episodes", "head_width",
                     "cql_weight", "bc_weight", "beta", "value_clip", "vf_coef", "kl_coef", "kl_target",
                     "offline_bc_weight", "num_rollout_workers", "num_engines", "cpus_per_rollout_worker",
                     "cpus_per_engine", "gpus_per_engine", "eval_every_iterations", "feature_cache_mb",
                     "simulator_replicas"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0.0 < self.clip_ratio < 1.0:
            raise ValueError(f"clip_ratio must be in (0, 1), got {self.clip_ratio}")
        if self.simulator_replicas and self.simulator != "lm":
            raise ValueError(f"simulator_replicas serve an LM simulator; set simulator=lm, got {self.simulator!r}")
        if self.engine not in ("auto", "hf", "vllm"):
            raise ValueError(f"engine must be auto, hf or vllm, got {self.engine!r}")
        for name in ("gamma", "polyak", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.expectile < 1.0:
            raise ValueError(f"expectile must be in (0, 1), got {self.expectile}")
        if not 0.0 <= self.support_min_p <= 1.0:
            raise ValueError(f"support_min_p must be in [0, 1], got {self.support_min_p}")
        if not 0.0 <= self.td_lambda <= 1.0:
            raise ValueError(f"td_lambda must be in [0, 1], got {self.td_lambda}")
        if self.td_lambda > 0.0 and self.algo != "ilql":
            raise ValueError(f"td_lambda applies to ilql, not {self.algo}")
        if self.bootstrap not in ("token", "turn"):
            raise ValueError(f"bootstrap must be 'token' or 'turn', got {self.bootstrap!r}")
        if self.bootstrap != "token" and self.algo != "ilql":
            raise ValueError(f"bootstrap applies to ilql, not {self.algo}")
        if not 0.0 <= self.head_grad_scale <= 1.0:
            raise ValueError(f"head_grad_scale must be in [0, 1], got {self.head_grad_scale}")
        if self.head_grad_scale != 1.0 and self.algo not in ("ilql", "mc"):
            raise ValueError(f"head_grad_scale applies to ilql and mc, not {self.algo}")
        if self.head_input_norm and (self.algo not in ("ilql", "mc") or not self.freeze_lm):
            raise ValueError("head_input_norm standardises a frozen model's states for ilql and mc heads: "
                             f"it needs freeze_lm=true and algo ilql or mc (got {self.algo}, freeze_lm={self.freeze_lm})")
        if self.freeze_lm and self.algo not in ("ilql", "mc"):
            raise ValueError(f"freeze_lm trains the value heads alone: it applies to ilql and mc, not {self.algo}")
        if not 0.0 < self.top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        if self.algo == "ppo":
            parts = self.minibatches_per_epoch * max(1, self.num_learners)
            if self.episodes_per_iteration % parts:
                raise ValueError(
                    f"episodes_per_iteration ({self.episodes_per_iteration}) must be a multiple of "
                    f"minibatches_per_epoch x num_learners ({parts})"
                )
        if self.algo == "online-filtered-bc" and self.num_learners > 1:
            kept = max(1, round(self.top_fraction * self.episodes_per_iteration))
            if kept % self.num_learners:
                raise ValueError(f"top_fraction x episodes_per_iteration ({kept} episodes) must be a multiple of "
                                 f"num_learners ({self.num_learners})")
        if self.num_learners > 1 and self.batch_episodes % self.num_learners:
            raise ValueError(
                f"batch_episodes ({self.batch_episodes}) must be a multiple of num_learners ({self.num_learners})"
            )

    @property
    def env_settings(self) -> dict[str, Any]:
        """The environment settings the simulator keys give (`envs.make(task, **...)`)."""
        settings: dict[str, Any] = {}
        if self.simulator:
            settings["simulator"] = self.simulator
        if self.simulator_model:
            settings["simulator_model"] = self.simulator_model
        return settings

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
