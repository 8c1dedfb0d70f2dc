"""Prompt prefixes whose key/value states the local backend computes once and reuses.

The prompts of one phase share a long common prefix (assembly.layout puts what every juror shares first). Within a
batch, the backend prefills each group's prefix once at batch size 1 (`prefix_groups`: one group per jury when a
study batches several juries' prompts together), forks its cache to the group's rows and prefills only their
suffixes. Across batches, it keeps the prefixes it computed here, bounded in tokens and evicted least recently used,
so a later batch starting the same way (the next phase's prompts, the fidelity eval's next group on one question,
a juror's next ballot) computes only what is new. Entries match on any common leading run of tokens, not only
whole entries: a stored prompt also serves every later prompt that shares its first part (a witness's system
message and the question, say).

Only attention caches whose layers can be cropped and forked (transformers' DynamicLayer: full attention) are
reused; the backend falls back to plain prefill for others (sliding-window or recurrent layers).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each [1, heads, tokens, head dim]


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix shared by every row."""
    if not rows:
        return 0
    first, n = rows[0], min(len(r) for r in rows)
    for row in rows[1:]:
        i = 0
        while i < n and row[i] == first[i]:
            i += 1
        n = i
        if n == 0:
            break
    return n


def prefix_groups(rows: Sequence[Sequence[int]], min_gain: int) -> list[tuple[list[int], int]]:
    """The rows of a batch grouped by the prefix each group can compute once: [(row indices in order, prefix
    length)]. Every row shares the batch's common prefix; rows that share at least `min_gain` tokens more (the
    jurors of one jury in a batch that holds several juries' prompts: the same preamble and question, then each jury's
    own testimony) form a group whose prefix is their own common prefix; the other rows form one group. Sorted rows are
    cut where neighbours share less than that. Every prefix leaves each row a token of its own."""
    if not rows:
        return []
    base = common_prefix_length(rows)
    order = sorted(range(len(rows)), key=lambda i: list(rows[i]))
    runs, current = [], [order[0]]
    for a, b in zip(order, order[1:]):
        if _shared(rows[a], rows[b]) >= base + min_gain:
            current.append(b)
        else:
            runs.append(current)
            current = [b]
    runs.append(current)
    rest = [i for run in runs if len(run) == 1 for i in run]  # rows with no neighbour to share more with: one group
    runs = [run for run in runs if len(run) > 1] + ([rest] if rest else [])
    return sorted((sorted(run), min(common_prefix_length([rows[i] for i in run]), min(len(rows[i]) for i in run) - 1))
                  for run in runs)


def _shared(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixStore:
    """Key/value states of token prefixes, at most `max_tokens` tokens in all, least recently used evicted first."""

    def __init__(self, max_tokens: int):
        self.max_tokens = int(max_tokens)
        self._entries: OrderedDict[tuple[int, ...], Layers] = OrderedDict()
        self._tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tokens(self) -> int:
        return self._tokens

    def longest(self, tokens: Sequence[int]) -> tuple[int, Layers | None]:
        """The stored states covering the longest leading run of `tokens`: (its length, the states cut to it)."""
        best, found = 0, None
        for key in self._entries:
            n = _shared(key, tokens)
            if n > best:
                best, found = n, key
        if found is None:
            return 0, None
        self._entries.move_to_end(found)
        return best, [(k[:, :, :best], v[:, :, :best]) for k, v in self._entries[found]]

    def put(self, tokens: Sequence[int], layers: Layers) -> None:
        """Keep the states of `tokens` (one row). Stored prefixes of it are dropped: this entry serves them too."""
        key = tuple(tokens)
        if len(key) > self.max_tokens or not key:
            return
        for other in [k for k in self._entries if k == key[: len(k)]]:
            self._tokens -= len(other)
            del self._entries[other]
        self._entries[key] = [(k.detach(), v.detach()) for k, v in layers]
        self._tokens += len(key)
        while self._tokens > self.max_tokens:
            old, _ = self._entries.popitem(last=False)
            self._tokens -= len(old)

    def clear(self) -> None:
        self._entries.clear()
        self._tokens = 0
