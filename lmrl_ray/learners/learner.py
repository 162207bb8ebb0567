"""The learner: a plain class that owns the model, the heads, the optimizer and the
checkpoint, and turns a batch of stored episodes into one optimizer update (STYLE 3, 4).

    learner = Learner(config)
    metrics = learner.update(rows)          # rows: stored episodes (dicts of the schema)
    learner.save("run/checkpoints/step-00000100")
    learner.restore("run/checkpoints/step-00000100")

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

import copy
import json
import logging
import os
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmrl_ray import envs
from lmrl_ray.data.collate import Collator, microbatches
from lmrl_ray.learners.bc import BC, bc_loss
from lmrl_ray.learners.checkpoint import CheckpointError, CheckpointMeta, read_meta, write_meta
from lmrl_ray.learners.config import TrainConfig
from lmrl_ray.learners.ilql import ILQL
from lmrl_ray.learners.mc import MCReturns
from lmrl_ray.learners.ops import scale_gradient
from lmrl_ray.learners.ppo import ADVANTAGES, OLD_LOGPROBS, OLD_VALUES, PPO, RETURNS, action_logprobs
from lmrl_ray.learners.ppo_math import whiten_by
from lmrl_ray.models import HEADS_FILE, TINY, load_heads, load_policy, save_checkpoint

log = logging.getLogger(__name__)

ALGOS = {"bc": BC, "filtered-bc": BC, "mc": MCReturns, "ilql": ILQL, "ppo": PPO, "online-filtered-bc": BC}
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"


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


class Learner:
    """One learner. `rank` and `world_size` say its place in a data-parallel group whose
    torch.distributed process group is already initialised (world_size 1: alone). `view`
    overrides the task's view of the transcript (for environments outside the registry)."""

    def __init__(self, config: TrainConfig, *, device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1,
                 view=None):
        if not config.task:
            raise ValueError("the learner needs the task (config.task)")
        self.config = config
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.model, self.tokenizer = load_policy(config.model, device=self.device)
        self.model.eval()
        if config.freeze_lm:
            self.model.requires_grad_(False)
        # PPO's reference policy for the KL penalty: the model training starts from (BC), frozen.
        self.reference = None
        if config.algo == "ppo" and (config.kl_coef > 0 or config.kl_target > 0):
            self.reference = copy.deepcopy(self.model).requires_grad_(False)
        self.algo = ALGOS[config.algo](config)
        hidden_size = self.model.get_output_embeddings().in_features
        vocab_size = self.model.get_output_embeddings().out_features
        torch.manual_seed(config.seed)  # the heads start the same on every learner
        self.heads = self.algo.make_heads(hidden_size, vocab_size)
        if self.heads is not None:
            self._init_heads_from(config.model)
            self.heads.to(self.device)
        self.head_width = config.head_width or hidden_size
        self.params = [p for p in self._modules_parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=config.lr, betas=(config.adam_beta1, config.adam_beta2), weight_decay=config.weight_decay
        )
        self.collator = Collator(
            self.tokenizer, view or task_view(config.task), max_tokens=int(self.model.config.max_position_embeddings),
            gamma=config.gamma,
        )
        self.step = 0
        # freeze_lm: each distinct sequence's final hidden states (T_i, H), by its token ids.
        self._feature_cache: dict[bytes, torch.Tensor] = {}
        self._feature_cache_bytes = 0

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

    def lr_at(self, step: int) -> float:
        """Linear warm-up over `warmup_updates`, then constant."""
        warmup = self.config.warmup_updates
        return self.config.lr * (min(1.0, (step + 1) / warmup) if warmup else 1.0)

    def _autocast(self):
        if self.device.type == "cuda" and self.config.mixed_precision:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a small CPU tensor over the group (on this learner's device: NCCL reduces
        only CUDA tensors); returns it on CPU."""
        if self.world_size > 1:
            moved = tensor.to(self.device)
            dist.all_reduce(moved)
            return moved.cpu()
        return tensor

    def forward(self, batch, model=None) -> StepStates:
        """The language model (`model`, default the policy) at the batch's agent steps: the
        LM head runs only at the distinct positions the steps read (steps that share a
        sequence share them)."""
        model = model if model is not None else self.model
        positions, index = torch.unique(batch.positions, return_inverse=True)
        if self.config.freeze_lm and model is self.model:
            hidden = self._frozen_hidden(batch, positions)
        else:
            out = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            # The base model's last hidden state is after the final layer norm: the input of
            # the LM head, which is what the value-guided decoder applies the heads to.
            hidden = out.last_hidden_state.flatten(0, 1)[positions]  # (U, H): distinct states s_t
        logits = model.get_output_embeddings()(hidden)  # (U, V)
        # What the heads read: head_grad_scale (1 unless ILQL or MC asks) of their gradient reaches the model.
        hidden = scale_gradient(hidden, self.config.head_grad_scale)
        return StepStates(logits, hidden, index, batch.input_ids.flatten()[positions])

    @torch.no_grad()
    def _frozen_hidden(self, batch, positions: torch.Tensor) -> torch.Tensor:
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
                if self._feature_cache_bytes + size <= self.config.feature_cache_mb * 2**20:
                    self._feature_cache[keys[b]] = states
                    self._feature_cache_bytes += size
        return torch.stack([rows[b][t] for b, t in zip((positions // T).tolist(), (positions % T).tolist())])

    @torch.no_grad()
    def fit_head_input_norm(self, rows: Sequence[dict]) -> None:
        """Fit the heads' `TokenNorm` (`head_input_norm`) on the frozen model's hidden
        states at every agent step of `rows`; every learner of a group fits on the same
        rows, so they agree."""
        episodes = [self.collator.encode(r) for r in rows]
        hidden, tokens = [], []
        for group in microbatches(episodes, self.config.microbatch_tokens):
            batch = self.collator.pad(group).to(self.device)
            positions = torch.unique(batch.positions)
            hidden.append(self._frozen_hidden(batch, positions))
            tokens.append(batch.input_ids.flatten()[positions])
        self.heads.input_norm.fit(torch.cat(hidden), torch.cat(tokens))

    def _accumulate(self, episodes, loss_fn, weight: float = 1.0) -> tuple[dict[str, float], float]:
        """Add the gradient of `weight` x the loss over `episodes` (this learner's share of
        a batch split across the group) to every parameter's `.grad`; returns this share's
        metrics, weighted by its share of the batch's agent tokens, and that token count."""
        local_tokens = sum(e.num_agent_tokens for e in episodes)
        total_tokens = self._all_reduce(torch.tensor([float(local_tokens)], dtype=torch.float64)).item()
        if total_tokens == 0:
            raise ValueError("update: the batch has no agent tokens")
        sums: dict[str, float] = defaultdict(float)
        for group in microbatches(episodes, self.config.microbatch_tokens):
            batch = self.collator.pad(group).to(self.device)
            share = batch.num_agent_tokens / total_tokens
            with self._autocast():
                loss, metrics = loss_fn(self.forward(batch), batch)
            (loss * (share * weight)).backward()
            for key, value in metrics.items():
                sums[key] += value * share
        return sums, total_tokens

    def _algo_loss(self, states, batch):
        return self.algo.loss(states, self.heads, batch)

    def _compute_gradients(self, episodes, offline=None) -> dict[str, float]:
        """Fill every parameter's `.grad` with the gradient of the whole batch's loss (this
        learner's share, summed over the group), plus `offline_bc_weight` x BC on the
        `offline` episodes when given; returns the batch's metrics, reduced."""
        self.optimizer.zero_grad(set_to_none=False)
        sums, total_tokens = self._accumulate(episodes, self._algo_loss)
        if offline:
            bc_sums, _ = self._accumulate(offline, lambda st, b: bc_loss(st.logits, b.actions, b.action_mask,
                                                                          index=st.index),
                                          weight=self.config.offline_bc_weight)
            sums.update({f"offline_{k}": v for k, v in bc_sums.items()})
        if self.world_size > 1:
            self._reduce_gradients()
        keys = sorted(sums)
        reduced = self._all_reduce(torch.tensor([sums[k] for k in keys], dtype=torch.float64)).tolist()
        metrics = dict(zip(keys, reduced))
        metrics["learner/agent_tokens"] = total_tokens
        metrics["learner/episodes"] = self._all_reduce(torch.tensor([float(len(episodes))], dtype=torch.float64)).item()
        return metrics

    def compute_gradients(self, rows: Sequence[dict]) -> dict[str, float]:
        """Fill every parameter's `.grad` with the gradient of the whole batch's loss (this
        learner's share, summed over the group); returns the batch's metrics."""
        return self._compute_gradients([self.collator.encode(r) for r in rows])

    def update(self, rows: Sequence[dict]) -> dict[str, float]:
        """One optimizer update on this learner's share of the batch; returns the metrics
        of the whole batch (reduced across the group)."""
        return self._step(self.compute_gradients(rows))

    def _step(self, metrics: dict[str, float]) -> dict[str, float]:
        """Clip, take the optimizer step the gradients in `.grad` ask for, move targets."""
        metrics["learner/grad_norm"] = self._clip()
        metrics["learner/lr"] = lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.algo.after_update(self.heads)
        self.step += 1
        return metrics

    # -- PPO -------------------------------------------------------------------------

    def ppo_iteration(self, rows: Sequence[dict], kl_coef: float, offline_rows: Sequence[dict] = ()) -> dict[str, float]:
        """PPO on one iteration's episodes (this learner's share): score them with the
        current policy, then `ppo_epochs` passes of `minibatches_per_epoch` updates over
        random splits into whole episodes. With `offline_rows`, each update adds
        `offline_bc_weight` x BC on as many offline episodes as the minibatch holds."""
        c = self.config
        episodes = [self.collator.encode(r) for r in rows]
        scored = self._score(episodes, kl_coef)
        rng = np.random.default_rng([c.seed, self.step])
        totals: dict[str, float] = defaultdict(float)
        updates = 0
        for _ in range(c.ppo_epochs):
            for part in np.array_split(rng.permutation(len(episodes)), c.minibatches_per_epoch):
                offline = None
                if offline_rows and c.offline_bc_weight > 0:
                    picks = rng.choice(len(offline_rows), size=len(part), replace=len(part) > len(offline_rows))
                    offline = [self.collator.encode(offline_rows[i]) for i in picks]
                metrics = self._step(self._compute_gradients([episodes[i] for i in part], offline))
                for key, value in metrics.items():
                    totals[key] += value
                updates += 1
        return {**{k: v / updates for k, v in totals.items()}, **scored, "ppo/updates": float(updates)}

    @torch.no_grad()
    def _score(self, episodes, kl_coef: float) -> dict[str, float]:
        """Attach to every episode its steps' old log-probs, old values, advantages and
        value targets (see `ppo.py`); advantages are whitened over the whole group's batch."""
        c = self.config
        sums = torch.zeros(6, dtype=torch.float64)  # steps, kl, reward, value, A, A^2
        for group in microbatches(episodes, c.microbatch_tokens):
            batch = self.collator.pad(group).to(self.device)
            with self._autocast():
                states = self.forward(batch)
                old_logprobs = action_logprobs(states, batch.actions, c.temperature).float()
                old_values = self.algo.values(states, self.heads).float()
                ref_logprobs = None
                if self.reference is not None:
                    ref_states = self.forward(batch, model=self.reference)
                    ref_logprobs = action_logprobs(ref_states, batch.actions, c.temperature).float()
            advantages, returns, kl = self.algo.advantages(batch, old_logprobs, ref_logprobs, old_values, kl_coef)
            for name, values in ((OLD_LOGPROBS, old_logprobs), (OLD_VALUES, old_values), (ADVANTAGES, advantages),
                                 (RETURNS, returns)):
                for episode, part in zip(group, values.cpu().split(batch.episode_steps)):
                    episode.extras[name] = part
            sums += torch.tensor([float(kl.numel()), kl.sum().item(), batch.rewards.sum().item(),
                                  old_values.sum().item(), advantages.sum().item(), advantages.square().sum().item()],
                                 dtype=torch.float64)
        steps, kl, reward, value, a_sum, a_sq = self._all_reduce(sums).tolist()
        a_mean = a_sum / steps
        a_var = max(a_sq / steps - a_mean**2, 0.0)
        a_std = a_var**0.5
        if c.whiten_advantages:
            for episode in episodes:
                episode.extras[ADVANTAGES] = whiten_by(episode.extras[ADVANTAGES], a_mean, a_var)
        return {"ppo/agent_tokens": steps, "ppo/kl": kl / steps, "ppo/kl_coef": kl_coef,
                "ppo/reward_per_token": reward / steps, "ppo/old_value_mean": value / steps,
                "ppo/advantage_mean": a_mean, "ppo/advantage_std": a_std}

    def policy_state_dict(self) -> dict[str, torch.Tensor]:
        """The language model's weights (what engines load), on CPU."""
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def gradients(self) -> torch.Tensor:
        """Every parameter's gradient, flattened into one vector (on CPU)."""
        return torch.cat([p.grad.detach().flatten().cpu() for p in self.params])

    def _reduce_gradients(self) -> None:
        """Sum the gradients over the group, in one flat buffer."""
        grads = [p.grad for p in self.params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n

    def _clip(self) -> float:
        if self.config.grad_clip_norm > 0:
            return float(torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip_norm))
        return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.params])))

    # -- Checkpoints -------------------------------------------------------------------

    def meta(self) -> CheckpointMeta:
        value_guided = self.algo.decoding == "value-guided"
        return CheckpointMeta(
            algo=self.config.algo,
            task=self.config.task,
            step=self.step,
            decoding=self.algo.decoding,
            beta=self.config.beta if value_guided else 0.0,
            heads={"class": type(self.heads).__name__, "width": self.head_width} if self.heads is not None else None,
            config=self.config.to_dict(),
        )

    def save(self, folder: str | os.PathLike, *, driver_state: dict | None = None) -> Path:
        """Write a checkpoint (atomically): the policy, the heads, and the full training
        state (optimizer moments, random-number generators, step, `driver_state`)."""

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
                "driver": driver_state or {},
            }, indent=2))

        return save_checkpoint(self.model, self.tokenizer, folder, heads=self.heads, extra=extra)

    def restore(self, folder: str | os.PathLike) -> dict:
        """Load a checkpoint written by `save` for the same algorithm; returns its driver state."""
        folder = Path(folder)
        meta = read_meta(folder)
        if meta.algo != self.config.algo:
            raise CheckpointError(f"{folder}: a checkpoint of {meta.algo}, not of {self.config.algo}")
        if meta.task != self.config.task:
            raise CheckpointError(f"{folder}: a checkpoint of task {meta.task}, not of {self.config.task}")
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
        return state.get("driver", {})
