"""An OpenAI-compatible HTTP server for any Model (typically a local model with an optional adapter).

Endpoints (OpenAI's wire format, so the official `openai` client and any OpenAI-compatible tool can use it):
    POST /v1/chat/completions   messages, max_tokens | max_completion_tokens, temperature, top_p, seed, stop,
                                n (1 only), stream (+ stream_options.include_usage), response_format
                                (json_schema / json_object, see below), logprobs + top_logprobs (0..20; not with
                                stream)
    GET  /v1/models             the one served model; its entry carries `x_assembly: {scores_options, spec}`
    GET  /v1/models/{id}
    GET  /health                unauthenticated probe: {status, model, in_flight, max_queue}; 503 while shutting down

Extension for constrained choice (ballots): a body field `"choices": ["yes", "no", ...]` (at most `max_choices`
options of at most `max_choice_chars` characters, else 400 too_many_choices / choice_too_long) becomes
`GenerateRequest.choices`. The reply's message then carries `x_choice` (the chosen option) and, when the model
scores options, `x_choice_logprobs` ({option: log-probability}); its `content` is the chosen option. The assembly
`openai` backend uses this automatically against a loopback `assembly serve`, so remote jurors still cast scored
ballots. Other clients can ignore the extra fields.

Logprobs: `logprobs: true` (with `top_logprobs: n`, 0..20) becomes `GenerateRequest.top_logprobs`, and the reply's
`choices[0].logprobs` is OpenAI's `{"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}`,
one entry per generated token (the end-of-turn token that stopped it included), when the model reports them (a
local model does: its own log-probabilities, before temperature); otherwise it is null. So an `openai` client with
`server_choices=False` scores ballots here from top_logprobs as it would against any server. `bytes` are the
token's own bytes where the model knows them (byte-level BPE), else the UTF-8 of its text. Streaming with logprobs
is refused (400): the answer is streamed in pieces of text, not tokens.

Structured output: `response_format` becomes `request.json_schema` ({"type": "object"} for json_object) when the
model says it honours schemas (`Model.honours_json_schema`: a LocalModel constrains its decoding with
lm-format-enforcer, see assembly.providers.constrained; the OpenAI and Anthropic backends use their provider's
structured output); for any other model it is refused (400 unsupported_response_format), never silently ignored.

Prompts that do not fit are refused, not cut: before a request is queued, the model counts its prompt tokens
(`Model.count_prompt_tokens`; for `choices`, plus the longest option) and a prompt over the model's context minus
max_tokens, or over `max_prompt_tokens`, is a 400 with code context_length_exceeded (param "messages"). Backends
that cannot count are not checked here.

Concurrency: every request awaits the model on the server's event loop; a LocalModel batches concurrent calls (its
micro-batcher), so concurrent HTTP requests share forward passes. The queue is bounded: at most `max_queue`
requests are inside the server at once, queued or running (a stream until its last byte); one more is answered
429 rate_limit_exceeded with Retry-After at once, and once shutdown has begun (Ctrl-C, SIGTERM, ServerThread.stop)
new requests get 503 server_shutting_down while those inside finish. A client that hangs up is dropped: the
request's task is cancelled (the handler races it against the ASGI disconnect message; Starlette alone would let
it run), so a LocalModel skips it if it is still queued or drops its row from the decoding loop at the next token,
and its place in the queue is free at once (the access log shows 499).

Streaming is real: `model.stream` yields text deltas as they are decoded (a LocalModel's batching thread hands each
settled piece of text to the request's event loop: no half UTF-8 character, nothing that may still turn out to be
a stop string), sent as OpenAI chunks (role, content deltas, finish + x_choice extras, usage with
stream_options.include_usage, `data: [DONE]`). Backends without token streaming answer through the protocol's
default, the whole text in one delta. The status line waits for the first delta, so a request that fails at once
still gets its HTTP error; a failure after that ends the stream with an OpenAI-shaped `data: {"error": ...}` event.

Safety: binds 127.0.0.1 by default; optional bearer token (constant-time compare; 401 in OpenAI's error shape);
bodies over `max_body_bytes` -> 413, invalid JSON -> 400, a well-formed body with bad fields -> 400, all as
`{"error": {"message", "type", "param", "code"}}`. The token is never logged or echoed.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from assembly.providers.base import Model
from assembly.providers.types import GenerateRequest, GenerateResponse, Message, ModelError

log = logging.getLogger("assembly.serve")

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_QUEUE = 64  # requests in the server at once (queued or running); a LocalModel batches 16 by default
DEFAULT_MAX_CHOICES = 32  # each option is one scoring pass over the cached prompt
DEFAULT_MAX_CHOICE_CHARS = 500


class APIError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers


def error_response(status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


# ---------------------------------------------------------------------------------------------------------------------
# Wire format in


class _ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionBody(BaseModel):
    """The fields we honour; other OpenAI fields (user, logit_bias, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[_ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = Field(1, ge=1)
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    choices: list[str] | None = None  # extension: constrained choice


_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _text(content: str | list[dict[str, Any]] | None, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(400, f"messages[{index}].content: only text parts are supported, got "
                                f"type {part.get('type')!r}", param=f"messages[{index}].content")
        parts.append(part["text"])
    return "".join(parts)


def to_generate_request(body: ChatCompletionBody, *, default_max_tokens: int, max_tokens_limit: int,
                        max_choices: int = DEFAULT_MAX_CHOICES,
                        max_choice_chars: int = DEFAULT_MAX_CHOICE_CHARS) -> GenerateRequest:
    if body.n not in (None, 1):
        raise APIError(400, "only n=1 is supported", param="n")
    messages = []
    for i, m in enumerate(body.messages):
        role = _ROLES.get(m.role)
        if role is None:
            raise APIError(400, f"messages[{i}].role {m.role!r} is not supported (system, developer, user, "
                                f"assistant)", param=f"messages[{i}].role")
        messages.append(Message(role=role, content=_text(m.content, i)))
    max_tokens = body.max_completion_tokens or body.max_tokens or default_max_tokens
    if max_tokens > max_tokens_limit:
        raise APIError(400, f"max_tokens {max_tokens} exceeds this server's limit of {max_tokens_limit}",
                       param="max_tokens")
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    if stop is not None and len(stop) > 16:
        raise APIError(400, "at most 16 stop sequences", param="stop")
    schema = None
    fmt = body.response_format or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise APIError(400, "response_format.json_schema.schema must be an object", param="response_format")
    elif fmt.get("type") == "json_object":
        schema = {"type": "object"}
    elif fmt and fmt.get("type") not in (None, "text"):
        raise APIError(400, f"response_format type {fmt.get('type')!r} is not supported", param="response_format")
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    if body.logprobs and body.stream:
        raise APIError(400, "logprobs are not available with stream: true on this server", param="logprobs")
    choices = body.choices
    if choices is not None:
        if not choices or len(set(choices)) != len(choices) or not all(c for c in choices):
            raise APIError(400, "choices must be a non-empty list of distinct, non-empty strings", param="choices")
        if len(choices) > max_choices:
            raise APIError(400, f"{len(choices)} choices; this server scores at most {max_choices}", param="choices",
                           code="too_many_choices")
        for i, c in enumerate(choices):
            if len(c) > max_choice_chars:
                raise APIError(400, f"choices[{i}] is {len(c)} characters; this server accepts at most "
                                    f"{max_choice_chars}", param=f"choices[{i}]", code="choice_too_long")
    return GenerateRequest(
        messages=messages,
        max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,  # OpenAI's defaults
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=body.seed,
        stop=stop or None,
        choices=choices,
        json_schema=schema,
        top_logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        tags={"source": "serve"},
    )


# ---------------------------------------------------------------------------------------------------------------------
# Wire format out


def _finish(reason: str | None) -> str:
    return reason if reason in ("stop", "length", "content_filter") else "stop"


def _usage(response: GenerateResponse) -> dict[str, Any]:
    """OpenAI's usage object; `prompt_tokens_details.cached_tokens` counts the prompt tokens a local model took
    from a shared or stored prefix (what OpenAI and vLLM report for their prompt caches)."""
    i, o = response.usage.input_tokens, response.usage.output_tokens
    return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o,
            "prompt_tokens_details": {"cached_tokens": response.usage.cached_input_tokens}}


def _message_extras(request: GenerateRequest, response: GenerateResponse) -> dict[str, Any]:
    if not request.choices:
        return {}
    extras: dict[str, Any] = {"x_choice": response.choice}
    if response.choice_logprobs is not None:
        extras["x_choice_logprobs"] = response.choice_logprobs
    return extras


def _content(request: GenerateRequest, response: GenerateResponse) -> str:
    if request.choices and response.choice is not None:
        return response.choice
    return response.text


def _token(entry: dict[str, Any]) -> dict[str, Any]:
    token = entry["token"]
    return {"token": token, "logprob": entry["logprob"], "bytes": entry.get("bytes") or list(token.encode("utf-8"))}


def _logprobs(request: GenerateRequest, response: GenerateResponse) -> dict[str, Any] | None:
    """OpenAI's `choices[0].logprobs` from the model's `raw["logprobs"]`; None when not asked or not reported."""
    entries = response.raw.get("logprobs")
    if request.top_logprobs is None or not isinstance(entries, list):
        return None
    return {"content": [{**_token(e), "top_logprobs": [_token(t) for t in e.get("top_logprobs", [])]}
                        for e in entries]}


def completion_json(cid: str, created: int, model_id: str, request: GenerateRequest,
                    response: GenerateResponse) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model_id,
        "system_fingerprint": None,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": _content(request, response),
                        **_message_extras(request, response)},
            "logprobs": _logprobs(request, response),
            "finish_reason": _finish(response.finish_reason),
        }],
        "usage": _usage(response),
    }


