"""What MC Returns and ILQL share: value heads on the language model and value-guided decoding.

Both put `ILQLHeads` (twin Q heads, their targets, a V head) on the model's final hidden
states, keep the language model the behaviour policy pi_beta with a BC term
(`bc_weight`), and act by sampling from pi_beta * exp(beta * (Q - V))
(`models.guidance.ValueGuidance`). Each keeps its own loss in its own file.
"""

from __future__ import annotations

import pyarrow as pa

from lmrl_ray.learners.algorithm import Algorithm
from lmrl_ray.learners.bc import with_bc_term
from lmrl_ray.models import ILQLHeads


class GuidedAlgorithm(Algorithm):
    """MC Returns and ILQL: `ILQLHeads` on the language model's final hidden states, a BC
    term that keeps the model the behaviour policy, and value-guided decoding."""

    decoding = "value-guided"

    def __init__(self, config):
        super().__init__(config)
        self.frozen_model = config.freeze_lm
        self.head_grad_scale = config.head_grad_scale
        self.feature_cache_mb = config.feature_cache_mb
        self.beta = config.beta

    def make_heads(self, hidden_size: int, vocab_size: int) -> ILQLHeads:
        return ILQLHeads(hidden_size, vocab_size, width=self.config.head_width or None)

    def setup(self, learner, dataset: pa.Table | None) -> None:
        """Fit the heads' input norm on the dataset's first episodes (`head_input_norm`),
        unless the heads came fitted from the starting checkpoint."""
        if self.config.head_input_norm and dataset is not None and not learner.heads.input_norm.fitted:
            learner.fit_head_input_norm(dataset.slice(0, self.config.head_input_norm_episodes).to_pylist())

    def with_bc_term(self, loss, metrics, states, batch):
        return with_bc_term(loss, metrics, states, batch, self.config.bc_weight)
