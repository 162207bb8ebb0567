"""The Hugging Face engine: batched decoding with a KV cache on CPU or GPU.

The decoding loop is written here over the model's forward rather than `model.generate`,
so that the engine controls, per row: stopping at the newline token, the recorded
log-probs (temperature 1, see `engine.py`), seeded sampling with a `torch.Generator`, and
value-guided logits. Every row decodes exactly as its prompt would alone: attention masks
hide padding and position ids count only real tokens.

Where the time goes on a CPU, and what is done about it:

- **Prefill** (the prompts' forward) is most of the compute, and prompts of one task
  share long prefixes (the instructions, the first observation of an episode; a batch
  often holds the same prompt several times). The prompts are split into a radix tree of
  token segments (`_prefix_segments`): a segment shared by several prompts is computed
  once. Segments are computed parents first, those of equal depth together, in buckets
  of similar length so that little is padding (`_length_buckets`). Each prompt token's
  keys and values go to one slot of a `_KVStore`, and a segment's forward gathers its
  ancestors' slots as its cache: the radix tree of SGLang's RadixAttention (Zheng et
  al., 2023), within one call.
- **Decoding**: each layer's cache is one buffer allocated for the whole call
  (`_BufferLayer`); a step writes its column in place, where a `DynamicCache` copies the
  whole cache to append one column. Rows that produced their newline leave the batch by
  moving the last live rows into their slots (`_compaction`), which copies at most as
  many rows as finished, so finished rows cost nothing in later steps.
- **The decoding cache's memory** is kept from one call to the next (`_Arena`): the 89M
  model's cache for 64 prompts is ~1 GB, and a fresh allocation of it pays a page fault
  on every page as the prefixes are copied in (0.5 s of a 12.8 s call on 2 cores). A
  call takes the engine's lock, so two threads never share the buffers.

Context: a prompt keeps its last `max_position_embeddings - max_new_tokens` tokens (for
`choose`, the context minus the candidate's tokens). Truncating from the left is right
for these tasks because each task's view already keeps what matters last (the latest
observation); `Completion.prompt_truncated` records when it happened.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import Cache, CacheLayerMixin

from lmrl_ray.actors.engine import Completion, Engine, SamplingParams, candidate_sequences, check_version, encode_prompts
from lmrl_ray.models import ILQLHeads, load_policy, newline_id
from lmrl_ray.models.fused import fuse_activations, pack_linear_weights, repack

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
        self._arena = _Arena()
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
                holes, movers, live = _compaction(running)
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
    ) -> tuple[torch.Tensor, torch.Tensor, "_BufferCache", torch.Tensor]:
        """Run the prompts through the model, each shared prefix once (see the module docstring).

        Returns the model's and the decoding logits after each prompt's last token (B, V)
        each, a cache holding every prompt's keys and values in its first W columns
        (right-aligned, padding first) with room for `max_new` more, and its attention mask
        (B, W + max_new): the prompt's columns, then ones for the tokens to come.
        """
        segments, ends = _prefix_segments(prompt_ids)
        # Slot 0 is the padding; each segment's tokens get the next free slots. paths[s]: the
        # slots of positions 0 .. (last of segment s), its ancestors' then its own.
        paths, free = [], 1
        for segment in segments:
            before = paths[segment.parent] if segment.parent >= 0 else []
            paths.append(before + list(range(free, free + len(segment.ids))))
            free += len(segment.ids)
        store = _KVStore(free, self.num_layers)

        done, policy, decode = [], [], []  # segment indices and their logits (n, V), bucket by bucket
        for depth_segments in _by_depth(segments):
            for bucket in _length_buckets([len(segments[s].ids) for s in depth_segments]):
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
        cache = _BufferCache(
            store, self.num_layers, prompt_slots, capacity=prompt_slots.shape[1] + max_new, arena=self._arena
        )
        attention_mask = torch.cat(
            [prompt_slots > 0, prompt_slots.new_ones(len(ends), max_new, dtype=torch.bool)], dim=1
        )  # (B, W + N)
        return policy_logits, decode_logits, cache, attention_mask

    def _forward_segments(
        self, chosen: list[int], segments: list["_Segment"], paths: list[list[int]], store: "_KVStore"
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
        cache = _BufferCache(store, self.num_layers, prefix_slots, capacity=attention_mask.shape[1])
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


@dataclass
class _Segment:
    """A run of prompt tokens computed once for every prompt that starts with its parents'
    tokens and then these."""

    parent: int
    """Index of the segment before it, -1 at the start of the prompt."""
    start: int
    """Position of its first token."""
    ids: list[int]
    depth: int
    """Number of segments before it: segments of equal depth are computed together."""


# A segment of its own, or a bucket, costs one more forward call: its fixed cost (Python,
# dispatch, matrix products too small to run at full speed), in tokens of prefill. On 2
# CPU cores the prefill time of the benchmark's prompts is flat from 16 to 32 on both the
# tiny model and GPT-2 small, and 5-10% higher at 8 (more forwards) or 64 (more padding).
_SEGMENT_OVERHEAD_TOKENS = 32


def _prefix_segments(prompts: Sequence[Sequence[int]]) -> tuple[list[_Segment], list[int]]:
    """The prompts as a radix tree of segments, parents first, and for each prompt the
    segment it ends with: a run shared by several prompts is one segment (identical
    prompts end at the same one). A shared run that saves fewer than
    `_SEGMENT_OVERHEAD_TOKENS` is not split off: its prompts each carry it in their own
    segments."""
    segments: list[_Segment] = []
    ends = [-1] * len(prompts)
    # (prompts sharing ids[:start], start, parent segment, its depth)
    todo = [(list(range(len(prompts))), 0, -1, 0)]
    while todo:
        members, start, parent, depth = todo.pop()
        # The common prefix of a set of sequences is the one of its smallest and largest.
        low, high = min(prompts[m] for m in members), max(prompts[m] for m in members)
        shared = start
        while shared < len(low) and low[shared] == high[shared]:
            shared += 1
        ending = [m for m in members if len(prompts[m]) == shared]
        split_off = (len(members) - 1) * (shared - start) >= _SEGMENT_OVERHEAD_TOKENS
        if split_off or ending:
            segments.append(_Segment(parent, start, list(prompts[members[0]][start:shared]), depth))
            for m in ending:
                ends[m] = len(segments) - 1
        if split_off:
            parent, start, depth = len(segments) - 1, shared, depth + 1
        groups: dict[int, list[int]] = {}
        for m in members:
            if len(prompts[m]) > shared:
                groups.setdefault(prompts[m][shared], []).append(m)
        todo.extend((group, start, parent, depth) for group in groups.values())
    return segments, ends


def _by_depth(segments: Sequence[_Segment]) -> list[list[int]]:
    """Segment indices grouped by depth, shallowest first: each group's parents are done."""
    groups: dict[int, list[int]] = {}
    for i, segment in enumerate(segments):
        groups.setdefault(segment.depth, []).append(i)
    return [groups[depth] for depth in sorted(groups)]


