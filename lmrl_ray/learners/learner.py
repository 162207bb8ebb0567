"""The learner: a plain class that owns the model, the heads, the optimizer and the
checkpoint, and turns a batch of stored episodes into one optimizer update (STYLE 3, 4).

    learner = Learner(config)
    metrics = learner.update(rows)          # rows: stored episodes (dicts of the schema)
    metrics = learner.algo.iteration(learner, rows)   # an online algorithm's iteration
    learner.save("run/checkpoints/step-00000100")
    learner.restore("run/checkpoints/step-00000100")

What an update is belongs to the algorithm (`learner.algo`, one file each, see
`algorithm.py`); the learner gives every algorithm the same substrate: the model's
states at the agent steps (`forward`), gradients accumulated over micro-batches and
learners (`accumulate`, `reduce`), the optimizer step (`optimizer_step`).

An update is exact under splitting: every loss is a mean over agent tokens, so a
micro-batch's (or a learner's) loss is weighted by its share of the update's agent
tokens, and the gradients of all micro-batches and all learners sum to the gradient of
the whole batch. One learner, two learners (gloo) and any micro-batch size take the
same step, up to float summation order.

Dropout is off (the model is in eval mode while it learns): RL compares the same
tokens' log-probs and values under the acting and the learning model, and the embedded
tiny model has none anyway.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pyarrow as pa
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmrl_ray import envs
from lmrl_ray.data.collate import Batch, Collator, EncodedEpisode, microbatches
from lmrl_ray.learners.algorithm import Algorithm
from lmrl_ray.learners.bc import BC, FilteredBC, OnlineFilteredBC
from lmrl_ray.learners.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    read_meta,
    write_meta,
)
from lmrl_ray.learners.config import TrainConfig, to_dict
from lmrl_ray.learners.ilql import ILQL
from lmrl_ray.learners.mc import MCReturns
from lmrl_ray.learners.ops import scale_gradient
from lmrl_ray.learners.ppo import PPO
from lmrl_ray.models import HEADS_FILE, TINY, load_heads, load_policy, save_checkpoint

log = logging.getLogger(__name__)

ALGORITHMS: dict[str, type[Algorithm]] = {a.name: a for a in (BC, FilteredBC, MCReturns, ILQL, PPO, OnlineFilteredBC)}
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"


def make_algorithm(config: TrainConfig) -> Algorithm:
    """The algorithm object of a config (`config.name`)."""
    return ALGORITHMS[config.name](config)


def task_view(task: str):
    """The function that gives task `task`'s policy its view of the transcript."""
    env = envs.make(task)
    try:
        return env.view
    finally:
        env.close()


@dataclass
class StepStates:
    """What the model gives the losses at a batch's N agent steps."""

    logits: torch.Tensor  # (U, V): the language model's next-token logits at each distinct state
    hidden: torch.Tensor  # (U, H): the final hidden state of each distinct state
    index: torch.Tensor  # (N,): step n is at state index[n]
    tokens: torch.Tensor | None = None  # (U,): the last token each distinct state read


LossFn = Callable[[StepStates, Batch], tuple[torch.Tensor, dict[str, float]]]


