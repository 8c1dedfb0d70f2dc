"""Token choice for the local backend's decoding loop: seeded per-row sampling, and the OpenAI-shaped logprobs of
what was sampled (token text, exact bytes, top alternatives). Pure functions of logits and a tokenizer."""

from __future__ import annotations

import re
from typing import Any

import torch

from assembly.providers.types import GenerateRequest


def _byte_alphabet() -> dict[str, int]:
    """Byte-level BPE's (GPT-2's) printable stand-in character for each byte, as {character: byte}."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1),
                 *range(ord("\xae"), ord("\xff") + 1)]
    alphabet, extra = {}, 0
    for b in range(256):
        if b in printable:
            alphabet[chr(b)] = b
        else:
            alphabet[chr(256 + extra)] = b
            extra += 1
    return alphabet


_BYTE_OF = _byte_alphabet()
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _token_bytes(piece: Any, text: str, byte_level: bool) -> list[int]:
    """A token's own bytes (OpenAI's `bytes`): exact for byte-level BPE and for byte-fallback tokens ("<0xE2>"),
    whose single-token text can be a lone "\ufffd" for part of a character; else the UTF-8 of its text."""
    if isinstance(piece, str):
        match = _BYTE_TOKEN.fullmatch(piece)
        if match:
            return [int(match.group(1), 16)]
        if byte_level and piece and all(c in _BYTE_OF for c in piece):
            return [_BYTE_OF[c] for c in piece]
    return list(text.encode("utf-8"))


def note_logprobs(logits: torch.Tensor, tokens: list[int], active: list[int], requests: list[GenerateRequest],
                  steps: list[list]) -> None:
    """Append, for each active row that asked for top_logprobs, the sampled token's log-probability and the
    row's top-n alternatives. Log-probabilities are the model's own, before temperature and top_p (what a
    caller scoring options wants); a row's stopping token (end of turn) gets its entry too, so a one-token
    answer that ends at once still says what the alternatives were."""
    rows = [j for j, i in enumerate(active) if requests[i].top_logprobs is not None]
    if not rows:
        return
    lp = torch.log_softmax(logits[rows].float(), dim=-1)
    picked = torch.tensor([tokens[j] for j in rows], device=lp.device)
    chosen = lp[torch.arange(len(rows), device=lp.device), picked].tolist()
    width = min(max(requests[active[j]].top_logprobs for j in rows), lp.shape[-1])
    values, ids = lp.topk(width, dim=-1)
    values, ids = values.tolist(), ids.tolist()
    for k, j in enumerate(rows):
        n = requests[active[j]].top_logprobs
        steps[active[j]].append((tokens[j], chosen[k], ids[k][:n], values[k][:n]))

def logprob_entries(tok, steps: list[tuple[int, float, list[int], list[float]]]) -> list[dict[str, Any]]:
    """`raw["logprobs"]`: [{token, bytes, logprob, top_logprobs: [{token, bytes, logprob}, ...]}, ...]."""
    byte_level = type(getattr(getattr(tok, "backend_tokenizer", None), "decoder", None)).__name__ == "ByteLevel"

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        text = tok.decode([token_id], skip_special_tokens=False)
        return {"token": text, "bytes": _token_bytes(tok.convert_ids_to_tokens(token_id), text, byte_level),
                "logprob": logprob}

    return [{**entry(t, v), "top_logprobs": [entry(a, w) for a, w in zip(ids, values)]}
            for t, v, ids, values in steps]

def sample_tokens(logits: torch.Tensor, requests: list[GenerateRequest], generators: list[torch.Generator]) -> list[int]:
    """One token per row: greedy when temperature <= 0, else temperature + nucleus (top_p) sampling.

    Each row draws one uniform number from its own generator and samples by inverse CDF, so its draw does not
    depend on its neighbours in the batch. The nucleus is searched among the top 1024 tokens (exact whenever
    they hold top_p of the mass, else a full sort): sorting 49k logits per row per step cost ~10% of decoding.
    """
    logits = logits.float().cpu()
    chosen = logits.argmax(-1).tolist()
    for i, (r, g) in enumerate(zip(requests, generators)):
        if r.temperature <= 0:
            continue
        probs = torch.softmax(logits[i] / r.temperature, dim=-1)
        u = float(torch.rand((), generator=g))
        top_p = min(max(r.top_p, 1e-6), 1.0)
        if top_p >= 1.0:
            cdf = probs.cumsum(-1)
            chosen[i] = int(torch.searchsorted(cdf, torch.tensor([u * float(cdf[-1])])).clamp(max=len(cdf) - 1))
            continue
        values, order = probs.topk(min(1024, probs.numel()))
        if float(values.sum()) < top_p:
            values, order = probs.sort(descending=True)
        cum = values.cumsum(-1)
        values = torch.where(cum - values >= top_p, torch.zeros_like(values), values)  # nucleus, >= 1 token
        cdf = values.cumsum(-1)
        pick = int(torch.searchsorted(cdf, torch.tensor([u * float(cdf[-1])])).clamp(max=len(cdf) - 1))
        chosen[i] = int(order[pick])
    return chosen