def _length_buckets(lengths: Sequence[int]) -> list[list[int]]:
    """Indices into `lengths`, split into buckets of similar length: the split that
    minimises the tokens run (each bucket padded to its longest) plus
    `_SEGMENT_OVERHEAD_TOKENS` per bucket. A dynamic programme over the distinct lengths
    in increasing order: a bucket is a run of them."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    distinct = sorted(set(lengths))
    count = {n: 0 for n in distinct}
    for n in lengths:
        count[n] += 1
    below = [0]  # below[j]: items shorter than distinct[j]
    for n in distinct:
        below.append(below[-1] + count[n])
    # best[j]: cost of bucketing the items of the j shortest distinct lengths; cut[j]: where its last bucket starts.
    best, cut = [0] + [0] * len(distinct), [0] * (len(distinct) + 1)
    for j in range(1, len(distinct) + 1):
        best[j], cut[j] = min(
            (best[i] + (below[j] - below[i]) * distinct[j - 1] + _SEGMENT_OVERHEAD_TOKENS, i) for i in range(j)
        )
    buckets, j = [], len(distinct)
    while j > 0:
        buckets.append(order[below[cut[j]] : below[j]])
        j = cut[j]
    return buckets[::-1]


class _KVStore:
    """Keys and values of every prompt token of a `generate` call, one slot each: per layer
    (heads, slots, head_dim), allocated at the first write. Slot 0 is never written and
    stays zero: padding columns read it (finite values, which the mask hides)."""

    def __init__(self, slots: int, num_layers: int):
        self.slots = slots
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    def write(self, layer: int, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """slots (m,), keys and values (heads, m, head_dim)."""
        if self.keys[layer] is None:
            self.keys[layer] = keys.new_zeros((keys.shape[0], self.slots, keys.shape[2]))
            self.values[layer] = values.new_zeros((values.shape[0], self.slots, values.shape[2]))
        self.keys[layer][:, slots] = keys
        self.values[layer][:, slots] = values

    def read_into(self, layer: int, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Gather slots (n, W) into keys and values (n, heads, W, head_dim): row by row, so
        that each lands in place (one pass, no (n, W, heads, head_dim) intermediate)."""
        for row, row_slots in enumerate(slots):
            torch.index_select(self.keys[layer], 1, row_slots, out=keys[row])
            torch.index_select(self.values[layer], 1, row_slots, out=values[row])