def _error_body(exc: APIError) -> dict[str, Any]:
    return {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}


async def completion_chunks(cid: str, created: int, model_id: str, request: GenerateRequest,
                            first: str | GenerateResponse, rest: AsyncIterator[str | GenerateResponse],
                            include_usage: bool) -> AsyncIterator[bytes]:
    """OpenAI chunks for an answer arriving as `first`, then `rest` (text deltas, then the GenerateResponse; see
    Model.stream): role, one chunk per delta as it comes, finish (+ x_choice extras), optional usage, [DONE]. A
    model error after the first byte ends the stream with an error event, as OpenAI's API does."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_id,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            data["usage"] = None
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()

    yield chunk({"role": "assistant", "content": ""})
    item = first
    while not isinstance(item, GenerateResponse):
        if item:
            yield chunk({"content": item})
        try:
            item = await anext(rest)
        except StopAsyncIteration:
            item = ModelError("the model's stream ended without its response")
        except Exception as exc:  # noqa: BLE001 - the status line is sent: report it in the stream
            item = exc
        if isinstance(item, BaseException):
            yield f"data: {json.dumps(_error_body(_api_error(item)))}\n\n".encode()
            return
    yield chunk(_message_extras(request, item), _finish(item.finish_reason))
    if include_usage:
        data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_id,
                "system_fingerprint": None, "choices": [], "usage": _usage(item)}
        yield f"data: {json.dumps(data)}\n\n".encode()
    yield b"data: [DONE]\n\n"


def _api_error(exc: BaseException) -> APIError:
    """What the client is told about a model's failure (a bug: its type only, never the traceback)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ModelError):
        if exc.status in (400, 404, 413, 422):
            return APIError(400, f"the model rejected the request: {exc}", code=getattr(exc, "code", None))
        if exc.retryable:
            return APIError(503, f"the model is temporarily unavailable: {exc}", type="server_error",
                            headers={"Retry-After": "1"})
        return APIError(500, f"the model failed: {exc}", type="server_error")
    log.error("model failed", exc_info=exc)
    return APIError(500, f"the model failed: {type(exc).__name__}", type="server_error")


