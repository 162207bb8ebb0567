"""Collate: the one place where stored episodes become padded tensors (STYLE 5).

An episode becomes one or more *sequences*. Each agent turn is read in the context its
task's `view` gives the policy (the same function the environment applies live), so
the learner trains on exactly the prompts the engine will see:

- a task whose view is the whole transcript (the dialogue tasks, Wordle) packs the whole
  episode into one sequence: view(turns before agent turn k) always equals the sequence
  so far, so each agent turn simply extends it;
- a task that sees only the current state (fully observed Maze, chess) or a window (the
  last 40 turns of partially observed Maze) gets one sequence per agent turn once the
  view stops being the sequence so far.

The rule is generic: an agent turn extends the current sequence when its view is exactly
the turns since that sequence began, and starts a new sequence (its view, then the
action) otherwise. Turns are tokenized one by one as `text + "\\n"`, which gives the
same ids as tokenizing the rendered prompt whole (a newline is its own pre-token), and an
agent turn with stored engine token ids uses those ids as they are.

Time alignment, written once (the shapes are made here). A sequence of T tokens is read
by the model position by position; the hidden state at position t has read tokens 0..t
(the state s_t) and predicts token t+1. An *agent step* is a position whose next token
is an agent token: state s_t, action a_t = token t+1. A batch lists its agent steps
compactly, N of them, episode by episode in order:

- `positions[n]`   = b * T + t: where in the flattened (B * T) hidden states s_t is read
- `actions[n]`     = input_ids[b, t + 1]
- `rewards[n]`     = the turn's reward when a_t is the *last* token of an agent turn
                     (`schema.token_rewards`), else 0
- `dones[n]`       = 1 when a_t is the episode's last agent token (whether it ended by
                     success, failure or the turn cap: the time limit is not part of the
                     state, so the last step bootstraps from nothing)
- `next_step[n]`   = the index of the agent step that follows (the next token of the same
                     turn, or the first token of the next agent turn, which for windowed
                     views lies in another sequence), or -1 where done; V(s_{t+1}) is
                     `v[next_step]`
- `returns[n]`     = the discounted return-to-go sum_k gamma^k r_{n+k} along `next_step`
                     (MC Returns' target)
- `turn_ends[n]`   = 1 when a_t is the last token of its agent turn (the token after it
                     is not an agent token, or there is none), else 0

Only agent steps reach the language-model head and the value heads, which is most of
the saving for tasks whose observations are long and actions short. Identical sequences
(a fully observed maze revisits its 26 cells) are run through the model once and shared
by every step that reads them: exact, since a hidden state depends only on the tokens.
Every sequence of an episode lies in the same batch, so `next_step` never leaves it.
A sequence longer than `max_tokens` keeps its last `max_tokens` tokens (its oldest
observation tokens go first), as the engine truncates a long prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from lmrl_ray.data.schema import REWARD, ROLE, TEXT, TOKEN_IDS, TURNS, token_rewards
from lmrl_ray.envs.base import AGENT, Turn

View = Callable[[Sequence[Turn]], list]


@dataclass
class EncodedSequence:
    """One sequence of one episode, before padding."""

    ids: list[int]
    agent: list[bool]  # per token: an agent token
    rewards: list[float]  # per token: the turn's reward on its last agent token


@dataclass
class EncodedEpisode:
    sequences: list[EncodedSequence]
    num_agent_turns: int
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per-step values a learner attaches (PPO's old log-probs, advantages, ...): each
    (num_agent_tokens,), in the order `pad` lists this episode's steps."""

    @property
    def num_agent_tokens(self) -> int:
        return sum(sum(s.agent) for s in self.sequences)


