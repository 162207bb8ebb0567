"""The losses on hand-built 2x4 tensors against values computed by hand (plain Python)."""

from __future__ import annotations

import math

import pytest
import torch

from lmrl_ray.learners.bc import bc_loss
from lmrl_ray.learners.ilql import expectile_loss, ilql_loss
from lmrl_ray.learners.mc import mc_loss
from lmrl_ray.learners.ops import (
    discounted_scan,
    lambda_returns,
    next_state_values,
    scale_gradient,
)

# Two sequences of four steps over a vocabulary of three tokens.
LOGITS = torch.tensor([
    [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.5, 0.5, 0.5], [0.0, 0.0, 3.0]],
    [[2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.0, 1.0, 0.0]],
])
ACTIONS = torch.tensor([[0, 1, 2, 2], [1, 0, 2, 1]])
MASK = torch.tensor([[0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]])


def log_softmax(row, a):
    return row[a] - math.log(sum(math.exp(x) for x in row))


def steps():
    for b in range(2):
        for t in range(4):
            if MASK[b, t]:
                yield b, t


def test_bc_loss_is_the_mean_negative_log_likelihood_of_agent_tokens():
    loss, metrics = bc_loss(LOGITS, ACTIONS, MASK)
    nll = [-log_softmax(LOGITS[b, t].tolist(), int(ACTIONS[b, t])) for b, t in steps()]
    assert loss.item() == pytest.approx(sum(nll) / 6, rel=1e-6)
    # argmax hits: (0,1) yes, (0,2) tie -> 0 != 2, (0,3) yes, (1,0) 0 != 1, (1,1) yes, (1,2) yes
    assert metrics["bc/accuracy"] == pytest.approx(4 / 6)


def test_expectile_loss_at_one_half_is_half_the_squared_error():
    u = torch.tensor([[-2.0, -0.5, 0.0, 1.5], [3.0, -1.0, 0.25, -4.0]])
    assert torch.allclose(expectile_loss(u, 0.5), 0.5 * u**2)
    # tau = 0.7 weighs positive errors 0.7 and negative ones 0.3.
    assert expectile_loss(torch.tensor([2.0, -2.0]), 0.7).tolist() == pytest.approx([2.8, 1.2])


def test_ilql_loss_matches_the_paper_equations_computed_by_hand():
    torch.manual_seed(0)
    q1, q2 = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    tq1, tq2 = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    v = torch.randn(2, 4)
    rewards = torch.tensor([[0.0, 0.0, 0.0, -1.0], [0.0, -1.0, 1.0, 0.0]])
    dones = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    next_step = torch.tensor([[-1, 2, 3, -1], [5, 6, -1, -1]])  # flat indices into (2 * 4)
    v_next = next_state_values(v, next_step)
    gamma, tau, cql = 0.9, 0.7, 0.5
    loss, metrics = ilql_loss(q1, q2, tq1, tq2, v, v_next, ACTIONS, rewards, dones, MASK,
                              gamma=gamma, tau=tau, cql_weight=cql)
    flat_v = v.flatten().tolist()
    q_terms, v_terms, cql_terms = [], [], []
    for b, t in steps():
        a = int(ACTIONS[b, t])
        nxt = int(next_step[b, t])
        y = float(rewards[b, t]) + gamma * (1 - float(dones[b, t])) * (flat_v[nxt] if nxt >= 0 else 0.0)
        q_terms.append((float(q1[b, t, a]) - y) ** 2 + (float(q2[b, t, a]) - y) ** 2)
        u = min(float(tq1[b, t, a]), float(tq2[b, t, a])) - float(v[b, t])
        v_terms.append((tau if u >= 0 else 1 - tau) * u * u)
        cql_terms.append(-log_softmax(q1[b, t].tolist(), a) - log_softmax(q2[b, t].tolist(), a))
    q_loss, v_loss, cql_loss = (sum(x) / 6 for x in (q_terms, v_terms, cql_terms))
    assert metrics["ilql/q_loss"] == pytest.approx(q_loss, rel=1e-5)
    assert metrics["ilql/v_loss"] == pytest.approx(v_loss, rel=1e-5)
    assert metrics["ilql/cql_loss"] == pytest.approx(cql_loss, rel=1e-5)
    assert loss.item() == pytest.approx(q_loss + v_loss + cql * cql_loss, rel=1e-5)