async def _just(response: GenerateResponse) -> AsyncIterator[str | GenerateResponse]:
    yield response


# ---------------------------------------------------------------------------------------------------------------------
# The app


async def _read_body(request: Request, limit: int) -> bytes:
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

    def enter(self) -> "_Slot":
        if self.closing:
            raise APIError(503, "this server is shutting down", type="server_error", code="server_shutting_down",
                           headers={"Retry-After": "5"})
        if self.active >= self.limit:
            self.turned_away += 1
            raise APIError(429, f"this server already holds {self.limit} requests (its queue limit); retry shortly",
                           type="rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": "1"})
        self.active += 1
        self.peak = max(self.peak, self.active)
        return _Slot(self)

    def close(self) -> None:
        self.closing = True


class _Slot:
    def __init__(self, admission: Admission):
        self._admission: Admission | None = admission

    def release(self) -> None:  # idempotent: the handler and a stream's end may both call it
        if self._admission is not None:
            self._admission.active -= 1
            self._admission = None


class _ClientGone(Exception):
    """The client hung up before its answer was ready."""


T = TypeVar("T")


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects. After the body is read, the ASGI `receive` has nothing else to say."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`await work`, cancelling it as soon as the client hangs up (then _ClientGone). Starlette does not cancel a
    handler whose client is gone, so without this a queued or half-decoded request would keep its place in the
    queue and its row in the batch until the answer nobody reads was finished."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this handler was cancelled (shutdown): take the work with it
        task.cancel()
        gone.cancel()
        raise
    if task.done():
        gone.cancel()
        return task.result()
    task.cancel()  # a LocalModel marks the request cancelled: its row is skipped or dropped at the next step
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: nobody is waiting for it
    raise _ClientGone()


