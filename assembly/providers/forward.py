"""Forward passes of a LocalModel's batches: left padding, one call of the model (whatever transformers calls its
cache), and the prefill that computes the batch's common prefix once (or takes it from earlier batches) and forks
it to every row (assembly.providers.prefixes)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from assembly.providers.prefixes import prefix_groups

log = logging.getLogger("assembly.providers.local")  # LocalModel's logger, as before the split

MIN_SHARED_TOKENS = 32  # shorter common prefixes are prefilled with the rest: a separate pass would not pay


@dataclass
class Pass:
    """What a forward pass gives the decoding and scoring loops (whatever the transformers version calls the cache)."""

    logits: torch.Tensor
    past_key_values: Any


class ForwardMixin:
    """Needs from the class: the loaded `_model`, `_device`, `_pad_id`, `_cache_kwarg`, `_no_logits_to_keep`,
    `prefix_sharing`, `prefixes` (a PrefixStore), `name` and `stats`."""

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
                mask[i, width - len(r):] = 1
        return ids.to(self._device), mask.to(self._device)

    def _forward(self, **kwargs):
        """One forward pass. Callers pass the cache as `past_key_values`; transformers 5.x names it `cache` (the
        old name is deprecated), so it is renamed for models whose forward takes `cache`."""
        self.stats["forward_passes"] += 1
        if self._no_logits_to_keep:
            kwargs.pop("logits_to_keep", None)
        if "past_key_values" in kwargs and self._cache_kwarg == "cache":
            kwargs["cache"] = kwargs.pop("past_key_values")
        try:
            out = self._model(**kwargs, use_cache=True)
        except TypeError:
            if "logits_to_keep" not in kwargs:
                raise
            self._no_logits_to_keep = True  # an older/custom model class: compute all logits instead
            kwargs.pop("logits_to_keep")
            out = self._model(**kwargs, use_cache=True)
        cache = out.get("cache")
        return Pass(out.logits, cache if cache is not None else out.get("past_key_values"))

    def _prefill(self, prompts: list[list[int]]):
        """Run the prompts through the model: (cache, attention mask, next positions [B, 1], the last position's
        logits [B, V], per row the prompt tokens it did not compute). Only the last position's logits are computed.

        With prefix sharing (assembly.providers.prefixes), the rows are grouped by shared prefix (`prefix_groups`);
        each group's prefix is computed once — or taken from the prefixes of earlier batches — and forked to its
        rows; then every row's suffix runs in one pass behind its prefix, [pads | prefix | pads | suffix], the pads
        masked and positions counted from the row's own prefix.
        """
        self.stats["prompt_tokens"] += sum(len(p) for p in prompts)
        groups = [(rows, shared if shared >= MIN_SHARED_TOKENS else 0)
                  for rows, shared in prefix_groups(prompts, MIN_SHARED_TOKENS)] if self.prefix_sharing else []
        if not any(shared for _, shared in groups):
            ids, mask = self._left_pad(prompts)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = self._forward(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)
            self.stats["prefilled_tokens"] += sum(len(p) for p in prompts)
            return out.past_key_values, mask, mask.sum(-1, keepdim=True), out.logits[:, -1, :], [0] * len(prompts)
        width = max(shared for _, shared in groups)
        lengths, cached = [0] * len(prompts), [0] * len(prompts)
        per_row: list[list[tuple[torch.Tensor, torch.Tensor]] | None] = [None] * len(prompts)
        for rows, shared in groups:
            if not shared:
                continue
            layers, stored = self._prefix_states(prompts[rows[0]][:shared])
            if layers is None:  # this model's cache cannot be forked: plain prefill from now on
                return self._prefill(prompts)
            padded = [(_left_pad_states(k, width), _left_pad_states(v, width)) for k, v in layers]
            for i in rows:
                per_row[i], lengths[i], cached[i] = padded, shared, shared
            cached[rows[0]] = stored  # the group's first row paid for the part of its prefix not stored
        if None in per_row:  # rows that share no prefix with another: all-masked states in front of them
            empty = _empty_like(next(r for r in per_row if r is not None), width)
            per_row = [r or empty for r in per_row]
        layers = [(torch.cat([r[layer][0] for r in per_row]), torch.cat([r[layer][1] for r in per_row]))
                  for layer in range(len(per_row[0]))]
        cache = cache_of(layers)
        tails, tail_mask = self._left_pad([p[n:] for p, n in zip(prompts, lengths)])
        own = torch.tensor(lengths, dtype=torch.long, device=self._device)[:, None]
        head_mask = (torch.arange(width, device=self._device)[None, :] >= width - own).long()
        mask = torch.cat([head_mask, tail_mask], 1)
        positions = own + (tail_mask.cumsum(-1) - 1).clamp(min=0)
        out = self._forward(input_ids=tails, attention_mask=mask, position_ids=positions, past_key_values=cache,
                            logits_to_keep=1)
        self.stats["prefilled_tokens"] += sum(len(p) - n for p, n in zip(prompts, lengths))
        return out.past_key_values, mask, mask.sum(-1, keepdim=True), out.logits[:, -1, :], cached

    def _prefix_states(self, prefix: list[int]) -> tuple[list | None, int]:
        """Key/value states of `prefix` at batch size 1 (None if this model's cache cannot be reused), and how many
        of its tokens came from the store. Whatever is computed here is stored for later batches."""
        stored, layers = self.prefixes.longest(prefix)
        if stored == len(prefix):
            self.stats["prefix_tokens_reused"] += stored
            return layers, stored
        if stored < MIN_SHARED_TOKENS:
            stored, layers = 0, None
        rest = torch.tensor([prefix[stored:]], dtype=torch.long, device=self._device)
        cache = cache_of(layers) if layers else None
        out = self._forward(input_ids=rest, attention_mask=torch.ones((1, len(prefix)), dtype=torch.long,
                                                                      device=self._device),
                            position_ids=torch.arange(stored, len(prefix), device=self._device)[None, :],
                            past_key_values=cache, logits_to_keep=1)
        cache = out.past_key_values
        if not joinable(cache):
            self.prefix_sharing = False
            log.info("model %s: its cache (%s) cannot be forked; prefix sharing is off", self.name,
                     type(cache).__name__)
            return None, 0
        self.stats["prefilled_tokens"] += len(prefix) - stored
        self.stats["prefix_tokens_reused"] += stored
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        self.prefixes.put(prefix, layers)
        return layers, stored


def join_states(a, b):
    """Two decoding batches as one: each is (cache, attention mask, next positions, next-token logits); the rows of
    `b` go after those of `a`, and the narrower cache is left-padded with masked zeros to the wider one's width."""
    cache_a, mask_a, pos_a, logits_a = a
    cache_b, mask_b, pos_b, logits_b = b
    width = max(mask_a.shape[1], mask_b.shape[1])
    layers = [(torch.cat([_left_pad_states(la.keys, width), _left_pad_states(lb.keys, width)]),
               torch.cat([_left_pad_states(la.values, width), _left_pad_states(lb.values, width)]))
              for la, lb in zip(cache_a.layers, cache_b.layers)]
    masks = [torch.cat([m.new_zeros((m.shape[0], width - m.shape[1])), m], dim=1) for m in (mask_a, mask_b)]
    return (cache_of(layers), torch.cat(masks), torch.cat([pos_a, pos_b]),
            torch.cat([logits_a, logits_b]))


def cache_of(layers) -> DynamicCache:
    """A DynamicCache holding each layer's (keys, values) as they are. `DynamicCache(ddp_cache_data=...)` would copy
    every layer once more: its layers take their first states by concatenating them onto an empty tensor."""
    cache = DynamicCache(ddp_cache_data=[(None, None)] * len(layers))
    for layer, (keys, values) in zip(cache.layers, layers):
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
    return cache


def joinable(cache) -> bool:
    """Whether a decoding cache can take rows from another one (plain per-layer key/value states)."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(isinstance(layer, DynamicLayer) and not layer.is_sliding for layer in layers)


def _left_pad_states(states: torch.Tensor, width: int) -> torch.Tensor:
    """[batch, heads, tokens, dim] states moved right to fill `width` positions, zeros (masked) before them."""
    missing = width - states.shape[2]
    if missing == 0:
        return states
    return torch.cat([states.new_zeros((*states.shape[:2], missing, states.shape[3])), states], dim=2)


def _empty_like(layers, width: int):
    """All-masked prefix states for rows that share no prefix with any other row."""
    return [(k.new_zeros((*k.shape[:2], width, k.shape[3])), v.new_zeros((*v.shape[:2], width, v.shape[3])))
            for k, v in layers]
