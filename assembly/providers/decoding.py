"""A LocalModel's own decoding loop, instead of `model.generate`.

Rows in one batch keep their own sampling parameters (temperature, top_p, max_tokens, stop strings) and their own
seeded `torch.Generator`: a seeded request draws the same random numbers whichever other requests share its batch, so
a seed reproduces a run even though batch composition depends on timing. (Padding can move logits by rounding noise,
so "reproducible" means: same seed, same batch shape -> same text; across batch shapes it almost always holds.)
Finished rows are dropped from the KV cache, so short answers do not pay for long ones, and each goes back to its
caller as it ends. Requests that arrive while the batch decodes join it between two steps (`BatchingMixin._admit`):
they are prefilled on their own and their cache is put beside the running one, the narrower left-padded and masked
(`join_states`). A row with
`request.top_logprobs` also gets each sampled token's log-probability and its top-n alternatives in `raw["logprobs"]`
(what `assembly serve` returns as OpenAI logprobs).

The loop serves its callers token by token: `stream` gets each row's settled text as it is decoded (the thread hands
deltas to the caller's loop with `call_soon_threadsafe`; see assembly.providers.streaming); a row whose caller gave up
is dropped at the next token; a row with `json_schema` has its logits masked to what keeps the answer valid JSON for
the schema (assembly.providers.constrained, when lm-format-enforcer is installed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from assembly.providers import constrained
from assembly.providers.batching import Pending, Result, deliver
from assembly.providers.forward import join_states, joinable
from assembly.providers.reserved_cache import reserve
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


@dataclass
class Slot:
    """One request's decoding state: its prompt, its seeded generator, the tokens so far, and its result once ended."""

    request: GenerateRequest
    row: Row
    prompt: list[int]
    dropped: int  # prompt tokens cut to fit the context
    generator: torch.Generator
    out: list[int] = field(default_factory=list)
    steps: list = field(default_factory=list)  # (token, logprob, top ids, top logprobs), for `top_logprobs`
    finish: str = "length"
    reused: int = 0  # prompt tokens taken from a shared or stored prefix
    batch_size: int = 0  # rows decoding when it joined
    joined_at: float = field(default_factory=time.perf_counter)
    result: Result | None = None