class _Stream(StreamingResponse):
    """A StreamingResponse that runs `on_close` (release the queue slot, close the model's stream) however it ends:
    finished, cut short by a disconnect (Starlette cancels the body), or never started."""

    def __init__(self, content: AsyncIterator[bytes], on_close: list[Callable[[], Any]], **kwargs: Any):
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
            for close in self._on_close:
                result = close()
                if asyncio.iscoroutine(result):
                    await result


async def _answer(request: Request, work: Awaitable[T]) -> T:
    """The model's answer, unless the client hangs up first; a model failure as an OpenAI-shaped error."""
    try:
        return await _unless_disconnected(request, work)
    except (_ClientGone, APIError):
        raise
    except Exception as exc:  # noqa: BLE001 - every model failure becomes an OpenAI-shaped error
        raise _api_error(exc) from None


async def _check_context(model: Model, request: GenerateRequest, max_prompt_tokens: int | None) -> None:
    """Refuse (400, context_length_exceeded) a prompt that would not fit, instead of letting the model cut it."""
    def measure() -> tuple[int | None, int | None]:
        counted = model.count_prompt_tokens(request)
        return counted, (model.context_window() if counted is not None else None)

    try:
        counted, window = await asyncio.to_thread(measure)
    except Exception as exc:  # noqa: BLE001 - e.g. the weights failed to load
        raise _api_error(exc) from None
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