@dataclass
class Batch:
    """Padded sequences and their agent steps; see the module docstring for the alignment."""

    input_ids: torch.Tensor  # (B, T) long, right-padded with the pad id
    attention_mask: torch.Tensor  # (B, T) long
    positions: torch.Tensor  # (N,) long: flat index b * T + t of the state s_t of step n
    actions: torch.Tensor  # (N,) long: a_t = input_ids[b, t + 1]
    rewards: torch.Tensor  # (N,) float: r_t on the last token of each agent turn
    dones: torch.Tensor  # (N,) float: 1 on the episode's last agent step
    next_step: torch.Tensor  # (N,) long: index of the next agent step, or -1
    returns: torch.Tensor  # (N,) float: discounted return-to-go (gamma of the collate)
    num_episodes: int
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (N,): the episodes' extras
    episode_steps: list[int] = field(default_factory=list)  # agent steps of each episode, in order
    turn_ends: torch.Tensor | None = None  # (N,) float: 1 where a_t is its agent turn's last token

    @property
    def num_agent_tokens(self) -> int:
        return int(self.actions.numel())

    @property
    def action_mask(self) -> torch.Tensor:
        """(N,) ones: every listed step is an agent step (the losses take a mask so that
        they also read (B, T) grids)."""
        return torch.ones(self.actions.shape, device=self.actions.device)

    def to(self, device: str | torch.device) -> "Batch":
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()}
        moved["extras"] = {k: v.to(device) for k, v in self.extras.items()}
        return Batch(**moved)


