"""Masked tensor operations the algorithms share (STYLE 9: a shared substrate, each
algorithm's math in its own file)."""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of `x` over the entries where `mask` is 1 (0 when the mask is empty)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def gather_actions(values: torch.Tensor, actions: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """The value of each step's action: values (..., V), actions (...) -> (...).

    With `index`, `values` holds one row per distinct state, (U, V), and step n reads
    row index[n]: values[index[n], actions[n]], without building an (N, V) tensor."""
    if index is not None:
        return values[index, actions]
    return values.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def token_cross_entropy(logits: torch.Tensor, actions: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """-log softmax(logits)[a] per step: logits (..., V), actions (...) -> (...); `index`
    as in `gather_actions`."""
    logits = logits.float()
    log_z = torch.logsumexp(logits, dim=-1)
    if index is not None:
        log_z = log_z[index]
    return log_z - gather_actions(logits, actions, index)


def next_state_values(v: torch.Tensor, next_step: torch.Tensor) -> torch.Tensor:
    """V(s_{t+1}) for every step: v (...), next_step (...) flat indices into v, or -1 at
    the end of an episode -> (...), 0 where there is no next state."""
    has_next = next_step >= 0
    return torch.where(has_next, v.flatten()[next_step.clamp(min=0)], torch.zeros_like(v))


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """`x` in the forward pass; `scale` times its gradient in the backward pass."""
    if scale == 1.0:
        return x
    detached = x.detach()
    return detached + scale * (x - detached)


def lambda_returns(
    rewards: torch.Tensor,
    v_next: torch.Tensor,
    dones: torch.Tensor,
    next_step: torch.Tensor,
    *,
    gamma: float,
    lam: float | torch.Tensor,
) -> torch.Tensor:
    """TD(lambda) targets per step, all (N,), steps chained by `next_step` (-1 at an end):

        y_n = r_n + gamma * (1 - done_n) * ((1 - lam_n) * V(s_{n+1}) + lam_n * y_{next_step[n]})

    lam = 0 is the one-step target r + gamma * V(s'); lam = 1 the discounted return-to-go.
    `lam` is one number or one per step (N,). `next_step[n]` must be greater than n (the
    collate lists steps in episode order)."""
    lams = lam.tolist() if isinstance(lam, torch.Tensor) else [float(lam)] * len(rewards)
    if len(lams) != len(rewards):
        raise ValueError(f"lambda_returns: {len(lams)} lambdas for {len(rewards)} steps")
    if not all(0.0 <= x <= 1.0 for x in lams):
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    if not any(lams):
        return rewards + gamma * (1.0 - dones) * v_next
    r, v, d, nxt = rewards.tolist(), v_next.tolist(), dones.tolist(), next_step.tolist()
    y = [0.0] * len(r)
    for n in range(len(r) - 1, -1, -1):
        if d[n] or nxt[n] < 0:
            y[n] = r[n]
            continue
        if nxt[n] <= n:
            raise ValueError(f"lambda_returns: step {n} is followed by step {nxt[n]}, not a later one")
        y[n] = r[n] + gamma * ((1.0 - lams[n]) * v[n] + lams[n] * y[nxt[n]])
    return torch.tensor(y, dtype=rewards.dtype, device=rewards.device)