def test_ilql_gradients_do_not_flow_into_the_bootstrap_or_the_targets():
    q1 = torch.zeros(2, 4, 3, requires_grad=True)
    v = torch.zeros(2, 4, requires_grad=True)
    tq = torch.ones(2, 4, 3, requires_grad=True)
    v_next = torch.ones(2, 4, requires_grad=True)
    loss, _ = ilql_loss(q1, q1, tq, tq, v, v_next, ACTIONS, torch.zeros(2, 4), torch.zeros(2, 4), MASK,
                        gamma=0.99, tau=0.7, cql_weight=0.0)
    loss.backward()
    assert v_next.grad is None and tq.grad is None
    assert q1.grad.abs().sum() > 0 and v.grad.abs().sum() > 0


def test_lambda_returns_by_hand_and_at_their_limits():
    # Two episodes: steps 0 -> 1 -> 2 (done) and 3 -> 4 (cut off by the turn cap: no next step).
    rewards = torch.tensor([0.0, -1.0, 0.0, -1.0, -1.0])
    v_next = torch.tensor([2.0, 4.0, 9.0, 8.0, 7.0])  # V(s_{n+1}); ignored where the step ends
    dones = torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0])
    next_step = torch.tensor([1, 2, -1, 4, -1])
    g, lam = 0.9, 0.5
    y2 = 0.0
    y1 = -1.0 + g * ((1 - lam) * 4.0 + lam * y2)
    y0 = 0.0 + g * ((1 - lam) * 2.0 + lam * y1)
    y4 = -1.0
    y3 = -1.0 + g * ((1 - lam) * 8.0 + lam * y4)
    got = lambda_returns(rewards, v_next, dones, next_step, gamma=g, lam=lam)
    assert got.tolist() == pytest.approx([y0, y1, y2, y3, y4])
    one_step = lambda_returns(rewards, v_next, dones, next_step, gamma=g, lam=0.0)
    assert one_step.tolist() == pytest.approx((rewards + g * (1 - dones) * v_next).tolist())
    monte_carlo = lambda_returns(rewards, v_next, dones, next_step, gamma=g, lam=1.0)
    assert monte_carlo.tolist() == pytest.approx([-0.9, -1.0, 0.0, -1.9, -1.0])
    with pytest.raises(ValueError, match="lambda"):
        lambda_returns(rewards, v_next, dones, next_step, gamma=g, lam=1.5)
    # One lambda per step: 1 inside a turn (steps 0 and 3 here), 0 where it ends.
    per_step = lambda_returns(rewards, v_next, dones, next_step, gamma=g, lam=torch.tensor([1.0, 0, 0, 1, 0]))
    z1, z4 = -1.0 + g * 4.0, -1.0
    assert per_step.tolist() == pytest.approx([0.0 + g * z1, z1, 0.0, -1.0 + g * z4, z4])
    with pytest.raises(ValueError, match="2 lambdas for 5 steps"):
        lambda_returns(rewards, v_next, dones, next_step, gamma=g, lam=torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="cycle"):
        lambda_returns(rewards, v_next, dones, torch.tensor([1, 0, -1, 4, -1]), gamma=g, lam=lam)


def test_ilql_loss_with_td_lambda_regresses_q_on_the_lambda_returns():
    torch.manual_seed(2)
    q1, q2, tq1, tq2 = (torch.randn(5, 3) for _ in range(4))
    v = torch.randn(5)
    actions = torch.tensor([0, 2, 1, 1, 0])
    rewards = torch.tensor([0.0, -1.0, 0.0, -1.0, -1.0])
    dones = torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0])
    next_step = torch.tensor([1, 2, -1, 4, -1])
    v_next = next_state_values(v, next_step)
    _, metrics = ilql_loss(q1, q2, tq1, tq2, v, v_next, actions, rewards, dones, torch.ones(5),
                           gamma=0.9, tau=0.7, cql_weight=0.0, next_step=next_step, td_lambda=0.5)
    y = lambda_returns(rewards, v_next, dones, next_step, gamma=0.9, lam=0.5)
    q_a = lambda q: q.gather(1, actions[:, None])[:, 0]
    expected = ((q_a(q1) - y) ** 2 + (q_a(q2) - y) ** 2).mean().item()
    assert metrics["ilql/q_loss"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="next_step"):
        ilql_loss(q1, q2, tq1, tq2, v, v_next, actions, rewards, dones, torch.ones(5),
                  gamma=0.9, tau=0.7, cql_weight=0.0, td_lambda=0.5)


