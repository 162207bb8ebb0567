"""PPO's math at token level, as pure functions (STYLE 2): advantages, whitening, the KL
penalty and the clipped loss. The learner wires them; nothing here holds a model.

For every agent step t of the compact layout (`lmrl_ray.data.collate`: state s_t, action
a_t = the next agent token, r_t on the last token of each agent turn, `next_step` the
index of step t+1 or -1):

    r'_t    = r_t - beta * (log pi_old(a_t|s_t) - log pi_ref(a_t|s_t))     KL in the reward
    delta_t = r'_t + gamma * (1 - done_t) * V(s_{t+1}) - V(s_t)            TD residual
    A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1}               GAE
    R_t     = A_t + V(s_t)                                                  value target
    rho_t   = pi(a_t|s_t) / pi_old(a_t|s_t)
    L_CLIP  = E[-min(rho_t * A_t, clip(rho_t, 1 - eps, 1 + eps) * A_t)]
    L_VF    = E[0.5 * max((V - R)^2, (V_clip - R)^2)],  V_clip = V_old + clip(V - V_old, +-c)
    L_PPO   = L_CLIP + vf_coef * L_VF

(Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage
Estimation", eq. 10 and 16; Schulman et al. 2017, "Proximal Policy Optimization
Algorithms", eq. 7 and 9; the per-token KL penalty of Ziegler et al. 2019, "Fine-Tuning
Language Models from Human Preferences", eq. 2, and Ouyang et al. 2022, eq. 2, with the
adaptive coefficient of Ziegler et al. section 2.2.)
"""

from __future__ import annotations

import torch

from lmrl_ray.learners.ops import discounted_scan, masked_mean, next_state_values


@torch.no_grad()
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_step: torch.Tensor,
    dones: torch.Tensor,
    *,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over the compact agent-step layout (Schulman et
    al. 2016, eq. 16: A_t = sum_l (gamma * lam)^l delta_{t+l}, written as the recursion
    A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1} along `next_step`).

    rewards, values (V(s_t)), dones (float or bool): (N,); next_step: (N,) long, the
    index of the following step or -1. Returns (advantages A, returns R = A + V), both
    (N,) in the dtype of `values`, with no gradient: a `discounted_scan` of the residuals.
    """
    N = values.shape[0]
    if not (rewards.shape == values.shape == next_step.shape == dones.shape == (N,)):
        raise ValueError(
            f"gae: rewards, values, next_step, dones must all be (N,), got {tuple(rewards.shape)}, "
            f"{tuple(values.shape)}, {tuple(next_step.shape)}, {tuple(dones.shape)}"
        )
    v_t = values.detach().double()  # (N,): V(s_t)
    not_done = 1.0 - dones.detach().double()  # (N,): 1 - done_t
    v_tp1 = next_state_values(v_t, next_step)  # (N,): V(s_{t+1}), 0 where next_step == -1
    delta = rewards.detach().double() + gamma * not_done * v_tp1 - v_t  # (N,)
    advantages = discounted_scan(delta, gamma * lam * not_done, next_step)  # (N,): A_t
    returns = advantages + v_t
    return advantages.to(values.dtype), returns.to(values.dtype)


def whiten(
    x: torch.Tensor, mask: torch.Tensor | None = None, *, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) with the mean and the (population) variance taken over
    the entries where `mask` is 1 (all of them without a mask); entries outside the mask
    are transformed alike and carry no weight. With shift_mean=False the mean is added
    back (only the scale is normalised), as trl does for rewards. Any shape."""
    m = torch.ones_like(x) if mask is None else mask.to(x.dtype)
    mean = masked_mean(x, m)
    var = masked_mean((x - mean).square(), m)
    out = whiten_by(x, mean, var, eps=eps)
    return out if shift_mean else out + mean


def whiten_by(x: torch.Tensor, mean, var, *, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) with statistics taken elsewhere, such as over a whole
    data-parallel group's batch (floats or tensors); `whiten` takes them from x."""
    return (x - mean) * torch.rsqrt(torch.as_tensor(var + eps, dtype=x.dtype))


