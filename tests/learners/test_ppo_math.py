"""PPO's math (lmrl_ray.learners.ppo_math) against plain-Python loops and hand-computed
numbers, on hand-built tensors in the compact agent-step layout of the collate."""

from __future__ import annotations

import math
import random

import pytest
import torch

from lmrl_ray.learners.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    gae,
    kl_penalty_rewards,
    ppo_loss,
    whiten,
)


def compact_layout(lengths):
    """next_step and dones for episodes of these lengths listed one after another (as the
    collate lists them): next_step = n + 1 inside an episode, -1 and done = 1 at its end,
    however it ended (the turn cap too: the time limit is not part of the state)."""
    next_step, dones = [], []
    for length in lengths:
        start = len(next_step)
        for k in range(length):
            last = k == length - 1
            next_step.append(-1 if last else start + k + 1)
            dones.append(1.0 if last else 0.0)
    return torch.tensor(next_step), torch.tensor(dones, dtype=torch.float64)


def naive_gae(rewards, values, next_step, dones, gamma, lam):
    """The recursion of Schulman et al. 2016, one step at a time, backwards (next_step
    points forward, so A_{t+1} is known when A_t is computed)."""
    n = len(rewards)
    adv = [0.0] * n
    for t in reversed(range(n)):
        nxt = next_step[t]
        has_next = nxt >= 0 and not dones[t]
        v_next = values[nxt] if has_next else 0.0
        delta = rewards[t] + gamma * v_next - values[t]
        adv[t] = delta + (gamma * lam * adv[nxt] if has_next else 0.0)
    return adv, [a + v for a, v in zip(adv, values)]


def return_to_go(rewards, next_step, gamma):
    """The collate's `returns`: sum_k gamma^k r_{n+k} along next_step."""
    out = [0.0] * len(rewards)
    for t in reversed(range(len(rewards))):
        out[t] = rewards[t] + (gamma * out[next_step[t]] if next_step[t] >= 0 else 0.0)
    return out


@pytest.mark.parametrize("gamma, lam", [(1.0, 1.0), (0.99, 0.95), (0.9, 0.0), (0.5, 0.7), (1.0, 0.9)])
def test_gae_matches_the_naive_recursion_on_random_episodes(gamma, lam):
    rng = random.Random(int(gamma * 100 + lam * 10))
    lengths = [rng.randint(1, 40) for _ in range(12)] + [1, 25]
    # The last episode stands for one cut by the turn cap: done = 1 at its last step all the
    # same, so it bootstraps from nothing.
    next_step, dones = compact_layout(lengths)
    N = len(next_step)
    rewards = torch.tensor([rng.choice([0.0, 0.0, 0.0, -1.0, 1.0, rng.uniform(-2, 2)]) for _ in range(N)],
                           dtype=torch.float64)
    values = torch.tensor([rng.uniform(-3, 3) for _ in range(N)], dtype=torch.float64)
    adv, ret = gae(rewards, values, next_step, dones, gamma=gamma, lam=lam)
    exp_adv, exp_ret = naive_gae(rewards.tolist(), values.tolist(), next_step.tolist(), dones.tolist(), gamma, lam)
    assert adv.tolist() == pytest.approx(exp_adv, abs=1e-6)
    assert ret.tolist() == pytest.approx(exp_ret, abs=1e-6)


def test_gae_follows_next_step_rather_than_adjacency():
    """Two episodes interleaved (steps of each listed in order, next_step pointing
    forward over the other's steps); bool dones; float32 in and out."""
    next_step = torch.tensor([2, 3, 4, -1, -1])  # episode a: 0 -> 2 -> 4; episode b: 1 -> 3
    dones = torch.tensor([False, False, False, True, True])
    rewards = torch.tensor([0.5, 0.0, -1.0, 2.0, 1.0])
    values = torch.tensor([1.0, -1.0, 0.5, 0.25, 2.0])
    adv, ret = gae(rewards, values, next_step, dones, gamma=0.9, lam=0.8)
    exp_adv, exp_ret = naive_gae(rewards.tolist(), values.tolist(), next_step.tolist(), dones.tolist(), 0.9, 0.8)
    assert adv.dtype == torch.float32 and ret.dtype == torch.float32
    assert adv.tolist() == pytest.approx(exp_adv, abs=1e-6)
    assert ret.tolist() == pytest.approx(exp_ret, abs=1e-6)