class DecodingMixin:
    """`_generate_batch`: the text answers of one batch. Needs from the class: `_prefill` and `_forward`
    (ForwardMixin), `_admit` and `_rows` (BatchingMixin), `_prompt_ids`, `_context_limit`, `_tokenizer`, `_eos_ids`,
    `_device`, `_closing`, `max_batch`, `cache_reserve`, `name` and `stats`."""

    @torch.inference_mode()
    def _generate_batch(self, requests: list[GenerateRequest]) -> list[Result]:
        slots = self._slots(requests, self._decode_rows(requests))
        live: list[Slot] = []
        state = None  # (cache, mask, next positions, next-token logits) of the live slots, in their order
        state, live = self._join(state, live, slots)
        while live:
            if self._closing.is_set():
                raise ModelError(f"model {self.name} was closed while generating")
            joined = self._admit(self.max_batch - len(live)) if joinable(state[0]) else []
            if joined:
                new = self._slots([p.request for p in joined], [self._row(p, p.request) for p in joined])
                slots.extend(new)
                try:
                    state, live = self._join(state, live, new)
                except Exception as exc:  # noqa: BLE001 - the joining rows fail alone; the batch goes on
                    for p in joined:
                        deliver(p, None, exc if isinstance(exc, ModelError) else
                                ModelError(f"model {self.name} failed to start a request: {type(exc).__name__}: {exc}"))
                    slots = slots[: len(slots) - len(new)]
                    self._rows[:] = [p for p in self._rows if not any(p is q for q in joined)]
            cache, mask, next_pos, logits = state
            sampled = logits
            if any(s.row.constraint is not None for s in live):
                sampled = logits.clone()  # logprobs stay the model's own; only the draw is constrained
                for j, s in enumerate(live):
                    if s.row.constraint is not None:
                        s.row.constraint.mask(sampled[j], s.out)
            requests_live = [s.request for s in live]
            tokens = sample_tokens(sampled, requests_live, [s.generator for s in live])
            note_logprobs(logits, tokens, list(range(len(live))), requests_live, [s.steps for s in live])
            keep = []
            for j, s in enumerate(live):
                if self._advance(s, tokens[j]):
                    keep.append(j)
                else:
                    self._settle(s)
            self.stats["generated_tokens"] += len(live)
            if not keep:
                break
            if len(keep) < len(live):
                index = torch.tensor(keep, device=self._device)
                cache.batch_select_indices(index)
                mask, next_pos = mask[index], next_pos[index]
                live = [live[j] for j in keep]
            step = torch.tensor([[s.out[-1]] for s in live], device=self._device)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            reserve(cache, self.cache_reserve)
            out = self._forward(input_ids=step, attention_mask=mask, position_ids=next_pos,
                                past_key_values=cache)
            state = (out.past_key_values, mask, next_pos + 1, out.logits[:, -1, :])
        return [s.result for s in slots]

    def _slots(self, requests: list[GenerateRequest], rows: list[Row]) -> list[Slot]:
        limit = self._context_limit()
        slots = []
        for r, row in zip(requests, rows):
            ids, dropped = self._prompt_ids(r.messages, None if limit is None else max(1, limit - max(r.max_tokens, 1)))
            g = torch.Generator(device="cpu")
            if r.seed is None:
                g.seed()
            else:
                g.manual_seed(int(r.seed))
            slots.append(Slot(r, row, ids, dropped, g))
        return slots

    def _join(self, state, live: list[Slot], new: list[Slot]):
        """Prefill the new slots that have tokens to generate and put them beside the live ones; the others end now."""
        for s in new:
            if s.request.max_tokens <= 0:
                self._settle(s)
        new = [s for s in new if s.request.max_tokens > 0]
        if not new:
            return state, live
        cache, mask, next_pos, logits, cached = self._prefill([s.prompt for s in new])
        for s, n in zip(new, cached):
            s.reused = n
        added = (cache, mask, next_pos, logits)
        live = live + new
        for s in new:
            s.batch_size = len(live)
        self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(live))
        return (added if state is None else join_states(state, added)), live

    def _advance(self, s: Slot, token: int) -> bool:
        """Take the sampled token; whether the row goes on decoding."""
        r = s.request
        if s.row.cancelled:  # its caller is gone: free its place in the batch now
            s.finish = "cancelled"
            return False
        if token in self._eos_ids:
            s.finish = "stop"
            return False
        s.out.append(token)
        if r.stop or s.row.streams:
            so_far = self._tokenizer.decode(s.out, skip_special_tokens=True)
            if r.stop and any(x and x in so_far for x in r.stop):
                s.finish = "stop"
                return False
            if s.row.streams:
                s.row.emit(stable_text(so_far, r.stop))
        return len(s.out) < r.max_tokens

    def _settle(self, s: Slot) -> None:
        """The row's result, handed to its caller now (rows that end early do not wait for their batch)."""
        r = s.request
        text = self._tokenizer.decode(s.out, skip_special_tokens=True)
        if r.stop:
            cuts = [text.find(x) for x in r.stop if x and x in text]
            if cuts:
                text = text[: min(cuts)]
        raw: dict[str, Any] = {"truncated_prompt_tokens": s.dropped} if s.dropped else {}
        if r.top_logprobs is not None:
            raw["logprobs"] = logprob_entries(self._tokenizer, s.steps)
        raw.update(batch_size=max(s.batch_size, 1), batch_s=round(time.perf_counter() - s.joined_at, 4))
        s.result = Result(text=text.strip(), input_tokens=len(s.prompt),
                          output_tokens=len(s.out) + (s.finish == "stop"), finish_reason=s.finish, raw=raw,
                          cached_input_tokens=s.reused)
        if s.row.pending is not None:
            deliver(s.row.pending, s.result, None)

    def _decode_rows(self, requests: list[GenerateRequest]) -> list[Row]:
        """Per request of the batch about to be decoded: its caller (when it came through the inbox: streaming and
        cancellation) and, for `json_schema`, its constraint (when lm-format-enforcer is installed)."""
        callers: dict[int, list[Pending]] = {}
        for p in self._rows or ():
            callers.setdefault(id(p.request), []).append(p)
        rows = []
        for r in requests:
            waiting = callers.get(id(r))
            rows.append(self._row(waiting.pop(0) if waiting else None, r))
        return rows

    def _row(self, pending: Pending | None, request: GenerateRequest) -> Row:
        constraint = None
        if request.json_schema is not None and constrained.available():
            constraint = constrained.JsonConstraint(self._tokenizer, request.json_schema, self._eos_ids)
        return Row(pending, constraint)