def test_scale_gradient_keeps_the_value_and_scales_the_gradient():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = scale_gradient(x, 0.25)
    assert y.tolist() == [1.0, -2.0, 3.0]
    (y * torch.tensor([4.0, 8.0, -4.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, -1.0]


def test_mc_loss_regresses_q_and_v_on_the_return_to_go():
    torch.manual_seed(1)
    q1, q2, v = torch.randn(2, 4, 3), torch.randn(2, 4, 3), torch.randn(2, 4)
    returns = torch.tensor([[0.0, -2.0, -1.5, -1.0], [1.0, 0.5, 2.0, 0.0]])
    loss, metrics = mc_loss(q1, q2, v, returns, ACTIONS, MASK, cql_weight=0.1)
    q_terms, v_terms, cql_terms = [], [], []
    for b, t in steps():
        a, g = int(ACTIONS[b, t]), float(returns[b, t])
        q_terms.append((float(q1[b, t, a]) - g) ** 2 + (float(q2[b, t, a]) - g) ** 2)
        v_terms.append((float(v[b, t]) - g) ** 2)
        cql_terms.append(-log_softmax(q1[b, t].tolist(), a) - log_softmax(q2[b, t].tolist(), a))
    expected = sum(q_terms) / 6 + sum(v_terms) / 6 + 0.1 * sum(cql_terms) / 6
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert metrics["mc/v_loss"] == pytest.approx(sum(v_terms) / 6, rel=1e-5)


def test_indexed_rows_give_the_same_losses_as_expanded_steps():
    """Steps that share a state read one row (the learner's shared states): same result."""
    torch.manual_seed(2)
    rows = torch.randn(3, 5)  # (U, V)
    index = torch.tensor([0, 1, 1, 2, 0, 2])
    actions = torch.tensor([4, 0, 3, 2, 1, 2])
    mask = torch.ones(6)
    expanded = rows[index]
    assert bc_loss(rows, actions, mask, index=index)[0].item() == pytest.approx(
        bc_loss(expanded, actions, mask)[0].item(), rel=1e-6)
    v, returns = torch.randn(6), torch.randn(6)
    assert mc_loss(rows, rows, v, returns, actions, mask, cql_weight=1.0, index=index)[0].item() == pytest.approx(
        mc_loss(expanded, expanded, v, returns, actions, mask, cql_weight=1.0)[0].item(), rel=1e-6)


def test_the_discounted_scan_by_hand_and_in_any_step_order():
    """y_n = x_n + discount_n * y_{next_step[n]}, the recursion GAE, the TD(lambda) targets
    and the return-to-go are made of; chains may be listed in any order."""
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    discount = torch.tensor([0.5, 0.1, 0.9, 2.0, 1.0])
    # Chains 4 -> 0 -> 2 (end) and 1 -> 3 (end): steps listed out of order.
    next_step = torch.tensor([2, 3, -1, -1, 0])
    y2, y3 = 3.0, 4.0
    y0 = 1.0 + 0.5 * y2
    y4 = 5.0 + 1.0 * y0
    y1 = 2.0 + 0.1 * y3
    y = discounted_scan(x, discount, next_step)
    assert y.dtype == torch.float64 and y.tolist() == pytest.approx([y0, y1, y2, y3, y4])
    # A long chain (pointer doubling takes log2 rounds) against the sequential recursion.
    n = 1000
    x, discount = torch.randn(n), torch.rand(n)
    chain = torch.cat([torch.arange(1, n), torch.tensor([-1])])
    want, acc = [0.0] * n, 0.0
    for k in range(n - 1, -1, -1):
        acc = x[k].item() + (discount[k].item() * acc if k < n - 1 else 0.0)
        want[k] = acc
    assert discounted_scan(x, discount, chain).tolist() == pytest.approx(want, rel=1e-9, abs=1e-9)
    with pytest.raises(ValueError, match="points past"):
        discounted_scan(x[:2], discount[:2], torch.tensor([5, -1]))