def test_gae_by_hand_on_two_episodes_of_two_and_three_steps():
    # Episode 1: steps 0, 1; episode 2: steps 2, 3, 4. gamma = 0.5, lam = 0.5 (gamma * lam = 0.25).
    rewards = torch.tensor([0.0, 1.0, 0.0, 0.0, 2.0])
    values = torch.tensor([0.5, 1.0, 1.0, 2.0, 1.0])
    next_step = torch.tensor([1, -1, 3, 4, -1])
    dones = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0])
    # delta_1 = 1 - 1 = 0                       A_1 = 0
    # delta_0 = 0 + 0.5 * 1.0 - 0.5 = 0         A_0 = 0 + 0.25 * 0 = 0
    # delta_4 = 2 - 1 = 1                       A_4 = 1
    # delta_3 = 0 + 0.5 * 1.0 - 2.0 = -1.5      A_3 = -1.5 + 0.25 * 1 = -1.25
    # delta_2 = 0 + 0.5 * 2.0 - 1.0 = 0         A_2 = 0 + 0.25 * -1.25 = -0.3125
    # R = A + V = [0.5, 1.0, 0.6875, 0.75, 2.0]
    adv, ret = gae(rewards, values, next_step, dones, gamma=0.5, lam=0.5)
    assert adv.tolist() == pytest.approx([0.0, 0.0, -0.3125, -1.25, 1.0])
    assert ret.tolist() == pytest.approx([0.5, 1.0, 0.6875, 0.75, 2.0])


def test_gae_with_lam_one_is_the_return_to_go_and_with_lam_zero_one_step_td():
    torch.manual_seed(0)
    next_step, dones = compact_layout([3, 7, 1, 5])
    N = len(next_step)
    rewards = torch.randn(N, dtype=torch.float64)
    values = torch.randn(N, dtype=torch.float64)
    gamma = 0.9
    _, ret = gae(rewards, values, next_step, dones, gamma=gamma, lam=1.0)
    assert ret.tolist() == pytest.approx(return_to_go(rewards.tolist(), next_step.tolist(), gamma), abs=1e-9)
    adv, ret = gae(rewards, values, next_step, dones, gamma=gamma, lam=0.0)
    v_next = torch.where(next_step >= 0, values[next_step.clamp(min=0)], torch.zeros(N, dtype=torch.float64))
    td = rewards + gamma * (1 - dones) * v_next - values
    assert torch.allclose(adv, td) and torch.allclose(ret, rewards + gamma * (1 - dones) * v_next)


def test_gae_takes_no_gradient_and_rejects_a_cycle():
    values = torch.tensor([1.0, 2.0], requires_grad=True)
    adv, ret = gae(torch.zeros(2), values, torch.tensor([1, -1]), torch.tensor([0.0, 1.0]), gamma=1.0, lam=1.0)
    assert not adv.requires_grad and not ret.requires_grad
    with pytest.raises(ValueError, match="cycle"):
        gae(torch.zeros(2), torch.zeros(2), torch.tensor([1, 0]), torch.zeros(2), gamma=1.0, lam=1.0)


def test_gae_on_twenty_thousand_steps_of_long_episodes_matches_the_recursion():
    """A PPO iteration's size, episodes up to 600 steps: pointer doubling takes log2 rounds,
    and its sums still equal the sequential recursion's (its speed: benchmarks/scan.py)."""
    rng = random.Random(0)
    lengths = []
    while sum(lengths) < 20_000:
        lengths.append(rng.randint(1, 600))
    lengths[-1] -= sum(lengths) - 20_000
    next_step, dones = compact_layout([x for x in lengths if x > 0])
    torch.manual_seed(0)
    rewards, values = torch.randn(20_000), torch.randn(20_000)
    adv, ret = gae(rewards, values, next_step, dones, gamma=0.99, lam=0.95)
    exp_adv, exp_ret = naive_gae(rewards.tolist(), values.tolist(), next_step.tolist(), dones.tolist(), 0.99, 0.95)
    assert adv.tolist() == pytest.approx(exp_adv, abs=1e-4) and ret.tolist() == pytest.approx(exp_ret, abs=1e-4)


def test_whiten_gives_mean_zero_and_std_one_over_the_mask():
    torch.manual_seed(0)
    x = torch.randn(8, dtype=torch.float64) * 3 + 5
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    w = whiten(x, mask)[mask.bool()]
    assert w.mean().item() == pytest.approx(0.0, abs=1e-9)
    assert w.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)
    w = whiten(x)
    assert w.mean().item() == pytest.approx(0.0, abs=1e-9)
    assert w.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)
    unshifted = whiten(x, mask, shift_mean=False)[mask.bool()]
    assert unshifted.mean().item() == pytest.approx(x[mask.bool()].mean().item(), abs=1e-9)
    assert unshifted.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)


