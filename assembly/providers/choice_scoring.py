"""Constrained choice by log-likelihood (`request.choices`) on a LocalModel.

The prompt is run once per request (all requests of the batch together, left padded); then, for option k = 1..K,
the k-th option of every request is scored in one small forward pass that reuses the cached prompt (the cache is
cropped back after each pass). Cost: one prompt prefill plus K short passes per batch, instead of one full pass per
(prompt, option). What is scored is the assistant's whole reply as the chat template renders it: the option text
followed by the end-of-turn token (so "Yes" is scored as "the answer is exactly 'Yes'", not as a prefix of "Yes,
but ..."). Methods (`choice_method`):
  - "sum" (default): total log-probability of the reply, i.e. log P(the answer is exactly this option). The
    log-softmax over options is then a true conditional distribution (the model's probabilities renormalised to the
    allowed answers), which is what ballots' `probabilities` and fidelity metrics against survey answer
    distributions need. It favours shorter options a little; ballot options are usually short, similar labels.
  - "mean": mean token log-probability (length-normalised). Not a probability; on SmolLM2 it favours *longer*
    options, because the later tokens of a multi-word option are nearly certain once it has begun.
  - "letter": options appended to the last user message as "A. ...", "B. ..." and the letter scored (the
    MMLU/OpinionQA convention for strong models).
`choice_logprobs` is a log-softmax over the option scores, so exp(values) sums to 1. `raw["option_token_logprobs"]`
keeps every option's per-token log-probabilities so other scorings can be computed afterwards.
Why "sum": see CHOICE_METHOD_NOTE (a small experiment on SmolLM2-135M-Instruct).
"""

from __future__ import annotations

from typing import Any

import torch

from assembly.providers.batching import Result
from assembly.providers.letters import LETTERS, with_letter_listing
from assembly.providers.reserved_cache import reserve
from assembly.providers.types import GenerateRequest, Message, ModelError

CHOICE_METHODS = ("sum", "mean", "letter")
CHOICE_METHOD_NOTE = (
    "Measured on SmolLM2-135M-Instruct: 10 persona/question pairs with an obvious answer, each asked with the "
    "options in both orders (20 ballots, the project's ballot wording). Correct / same answer under both orders: "
    "sum 7/20, 9/10; mean 7/20, 7/10; letter 9/20, 3/10 (it picks the first-listed option 15/20). At 135M no "
    "method follows the persona better than chance; 'sum' is the most order-robust and the only one whose "
    "normalised scores are probabilities, so it is the default. 'letter' suits larger models."
)


class ChoiceScoringMixin:
    """`_score_batch`: the scored choices of one batch. Needs from the class: `_prefill` and `_forward`
    (ForwardMixin), `_prompt_ids`, `_reply_ids`, `_context_limit`, `_device`, `_pad_id`, `_closing`,
    `cache_reserve` and `choice_method`."""

    def _choice_messages(self, request: GenerateRequest) -> tuple[list[Message], list[str]]:
        """Messages to score against, and the reply text that stands for each option."""
        options = list(request.choices or [])
        if self.choice_method != "letter" or len(options) > len(LETTERS):
            return list(request.messages), options
        return with_letter_listing(request.messages, options)

    @torch.inference_mode()
    def _score_batch(self, requests: list[GenerateRequest]) -> list[Result]:
        limit = self._context_limit()
        prompts, replies, dropped = [], [], []
        for r in requests:
            messages, texts = self._choice_messages(r)
            reps = [self._reply_ids(messages, t) for t in texts]
            longest = max(len(x) for x in reps)
            ids, d = self._prompt_ids(messages, None if limit is None else max(1, limit - longest))
            prompts.append(ids)
            replies.append(reps)
            dropped.append(d)
        cache, mask, next_pos, last, reused = self._prefill(prompts)
        first = torch.log_softmax(last.float(), dim=-1)  # [B, V]: the reply's first token
        token_lp: list[list[list[float]]] = [[[] for _ in reps] for reps in replies]
        for b, reps in enumerate(replies):
            for k, rep in enumerate(reps):
                token_lp[b][k].append(float(first[b, rep[0]]))
        # Each option's pass is cropped off again, so the cache can take every option's tokens in place.
        reserve(cache, max(len(rep) for reps in replies for rep in reps) if self.cache_reserve else 0)
        for k in range(max(len(reps) for reps in replies)):
            if self._closing.is_set():
                raise ModelError(f"model {self.name} was closed while scoring")
            # Option k of every request in one pass over the cached prompts; right padded (causal: pads come after).
            rows = [reps[k][:-1] if k < len(reps) else [] for reps in replies]
            width = max(len(r) for r in rows)
            if width == 0:
                continue
            step = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
            step_mask = torch.zeros((len(rows), width), dtype=torch.long)
            for b, r in enumerate(rows):
                if r:
                    step[b, : len(r)] = torch.tensor(r)
                    step_mask[b, : len(r)] = 1
            step, step_mask = step.to(self._device), step_mask.to(self._device)
            pos = next_pos + torch.arange(width, device=self._device)[None, :]
            out = self._forward(input_ids=step, attention_mask=torch.cat([mask, step_mask], dim=1),
                                position_ids=pos, past_key_values=cache)
            cache = out.past_key_values
            lp = torch.log_softmax(out.logits.float(), dim=-1)  # [B, width, V]
            for b, reps in enumerate(replies):
                if k < len(reps):
                    targets = reps[k][1:]
                    if targets:
                        got = lp[b, torch.arange(len(targets)), torch.tensor(targets)]
                        token_lp[b][k].extend(got.tolist())
            cache.crop(-width)  # back to the shared prompt for the next option
        results = []
        for b, r in enumerate(requests):
            options = list(r.choices or [])
            per_option = token_lp[b]
            if self.choice_method == "mean":
                scores = [sum(x) / len(x) for x in per_option]
            else:  # "sum", and "letter" (every letter is one token plus the end-of-turn marker)
                scores = [sum(x) for x in per_option]
            norm = torch.log_softmax(torch.tensor(scores, dtype=torch.float64), dim=0).tolist()
            logprobs = {o: float(v) for o, v in zip(options, norm)}
            best = max(range(len(options)), key=lambda i: (norm[i], -i))
            raw: dict[str, Any] = {
                "choice_method": self.choice_method,
                "option_token_logprobs": {o: [round(v, 4) for v in x] for o, x in zip(options, per_option)},
            }
            if dropped[b]:
                raw["truncated_prompt_tokens"] = dropped[b]
            results.append(Result(
                text=options[best], choice=options[best], choice_logprobs=logprobs, finish_reason="stop",
                input_tokens=len(prompts[b]) + sum(len(x) for x in replies[b]),
                output_tokens=len(replies[b][best]), raw=raw, cached_input_tokens=reused[b]))
        return results
