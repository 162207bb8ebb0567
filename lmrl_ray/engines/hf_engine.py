"""The Hugging Face engine: batched decoding with a KV cache on CPU or GPU.

The decoding loop is written here over the model's forward rather than `model.generate`,
so that the engine controls, per row: stopping at the newline token, the recorded
log-probs (temperature 1, see `base.py`), seeded sampling with a `torch.Generator`, and
value-guided logits (`models.guidance`). Every row decodes exactly as its prompt would
alone: attention masks hide padding and position ids count only real tokens. The cache
computes each shared prompt prefix once and decodes in place (`kv_cache`).

Context: a prompt keeps its last `max_position_embeddings - max_new_tokens` tokens (for
`choose`, the context minus the candidate's tokens). Truncating from the left is right
for these tasks because each task's view already keeps what matters last (the latest
observation); `Completion.prompt_truncated` records when it happened.
"""

from __future__ import annotations

import logging
import threading
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import Cache

from lmrl_ray.engines.base import (
    Completion,
    Engine,
    SamplingParams,
    candidate_sequences,
    check_version,
    encode_prompts,
)
from lmrl_ray.engines.kv_cache import (
    Arena,
    BufferCache,
    KVStore,
    Segment,
    by_depth,
    compaction,
    length_buckets,
    prefix_segments,
)
from lmrl_ray.models import ValueGuidance, load_policy, newline_id
from lmrl_ray.models.fused import fuse_activations, pack_linear_weights, repack

log = logging.getLogger(__name__)


