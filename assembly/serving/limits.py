"""What a request may take from the server: its body size, a place in the bounded queue (Admission: 429 when
full, 503 once shutdown has begun) and the model's context (a prompt that does not fit is refused, not cut)."""

from __future__ import annotations

import asyncio

from fastapi import Request

from assembly.providers.base import Model
from assembly.providers.types import GenerateRequest
from assembly.serving.errors import APIError, api_error

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_QUEUE = 64  # requests in the server at once (queued or running); a LocalModel batches 16 by default
DEFAULT_MAX_CHOICES = 32  # each option is one scoring pass over the cached prompt
DEFAULT_MAX_CHOICE_CHARS = 500


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) past `limit` bytes whether its Content-Length says so or its stream does."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise APIError(400, "invalid Content-Length header") from None
        if too_big:
            raise APIError(413, f"request body is {declared} bytes; this server accepts at most {limit}",
                           code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body exceeds this server's limit of {limit} bytes",
                           code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


class Admission:
    """At most `limit` chat requests inside the server at once, queued or running (a stream until its last byte).
    One more is answered 429 at once instead of queueing without bound; after `close()` (shutdown), 503. Used on the
    server's event loop only; `close` may come from another thread (a flag)."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"the queue limit must be at least 1, got {limit}")
        self.limit = limit
        self.active = 0
        self.peak = 0
        self.turned_away = 0
        self.closing = False

    def enter(self) -> "Slot":
        if self.closing:
            raise APIError(503, "this server is shutting down", type="server_error", code="server_shutting_down",
                           headers={"Retry-After": "5"})
        if self.active >= self.limit:
            self.turned_away += 1
            raise APIError(429, f"this server already holds {self.limit} requests (its queue limit); retry shortly",
                           type="rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": "1"})
        self.active += 1
        self.peak = max(self.peak, self.active)
        return Slot(self)

    def close(self) -> None:
        self.closing = True


class Slot:
    """A place in the queue, held until `release`."""

    def __init__(self, admission: Admission):
        self._admission: Admission | None = admission

    def release(self) -> None:  # idempotent: the handler and a stream's end may both call it
        if self._admission is not None:
            self._admission.active -= 1
            self._admission = None


async def check_context(model: Model, request: GenerateRequest, max_prompt_tokens: int | None) -> None:
    """Refuse (400, context_length_exceeded) a prompt that would not fit, instead of letting the model cut it."""
    def measure() -> tuple[int | None, int | None]:
        counted = model.count_prompt_tokens(request)
        return counted, (model.context_window() if counted is not None else None)

    try:
        counted, window = await asyncio.to_thread(measure)
    except Exception as exc:  # noqa: BLE001 - e.g. the weights failed to load
        raise api_error(exc) from None
    if counted is None:
        return
    answer = 0 if request.choices else request.max_tokens
    if window is not None and counted + answer > window:
        detail = f"{counted} in the messages" + (f", {answer} for max_tokens" if answer else "")
        raise APIError(400, f"this model's context is {window} tokens, but the request needs {counted + answer} "
                            f"({detail}); shorten the messages or lower max_tokens", param="messages",
                       code="context_length_exceeded")
    if max_prompt_tokens is not None and counted > max_prompt_tokens:
        raise APIError(400, f"the messages take {counted} tokens; this server accepts at most {max_prompt_tokens}",
                       param="messages", code="context_length_exceeded")