def create_app(
    model: Model,
    *,
    model_id: str | None = None,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    default_max_tokens: int = 512,
    max_tokens_limit: int = 4096,
    max_queue: int = DEFAULT_MAX_QUEUE,
    max_prompt_tokens: int | None = None,
    max_choices: int = DEFAULT_MAX_CHOICES,
    max_choice_chars: int = DEFAULT_MAX_CHOICE_CHARS,
    close_model: bool = False,
) -> FastAPI:
    """The FastAPI app serving `model`. `model_id` (default: the model's spec name) is what /v1/models lists and
    replies carry; requests may name any model (one model per server). `max_queue`: requests inside the server at
    once (more: 429); `max_prompt_tokens`: a cap below the model's own (its context minus max_tokens);
    `max_choices`, `max_choice_chars`: caps on the `choices` extension. `close_model`: aclose it at shutdown.
    `app.state.admission` is the queue (its `close()` makes new requests 503)."""
    served = model_id or model.name
    started = int(time.time())
    admission = Admission(max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        admission.close()
        if close_model:
            await model.aclose()

    app = FastAPI(title="assembly serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.model = model
    app.state.admission = admission

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, type=exc.type, param=exc.param, code=exc.code,
                              headers=exc.headers)

    @app.exception_handler(_ClientGone)
    async def _client_gone(request: Request, exc: _ClientGone):
        return Response(status_code=499)  # nginx's "client closed request": for the access log, nobody reads it

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), code=None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return error_response(400, str(exc.errors()[:3]))

    def check_token(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise APIError(401, "invalid or missing bearer token (send 'Authorization: Bearer <token>')",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    def model_entry() -> dict[str, Any]:
        return {"id": served, "object": "model", "created": started, "owned_by": "assembly",
                "x_assembly": {"scores_options": bool(model.scores_options), "spec": model.name}}

    @app.get("/health")
    async def health():
        body = {"status": "shutting_down" if admission.closing else "ok", "model": served,
                "in_flight": admission.active, "max_queue": admission.limit}
        return JSONResponse(body, status_code=503 if admission.closing else 200)

    @app.get("/v1/models")
    async def list_models(request: Request):
        check_token(request)
        return {"object": "list", "data": [model_entry()]}

    @app.get("/v1/models/{model_name:path}")
    async def get_model(model_name: str, request: Request):
        check_token(request)
        if model_name != served:
            raise APIError(404, f"model {model_name!r} is not served here (this server serves {served!r})",
                           code="model_not_found")
        return model_entry()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        check_token(request)
        raw = await _read_body(request, max_body_bytes)
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise APIError(400, f"request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise APIError(400, "request body must be a JSON object")
        try:
            body = ChatCompletionBody.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise APIError(400, f"invalid request: {where}: {first['msg']}", param=where or None) from None
        greq = to_generate_request(body, default_max_tokens=default_max_tokens, max_tokens_limit=max_tokens_limit,
                                   max_choices=max_choices, max_choice_chars=max_choice_chars)
        if greq.json_schema is not None and not model.honours_json_schema:
            raise APIError(400, f"response_format {body.response_format.get('type')!r} is not supported for this "
                                f"model: it cannot constrain its answer to a JSON schema", param="response_format",
                           code="unsupported_response_format")
        slot = admission.enter()
        try:
            await _check_context(model, greq, max_prompt_tokens)
            cid = "chatcmpl-" + uuid.uuid4().hex
            created = int(time.time())
            if not body.stream:
                response = await _answer(request, model.generate(greq))
                return completion_json(cid, created, served, greq, response)
            # Streaming: wait for the first delta here, so a request that fails at once still gets its HTTP status.
            items: AsyncIterator[str | GenerateResponse]
            if greq.choices:  # a scored choice is known all at once
                response = await _answer(request, model.generate(greq))
                first, items = _content(greq, response), _just(response)
            else:
                items = model.stream(greq)
                try:
                    first = await _answer(request, anext(items))
                except BaseException:
                    await items.aclose()
                    raise
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            stream = _Stream(completion_chunks(cid, created, served, greq, first, items, include_usage),
                             on_close=[slot.release, items.aclose], media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            slot = None  # the stream holds it until its last byte
            return stream
        finally:
            if slot is not None:
                slot.release()

    return app


# ---------------------------------------------------------------------------------------------------------------------
# Running it


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.set_inheritable(True)
    return sock


class ServerThread:
    """Run an app with uvicorn in a background thread on 127.0.0.1 (port 0: a free one). For tests and embedding:

        with ServerThread(create_app(model)) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="x")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self._sock = _bind(host, port)
        self.app = app
        self.host = host
        self.port = self._sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True,
                                        name=f"assembly-serve-{self.port}")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def start(self, timeout: float = 30.0) -> "ServerThread":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        _close_admission(self.app)
        self.server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _close_admission(app: Any) -> None:
    """New requests get 503 from now on, while those inside finish (uvicorn's graceful shutdown)."""
    admission = getattr(getattr(app, "state", None), "admission", None)
    if admission is not None:
        admission.close()


def run_server(
    model: Model,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    model_id: str | None = None,
    max_tokens_limit: int = 4096,
    max_queue: int = DEFAULT_MAX_QUEUE,
    max_prompt_tokens: int | None = None,
    max_choices: int = DEFAULT_MAX_CHOICES,
    max_choice_chars: int = DEFAULT_MAX_CHOICE_CHARS,
    log_level: str = "info",
) -> None:
    """Serve `model` in the foreground until interrupted; the model is closed at shutdown."""
    import uvicorn

    app = create_app(model, model_id=model_id, token=token, max_body_bytes=max_body_bytes,
                     max_tokens_limit=max_tokens_limit, max_queue=max_queue, max_prompt_tokens=max_prompt_tokens,
                     max_choices=max_choices, max_choice_chars=max_choice_chars, close_model=True)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:  # Ctrl-C / SIGTERM: refuse new work first
            _close_admission(app)
            super().handle_exit(sig, frame)

    Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")).run()