class HFEngine(Engine):
    """An `Engine` over a Hugging Face causal LM (no Ray: the pools wrap it).

    The engine takes the model over: it moves it to `device`, sets it to eval mode (no
    dropout) and swaps in faster equivalents of some modules (`models.fused`: GPT-2's
    many-op GELU for the fused one; on CPU, linear layers with their weights packed
    once for oneDNN); its parameters stay the model's own. Prompts are tokenized with
    the tokenizer's own defaults (the tiny tokenizer adds no special tokens), the same
    ids the learners' collate must build. Calls (and `set_weights`) run one at a time.

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
        fuse_activations(self.model)
        if self.device.type == "cpu":
            pack_linear_weights(self.model)
        self.tokenizer = tokenizer
        self.guidance = guidance
        if guidance is not None:
            guidance.heads.to(self.device).eval()
        self.newline_id = newline_id(tokenizer)
        # Padded positions are masked out, so any id serves; the newline always exists.
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.newline_id
        self.max_positions = int(model.config.max_position_embeddings)
        self.num_layers = int(model.config.get_text_config(decoder=True).num_hidden_layers)
        self._version = int(version)
        self._arena = Arena()
        self._lock = threading.Lock()

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
        with self._lock:
            self.model.load_state_dict(state_dict)
            repack(self.model)  # here rather than in the next call's first forward
            self._version = int(version)

    # -- Generation ----------------------------------------------------------------

    def generate(self, prompts: list[str], sampling: SamplingParams) -> list[Completion]:
        if not prompts:
            return []
        with self._lock:
            return self._generate(prompts, sampling)

    @torch.inference_mode()
    def _generate(self, prompts: list[str], sampling: SamplingParams) -> list[Completion]:
        max_new = sampling.max_new_tokens
        context = self.max_positions - max_new
        if context < 1:
            raise ValueError(
                f"max_new_tokens={max_new} leaves no room for a prompt in a context of {self.max_positions} tokens"
            )
        prompt_ids, truncated = encode_prompts(self.tokenizer, prompts, context)
        generator = torch.Generator(device=self.device)
        if sampling.seed is None:
            generator.seed()
        else:
            generator.manual_seed(sampling.seed)

        policy_logits, decode_logits, cache, attention_mask = self._prefill(prompt_ids, max_new)  # (B, V) x2
        batch = len(prompts)
        tokens = torch.full((batch, max_new), self.pad_id, dtype=torch.long, device=self.device)  # (B, N)
        logprobs = torch.zeros((batch, max_new), dtype=torch.float32, device=self.device)  # (B, N)
        lengths = torch.zeros(batch, dtype=torch.long, device=self.device)  # (B,)
        rows = torch.arange(batch, device=self.device)  # (b,): original index of each row still decoding
        positions = torch.tensor([len(ids) for ids in prompt_ids], device=self.device)  # (b,): of the next token
        prompt_width = attention_mask.shape[1] - max_new  # W: the prompts' columns of the cache
        for step in range(max_new):
            next_ids = _pick(decode_logits, sampling, generator)  # (b,)
            tokens[rows, step] = next_ids
            logprobs[rows, step] = _token_logprobs(policy_logits, next_ids)
            lengths[rows] += 1
            running = next_ids != self.newline_id  # (b,)
            if step == max_new - 1 or not running.any():
                break
            if not running.all():
                holes, movers, live = compaction(running)
                for state in (rows, next_ids, positions, attention_mask):
                    state[holes] = state[movers]
                rows, next_ids, positions = rows[:live], next_ids[:live], positions[:live]
                attention_mask = attention_mask[:live]
                cache.move_rows(holes, movers, live)
            # (b, W + step + 1): the prompt's columns, the tokens generated so far and this one.
            columns = attention_mask[:, : prompt_width + step + 1]
            policy_logits, decode_logits = self._forward(
                next_ids[:, None], columns, positions[:, None], cache=cache, logits_to_keep=1
            )  # (b, 1, V) each
            policy_logits, decode_logits = policy_logits[:, -1], decode_logits[:, -1]  # (b, V)
            positions = positions + 1

        return [
            self._completion(ids, lps, was_truncated)
            for ids, lps, was_truncated in zip(
                _rows_to_lists(tokens, lengths), _rows_to_lists(logprobs, lengths), truncated
            )
        ]

    def _prefill(
        self, prompt_ids: list[list[int]], max_new: int
    ) -> tuple[torch.Tensor, torch.Tensor, BufferCache, torch.Tensor]:
        """Run the prompts through the model, each shared prefix once (see `kv_cache`).

        Returns the model's and the decoding logits after each prompt's last token (B, V)
        each, a cache holding every prompt's keys and values in its first W columns
        (right-aligned, padding first) with room for `max_new` more, and its attention mask
        (B, W + max_new): the prompt's columns, then ones for the tokens to come.
        """
        segments, ends = prefix_segments(prompt_ids)
        # Slot 0 is the padding; each segment's tokens get the next free slots. paths[s]: the
        # slots of positions 0 .. (last of segment s), its ancestors' then its own.
        paths, free = [], 1
        for segment in segments:
            before = paths[segment.parent] if segment.parent >= 0 else []
            paths.append(before + list(range(free, free + len(segment.ids))))
            free += len(segment.ids)
        store = KVStore(free, self.num_layers)

        done, policy, decode = [], [], []  # segment indices and their logits (n, V), bucket by bucket
        for depth_segments in by_depth(segments):
            for bucket in length_buckets([len(segments[s].ids) for s in depth_segments]):
                chosen = [depth_segments[i] for i in bucket]
                bucket_policy, bucket_decode = self._forward_segments(chosen, segments, paths, store)
                done.extend(chosen)
                policy.append(bucket_policy)
                decode.append(bucket_decode)
        # Row i of `order` holds segment done[i]; pick each prompt's last segment.
        order = torch.empty(len(segments), dtype=torch.long)
        order[torch.tensor(done)] = torch.arange(len(done))
        index = order[torch.tensor(ends)].to(self.device)  # (B,)
        policy_logits, decode_logits = torch.cat(policy)[index], torch.cat(decode)[index]  # (B, V) each

        prompt_slots = self._right_aligned([paths[s] for s in ends], 0)  # (B, W)
        cache = BufferCache(
            store, self.num_layers, prompt_slots, capacity=prompt_slots.shape[1] + max_new, arena=self._arena
        )
        attention_mask = torch.cat(
            [prompt_slots > 0, prompt_slots.new_ones(len(ends), max_new, dtype=torch.bool)], dim=1
        )  # (B, W + N)
        return policy_logits, decode_logits, cache, attention_mask

    def _forward_segments(
        self, chosen: list[int], segments: list[Segment], paths: list[list[int]], store: KVStore
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward over the segments `chosen`, whose parents are in `store`: their keys and
        values go to their slots; returns the model's and the decoding logits after each
        one's last token, (n, V) each. A row's cache is its parent's slots (right-aligned in
        Wp columns), its input the segment, left-padded to the longest (L), at its true
        positions."""
        parents = [paths[segments[s].parent] if segments[s].parent >= 0 else [] for s in chosen]
        prefix_slots = self._right_aligned(parents, 0)  # (n, Wp)
        slot_ids = self._right_aligned([paths[s][len(parent) :] for s, parent in zip(chosen, parents)], 0)  # (n, L)
        input_ids = self._right_aligned([segments[s].ids for s in chosen], self.pad_id)  # (n, L)
        position_ids = self._right_aligned(
            [range(segments[s].start, segments[s].start + len(segments[s].ids)) for s in chosen], 0
        )  # (n, L)
        attention_mask = torch.cat([prefix_slots, slot_ids], dim=1) > 0  # (n, Wp + L)
        cache = BufferCache(store, self.num_layers, prefix_slots, capacity=attention_mask.shape[1])
        cache.record(slot_ids)
        policy_logits, decode_logits = self._forward(
            input_ids, attention_mask, position_ids, cache=cache, logits_to_keep=1
        )  # (n, 1, V) each
        return policy_logits[:, -1], decode_logits[:, -1]

    def _right_aligned(self, sequences: Sequence[Sequence[int]], pad: int) -> torch.Tensor:
        """(n, longest) long tensor: each sequence at the end of its row, `pad` before it."""
        width = max(map(len, sequences))
        out = torch.full((len(sequences), width), pad, dtype=torch.long)  # (n, T)
        for i, seq in enumerate(sequences):
            if seq:
                out[i, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
        return out.to(self.device)

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

    def candidate_logprobs(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        """log pi(candidate + "\\n" | prompt) for every candidate of every prompt, from one
        batched forward over all (prompt, candidate) pairs; prompt tokens are masked out.
        Guided engines score with the guided logits (temperature 1), the distribution
        they decode from."""
        with self._lock:
            return self._candidate_logprobs(prompts, candidates)

    @torch.inference_mode()
    def _candidate_logprobs(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
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
        cache: Cache | None = None,
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
        return logits, self.guidance(hidden, logits, input_ids[:, -logits_to_keep:])


def _token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[ids] (b,) from logits (b, V) and ids (b,), without the (b, V) log-softmax."""
    return logits.gather(-1, ids[:, None]).squeeze(-1) - logits.logsumexp(dim=-1)


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


__all__ = ["HFEngine"]
