"""Training configurations: one frozen dataclass per algorithm, a YAML file, `key=value` overrides.

    config = load_config("ilql", task="maze", file="my.yaml", overrides=["lr=1e-4", "updates=500"])
    config.common.lr, config.resources.num_learners, config.expectile, config.name == "ilql"

Each algorithm's config holds what every run has (`common`: task, model, optimizer,
checkpoints, evaluation, the dialogue partner), where its learners run (`resources`),
for online algorithms how episodes are played (`rollouts`), and its own keys; offline
algorithms share their schedule (`OfflineConfig`), MC Returns and ILQL their value heads
(`GuidedConfig`), online algorithms theirs (`OnlineConfig`).

Keys are flat in files and on the command line (`lr`, `num_learners`, `expectile`):
every key names one field wherever it sits. `load_config` hands the file's values and the
overrides to tyro, which parses and checks the types and builds the frozen config; a key
that is not the algorithm's is an error that names the valid ones (and the algorithms it
belongs to). Values in `key=value` are read as YAML scalars (`1e-4`, `true`, `null`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import tyro
import yaml


def _check(config, *, positive: Sequence[str] = (), nonnegative: Sequence[str] = (),
           unit: Sequence[str] = ()) -> None:
    """Raise naming the first field of `config` out of its range: at least 1, at least 0,
    or in [0, 1]."""
    for name in positive:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}")
    for name in nonnegative:
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")
    for name in unit:
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {getattr(config, name)}")


@dataclass(frozen=True)
class CommonConfig:
    """What every training run has."""

    task: str = ""
    """The task; taken from the dataset when empty."""
    model: str = "tiny"
    """Where training starts: "tiny" (the embedded default) or a local Hugging Face folder,
    such as a BC checkpoint (the paper starts every RL method from BC)."""
    seed: int = 0
    """Seeds the heads' initialisation, the order of the data and the rollouts."""
    lr: float = 3e-4
    """AdamW's learning rate after warm-up (the paper used 1e-4 on GPT-2 small; a model
    trained from scratch takes a larger one)."""
    warmup_updates: int = 20
    """Linear warm-up of the learning rate from 0; constant afterwards."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay."""
    adam_beta1: float = 0.9
    """AdamW's first-moment decay."""
    adam_beta2: float = 0.999
    """AdamW's second-moment decay."""
    grad_clip_norm: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    mixed_precision: bool = True
    """bfloat16 autocast on CUDA; ignored on CPU (full precision)."""
    microbatch_tokens: int = 16384
    """Padded tokens per forward/backward pass; gradients accumulate over micro-batches
    (whole episodes), which does not change the update."""
    checkpoint_every_updates: int = 200
    """Write a checkpoint every this many updates (online: iterations), and at the end."""
    keep_checkpoints: int = 2
    """Keep the newest this many checkpoints."""
    eval_episodes: int = 0
    """Episodes to evaluate the final checkpoint on (0 skips)."""
    simulator: str = ""
    """Dialogue tasks: the partner in rollouts and evaluations, "grounded" or "lm" ("": the
    task's default, grounded)."""
    simulator_model: str = ""
    """Simulator "lm": the folder of the trained LM simulator."""
    simulator_replicas: int = 0
    """Simulator "lm": engine actors serving the LM simulator, shared by every rollout
    worker (0: each rollout process loads the simulator itself)."""

    def __post_init__(self):
        _check(self, positive=("microbatch_tokens", "checkpoint_every_updates", "keep_checkpoints"),
               nonnegative=("warmup_updates", "weight_decay", "grad_clip_norm", "eval_episodes", "simulator_replicas"))
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.simulator not in ("", "grounded", "lm"):
            raise ValueError(f"simulator must be grounded or lm, got {self.simulator!r}")
        if self.simulator_replicas and self.simulator != "lm":
            raise ValueError(f"simulator_replicas serve an LM simulator; set simulator=lm, got {self.simulator!r}")

    @property
    def env_settings(self) -> dict[str, Any]:
        """The simulator keys as the settings a run records (`simulators.lm.simulator_settings`
        turns them into what an environment takes)."""
        settings: dict[str, Any] = {}
        if self.simulator:
            settings["simulator"] = self.simulator
        if self.simulator_model:
            settings["simulator_model"] = self.simulator_model
        return settings


