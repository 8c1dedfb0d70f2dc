"""One typed request/response shared by every backend.

These are our own shapes, not a copy of any vendor's: backends translate to and from their wire formats.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, Field


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class GenerateRequest(BaseModel):
    """What a caller asks of a model.

    `choices` asks for a constrained choice: the response's `choice` must be exactly one of them. Backends that
    score options (the local model by log-likelihood, OpenAI-compatible servers from a letter's top_logprobs) fill
    `choice_logprobs` and `raw["choice_method"]`; others fall back to structured output validated and re-asked by
    the caller (see assembly.casting).
    `json_schema` asks for structured output; backends without native support ignore it and the caller validates.
    `top_logprobs` asks for each generated token's log-probability and its `top_logprobs` likeliest alternatives
    (0: the token's own only), returned in `response.raw["logprobs"]` by backends that can (the local model); others
    ignore it. None (the default) is left out of `payload()`, so requests that do not ask keep their hashes.
    `tags` never reach the model: they say who asked and why (role, participant, phase) so the call can be recorded.
    """

    messages: list[Message]
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None
    choices: list[str] | None = None
    json_schema: dict[str, Any] | None = None
    top_logprobs: int | None = Field(None, ge=0)
    tags: dict[str, Any] = Field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The part that determines the model's answer (everything but tags): used for request hashes. Optional
        fields added since hashes were first recorded are left out while unset, so recorded runs still replay."""
        unasked = {"top_logprobs"} if self.top_logprobs is None else set()
        return self.model_dump(exclude={"tags", *unasked}, mode="json")

    def hash(self, model: str) -> str:
        """Stable key of (model, payload): the replay and cache key. Identical requests share it."""
        blob = json.dumps({"model": model, **self.payload()}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()


class Usage(BaseModel):
    """Tokens of one call. `input_tokens` counts every prompt token sent; `cached_input_tokens` those of them that
    were not computed again (a provider's prompt cache read, or the local backend's reused prefix);
    `cache_write_tokens` those written to a provider's prompt cache (Anthropic bills them above the input price)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0


class GenerateResponse(BaseModel):
    text: str
    model: str
    choice: str | None = None
    choice_logprobs: dict[str, float] | None = None
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str | None = None
    duration_s: float = 0.0
    attempts: int = 1
    cost_usd: float | None = None
    # Provider-specific extras worth keeping (request ids, raw stop reasons); never secrets.
    raw: dict[str, Any] = Field(default_factory=dict)


class ModelError(RuntimeError):
    """A model call failed in a way the caller should see (auth, bad request, retries exhausted)."""

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class ChoiceScoringUnavailable(ModelError):
    """The backend cannot score `request.choices` after all (e.g. a server that returns no logprobs). It sets its
    `scores_options` to False before raising, so the caller falls back to structured output from then on."""