class Collator:
    """Turns stored rows (dicts of the schema) into `Batch`es for one task's view.

    `max_tokens` is the model's context (`max_position_embeddings`); `gamma` discounts
    `returns` per agent step. Observation texts repeat across episodes (a maze has 26
    cells), so their token ids are cached.
    """

    def __init__(self, tokenizer, view: View, *, max_tokens: int, gamma: float = 1.0, pad_id: int | None = None):
        if max_tokens < 2:
            raise ValueError(f"max_tokens must be at least 2, got {max_tokens}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.tokenizer = tokenizer
        self.view = view
        self.max_tokens = max_tokens
        self.gamma = gamma
        self.pad_id = pad_id if pad_id is not None else (tokenizer.pad_token_id or 0)
        self._cache: dict[str, list[int]] = {}

    def _ids(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self.tokenizer(text + "\n", add_special_tokens=False)["input_ids"]
            if len(self._cache) < 1_000_000:
                self._cache[text] = ids
        return ids

    def encode(self, row: dict) -> EncodedEpisode:
        """One stored episode as its sequences (see the module docstring for the rule)."""
        turns = row[TURNS]
        transcript = [Turn(t[ROLE], t[TEXT]) for t in turns]
        sequences: list[EncodedSequence] = []
        seq_start = seq_end = -1  # the transcript slice the current sequence holds
        agent_turn = 0
        for j, turn in enumerate(turns):
            if turn[ROLE] != AGENT:
                continue
            visible = self.view(transcript[:j])
            ids = list(turn[TOKEN_IDS]) if turn[TOKEN_IDS] is not None else self._ids(turn[TEXT])
            if not ids:
                raise ValueError(f"episode {row.get('episode_id')!r}: agent turn {agent_turn} has no tokens")
            extend = bool(sequences) and seq_start >= 0 and visible == transcript[seq_start:j]
            if extend:
                context = transcript[seq_end:j]
                added = sum(len(self._ids(item.text)) for item in context) + len(ids)
                extend = len(sequences[-1].ids) + added <= self.max_tokens
            if extend:
                current = sequences[-1]
            else:
                # A new sequence: the view alone (when it outgrows the context, the engine
                # would likewise see only the view, left-truncated).
                context, current = visible, EncodedSequence([], [], [])
                sequences.append(current)
                seq_start = j - len(visible) if visible == transcript[j - len(visible):j] else -1
            for item in context:
                item_ids = self._ids(item.text)
                current.ids += item_ids
                current.agent += [False] * len(item_ids)
                current.rewards += [0.0] * len(item_ids)
            current.ids += ids
            current.agent += [True] * len(ids)
            current.rewards += token_rewards(turn[REWARD], len(ids))
            seq_end = j + 1
            agent_turn += 1
        for s in sequences:
            if len(s.ids) > self.max_tokens:
                # Keep the last max_tokens tokens, but never start inside an agent turn
                # (no step would emit its first token): drop that turn's head too.
                cut = len(s.ids) - self.max_tokens
                while cut < len(s.ids) and s.agent[cut]:
                    cut += 1
                if cut >= len(s.ids) or not any(s.agent[cut:]):
                    raise ValueError(
                        f"episode {row.get('episode_id')!r}: an agent turn does not fit in {self.max_tokens} tokens"
                    )
                s.ids, s.agent, s.rewards = s.ids[cut:], s.agent[cut:], s.rewards[cut:]
        return EncodedEpisode(sequences, agent_turn)

    def __call__(self, rows: Sequence[dict]) -> Batch:
        return self.pad([self.encode(r) for r in rows])

    def pad(self, episodes: Sequence[EncodedEpisode]) -> Batch:
        """Pad encoded episodes into one `Batch` (right padding; identical sequences once)."""
        rows: dict[tuple, int] = {}  # (ids, agent flags) -> row
        unique: list[EncodedSequence] = []
        steps: list[tuple[int, int]] = []  # (row, t) per agent step, episode by episode
        step_rewards: list[float] = []
        step_turn_ends: list[float] = []
        episode_ends: list[int] = []
        for episode in episodes:
            for s in episode.sequences:
                if s.agent[0]:
                    raise ValueError("collate: a sequence starts with an agent token, which no step emits")
                key = (tuple(s.ids), tuple(s.agent))
                b = rows.setdefault(key, len(unique))
                if b == len(unique):
                    unique.append(s)
                for p in range(1, len(s.ids)):  # token p is emitted at step t = p - 1
                    if s.agent[p]:
                        steps.append((b, p - 1))
                        step_rewards.append(s.rewards[p])
                        step_turn_ends.append(float(p + 1 == len(s.ids) or not s.agent[p + 1]))
            episode_ends.append(len(steps))
        if not steps:
            raise ValueError("collate: no agent turns in these episodes")
        B, T = len(unique), max(2, max(len(s.ids) for s in unique))
        input_ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((B, T), dtype=torch.long)
        for b, s in enumerate(unique):
            input_ids[b, : len(s.ids)] = torch.tensor(s.ids)
            attention_mask[b, : len(s.ids)] = 1
        N = len(steps)
        row = torch.tensor([b for b, _ in steps])
        t = torch.tensor([t for _, t in steps])
        rewards = torch.tensor(step_rewards, dtype=torch.float32)
        next_step = torch.arange(1, N + 1)
        dones = torch.zeros(N)
        returns = torch.zeros(N)
        start = 0
        for end in episode_ends:
            if end > start:
                next_step[end - 1] = -1
                dones[end - 1] = 1.0
                g = 0.0
                for n in range(end - 1, start - 1, -1):
                    g = step_rewards[n] + self.gamma * g
                    returns[n] = g
            start = end
        names = {name for e in episodes for name in e.extras}
        missing = [name for name in names if any(name not in e.extras for e in episodes)]
        if missing:
            raise ValueError(f"collate: some episodes lack the extras {sorted(missing)}")
        extras = {name: torch.cat([e.extras[name] for e in episodes]) for name in sorted(names)}
        for name, values in extras.items():
            if values.shape != (N,):
                raise ValueError(f"collate: extras {name!r} hold {tuple(values.shape)} values for {N} agent steps")
        episode_steps = [end - start for start, end in zip([0, *episode_ends[:-1]], episode_ends)]
        return Batch(
            input_ids, attention_mask, row * T + t, input_ids[row, t + 1], rewards, dones, next_step, returns,
            len(episodes), extras, episode_steps, torch.tensor(step_turn_ends),
        )


def microbatches(episodes: Sequence[EncodedEpisode], microbatch_tokens: int) -> list[list[EncodedEpisode]]:
    """Group whole episodes, in order, so that each group pads to at most
    `microbatch_tokens` tokens (counting identical sequences once, as `pad` does); an
    episode larger than that is a group of its own. Whole episodes keep `next_step`
    inside a group."""
    if microbatch_tokens < 1:
        raise ValueError(f"microbatch_tokens must be positive, got {microbatch_tokens}")
    groups: list[list[EncodedEpisode]] = []
    current: list[EncodedEpisode] = []
    seen: set[tuple] = set()
    width = 0
    for e in episodes:
        keys = {(tuple(s.ids), tuple(s.agent)) for s in e.sequences} - seen
        e_width = max(len(s.ids) for s in e.sequences)
        if current and (len(seen) + len(keys)) * max(width, e_width) > microbatch_tokens:
            groups.append(current)
            current, seen, width = [], set(), 0
            keys = {(tuple(s.ids), tuple(s.agent)) for s in e.sequences}
        current.append(e)
        seen |= keys
        width = max(width, e_width)
    if current:
        groups.append(current)
    return groups