@dataclass(frozen=True)
class ResourcesConfig:
    """Where the learners run."""

    num_learners: int = 0
    """Learner actors (data-parallel, gloo on CPU, NCCL on GPU); 0 = in-process."""
    cpus_per_learner: float = 1.0
    """CPUs each learner actor reserves."""
    gpus_per_learner: float = 0.0
    """GPUs each learner actor reserves (CUDA when > 0)."""

    def __post_init__(self):
        _check(self, nonnegative=("num_learners", "cpus_per_learner", "gpus_per_learner"))


@dataclass(frozen=True)
class RolloutConfig:
    """How an online algorithm plays its episodes: the rollout workers and their engines."""

    episodes_per_iteration: int = 64
    """Episodes collected per iteration, across all rollout workers."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts (and the policy PPO's ratio is taken under)."""
    envs_per_worker: int = 64
    """Environments each rollout worker runs at once (one engine call per step)."""
    num_rollout_workers: int = 0
    """Rollout-worker actors (0: one worker in this process)."""
    num_engines: int = 0
    """Inference-engine actors the workers share (0: an engine in this process, or one per
    worker when there are workers)."""
    engine: Literal["auto", "hf", "vllm"] = "auto"
    """The engines' back end."""
    cpus_per_rollout_worker: float = 1.0
    """CPUs each rollout-worker actor reserves."""
    cpus_per_engine: float = 1.0
    """CPUs each engine actor (and simulator replica) reserves."""
    gpus_per_engine: float = 0.0
    """GPUs each engine actor reserves."""

    def __post_init__(self):
        _check(self, positive=("episodes_per_iteration", "envs_per_worker"),
               nonnegative=("num_rollout_workers", "num_engines", "cpus_per_rollout_worker", "cpus_per_engine",
                            "gpus_per_engine"))
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")


# -- Offline algorithms -------------------------------------------------------------------


