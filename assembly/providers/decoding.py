"""A LocalModel's own decoding loop, instead of `model.generate`.

Rows in one batch keep their own sampling parameters (temperature, top_p, max_tokens, stop strings) and their own
seeded `torch.Generator`: a seeded request draws the same random numbers whichever other requests share its batch, so
a seed reproduces a run even though batch composition depends on timing. (Padding can move logits by rounding noise,
so "reproducible" means: same seed, same batch shape -> same text; across batch shapes it almost always holds.)
Finished rows are dropped from the KV cache, so short answers do not pay for long ones. A row with
`request.top_logprobs` also gets each sampled token's log-probability and its top-n alternatives in `raw["logprobs"]`
(what `assembly serve` returns as OpenAI logprobs).

The loop serves its callers token by token: `stream` gets each row's settled text as it is decoded (the thread hands
deltas to the caller's loop with `call_soon_threadsafe`; see assembly.providers.streaming); a row whose caller gave up
is dropped at the next token; a row with `json_schema` has its logits masked to what keeps the answer valid JSON for
the schema (assembly.providers.constrained, when lm-format-enforcer is installed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from assembly.providers import constrained
from assembly.providers.batching import Pending, Result
from assembly.providers.sampling import logprob_entries, note_logprobs, sample_tokens
from assembly.providers.streaming import stable_text
from assembly.providers.types import GenerateRequest, ModelError


@dataclass
class Row:
    """One row of a decoding batch: its caller (None when `_generate_batch` is called directly) and its constraint."""

    pending: Pending | None
    constraint: constrained.JsonConstraint | None = None

    @property
    def cancelled(self) -> bool:
        return self.pending is not None and self.pending.cancelled

    @property
    def streams(self) -> bool:
        return self.pending is not None and self.pending.deltas is not None

    def emit(self, stable: str) -> None:
        """Queue for the caller what `stable` (the settled beginning of the answer) adds to what it was sent."""
        p = self.pending
        if len(stable) <= len(p.sent) or not stable.startswith(p.sent):
            return
        delta, p.sent = stable[len(p.sent):], stable
        try:
            p.loop.call_soon_threadsafe(p.deltas.put_nowait, delta)
        except RuntimeError:  # the caller's loop is closed
            pass


class DecodingMixin:
    """`_generate_batch`: the text answers of one batch. Needs from the class: `_prefill` and `_forward`
    (ForwardMixin), `_prompt_ids`, `_context_limit`, `_tokenizer`, `_eos_ids`, `_device`, `_closing`, `_rows`
    (BatchingMixin), `name` and `stats`."""

    @torch.inference_mode()
    def _generate_batch(self, requests: list[GenerateRequest]) -> list[Result]:
        tok = self._tokenizer
        limit = self._context_limit()
        prompts, dropped = [], []
        for r in requests:
            ids, d = self._prompt_ids(r.messages, None if limit is None else max(1, limit - max(r.max_tokens, 1)))
            prompts.append(ids)
            dropped.append(d)
        n = len(requests)
        out_tokens: list[list[int]] = [[] for _ in range(n)]
        finish = ["length"] * n
        generators = []
        for r in requests:
            g = torch.Generator(device="cpu")
            if r.seed is None:
                g.seed()
            else:
                g.manual_seed(int(r.seed))
            generators.append(g)
        # per row that asked for top_logprobs: (token, logprob, top ids, top logprobs) for every sampled token
        steps: list[list[tuple[int, float, list[int], list[float]]]] = [[] for _ in range(n)]
        reused = [0] * n  # prompt tokens each row took from a shared or stored prefix
        active = [i for i, r in enumerate(requests) if r.max_tokens > 0]
        if active:
            cache, mask, next_pos, logits, cached = self._prefill([prompts[i] for i in active])
            for j, i in enumerate(active):
                reused[i] = cached[j]
        rows = self._decode_rows(requests)
        while active:
            if self._closing.is_set():
                raise ModelError(f"model {self.name} was closed while generating")
            sampled = logits
            if any(rows[i].constraint is not None for i in active):
                sampled = logits.clone()  # logprobs stay the model's own; only the draw is constrained
                for j, i in enumerate(active):
                    if rows[i].constraint is not None:
                        rows[i].constraint.mask(sampled[j], out_tokens[i])
            tokens = sample_tokens(sampled, [requests[i] for i in active], [generators[i] for i in active])
            note_logprobs(logits, tokens, active, requests, steps)
            keep = []
            for j, i in enumerate(active):
                t = tokens[j]
                r = requests[i]
                if rows[i].cancelled:  # its caller is gone: free its place in the batch now
                    finish[i] = "cancelled"
                    continue
                if t in self._eos_ids:
                    finish[i] = "stop"
                    continue
                out_tokens[i].append(t)
                if r.stop or rows[i].streams:
                    so_far = tok.decode(out_tokens[i], skip_special_tokens=True)
                    if r.stop and any(s and s in so_far for s in r.stop):
                        finish[i] = "stop"
                        continue
                    if rows[i].streams:
                        rows[i].emit(stable_text(so_far, r.stop))
                if len(out_tokens[i]) >= r.max_tokens:
                    continue
                keep.append(j)
            self.stats["generated_tokens"] += len(active)
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=self._device)
                cache.batch_select_indices(index)
                mask, next_pos = mask[index], next_pos[index]
                active = [active[j] for j in keep]
            step = torch.tensor([[out_tokens[i][-1]] for i in active], device=self._device)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = self._forward(input_ids=step, attention_mask=mask, position_ids=next_pos,
                                past_key_values=cache)
            cache = out.past_key_values
            next_pos = next_pos + 1
            logits = out.logits[:, -1, :]
        results = []
        for i, r in enumerate(requests):
            text = tok.decode(out_tokens[i], skip_special_tokens=True)
            if r.stop:
                cuts = [text.find(s) for s in r.stop if s and s in text]
                if cuts:
                    text = text[: min(cuts)]
            raw: dict[str, Any] = {"truncated_prompt_tokens": dropped[i]} if dropped[i] else {}
            if r.top_logprobs is not None:
                raw["logprobs"] = logprob_entries(self._tokenizer, steps[i])
            results.append(Result(text=text.strip(), input_tokens=len(prompts[i]),
                                   output_tokens=len(out_tokens[i]) + (finish[i] == "stop"),
                                   finish_reason=finish[i], raw=raw, cached_input_tokens=reused[i]))
        return results

    def _decode_rows(self, requests: list[GenerateRequest]) -> list[Row]:
        """Per request of the batch about to be decoded: its caller (when it came through the inbox: streaming and
        cancellation) and, for `json_schema`, its constraint (when lm-format-enforcer is installed)."""
        callers: dict[int, list[Pending]] = {}
        for p in self._rows or ():
            callers.setdefault(id(p.request), []).append(p)
        rows = []
        for r in requests:
            waiting = callers.get(id(r))
            constraint = None
            if r.json_schema is not None and constrained.available():
                constraint = constrained.JsonConstraint(self._tokenizer, r.json_schema, self._eos_ids)
            rows.append(Row(waiting.pop(0) if waiting else None, constraint))
        return rows
