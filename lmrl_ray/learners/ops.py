"""Masked tensor operations the algorithms share (STYLE 9: a shared substrate, each
algorithm's math in its own file)."""

from __future__ import annotations

import math

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


def discounted_scan(x: torch.Tensor, discount: torch.Tensor, next_step: torch.Tensor) -> torch.Tensor:
    """The backward discounted recursion every return and advantage is made of, along the
    steps' chains (`next_step[n]` the index of the step after n, -1 at a chain's end):

        y_n = x_n + discount_n * y_{next_step[n]}      (y_n = x_n where next_step[n] = -1)

    x, discount, next_step: (N,); returns y (N,) in float64, with no gradient. GAE, the
    TD(lambda) targets and the return-to-go are this scan of their own x and discount.

    It runs by pointer doubling rather than a Python loop over steps: after k rounds each
    step holds the sum of its next 2^k discounted terms, the product of their discounts
    and the step 2^k ahead, so ceil(log2(longest chain)) rounds of (N,) gathers finish it.
    Chains must end (next_step need not point forward); float64 keeps the result equal to
    the sequential recursion's to float32 rounding, whatever the order of the additions."""
    N = x.shape[0]
    if not (x.shape == discount.shape == next_step.shape == (N,)):
        raise ValueError(f"discounted_scan: x, discount, next_step must all be (N,), got {tuple(x.shape)}, "
                         f"{tuple(discount.shape)}, {tuple(next_step.shape)}")
    if N and int(next_step.max()) >= N:
        raise ValueError(f"discounted_scan: next_step points past the {N} steps")
    c = discount.detach().double() * (next_step >= 0)  # (N,): the discount from y_{n+1} to y_n
    # Index N is a sentinel step past every chain's end: y = 0, c = 0, points to itself.
    sentinel = torch.full((1,), N, dtype=torch.long, device=next_step.device)
    ahead = torch.cat([torch.where(c != 0, next_step, N), sentinel])  # (N + 1,): the step 2^k ahead
    y = torch.cat([x.detach().double(), c.new_zeros(1)])  # (N + 1,): the sum of the next 2^k terms
    disc = torch.cat([c, c.new_zeros(1)])  # (N + 1,): the product of their discounts
    for _ in range(max(1, math.ceil(math.log2(N + 1))) + 1):
        if not bool((ahead[:N] < N).any()):
            break
        y = y + disc * y[ahead]  # uses the old disc and ahead: update y first
        disc = disc * disc[ahead]
        ahead = ahead[ahead]
    else:
        raise ValueError("discounted_scan: next_step has a cycle (a chain longer than the steps)")
    return y[:N]


def return_to_go(rewards: torch.Tensor, dones: torch.Tensor, next_step: torch.Tensor, *, gamma: float) -> torch.Tensor:
    """G_n = sum_k gamma^k r_{n+k} along each episode's steps, all (N,) (MC Returns' target),
    in the dtype of `rewards`."""
    return discounted_scan(rewards, gamma * (1.0 - dones.double()), next_step).to(rewards.dtype)


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
    `lam` is one number or one per step (N,); `v_next` is 0 where a chain ends. No gradient
    flows into the targets."""
    lams = lam.double() if isinstance(lam, torch.Tensor) else torch.full(rewards.shape, float(lam), dtype=torch.float64)
    if lams.shape != rewards.shape:
        raise ValueError(f"lambda_returns: {lams.numel()} lambdas for {rewards.numel()} steps")
    if bool(((lams < 0) | (lams > 1)).any()):
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    if not bool(lams.any()):
        return rewards + gamma * (1.0 - dones) * v_next
    keep = gamma * (1.0 - dones.double())  # (N,): gamma * (1 - done_n)
    x = rewards.double() + keep * (1.0 - lams) * v_next.detach().double()  # (N,): what stays at step n
    return discounted_scan(x, keep * lams, next_step).to(rewards.dtype)