@dataclass(frozen=True)
class OfflineConfig:
    """The schedule of an offline run: updates on batches of the dataset's episodes."""

    name: ClassVar[str]
    online: ClassVar[bool] = False
    common: CommonConfig = field(default_factory=CommonConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    updates: int = 1000
    """Optimizer updates in the whole run."""
    batch_episodes: int = 16
    """Episodes per update, across all learners (each gets an equal share)."""
    log_every_updates: int = 10
    """TensorBoard and progress-bar metrics every this many updates."""

    def __post_init__(self):
        _check(self, positive=("updates", "batch_episodes", "log_every_updates"))
        n = self.resources.num_learners
        if n > 1 and self.batch_episodes % n:
            raise ValueError(f"batch_episodes ({self.batch_episodes}) must be a multiple of num_learners ({n})")


@dataclass(frozen=True)
class BCConfig(OfflineConfig):
    """Behaviour cloning: the log-likelihood of the dataset's agent tokens."""

    name: ClassVar[str] = "bc"


@dataclass(frozen=True)
class FilteredBCConfig(OfflineConfig):
    """Filtered BC: behaviour cloning on the dataset's best episodes."""

    name: ClassVar[str] = "filtered-bc"
    top_fraction: float = 0.1
    """The fraction of the dataset's episodes, by return, it trains on."""

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")


@dataclass(frozen=True)
class GuidedConfig(OfflineConfig):
    """Value heads on the language model and value-guided decoding (MC Returns, ILQL)."""

    gamma: float = 0.99
    """Discount per agent token."""
    cql_weight: float = 0.01
    """Weight of the conservative cross-entropy term on Q."""
    bc_weight: float = 1.0
    """Weight of the BC loss that keeps the language model the behaviour policy."""
    beta: float = 4.0
    """Value-guidance strength of the decoding: logits + beta * (Q - V)."""
    support_min_p: float = 0.1
    """Decoding guides only among the tokens whose language-model probability is at least
    this fraction of the most likely token's (the behaviour policy's support, where the
    heads were trained); 0 lets every token through."""
    freeze_lm: bool = False
    """Train the heads only; the language model stays the checkpoint's (pi_beta is then
    exactly the starting policy, and an update needs no backward pass through the model).
    The hidden states of the sequences seen are then cached (`feature_cache_mb`), so later
    batches run only the heads on them."""
    feature_cache_mb: int = 1024
    """With freeze_lm: at most this many MiB of cached hidden states (one entry per
    distinct sequence; once full, new sequences are computed each time); 0 turns it off."""
    head_grad_scale: float = 1.0
    """The fraction of the heads' gradient that reaches the language model (1: all of it;
    small values let the value losses shape the hidden states without swamping the BC
    term that keeps the model the behaviour policy)."""
    head_input_norm: bool = False
    """With freeze_lm: the heads read each hidden state standardised by the mean and
    standard deviation of the states that read the same last token, fitted once on the
    dataset's first `head_input_norm_episodes` episodes and saved with the heads
    (`models.TokenNorm`)."""
    head_input_norm_episodes: int = 128
    """Episodes the heads' input norm is fitted on."""
    head_width: int = 0
    """Inner width of the heads' MLPs; 0 = the model's hidden size."""

    def __post_init__(self):
        super().__post_init__()
        _check(self, positive=("head_input_norm_episodes",),
               nonnegative=("cql_weight", "bc_weight", "beta", "feature_cache_mb", "head_width"),
               unit=("gamma", "support_min_p", "head_grad_scale"))
        if self.head_input_norm and not self.freeze_lm:
            raise ValueError("head_input_norm standardises a frozen model's states: it needs freeze_lm=true")


@dataclass(frozen=True)
class MCConfig(GuidedConfig):
    """MC Returns (LMRL-Gym's): Q and V regressed on the behaviour data's discounted
    return-to-go, without bootstrapping; it decodes like ILQL."""

    name: ClassVar[str] = "mc"


@dataclass(frozen=True)
class ILQLConfig(GuidedConfig):
    """Implicit Language Q-Learning (Snell et al., 2023)."""

    name: ClassVar[str] = "ilql"
    expectile: float = 0.7
    """The expectile tau of V's regression on Q (Snell et al.'s 0.7)."""
    polyak: float = 0.005
    """The target heads' step per update: target <- polyak * online + (1 - polyak) * target."""
    td_lambda: float = 0.0
    """Lambda of the TD(lambda) Q targets along each episode (0: the paper's one-step
    target; larger values carry rewards back over more steps per update)."""
    bootstrap: Literal["token", "turn"] = "token"
    """Where Q's targets bootstrap from V. "token" (the paper's): V at the next token.
    "turn": V at the first token of the next agent turn, for every token of a turn
    (lambda 1 inside the turn, `td_lambda` across turns), so a reward crosses a whole
    utterance in one step."""

    def __post_init__(self):
        super().__post_init__()
        _check(self, unit=("polyak", "td_lambda"))
        if not 0.0 < self.expectile < 1.0:
            raise ValueError(f"expectile must be in (0, 1), got {self.expectile}")


# -- Online algorithms --------------------------------------------------------------------


@dataclass(frozen=True)
class OnlineConfig:
    """The schedule of an online run: iterations of (sync weights, collect, update)."""

    name: ClassVar[str]
    online: ClassVar[bool] = True
    iterations: int = 50
    """Rounds of (broadcast weights, collect episodes, update)."""
    eval_every_iterations: int = 0
    """Evaluate the policy (eval_episodes episodes, sampled at the rollouts' temperature)
    every this many iterations (0: only at the end, when eval_episodes > 0)."""
    rollouts: RolloutConfig = field(default_factory=RolloutConfig)
    common: CommonConfig = field(default_factory=CommonConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    def __post_init__(self):
        _check(self, positive=("iterations",), nonnegative=("eval_every_iterations",))


@dataclass(frozen=True)
class PPOConfig(OnlineConfig):
    """PPO at token level (Schulman et al., 2017) with a value head and a KL penalty."""

    name: ClassVar[str] = "ppo"
    gamma: float = 0.99
    """Discount per agent token."""
    gae_lambda: float = 0.95
    """GAE's lambda (per agent token, like gamma)."""
    ppo_epochs: int = 4
    """Passes over each iteration's episodes."""
    minibatches_per_epoch: int = 4
    """Optimizer updates per epoch (the episodes split evenly, whole episodes)."""
    clip_ratio: float = 0.2
    """PPO's epsilon: the ratio pi/pi_old is clipped to [1 - eps, 1 + eps]."""
    value_clip: float = 0.2
    """The value prediction moves at most this far from the old one (0 disables)."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    kl_coef: float = 0.01
    """Initial weight of the per-token KL to the reference (initial) policy folded into the
    reward; 0 turns the reference model off."""
    kl_target: float = 0.0
    """Target KL per agent token for the adaptive coefficient; 0 keeps kl_coef fixed."""
    kl_horizon_tokens: int = 10000
    """The adaptive controller's horizon, in agent tokens."""
    whiten_advantages: bool = True
    """Normalise advantages to mean 0, std 1 over each iteration's agent tokens."""
    offline_bc_weight: float = 0.0
    """Weight of a BC loss on offline data (needs --data): a batch of as many offline
    episodes as each minibatch holds; 0 turns it off."""
    head_width: int = 0
    """Inner width of the value head's MLP; 0 = the model's hidden size."""

    def __post_init__(self):
        super().__post_init__()
        _check(self, positive=("ppo_epochs", "minibatches_per_epoch", "kl_horizon_tokens"),
               nonnegative=("value_clip", "vf_coef", "kl_coef", "kl_target", "offline_bc_weight", "head_width"),
               unit=("gamma", "gae_lambda"))
        if not 0.0 < self.clip_ratio < 1.0:
            raise ValueError(f"clip_ratio must be in (0, 1), got {self.clip_ratio}")
        parts = self.minibatches_per_epoch * max(1, self.resources.num_learners)
        if self.rollouts.episodes_per_iteration % parts:
            raise ValueError(f"episodes_per_iteration ({self.rollouts.episodes_per_iteration}) must be a multiple of "
                             f"minibatches_per_epoch x num_learners ({parts})")


@dataclass(frozen=True)
class OnlineFilteredBCConfig(OnlineConfig):
    """Online filtered BC: behaviour cloning on the best of each iteration's episodes."""

    name: ClassVar[str] = "online-filtered-bc"
    top_fraction: float = 0.1
    """The fraction of each iteration's episodes, by return, it trains on."""
    updates_per_iteration: int = 4
    """BC updates per iteration on the kept episodes."""

    def __post_init__(self):
        super().__post_init__()
        _check(self, positive=("updates_per_iteration",))
        if not 0.0 < self.top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        n = self.resources.num_learners
        kept = max(1, round(self.top_fraction * self.rollouts.episodes_per_iteration))
        if n > 1 and kept % n:
            raise ValueError(f"top_fraction x episodes_per_iteration ({kept} episodes) must be a multiple of "
                             f"num_learners ({n})")


TrainConfig = BCConfig | FilteredBCConfig | MCConfig | ILQLConfig | PPOConfig | OnlineFilteredBCConfig
CONFIGS: dict[str, type] = {c.name: c for c in TrainConfig.__args__}
ALGOS = tuple(CONFIGS)


# -- Flat keys, files and overrides -------------------------------------------------------


def config_class(algo: str) -> type:
    """The config class of `algo`; an unknown name is an error listing the valid ones."""
    try:
        return CONFIGS[algo]
    except KeyError:
        raise ValueError(f"unknown algorithm {algo!r}; valid: {', '.join(ALGOS)}") from None


def _part(f: dataclasses.Field) -> type | None:
    """The config class a field holds when it is a part (common, resources, rollouts)."""
    factory = f.default_factory
    return factory if isinstance(factory, type) and dataclasses.is_dataclass(factory) else None


def keys(cls: type) -> list[str]:
    """The flat keys of a config class: the fields of its parts and its own, in order."""
    return [k for f in dataclasses.fields(cls) for k in (keys(_part(f)) if _part(f) else [f.name])]


def to_dict(config) -> dict[str, Any]:
    """The config as one flat mapping, with its algorithm's name (for the record)."""
    flat: dict[str, Any] = {"algo": config.name}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        flat.update(dataclasses.asdict(value) if _part(f) else {f.name: value})
    return flat


def _check_keys(cls: type, given: Sequence[str], where: str) -> None:
    valid = keys(cls)
    for key in given:
        if key in valid:
            continue
        owners = [name for name, other in CONFIGS.items() if key in keys(other)]
        if owners:
            raise ValueError(f"{where}: {key!r} is a key of {', '.join(owners)}, not of {cls.name}; "
                             f"{cls.name}'s keys: {', '.join(valid)}")
        raise ValueError(f"{where}: unknown config key {key!r}; {cls.name}'s keys: {', '.join(valid)}")


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """`["lr=1e-4", "eval_episodes=50"]` -> {"lr": 0.0001, "eval_episodes": 50} (YAML scalars)."""
    values: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not key=value")
        values[key] = yaml.safe_load(raw)
    return values


def _read_file(path: str | Path) -> dict[str, Any]:
    """The mapping of keys to values in the YAML file `path`."""
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"config file {str(path)!r} does not exist") from None
    except yaml.YAMLError as err:
        raise ValueError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of keys to values")
    return loaded


_TYRO_MARKERS = (tyro.conf.OmitArgPrefixes, tyro.conf.FlagConversionOff)
"""How tyro reads a config: flat `--key value` arguments, booleans as True/False."""


def _as_arguments(values: dict[str, Any]) -> list[str]:
    """`{"lr": 0.001, "freeze_lm": True}` -> ["--lr", "0.001", "--freeze_lm", "True"]: values
    as tyro reads them (it parses and checks each against its field's type)."""
    args: list[str] = []
    for key, value in values.items():
        args += [f"--{key}", str(value)]
    return args


def load_config(algo: str, *, file: str | Path | None = None, overrides: Sequence[str] = (),
                arguments: Sequence[str] = (), **fixed: Any):
    """The config of `algo`: defaults, then `file` (a YAML mapping), then `overrides`
    (key=value), then `arguments` (`--key value`, as on the command line), then `fixed`
    (what the command line's own flags set; None is left out). Raises ValueError naming
    what is wrong."""
    cls = config_class(algo)
    from_file = _read_file(file) if file is not None else {}
    _check_keys(cls, from_file, f"config file {str(file)!r}")
    values = {**from_file, **parse_overrides(overrides)}
    values.update({k: v for k, v in fixed.items() if v is not None})
    _check_keys(cls, values, "config")
    _check_keys(cls, [a[2:].split("=")[0].replace("-", "_") for a in arguments if a.startswith("--")], "config")
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            return tyro.cli(cls, args=[*_as_arguments(values), *arguments], config=_TYRO_MARKERS, use_underscores=True)
    except SystemExit:
        raise ValueError(f"config of {algo}: {_tyro_message(captured.getvalue())}") from None


def _tyro_message(printed: str) -> str:
    """The sentence of a tyro error box (its title, rule, wrapped message, rule, help)."""
    blocks, current = [], []
    for line in printed.splitlines():
        text = line.strip(" │╭╮╰╯─-")
        if text:
            current.append(text)
        elif current:
            blocks.append(" ".join(current))
            current = []
    blocks += [" ".join(current)] if current else []
    return blocks[1] if len(blocks) > 1 else (blocks[0] if blocks else "invalid arguments")


def print_help(algo: str, prog: str, *, verbose: bool = False) -> None:
    """Print the keys of `algo`'s config with their defaults (`verbose`: and their
    documentation)."""
    try:
        tyro.cli(config_class(algo), args=["--help"], config=_TYRO_MARKERS, use_underscores=True, prog=prog,
                 compact_help=not verbose)
    except SystemExit:  # tyro exits after printing help
        pass
