"""The one async protocol every backend implements."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

from assembly.providers.types import GenerateRequest, GenerateResponse


class Model(ABC):
    """A language model behind one async call.

    `name` is the spec string it was built from (e.g. "local:/models/x", "openai:gpt-4.1-mini").
    `scores_options` is True when the backend answers `request.choices` natively (log-likelihood per option), so a
    ballot is always a valid constrained choice without re-asking.
    """

    name: str = "model"
    scores_options: bool = False

    @abstractmethod
    async def generate(self, request: GenerateRequest) -> GenerateResponse: ...

    async def generate_many(self, requests: list[GenerateRequest]) -> list[GenerateResponse]:
        """Answer several requests; backends that batch override this, others run them concurrently."""
        return list(await asyncio.gather(*(self.generate(r) for r in requests)))

    async def aclose(self) -> None:
        """Release clients, threads or weights; the default has nothing to release."""
