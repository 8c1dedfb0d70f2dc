"""The one async protocol every backend implements."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from assembly.providers.types import GenerateRequest, GenerateResponse


class Model(ABC):
    """A language model behind one async call.

    `name` is the spec string it was built from (e.g. "local:/models/x", "openai:gpt-4.1-mini").
    `scores_options` is True when the backend answers `request.choices` natively (log-likelihood per option), so a
    ballot is always a valid constrained choice without re-asking.
    `honours_json_schema` is True when the backend makes its answer follow `request.json_schema` (a provider's
    structured output, or constrained decoding); `assembly serve` refuses `response_format` for models that do not.
    """

    name: str = "model"
    scores_options: bool = False
    honours_json_schema: bool = False

    @abstractmethod
    async def generate(self, request: GenerateRequest) -> GenerateResponse: ...

    async def generate_many(self, requests: list[GenerateRequest]) -> list[GenerateResponse]:
        """Answer several requests; backends that batch override this, others run them concurrently."""
        return list(await asyncio.gather(*(self.generate(r) for r in requests)))

    async def stream(self, request: GenerateRequest) -> AsyncIterator[str | GenerateResponse]:
        """The answer as it is generated: text deltas (str) whose concatenation is the answer's text, then the
        complete GenerateResponse (usage, finish_reason). The default yields the whole text at once after
        `generate`; backends that decode token by token override it. Closing the iterator early abandons the call."""
        response = await self.generate(request)
        if response.text:
            yield response.text
        yield response

    def count_prompt_tokens(self, request: GenerateRequest) -> int | None:
        """Tokens the model reads before it answers `request` (for `choices`: the prompt and the longest option), so
        a server can refuse what does not fit instead of truncating it; None when this backend cannot count."""
        return None

    def context_window(self) -> int | None:
        """The most tokens, prompt and answer together, the model attends to; None when unknown."""
        return None

    async def aclose(self) -> None:
        """Release clients, threads or weights; the default has nothing to release."""