def test_kl_penalty_rewards_by_hand():
    rewards = torch.tensor([0.0, 0.0, 1.0])
    logprobs = torch.tensor([-1.0, -2.0, -0.5])
    ref_logprobs = torch.tensor([-1.5, -1.0, -0.5])
    # kl = [0.5, -1.0, 0.0]; r' = r - 0.1 * kl = [-0.05, 0.1, 1.0]
    penalised, kl = kl_penalty_rewards(rewards, logprobs, ref_logprobs, kl_coef=0.1)
    assert kl.tolist() == pytest.approx([0.5, -1.0, 0.0])
    assert penalised.tolist() == pytest.approx([-0.05, 0.1, 1.0])


def test_adaptive_kl_controller_moves_toward_the_target_at_most_twenty_percent():
    c = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    c.update(6.6, n_steps=1000)  # e = 0.1 -> beta * 1.1
    assert c.value == pytest.approx(0.11)
    c.update(100.0, n_steps=1000)  # e clipped to 0.2 -> beta * 1.2
    assert c.value == pytest.approx(0.132)
    c.update(100.0, n_steps=500)  # half a horizon: beta * 1.1
    assert c.value == pytest.approx(0.1452)
    c.update(0.0, n_steps=1000)  # e clipped to -0.2 -> beta * 0.8
    assert c.value == pytest.approx(0.11616)
    c.update(3.0, n_steps=100)  # e = -0.5 clipped to -0.2, K = 0.1 -> beta * 0.98
    assert c.value == pytest.approx(0.1138368)
    before = c.value
    c.update(6.0, n_steps=1000)  # at the target: unchanged
    assert c.value == pytest.approx(before)
    restored = AdaptiveKLController(0.5, target=6.0, horizon=1000)
    restored.load_state_dict(c.state_dict())
    assert restored.value == c.value


def test_fixed_kl_controller_never_moves():
    c = FixedKLController(0.05)
    for kl in (0.0, 1.0, 100.0):
        c.update(kl, n_steps=10_000)
    assert c.value == 0.05
    assert c.state_dict() == {"value": 0.05}


def test_ppo_on_policy_has_ratio_one_and_policy_loss_minus_mean_advantage():
    torch.manual_seed(0)
    logprobs = torch.randn(8)
    advantages = torch.randn(8)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    values = torch.randn(8)
    loss, m = ppo_loss(logprobs, logprobs.clone(), advantages, values, values.clone(), values.clone(), mask,
                       clip_ratio=0.2, value_clip=0.2, vf_coef=0.5)
    assert m["ppo/ratio_mean"] == pytest.approx(1.0)
    assert m["ppo/clipfrac"] == 0.0 and m["ppo/approx_kl"] == pytest.approx(0.0, abs=1e-7)
    assert m["ppo/value_loss"] == pytest.approx(0.0)
    assert m["ppo/policy_loss"] == pytest.approx(-advantages[mask.bool()].mean().item(), rel=1e-6)
    assert loss.item() == pytest.approx(m["ppo/policy_loss"], rel=1e-6)


# Two sequences of four steps, flattened to (8,); step 3 and step 7 are masked out.
LOG_RATIOS = torch.log(torch.tensor([1.5, 0.5, 1.5, 3.0, 0.5, 1.1, 0.9, 9.0]))
ADVANTAGES = torch.tensor([2.0, 1.0, -1.0, 5.0, -2.0, 3.0, -4.0, 1.0])
MASK = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0])


