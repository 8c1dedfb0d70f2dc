"""Decoding caches with room to grow: a step writes its key/value states in place instead of concatenating.

transformers' DynamicLayer appends each decoding step's states with `torch.cat`, which allocates and copies the
whole cache of every layer at every token. On CPU, for wide batches over long prompts, that copy (and the page
faults of a fresh allocation of that size) costs more than the attention that reads the cache (docs/benchmarks.md,
"The decoding cache on CPU"). A ReservedLayer keeps its states as views into buffers with spare positions, so a
step writes one position in place; the buffer is reallocated, with new room, only when it is full or when another
operation has replaced the states (dropping finished rows, joining a batch, forking a prefix), so every
DynamicLayer operation keeps working on the views. The attention reads the same values; only where they live
differs.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """A DynamicLayer whose `keys`/`values` are views of the first positions of buffers `reserve` positions longer."""

    reserve = 64
    _buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            return super().update(key_states, value_states, *args, **kwargs)
        length, added = self.keys.shape[-2], key_states.shape[-2]
        if not self._writable(length + added):
            self._buffers = tuple(self._grown(states, length + added + self.reserve)
                                  for states in (self.keys, self.values))
        keys, values = self._buffers
        keys[:, :, length:length + added] = key_states
        values[:, :, length:length + added] = value_states
        self.keys, self.values = keys[:, :, :length + added], values[:, :, :length + added]
        return self.keys, self.values

    def _writable(self, needed: int) -> bool:
        """Whether the current states are still the buffers' first positions and `needed` positions fit."""
        if self._buffers is None:
            return False
        keys, values = self._buffers
        return (needed <= keys.shape[2] and self.keys.data_ptr() == keys.data_ptr()
                and self.values.data_ptr() == values.data_ptr() and self.keys.shape[:2] == keys.shape[:2]
                and self.keys.stride() == keys.stride() and self.values.stride() == values.stride())

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows `indices`: when they are in increasing order and the states are the buffers' own, each kept
        row moves down within the buffers, so dropping the rows that ended neither allocates nor copies the rows before
        the first one dropped, and the next step still writes in place."""
        keep = indices.tolist()
        length = self.keys.shape[-2] if self.is_initialized else 0
        if not length or not self._writable(length) or any(b <= a for a, b in zip(keep, keep[1:])):
            return super().batch_select_indices(indices)
        for buffer in self._buffers:
            for new, old in enumerate(keep):
                if new != old:  # rows are disjoint blocks and new < old: nothing still needed is overwritten
                    buffer[new, :, :length] = buffer[old, :, :length]
        self._buffers = tuple(buffer[:len(keep)] for buffer in self._buffers)
        self.keys, self.values = (buffer[:, :, :length] for buffer in self._buffers)

    @staticmethod
    def _grown(states: torch.Tensor, positions: int) -> torch.Tensor:
        buffer = states.new_empty((*states.shape[:2], positions, states.shape[3]))
        buffer[:, :, :states.shape[2]] = states
        return buffer


def reserve(cache, positions: int) -> None:
    """Let the plain full-attention layers of `cache` grow in place by `positions` at a time (0: leave it as is)."""
    if positions <= 0:
        return
    for layer in getattr(cache, "layers", ()):
        if type(layer) is DynamicLayer:
            layer.__class__ = ReservedLayer
        if isinstance(layer, ReservedLayer):
            layer.reserve = positions
