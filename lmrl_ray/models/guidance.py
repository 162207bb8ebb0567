"""Value-guided logits: a learner's heads applied to a model's hidden states and logits.

ILQL and MC Returns act by reweighting the language model they were trained beside, not
by a policy of their own; this is that reweighting, kept with the heads it reads so that
any engine that exposes its last hidden state can decode with it (`HFEngine` does).
"""

from __future__ import annotations

import math

import torch

from lmrl_ray.models.heads import ILQLHeads


class ValueGuidance:
    """Value-guided logits for ILQL and MC Returns: `logits + beta * (Q - V)`.

    ILQL's policy extraction (Snell et al., 2023, "Offline RL for Natural Language
    Generation with Implicit Language Q Learning", sec. 4): pi(a|s) is proportional to
    pi_beta(a|s) * exp(beta * (Q(s, a) - V(s))), with pi_beta the engine's (BC-trained)
    language model. Q is the minimum of the two *target* Q heads, as in the paper's
    release: the target heads are the slowly moving averages the learner bootstraps
    from, the least noisy estimate it has, and the minimum counters over-estimation.
    LMRL-Gym's MC Returns extracts its policy the same way, so it uses the same heads.

    `heads` is an `lmrl_ray.models.ILQLHeads` (or any module with its layout:
    `target_q1`, `target_q2` hidden -> vocab, `v` hidden -> one value, squeezed), applied
    to the model's last hidden state: after the final layer norm, the input of the
    language-model head. The learners must train the heads on that same hidden state.
    Only the target Q heads and the V head are evaluated.

    `support_min_p` > 0 keeps the guidance to the behaviour policy's support: a token
    whose pi_beta probability is below `support_min_p` times the most likely token's
    gets probability 0 (min-p filtering on pi_beta). The heads are trained only on the
    data's actions; on a token the data never took at that state, Q is whatever the
    initialisation and generalisation left, while V has learned the (negative) returns,
    so beta * (Q - V) there is large noise that outweighs pi_beta: unrestricted, maze
    policies of ILQL and MC Returns sampled a newline or other non-moves at nearly every
    turn. 0 disables the restriction.
    """

    def __init__(self, heads: ILQLHeads, beta: float, *, support_min_p: float = 0.0):
        if not 0.0 <= support_min_p <= 1.0:
            raise ValueError(f"support_min_p must be in [0, 1], got {support_min_p}")
        self.heads = heads
        self.beta = float(beta)
        self.support_min_p = float(support_min_p)

    def __call__(self, hidden: torch.Tensor, logits: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """hidden (..., H), logits (..., V), tokens (...): the last token each state read
        (for heads that standardise by it) -> guided logits (..., V)."""
        hidden = hidden.to(next(self.heads.parameters()).dtype)
        if hasattr(self.heads, "input_norm"):
            hidden = self.heads.input_norm(hidden, tokens)
        q = torch.minimum(self.heads.target_q1(hidden), self.heads.target_q2(hidden))  # (..., V)
        v = self.heads.v(hidden)[..., None]  # (..., 1): V(s_t), broadcast over the vocabulary
        guided = logits + self.beta * (q - v).float()
        if self.support_min_p > 0.0:
            # pi_beta(a) < min_p * max pi_beta  <=>  logit(a) < max logit + log(min_p)
            floor = logits.float().amax(dim=-1, keepdim=True) + math.log(self.support_min_p)  # (..., 1)
            guided = guided.masked_fill(logits < floor, float("-inf"))
        return guided


__all__ = ["ValueGuidance"]
