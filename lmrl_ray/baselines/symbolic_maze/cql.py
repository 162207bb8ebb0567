"""Discrete CQL on RLlib's DQN pieces: the loss, and the learner, config and algorithm.

RLlib 2.60's `CQL` extends SAC for continuous actions: with Discrete(4) it builds, then
its first `train()` fails in `DefaultCQLTorchRLModule._forward_train`, which draws
random actions from `action_space.low/high`; its `IQL` module refuses any space but Box.
So "cql" here is discrete CQL(H) (Kumar et al. 2020, eq. 4): RLlib's DQN module,
learner and target network with the conservative term added to the loss, fed by
RLlib's `OfflineData` like its offline algorithms.

The classes are top-level so that Ray pickles them by reference to this module (the
config travels to the offline data's pre-learner actor).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.algorithms.dqn import DQN, DQNConfig
from ray.rllib.algorithms.dqn.dqn_learner import (
    QF_NEXT_PREDS,
    QF_PREDS,
    QF_TARGET_NEXT_PREDS,
)
from ray.rllib.algorithms.dqn.torch.dqn_torch_learner import DQNTorchLearner
from ray.rllib.connectors.common.add_observations_from_episodes_to_batch import (
    AddObservationsFromEpisodesToBatch,
)
from ray.rllib.connectors.learner.add_next_observations_from_episodes_to_train_batch import (
    AddNextObservationsFromEpisodesToTrainBatch,
)
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.training_data import TrainingData
from ray.rllib.utils.metrics import (
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    OFFLINE_SAMPLING_TIMER,
    TIMERS,
)


def discrete_cql_loss(q, q_target_next, q_next, actions, rewards, terminateds, *, gamma: float, alpha: float):
    """Discrete CQL(H) (Kumar et al. 2020, eq. 4): the TD loss of (double) Q-learning
    plus alpha * E_s[logsumexp_a Q(s, a) - Q(s, a_data)], which pushes down the values of
    actions the data did not take. Tensors in, (loss, metrics) out.

    q, q_target_next, q_next: (B, A) Q(s_t, .) online, Q(s_tp1, .) target and online
    (q_next None: plain max over the target); actions (B,) a_t; rewards (B,) r_t, the
    reward of a_t; terminateds (B,) whether s_tp1 ended the episode (no bootstrap).
    """
    q_t = q.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)  # (B,) Q(s_t, a_t)
    with torch.no_grad():
        if q_next is None:
            v_tp1 = q_target_next.max(dim=-1).values  # (B,)
        else:  # double Q: the online network picks a_tp1, the target network values it
            v_tp1 = q_target_next.gather(-1, q_next.argmax(dim=-1, keepdim=True)).squeeze(-1)
        target = rewards + gamma * (1.0 - terminateds.float()) * v_tp1  # (B,)
    td_loss = F.huber_loss(q_t, target)
    cql_gap = (torch.logsumexp(q, dim=-1) - q_t).mean()
    loss = td_loss + alpha * cql_gap
    metrics = {"cql/td_loss": td_loss.detach(), "cql/gap": cql_gap.detach(), "cql/q_mean": q_t.detach().mean()}
    return loss, metrics


class DiscreteCQLTorchLearner(DQNTorchLearner):
    """DQN's torch learner (module, optimizer, target network) with `discrete_cql_loss`."""

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        loss, metrics = discrete_cql_loss(
            fwd_out[QF_PREDS], fwd_out[QF_TARGET_NEXT_PREDS], fwd_out.get(QF_NEXT_PREDS),
            batch[Columns.ACTIONS], batch[Columns.REWARDS], batch[Columns.TERMINATEDS],
            gamma=config.gamma, alpha=config.cql_alpha,
        )
        self.metrics.log_dict(metrics, key=module_id, window=1)
        return loss


class DiscreteCQLConfig(DQNConfig):
    """DQN's config, offline, with `cql_alpha` (the conservative term's weight)."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or DiscreteCQL)
        self.cql_alpha = 1.0
        self._is_online = False  # no EnvRunners: as MARWILConfig (and so CQLConfig) sets
        # DQN asks for 1000 sampled env steps per iteration, which offline never come:
        # Algorithm.train() would loop forever. One training_step per iteration.
        self.min_sample_timesteps_per_iteration = 0

    def training(self, *, cql_alpha=NotProvided, **kwargs):
        super().training(**kwargs)
        if cql_alpha is not NotProvided:
            self.cql_alpha = cql_alpha
        return self

    def get_default_learner_class(self):
        return DiscreteCQLTorchLearner

    def build_learner_connector(self, input_observation_space, input_action_space, device=None):
        # Offline batches are made by the OfflinePreLearner with this pipeline, not by
        # the learner's own (where DQNLearner.build adds s_tp1): add s_tp1 here, as
        # RLlib's CQLConfig does.
        pipeline = super().build_learner_connector(input_observation_space, input_action_space, device)
        pipeline.insert_after(AddObservationsFromEpisodesToBatch, AddNextObservationsFromEpisodesToTrainBatch())
        return pipeline


class DiscreteCQL(DQN):
    """DQN trained offline from `OfflineData`, one `training_step` per iteration."""

    @classmethod
    def get_default_config(cls):
        return DiscreteCQLConfig()

    def training_step(self) -> None:
        # Sample from the offline data -> update (dataset_num_iters_per_learner steps)
        # -> the learner syncs its target network. As MARWIL's training_step.
        with self.metrics.log_time((TIMERS, OFFLINE_SAMPLING_TIMER)):
            iterators = self.offline_data.sample(
                num_samples=self.config.train_batch_size_per_learner,
                num_shards=self.config.num_learners,
                return_iterator=True,
            )
            self.metrics.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, self.config.train_batch_size_per_learner,
                                   reduce="lifetime_sum")
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            results = self.learner_group.update(
                training_data=TrainingData(data_iterators=iterators),
                minibatch_size=self.config.train_batch_size_per_learner,
                num_iters=self.config.dataset_num_iters_per_learner,
                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(NUM_ENV_STEPS_SAMPLED_LIFETIME)},
                **self.offline_data.iter_batches_kwargs,
            )
            self.metrics.aggregate(results, key=LEARNER_RESULTS)