class Learner:
    """One learner. `rank` and `world_size` say its place in a data-parallel group whose
    torch.distributed process group is already initialised (world_size 1: alone). `view`
    overrides the task's view of the transcript (for environments outside the registry);
    `dataset` is the learner's offline data, for the algorithm's `setup`."""

    def __init__(self, config: TrainConfig, *, device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1,
                 view=None, dataset: pa.Table | None = None):
        if not config.common.task:
            raise ValueError("the learner needs the task (config.common.task)")
        self.config = config
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.model, self.tokenizer = load_policy(config.common.model, device=self.device)
        self.model.eval()
        self.algo = make_algorithm(config)
        if self.algo.frozen_model:
            self.model.requires_grad_(False)
        output = self.model.get_output_embeddings()
        torch.manual_seed(config.common.seed)  # the heads start the same on every learner
        self.heads = self.algo.make_heads(output.in_features, output.out_features)
        if self.heads is not None:
            self._init_heads_from(config.common.model)
            self.heads.to(self.device)
        self.params = [p for p in self._modules_parameters() if p.requires_grad]
        c = config.common
        self.optimizer = torch.optim.AdamW(self.params, lr=c.lr, betas=(c.adam_beta1, c.adam_beta2),
                                           weight_decay=c.weight_decay)
        self.collator = Collator(self.tokenizer, view or task_view(c.task),
                                 max_tokens=int(self.model.config.max_position_embeddings))
        self.step = 0
        """Optimizer updates taken."""
        # A frozen model's final hidden states (T_i, H) of each distinct sequence, by its token ids.
        self._feature_cache: dict[bytes, torch.Tensor] = {}
        self._feature_cache_bytes = 0
        self.algo.setup(self, dataset)

    def _init_heads_from(self, model: str) -> None:
        """Start the heads from the starting checkpoint's when it has heads of the same
        kind (ILQL from an MC Returns checkpoint: both use `ILQLHeads`); a checkpoint
        without heads (BC, a plain model folder, "tiny") leaves them freshly initialised."""
        path = Path(model) / HEADS_FILE if model != TINY else None
        if path is None or not path.is_file():
            return
        try:
            meta = read_meta(path.parent)
        except CheckpointError:
            return  # a model folder of someone else's with a file of that name: not ours
        if (meta.heads or {}).get("class") != type(self.heads).__name__:
            return
        try:
            load_heads(path, self.heads)
        except (ValueError, SafetensorError) as err:
            raise CheckpointError(f"{path.parent}: cannot start from its heads: {err}") from None
        log.info("heads start from %s (%s)", path.parent, meta.algo)

    def _modules_parameters(self):
        yield from self.model.parameters()
        if self.heads is not None:
            yield from self.heads.parameters()

    # -- The substrate every algorithm uses -----------------------------------------------

    def encode(self, rows: Sequence[dict]) -> list[EncodedEpisode]:
        return [self.collator.encode(r) for r in rows]

    def batches(self, episodes: Sequence[EncodedEpisode]) -> Iterator[tuple[list[EncodedEpisode], Batch]]:
        """The episodes in micro-batches of at most `microbatch_tokens` padded tokens (whole
        episodes), each with its padded batch on this learner's device."""
        for group in microbatches(episodes, self.config.common.microbatch_tokens):
            yield group, self.collator.pad(group).to(self.device)

    def lr_at(self, step: int) -> float:
        """Linear warm-up over `warmup_updates`, then constant."""
        c = self.config.common
        return c.lr * (min(1.0, (step + 1) / c.warmup_updates) if c.warmup_updates else 1.0)

    def autocast(self):
        if self.device.type == "cuda" and self.config.common.mixed_precision:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a small CPU tensor over the group (on this learner's device: NCCL reduces
        only CUDA tensors); returns it on CPU."""
        if self.world_size > 1:
            moved = tensor.to(self.device)
            dist.all_reduce(moved)
            return moved.cpu()
        return tensor

    def forward(self, batch: Batch, model=None) -> StepStates:
        """The language model (`model`, default the policy) at the batch's agent steps: the
        LM head runs only at the distinct positions the steps read (steps that share a
        sequence share them)."""
        model = model if model is not None else self.model
        positions, index = torch.unique(batch.positions, return_inverse=True)
        if self.algo.frozen_model and model is self.model:
            hidden = self._frozen_hidden(batch, positions)
        else:
            out = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            # The base model's last hidden state is after the final layer norm: the input of
            # the LM head, which is what the value-guided decoder applies the heads to.
            hidden = out.last_hidden_state.flatten(0, 1)[positions]  # (U, H): distinct states s_t
        logits = model.get_output_embeddings()(hidden)  # (U, V)
        # What the heads read: `head_grad_scale` of their gradient reaches the model.
        hidden = scale_gradient(hidden, self.algo.head_grad_scale)
        return StepStates(logits, hidden, index, batch.input_ids.flatten()[positions])

    @torch.no_grad()
    def _frozen_hidden(self, batch: Batch, positions: torch.Tensor) -> torch.Tensor:
        """The frozen model's final hidden states at `positions` (U,), from the cache of
        each sequence's states where it has them; the sequences it lacks run in one
        forward and are added while the cache has room (`feature_cache_mb`)."""
        T = batch.input_ids.shape[1]
        lengths = batch.attention_mask.sum(-1).tolist()  # right-padded: the first lengths[b] are real
        keys = [batch.input_ids[b, :n].cpu().numpy().tobytes() for b, n in enumerate(lengths)]
        missing = sorted({b for b in range(len(keys)) if keys[b] not in self._feature_cache})
        rows: dict[int, torch.Tensor] = {b: self._feature_cache[keys[b]] for b in range(len(keys)) if b not in missing}
        if missing:
            chosen = torch.tensor(missing, device=batch.input_ids.device)
            out = self.model.base_model(input_ids=batch.input_ids[chosen], attention_mask=batch.attention_mask[chosen])
            for i, b in enumerate(missing):
                rows[b] = states = out.last_hidden_state[i, : lengths[b]].detach().clone()  # not a view of the batch
                size = states.numel() * states.element_size()
                if self._feature_cache_bytes + size <= self.algo.feature_cache_mb * 2**20:
                    self._feature_cache[keys[b]] = states
                    self._feature_cache_bytes += size
        return torch.stack([rows[b][t] for b, t in zip((positions // T).tolist(), (positions % T).tolist())])

    @torch.no_grad()
    def fit_head_input_norm(self, rows: Sequence[dict]) -> None:
        """Fit the heads' `TokenNorm` on the frozen model's hidden states at every agent
        step of `rows`; every learner of a group fits on the same rows, so they agree."""
        hidden, tokens = [], []
        for _, batch in self.batches(self.encode(rows)):
            positions = torch.unique(batch.positions)
            hidden.append(self._frozen_hidden(batch, positions))
            tokens.append(batch.input_ids.flatten()[positions])
        self.heads.input_norm.fit(torch.cat(hidden), torch.cat(tokens))

    def algorithm_loss(self, states: StepStates, batch: Batch):
        return self.algo.loss(states, self.heads, batch)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=False)

    def accumulate(self, episodes: Sequence[EncodedEpisode], loss_fn: LossFn,
                   weight: float = 1.0) -> tuple[dict[str, float], float]:
        """Add the gradient of `weight` x the loss over `episodes` (this learner's share of
        a batch split across the group) to every parameter's `.grad`; returns this share's
        metrics, weighted by its share of the batch's agent tokens, and that token count."""
        local_tokens = sum(e.num_agent_tokens for e in episodes)
        total_tokens = self.all_reduce(torch.tensor([float(local_tokens)], dtype=torch.float64)).item()
        if total_tokens == 0:
            raise ValueError("update: the batch has no agent tokens")
        sums: dict[str, float] = defaultdict(float)
        for _, batch in self.batches(episodes):
            share = batch.num_agent_tokens / total_tokens
            with self.autocast():
                loss, metrics = loss_fn(self.forward(batch), batch)
            (loss * (share * weight)).backward()
            for key, value in metrics.items():
                sums[key] += value * share
        return sums, total_tokens

    def reduce(self, sums: dict[str, float], episodes: int, agent_tokens: float) -> dict[str, float]:
        """Sum the accumulated gradients over the group (in one flat buffer), and the
        metrics; `episodes` is this learner's count, `agent_tokens` the group's."""
        if self.world_size > 1:
            grads = [p.grad for p in self.params]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()
        names = sorted(sums)
        reduced = self.all_reduce(torch.tensor([sums[k] for k in names], dtype=torch.float64)).tolist()
        metrics = dict(zip(names, reduced))
        metrics["learner/agent_tokens"] = agent_tokens
        metrics["learner/episodes"] = self.all_reduce(torch.tensor([float(episodes)], dtype=torch.float64)).item()
        return metrics

    def compute_gradients(self, episodes: Sequence[EncodedEpisode]) -> dict[str, float]:
        """Fill every parameter's `.grad` with the gradient of the algorithm's loss on the
        whole batch (this learner's share, summed over the group); returns its metrics."""
        self.zero_grad()
        sums, tokens = self.accumulate(episodes, self.algorithm_loss)
        return self.reduce(sums, len(episodes), tokens)

    def optimizer_step(self, metrics: dict[str, float]) -> dict[str, float]:
        """Clip, take the optimizer step the gradients in `.grad` ask for, let the
        algorithm move its targets; returns `metrics` with the step's own."""
        if self.config.common.grad_clip_norm > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.config.common.grad_clip_norm))
        else:
            norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.params])))
        metrics["learner/grad_norm"] = norm
        metrics["learner/lr"] = lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.algo.after_update(self.heads)
        self.step += 1
        return metrics

    def update(self, rows: Sequence[dict]) -> dict[str, float]:
        """One optimizer update on this learner's share of the batch; returns the metrics
        of the whole batch (reduced across the group)."""
        return self.optimizer_step(self.compute_gradients(self.encode(rows)))

    def policy_state_dict(self) -> dict[str, torch.Tensor]:
        """The language model's weights (what engines load), on CPU."""
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def gradients(self) -> torch.Tensor:
        """Every parameter's gradient, flattened into one vector (on CPU)."""
        return torch.cat([p.grad.detach().flatten().cpu() for p in self.params])

    # -- Checkpoints -------------------------------------------------------------------

    def meta(self) -> CheckpointMeta:
        value_guided = self.algo.decoding == "value-guided"
        return CheckpointMeta(
            algo=self.config.name,
            task=self.config.common.task,
            step=self.step,
            decoding=self.algo.decoding,
            beta=self.algo.beta if value_guided else 0.0,
            heads={"class": type(self.heads).__name__, "width": self.heads.width} if self.heads is not None else None,
            config=to_dict(self.config),
        )

    def save(self, folder: str | os.PathLike, *, driver_state: dict | None = None) -> Path:
        """Write a checkpoint (atomically): the policy, the heads, and the full training
        state (optimizer moments, random-number generators, step, the algorithm's state,
        `driver_state`)."""

        def extra(tmp: Path) -> None:
            write_meta(tmp, self.meta())
            tensors = {"rng.torch": torch.get_rng_state()}
            optimizer = self.optimizer.state_dict()
            for index, state in optimizer["state"].items():
                for key, value in state.items():
                    tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            save_file(tensors, tmp / STATE_TENSORS)
            (tmp / STATE_JSON).write_text(json.dumps({
                "step": self.step,
                "param_groups": optimizer["param_groups"],
                "algorithm": self.algo.state_dict(),
                "driver": driver_state or {},
            }, indent=2))

        return save_checkpoint(self.model, self.tokenizer, folder, heads=self.heads, extra=extra)

    def restore(self, folder: str | os.PathLike) -> dict:
        """Load a checkpoint written by `save` for the same algorithm; returns its driver state."""
        folder = Path(folder)
        meta = read_meta(folder)
        if meta.algo != self.config.name:
            raise CheckpointError(f"{folder}: a checkpoint of {meta.algo}, not of {self.config.name}")
        if meta.task != self.config.common.task:
            raise CheckpointError(f"{folder}: a checkpoint of task {meta.task}, not of {self.config.common.task}")
        try:
            loaded, _ = load_policy(folder, device=self.device)
            self.model.load_state_dict(loaded.state_dict())
            if self.heads is not None:
                load_heads(folder / HEADS_FILE, self.heads)
            tensors = load_file(folder / STATE_TENSORS)
            state = json.loads((folder / STATE_JSON).read_text())
        except (OSError, SafetensorError, json.JSONDecodeError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{folder}: cannot restore the checkpoint: {err}") from None
        optimizer_state: dict[int, dict[str, torch.Tensor]] = defaultdict(dict)
        for name, value in tensors.items():
            if name.startswith("optimizer."):
                _, index, key = name.split(".", 2)
                optimizer_state[int(index)][key] = value.to(self.device) if key != "step" else value
        self.optimizer.load_state_dict({"state": dict(optimizer_state), "param_groups": state["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        self.step = int(state["step"])
        self.algo.load_state_dict(state.get("algorithm", {}))
        return state.get("driver", {})
