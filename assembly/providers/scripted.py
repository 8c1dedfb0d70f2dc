"""A scripted model for tests: replies from a list, a substring->reply dict, or a function; keeps a history.

Modelled on inspect_ai's mockllm and simonw/llm's MockModel: tests assert on what a participant was shown
(`history`), not only on outputs.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from typing import Union

from assembly.providers.base import Model
from assembly.providers.types import GenerateRequest, GenerateResponse, Usage

Reply = Union[str, Callable[[GenerateRequest], str]]


class ScriptedModel(Model):
    """Deterministic test double.

    replies:
      - a list of strings: returned in order, then the last one repeats;
      - a dict {substring: reply}: the first key found in the last message (then the whole prompt) wins;
      - a function request -> str.
    For constrained choices (`request.choices`), `choose(request)` decides; by default the first option whose text
    appears in the reply, else the first option. With `scores_options=True` it behaves like a scoring backend and
    fills `choice_logprobs`: log 1 for the chosen option and -5 for the others, or, with `scores(request)`
    returning {option: probability}, the log of those probabilities (renormalised over the request's choices).
    """

    def __init__(
        self,
        replies: Iterable[str] | dict[str, Reply] | Callable[[GenerateRequest], str] | None = None,
        *,
        name: str = "scripted:test",
        scores_options: bool = True,
        choose: Callable[[GenerateRequest], str] | None = None,
        scores: Callable[[GenerateRequest], dict[str, float]] | None = None,
        default: str = "I have listened carefully and I will weigh both sides.",
    ):
        self.name = name
        self.scores_options = scores_options
        self._choose = choose
        self._scores = scores
        self._default = default
        self._lock = asyncio.Lock()
        if replies is None:
            self._replies: object = None
        elif callable(replies) or isinstance(replies, dict):
            self._replies = replies
        else:
            self._replies = list(replies)
        self._index = 0
        self.history: list[GenerateRequest] = []

    @classmethod
    def from_spec(cls, spec, **options) -> "ScriptedModel":
        return cls(name=str(spec), **{k: v for k, v in options.items() if k in ("scores_options", "default")})

    def _reply(self, request: GenerateRequest) -> str:
        replies = self._replies
        if replies is None:
            return self._default
        if callable(replies):
            return replies(request)
        if isinstance(replies, dict):
            last = request.messages[-1].content if request.messages else ""
            whole = "\n".join(m.content for m in request.messages)
            for text in (last, whole):
                for key, reply in replies.items():
                    if key in text:
                        return reply(request) if callable(reply) else reply
            return self._default
        if not replies:
            return self._default
        reply = replies[min(self._index, len(replies) - 1)]
        self._index += 1
        return reply

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        async with self._lock:
            self.history.append(request)
            text = self._reply(request)
        choice = None
        logprobs = None
        if request.choices:
            if self._choose is not None:
                choice = self._choose(request)
            else:
                choice = next((c for c in request.choices if c.lower() in text.lower()), request.choices[0])
            if self.scores_options and self._scores is not None:
                given = self._scores(request)
                total = sum(given.get(c, 0.0) for c in request.choices)
                logprobs = {c: math.log(max(given.get(c, 0.0) / total, 1e-300)) for c in request.choices}
                choice = max(request.choices, key=lambda c: logprobs[c])
                text = choice
            elif self.scores_options:
                logprobs = {c: (0.0 if c == choice else -5.0) for c in request.choices}
                text = choice
        words = sum(len(m.content.split()) for m in request.messages)
        return GenerateResponse(
            text=text,
            model=self.name,
            choice=choice if self.scores_options else None,
            choice_logprobs=logprobs,
            usage=Usage(input_tokens=words, output_tokens=len(text.split())),
            finish_reason="stop",
        )