def test_ppo_clipped_surrogate_by_hand():
    old = torch.tensor([-1.0, -2.0, -0.5, -3.0, -1.5, -0.2, -0.7, -2.5])
    logprobs = old + LOG_RATIOS
    v = torch.zeros(8)
    loss, m = ppo_loss(logprobs, old, ADVANTAGES, v, v, v, MASK, clip_ratio=0.2, value_clip=0.0, vf_coef=1.0)
    # step  rho  A    rho*A   clip(rho)*A   -min            |rho-1| > 0.2   (rho-1) - log rho
    # 0     1.5   2    3.0    1.2*2 = 2.4   -2.4            yes             0.5 - log 1.5
    # 1     0.5   1    0.5    0.8*1 = 0.8   -0.5            yes             -0.5 - log 0.5
    # 2     1.5  -1   -1.5    1.2*-1 = -1.2  1.5            yes             0.5 - log 1.5
    # 4     0.5  -2   -1.0    0.8*-2 = -1.6  1.6            yes             -0.5 - log 0.5
    # 5     1.1   3    3.3    1.1*3 = 3.3   -3.3            no              0.1 - log 1.1
    # 6     0.9  -4   -3.6    0.9*-4 = -3.6  3.6            no              -0.1 - log 0.9
    # policy loss = (-2.4 - 0.5 + 1.5 + 1.6 - 3.3 + 3.6) / 6 = 0.5 / 6
    assert m["ppo/policy_loss"] == pytest.approx(0.5 / 6, rel=1e-5)
    assert loss.item() == pytest.approx(0.5 / 6, rel=1e-5)
    assert m["ppo/clipfrac"] == pytest.approx(4 / 6)
    kl = sum(r - 1 - math.log(r) for r in (1.5, 0.5, 1.5, 0.5, 1.1, 0.9)) / 6
    assert m["ppo/approx_kl"] == pytest.approx(kl, rel=1e-5)
    assert m["ppo/ratio_mean"] == pytest.approx((1.5 + 0.5 + 1.5 + 0.5 + 1.1 + 0.9) / 6, rel=1e-6)


def test_ppo_value_clipping_takes_the_max():
    zeros = torch.zeros(8)
    old_v = torch.tensor([0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 0.0, 0.0])
    v = torch.tensor([1.0, -1.0, 1.1, 9.0, 1.0, 0.5, 0.0, 0.0])
    returns = torch.tensor([0.5, 1.0, 1.0, 0.0, 0.0, 0.5, 1.0, 0.0])
    # value_clip = 0.2: V_clip = old_V + clip(V - old_V, -0.2, 0.2)
    # step  V     old  R    (V-R)^2   V_clip  (V_clip-R)^2  max
    # 0     1.0   0.0  0.5  0.25      0.2     0.09          0.25
    # 1    -1.0   0.0  1.0  4.0      -0.2     1.44          4.0
    # 2     1.1   1.0  1.0  0.01      1.1     0.01          0.01
    # 4     1.0   2.0  0.0  1.0       1.8     3.24          3.24   (the clipped one is larger)
    # 5     0.5   0.0  0.5  0.0       0.2     0.09          0.09   (the clipped one is larger)
    # 6     0.0   0.0  1.0  1.0       0.0     1.0           1.0
    # value loss = 0.5 * (0.25 + 4 + 0.01 + 3.24 + 0.09 + 1) / 6 = 0.5 * 8.59 / 6
    _, m = ppo_loss(zeros, zeros, zeros, v, old_v, returns, MASK, clip_ratio=0.2, value_clip=0.2, vf_coef=0.5)
    assert m["ppo/value_loss"] == pytest.approx(0.5 * 8.59 / 6, rel=1e-5)
    assert m["ppo/loss"] == pytest.approx(0.5 * 0.5 * 8.59 / 6, rel=1e-5)
    assert m["ppo/value_clipfrac"] == pytest.approx(4 / 6)  # steps 0, 1, 4, 5
    assert m["ppo/value_mean"] == pytest.approx((1.0 - 1.0 + 1.1 + 1.0 + 0.5 + 0.0) / 6, rel=1e-6)
    # value_clip <= 0: plain squared error, 0.5 * (0.25 + 4 + 0.01 + 1 + 0 + 1) / 6
    _, m = ppo_loss(zeros, zeros, zeros, v, old_v, returns, MASK, clip_ratio=0.2, value_clip=0.0, vf_coef=0.5)
    assert m["ppo/value_loss"] == pytest.approx(0.5 * 6.26 / 6, rel=1e-5)


def test_ppo_gradient_flows_to_logprobs_and_values_only():
    logprobs = torch.full((8,), -1.0, requires_grad=True)
    old_logprobs = torch.full((8,), -1.1, requires_grad=True)
    advantages = ADVANTAGES.clone().requires_grad_(True)
    values = torch.ones(8, requires_grad=True)
    old_values = torch.zeros(8, requires_grad=True)
    returns = torch.full((8,), 2.0, requires_grad=True)
    loss, _ = ppo_loss(logprobs, old_logprobs, advantages, values, old_values, returns, MASK,
                       clip_ratio=0.2, value_clip=10.0, vf_coef=0.5)
    loss.backward()
    assert logprobs.grad.abs().sum() > 0 and values.grad.abs().sum() > 0
    assert old_logprobs.grad is None and old_values.grad is None
    assert advantages.grad is None and returns.grad is None
    assert logprobs.grad[MASK == 0].abs().sum() == 0  # masked steps take no gradient