@torch.no_grad()
def kl_penalty_rewards(
    rewards: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, *, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The KL penalty folded into the reward, per token (Ziegler et al. 2019, eq. 2;
    Ouyang et al. 2022, eq. 2): r'_t = r_t - beta * kl_t with the sampled estimate
    kl_t = log pi_old(a_t|s_t) - log pi_ref(a_t|s_t). All (N,) (or any one shape);
    returns (r', kl), with no gradient."""
    kl = logprobs.detach() - ref_logprobs.detach()  # (N,): kl_t
    return rewards.detach() - kl_coef * kl, kl


class AdaptiveKLController:
    """beta adapted toward a target KL (Ziegler et al. 2019, section 2.2):

        e_t   = clip(KL_t / KL_target - 1, -0.2, 0.2)
        beta <- beta * (1 + K_beta * e_t),   K_beta = n_steps / horizon

    `value` is beta and the only state (`state_dict` is JSON)."""

    def __init__(self, init_kl_coef: float, *, target: float, horizon: int):
        if init_kl_coef < 0 or target <= 0 or horizon <= 0:
            raise ValueError(
                f"AdaptiveKLController: need init_kl_coef >= 0, target > 0, horizon > 0; got "
                f"{init_kl_coef}, {target}, {horizon}"
            )
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = horizon

    def update(self, observed_kl: float, n_steps: int) -> None:
        """After an iteration whose rollouts had mean KL `observed_kl` over `n_steps` steps
        (episodes or tokens: the unit of `horizon`)."""
        e_t = min(max(observed_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + e_t * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class FixedKLController:
    """A constant beta with the adaptive controller's interface."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, observed_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


def ppo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_ratio: float,
    value_clip: float,
    vf_coef: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped surrogate (Schulman et al. 2017, eq. 7) plus the clipped value loss
    (eq. 9's L_VF, clipped as in the PPO reference code); all inputs (N,) per step:
    logprobs log pi(a_t|s_t) and values V(s_t) of the model being trained, old_* from the
    rollout's policy, advantages A_t, returns R_t, mask 1 on steps that count. Gradient
    flows to `logprobs` and `values` only. value_clip <= 0 disables value clipping.

    Metrics: ppo/loss, ppo/policy_loss (L_CLIP), ppo/value_loss (L_VF), ppo/clipfrac
    (share of steps with |rho - 1| > clip_ratio), ppo/value_clipfrac (share with
    |V - V_old| > value_clip), ppo/approx_kl (E[(rho - 1) - log rho], Schulman's
    low-variance estimate of KL(pi_old || pi)), ppo/ratio_mean, ppo/value_mean."""
    old_logprobs, advantages = old_logprobs.detach(), advantages.detach()
    old_values, returns = old_values.detach(), returns.detach()
    log_rho = logprobs - old_logprobs  # (N,)
    rho = log_rho.exp()  # (N,): pi / pi_old
    surrogate = rho * advantages  # (N,)
    surrogate_clipped = rho.clamp(1.0 - clip_ratio, 1.0 + clip_ratio) * advantages
    policy_loss = masked_mean(-torch.minimum(surrogate, surrogate_clipped), mask)

    vf = (values - returns).square()  # (N,)
    if value_clip > 0:
        v_clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
        vf = torch.maximum(vf, (v_clipped - returns).square())
    value_loss = 0.5 * masked_mean(vf, mask)
    loss = policy_loss + vf_coef * value_loss

    with torch.no_grad():
        clipfrac = masked_mean(((rho - 1.0).abs() > clip_ratio).to(rho.dtype), mask)
        value_clipfrac = (
            masked_mean(((values - old_values).abs() > value_clip).to(values.dtype), mask) if value_clip > 0 else 0.0
        )
        approx_kl = masked_mean((rho - 1.0) - log_rho, mask)
        metrics = {
            "ppo/loss": loss.item(),
            "ppo/policy_loss": policy_loss.item(),
            "ppo/value_loss": value_loss.item(),
            "ppo/clipfrac": clipfrac.item(),
            "ppo/value_clipfrac": float(value_clipfrac),
            "ppo/approx_kl": approx_kl.item(),
            "ppo/ratio_mean": masked_mean(rho, mask).item(),
            "ppo/value_mean": masked_mean(values, mask).item(),
        }
    return loss, metrics
