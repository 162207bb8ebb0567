"""The Hugging Face engine: batched decoding with a KV cache on CPU or GPU.

The decoding loop is written here over the model's forward and its `DynamicCache`
rather than `model.generate`, so that the engine controls, per row: stopping at the
newline token, the recorded log-probs (temperature 1, see `engine.py`), seeded sampling
with a `torch.Generator`, and value-guided logits. Prompts are left-padded with an
attention mask and position ids that count only real tokens, so a padded row decodes
exactly as it would alone. A row that produced its newline is dropped from the batch
and from the cache, so finished rows cost nothing in later steps.

Context: a prompt keeps its last `max_position_embeddings - max_new_tokens` tokens (for
`choose`, the context minus the candidate's tokens). Truncating from the left is right
for these tasks because each task's view already keeps what matters last (the latest
observation); `Completion.prompt_truncated` records when it happened.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from lmrl_ray.actors.engine import Completion, Engine, SamplingParams, candidate_sequences, check_version, encode_prompts
from lmrl_ray.models import ILQLHeads, load_policy, newline_id

log = logging.getLogger(__name__)


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
    """

    def __init__(self, heads: ILQLHeads, beta: float):
        self.heads = heads
        self.beta = float(beta)

    def __call__(self, hidden: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """hidden (..., H), logits (..., V) -> guided logits (..., V)."""
        hidden = hidden.to(next(self.heads.parameters()).dtype)
        q = torch.minimum(self.heads.target_q1(hidden), self.heads.target_q2(hidden))  # (..., V)
        v = self.heads.v(hidden)[..., None]  # (..., 1): V(s_t), broadcast over the vocabulary
        return logits + self.beta * (q - v).float()


class HFEngine(Engine):
    """An `Engine` over a Hugging Face causal LM (no Ray: the pools wrap it).

    The engine takes the model over: it moves it to `device` and sets it to eval mode
    (no dropout). Prompts are tokenized with the tokenizer's own defaults (the tiny
    tokenizer adds no special tokens), the same ids the learners' collate must build.

    `guidance`, when given, shapes the logits that tokens are picked from (`generate`)
    and that candidates are ranked by (`choose`); the recorded log-probs stay the
    model's own. `set_weights` loads the language model only: the heads of a guided
    engine are fixed at construction (evaluation builds a new engine per checkpoint).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        device: str | torch.device = "cpu",
        guidance: ValueGuidance | None = None,
        version: int = 0,
    ):
        self.device = torch.device(device)
        # eval(): dropout off, so decoding is a deterministic function of weights and seed.
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.guidance = guidance
        if guidance is not None:
            guidance.heads.to(self.device).eval()
        self.newline_id = newline_id(tokenizer)
        # Padded positions are masked out, so any id serves; the newline always exists.
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.newline_id
        self.max_positions = int(model.config.max_position_embeddings)
        self._version = int(version)

    @classmethod
    def load(
        cls, model: str = "tiny", *, device: str = "cpu", guidance: ValueGuidance | None = None
    ) -> "HFEngine":
        """An engine over `lmrl_ray.models.load_policy(model)`: "tiny" or a local model folder."""
        policy, tokenizer = load_policy(model=model, device=device)
        return cls(policy, tokenizer, device=device, guidance=guidance)

    @property
    def version(self) -> int:
        return self._version

    def set_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        check_version(self._version, version)
        self.model.load_state_dict(state_dict)
        self._version = int(version)

    # -- Generation ----------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, prompts: list[str], sampling: SamplingParams) -> list[Completion]:
        if not prompts:
            return []
        max_new = sampling.max_new_tokens
        context = self.max_positions - max_new
        if context < 1:
            raise ValueError(
                f"max_new_tokens={max_new} leaves no room for a prompt in a context of {self.max_positions} tokens"
            )
        prompt_ids, truncated = encode_prompts(self.tokenizer, prompts, context)
        input_ids, attention_mask, position_ids = self._left_pad(prompt_ids)  # (B, T) each
        generator = torch.Generator(device=self.device)
        if sampling.seed is None:
            generator.seed()
        else:
            generator.manual_seed(sampling.seed)

        batch = len(prompts)
        tokens = torch.full((batch, max_new), self.pad_id, dtype=torch.long, device=self.device)  # (B, N)
        logprobs = torch.zeros((batch, max_new), dtype=torch.float32, device=self.device)  # (B, N)
        lengths = torch.zeros(batch, dtype=torch.long, device=self.device)  # (B,)
        rows = torch.arange(batch, device=self.device)  # (b,): original index of each row still decoding
        cache = DynamicCache(config=self.model.config)
        for step in range(max_new):
            policy_logits, decode_logits = self._forward(
                input_ids, attention_mask, position_ids, cache=cache, logits_to_keep=1
            )  # (b, 1, V) each
            policy_logits, decode_logits = policy_logits[:, -1], decode_logits[:, -1]  # (b, V)
            next_ids = _pick(decode_logits, sampling, generator)  # (b,)
            tokens[rows, step] = next_ids
            logprobs[rows, step] = F.log_softmax(policy_logits, dim=-1).gather(-1, next_ids[:, None]).squeeze(-1)
            lengths[rows] += 1
            running = next_ids != self.newline_id  # (b,)
            if step == max_new - 1 or not running.any():
                break
            if not running.all():
                keep = running.nonzero().squeeze(-1)  # (b',)
                cache.batch_select_indices(keep)
                rows, next_ids = rows[keep], next_ids[keep]
                attention_mask, position_ids = attention_mask[keep], position_ids[keep]
            input_ids = next_ids[:, None]  # (b, 1)
            position_ids = position_ids[:, -1:] + 1  # (b, 1): one past the row's last real position
            # (b, T + step + 1): the mask covers the cached tokens and the new one.
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(rows), 1)], dim=1)

        return [
            self._completion(ids, lps, was_truncated)
            for ids, lps, was_truncated in zip(
                _rows_to_lists(tokens, lengths), _rows_to_lists(logprobs, lengths), truncated
            )
        ]

    def _completion(self, ids: list[int], logprobs: list[float], truncated: bool) -> Completion:
        stopped = ids[-1] == self.newline_id
        text_ids = ids[:-1] if stopped else ids
        # Decode exactly what was generated (no special-token skipping, no space clean-up),
        # so the text and the stored token ids never disagree.
        text = self.tokenizer.decode(text_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return Completion(
            text=text,
            token_ids=ids,
            logprobs=logprobs,
            finish_reason="stop" if stopped else "length",
            prompt_truncated=truncated,
        )

    # -- Constrained choice ---------------------------------------------------------

    def choose(self, prompts: list[str], candidates: list[list[str]]) -> list[int]:
        scores = self.candidate_logprobs(prompts, candidates)
        return [max(range(len(row)), key=row.__getitem__) for row in scores]

    @torch.inference_mode()
    def candidate_logprobs(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        """log pi(candidate + "\\n" | prompt) for every candidate of every prompt, from one
        batched forward over all (prompt, candidate) pairs; prompt tokens are masked out.
        Guided engines score with the guided logits (temperature 1), the distribution
        they decode from."""
        sequences, action_lengths = candidate_sequences(self.tokenizer, prompts, candidates, self.max_positions)
        if not sequences:
            return []
        input_ids, attention_mask, position_ids = self._left_pad(sequences)  # (R, T) each, R = all pairs
        # Left padding puts each candidate's tokens last in its row, so only the last K
        # positions predict them: logits for those alone keep memory at (R, K, V), not (R, T, V).
        keep = max(action_lengths) + 1
        _, decode_logits = self._forward(
            input_ids, attention_mask, position_ids, logits_to_keep=keep
        )  # (R, K, V): positions T - K .. T - 1
        # Position t predicts token t + 1: the last K - 1 tokens, each given its prefix.
        targets = input_ids[:, -(keep - 1) :]  # (R, K - 1)
        token_logprobs = (
            F.log_softmax(decode_logits[:, :-1], dim=-1).gather(-1, targets[..., None]).squeeze(-1)
        )  # (R, K - 1)
        offsets = torch.arange(keep - 1, device=self.device)  # (K - 1,)
        lengths = torch.tensor(action_lengths, device=self.device)  # (R,)
        is_action = offsets[None, :] >= keep - 1 - lengths[:, None]  # (R, K - 1)
        totals = torch.where(is_action, token_logprobs, 0.0).sum(-1).tolist()  # (R,)

        scores, start = [], 0
        for actions in candidates:
            scores.append(totals[start : start + len(actions)])
            start += len(actions)
        return scores

    # -- Shared pieces ---------------------------------------------------------------

    def _left_pad(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded ids, attention mask and position ids, each (B, T).

        Positions count real tokens only (0 at each row's first real token), so a padded
        row sees the same position embeddings as the same prompt alone.
        """
        width = max(len(seq) for seq in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)  # (B, T)
        for i, seq in enumerate(sequences):
            input_ids[i, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            attention_mask[i, width - len(seq) :] = 1
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        return input_ids.to(self.device), attention_mask.to(self.device), position_ids.to(self.device)

    def _forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        *,
        cache: DynamicCache | None = None,
        logits_to_keep: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's logits and the logits to decode from (guided where guidance is set),
        at the last `logits_to_keep` positions: each (B, logits_to_keep, V).

        `attention_mask` covers the cached tokens and the new ones: (B, past + T).
        """
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=cache is not None,
            output_hidden_states=self.guidance is not None,
            logits_to_keep=logits_to_keep,
        )
        logits = out.logits.float()  # (B, K, V)
        if self.guidance is None:
            return logits, logits
        hidden = out.hidden_states[-1][:, -logits_to_keep:]  # (B, K, H)
        return logits, self.guidance(hidden, logits)


def _pick(logits: torch.Tensor, sampling: SamplingParams, generator: torch.Generator) -> torch.Tensor:
    """Next token ids (b,) from logits (b, V): argmax, or a draw at the temperature within top-p."""
    if sampling.greedy:
        return logits.argmax(dim=-1)
    probs = F.softmax(logits / sampling.temperature, dim=-1)  # (b, V)
    if sampling.top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)  # (b, V)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (b, V): mass of the more likely tokens
        # Keep the smallest prefix whose mass reaches top_p; the most likely token always stays.
        sorted_probs = sorted_probs.masked_fill(mass_before >= sampling.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    # multinomial normalises the kept mass itself.
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def _rows_to_lists(values: torch.Tensor, lengths: torch.Tensor) -> list[list]:
    """values (B, N) cut to each row's length (B,), as Python lists (one device transfer)."""
    return [row[:n] for row, n in zip(values.tolist(), lengths.tolist())]


__all__ = ["HFEngine", "ValueGuidance"]
