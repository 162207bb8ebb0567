"""The Hugging Face engine's KV cache: shared prompt prefixes computed once, decoded in place.

- **Prefill** is most of a CPU call's compute, and one task's prompts share long prefixes
  (the instructions, an episode's first observation; a batch often holds one prompt
  several times). `prefix_segments` splits the prompts into a radix tree of token
  segments, each computed once, parents first, equal depths together (`by_depth`), in
  buckets of similar length so that little is padding (`length_buckets`). Every prompt
  token's keys and values get one slot of a `KVStore`; a segment's forward gathers its
  ancestors' slots as its cache: SGLang's RadixAttention (Zheng et al., 2023), within
  one call.
- **Decoding**: each layer's cache is one buffer for the whole call (`BufferCache`); a
  step writes its column in place, where a `DynamicCache` copies the whole cache to
  append one. Finished rows leave by moving the last live rows into their slots
  (`compaction`): each step copies at most as many rows as finished.
- **Memory** is kept from one call to the next (`Arena`): the 89M model's cache for 64
  prompts is ~1 GB, and fresh memory pays a page fault on every page as the prefixes are
  copied in (0.5 s of a 12.8 s call on 2 cores). The engine's lock keeps its calls, and
  so the arena's buffers, one at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


@dataclass
class Segment:
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
SEGMENT_OVERHEAD_TOKENS = 32


def prefix_segments(prompts: Sequence[Sequence[int]]) -> tuple[list[Segment], list[int]]:
    """The prompts as a radix tree of segments, parents first, and for each prompt the
    segment it ends with: a run shared by several prompts is one segment (identical
    prompts end at the same one). A shared run that saves fewer than
    `SEGMENT_OVERHEAD_TOKENS` is not split off: its prompts each carry it in their own
    segments."""
    segments: list[Segment] = []
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
        split_off = (len(members) - 1) * (shared - start) >= SEGMENT_OVERHEAD_TOKENS
        if split_off or ending:
            segments.append(Segment(parent, start, list(prompts[members[0]][start:shared]), depth))
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


def by_depth(segments: Sequence[Segment]) -> list[list[int]]:
    """Segment indices grouped by depth, shallowest first: each group's parents are done."""
    groups: dict[int, list[int]] = {}
    for i, segment in enumerate(segments):
        groups.setdefault(segment.depth, []).append(i)
    return [groups[depth] for depth in sorted(groups)]


def length_buckets(lengths: Sequence[int]) -> list[list[int]]:
    """Indices into `lengths`, split into buckets of similar length: the split that
    minimises the tokens run (each bucket padded to its longest) plus
    `SEGMENT_OVERHEAD_TOKENS` per bucket. A dynamic programme over the distinct lengths
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
            (best[i] + (below[j] - below[i]) * distinct[j - 1] + SEGMENT_OVERHEAD_TOKENS, i) for i in range(j)
        )
    buckets, j = [], len(distinct)
    while j > 0:
        buckets.append(order[below[cut[j]] : below[j]])
        j = cut[j]
    return buckets[::-1]


class KVStore:
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


class Arena:
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
        self, store: KVStore, layer: int, prefix_slots: torch.Tensor, capacity: int, arena: Arena | None = None
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


class BufferCache(Cache):
    """A cache of `_BufferLayer`s: rows that start from stored prefixes (see `KVStore`),
    their buffers from `arena` when given (else allocated)."""

    def __init__(
        self, store: KVStore, num_layers: int, prefix_slots: torch.Tensor, capacity: int, arena: Arena | None = None
    ):
        super().__init__(layers=[_BufferLayer(store, i, prefix_slots, capacity, arena) for i in range(num_layers)])
        self.prefix_slots = prefix_slots  # (rows, W)

    def record(self, new_slots: torch.Tensor) -> None:
        """Store the keys and values of the next forward's tokens in slots `new_slots` (rows, T); 0 skips."""
        for layer in self.layers:
            layer.new_slots = new_slots

    def move_rows(self, holes: torch.Tensor, movers: torch.Tensor, rows: int) -> None:
        """See `compaction`."""
        if not self.layers[0].is_initialized:
            self.prefix_slots[holes] = self.prefix_slots[movers]
        for layer in self.layers:
            layer.move_rows(holes, movers, rows)


def compaction(running: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """How rows leave the batch: running (b,) -> (holes, movers, live). Moving each row
    `movers[i]` into `holes[i]` leaves the `live` running rows first; only finished rows'
    slots are filled, so each step copies at most as many rows as finished."""
    live = int(running.sum())
    holes = (~running[:live]).nonzero().squeeze(-1)  # finished rows among the first `live`
    movers = running[live:].nonzero().squeeze(-1) + live  # running rows after them
    return holes, movers, live


__all__ = [
    "SEGMENT_OVERHEAD_TOKENS",
    "Arena",
    "BufferCache",
    "KVStore",
    "Segment",
    "by_depth",
    "compaction",
    "length_buckets",
    "prefix_segments",
]
