"""Attention for a LocalModel on CPU: grouped-query attention always through packed queries.

When a decoding step has no padding (one row, or rows of one length), transformers drops the all-ones attention mask
and, having no mask, asks torch's SDPA for `enable_gqa`, whose CPU kernel reads the key/value heads several times
over; with a mask it packs the query heads of each key/value head into the query dimension instead (`pack_gqa`), the
fast path. This attention hands such a step an all-true mask, so every decoding step takes the packed path. The
arithmetic is the same attention; only the kernel differs (docs/benchmarks.md, "Attention on CPU").
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "assembly_packed_sdpa"


def packed_sdpa(module, query, key, value, attention_mask, *args, **kwargs):
    """transformers' SDPA attention, with an all-true mask for a maskless single-token step of a GQA model on CPU."""
    if (attention_mask is None and query.shape[2] == 1 and query.device.type == "cpu"
            and getattr(module, "num_key_value_groups", 1) > 1):
        attention_mask = torch.ones((query.shape[0], 1, 1, key.shape[2]), dtype=torch.bool, device=query.device)
    return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)


AttentionInterface.register(NAME, packed_sdpa)
AttentionMaskInterface.register(NAME, sdpa_mask)  # the masks SDPA gets, so only the maskless decode step changes


def use_packed_attention(model, device: torch.device | str) -> bool:
    """Switch a model loaded with SDPA attention on CPU to `packed_sdpa`. Returns whether it was switched."""
    if torch.device(device).type != "cpu" or getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation(NAME)
    return True