class _Arena:
    """Memory kept between calls for the decoding cache's buffers: one flat tensor per
    (layer, keys or values), grown to the largest request and handed out as views."""

    def __init__(self):
        self._memory: dict[tuple[int, str], torch.Tensor] = {}

    def empty(self, key: tuple[int, str], shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        size = math.prod(shape)
        memory = self._memory.get(key)
        if memory is None or memory.numel() < size or memory.dtype != like.dtype or memory.device != like.device:
            memory = self._memory[key] = None  # let the old memory go before taking the new
            memory = self._memory[key] = like.new_empty(size)
        return memory[:size].view(shape)


class _BufferLayer(CacheLayerMixin):
    """One layer's keys and values in buffers (rows, heads, capacity, head_dim) allocated at
    the first update, their first columns gathered from the store (each row's prefix, the
    slots `prefix_slots` (rows, W)). Each update writes its columns in place after the last
    ones and returns views up to them: nothing is concatenated, so a decoding step does not
    copy the cache. With `record` set, the update also stores its real tokens' keys and
    values in their slots (prefill)."""

    is_sliding = False

    def __init__(
        self, store: _KVStore, layer: int, prefix_slots: torch.Tensor, capacity: int, arena: _Arena | None = None
    ):
        super().__init__()
        self.store, self.layer, self.prefix_slots, self.capacity = store, layer, prefix_slots, capacity
        self.rows, self.length = prefix_slots.shape
        self.new_slots: torch.Tensor | None = None
        self.arena = arena

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        _, heads, _, head_dim = key_states.shape
        key_shape = (self.rows, heads, self.capacity, head_dim)
        value_shape = (self.rows, heads, self.capacity, value_states.shape[-1])
        if self.arena is None:
            self.key_buffer, self.value_buffer = key_states.new_empty(key_shape), value_states.new_empty(value_shape)
        else:
            self.key_buffer = self.arena.empty((self.layer, "keys"), key_shape, key_states)
            self.value_buffer = self.arena.empty((self.layer, "values"), value_shape, value_states)
        if self.length:
            self.store.read_into(
                self.layer,
                self.prefix_slots[: self.rows],
                self.key_buffer[:, :, : self.length],
                self.value_buffer[:, :, : self.length],
            )
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        self.key_buffer[: self.rows, :, self.length : end] = key_states
        self.value_buffer[: self.rows, :, self.length : end] = value_states
        if self.new_slots is not None:
            real = self.new_slots > 0  # (rows, T)
            self.store.write(
                self.layer,
                self.new_slots[real],
                key_states.permute(1, 0, 2, 3)[:, real],  # (heads, m, head_dim)
                value_states.permute(1, 0, 2, 3)[:, real],
            )
        self.length = end
        self.keys = self.key_buffer[: self.rows, :, :end]
        self.values = self.value_buffer[: self.rows, :, :end]
        return self.keys, self.values

    def move_rows(self, holes: torch.Tensor, movers: torch.Tensor, rows: int) -> None:
        """Row `movers[i]` takes the place of row `holes[i]`; the first `rows` rows stay.
        (Before the buffers exist, the cache moves the prefix slots, which layers share.)"""
        if self.is_initialized:
            self.key_buffer[holes, :, : self.length] = self.key_buffer[movers, :, : self.length]
            self.value_buffer[holes, :, : self.length] = self.value_buffer[movers, :, : self.length]
        self.rows = rows

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_max_length(self) -> int:
        return self.capacity


class _BufferCache(Cache):
    """A cache of `_BufferLayer`s: rows that start from stored prefixes (see `_KVStore`),
    their buffers from `arena` when given (else allocated)."""

    def __init__(
        self, store: _KVStore, num_layers: int, prefix_slots: torch.Tensor, capacity: int, arena: _Arena | None = None
    ):
        super().__init__(layers=[_BufferLayer(store, i, prefix_slots, capacity, arena) for i in range(num_layers)])
        self.prefix_slots = prefix_slots  # (rows, W)

    def record(self, new_slots: torch.Tensor) -> None:
        """Store the keys and values of the next forward's tokens in slots `new_slots` (rows, T); 0 skips."""
        for layer in self.layers:
            layer.new_slots = new_slots

    def move_rows(self, holes: torch.Tensor, movers: torch.Tensor, rows: int) -> None:
        """See `_compaction`."""
        if not self.layers[0].is_initialized:
            self.prefix_slots[holes] = self.prefix_slots[movers]
        for layer in self.layers:
            layer.move_rows(holes, movers, rows)


def _compaction(running: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """How rows leave the batch: running (b,) -> (holes, movers, live). Moving each row
    `movers[i]` into `holes[i]` leaves the `live` running rows first; only finished rows'
    slots are filled, so each step copies at most as many rows as finished."""
    live = int(running.sum())
    holes = (~running[:live]).nonzero().squeeze(-1)  # finished rows among the first `live`
    movers = running[live:].nonzero().squeeze(-1) + live  # running rows after them
    return holes, movers, live


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


__all__ = ["HFEngine", "ValueGuidance"]
