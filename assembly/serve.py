"""An OpenAI-compatible HTTP server for any Model (typically a local model with an optional adapter).

Endpoints (OpenAI's wire format, so the official `openai` client and any OpenAI-compatible tool can use it):
    POST /v1/chat/completions   messages, max_tokens | max_completion_tokens, temperature, top_p, seed, stop,
                                n (1 only), stream (+ stream_options.include_usage), response_format
                                (json_schema / json_object: passed to the model as request.json_schema),
                                logprobs + top_logprobs (0..20; not with stream)
    GET  /v1/models             the one served model; its entry carries `x_assembly: {scores_options, spec}`
    GET  /v1/models/{id}
    GET  /health                unauthenticated liveness probe

Extension for constrained choice (ballots): a body field `"choices": ["yes", "no", ...]` becomes
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

Concurrency: every request awaits `model.generate` on the server's event loop; a LocalModel batches concurrent
calls (its micro-batcher), so concurrent HTTP requests share forward passes. Streaming sends the finished answer
as OpenAI chunks (role, content pieces, finish, optional usage, `data: [DONE]`); the Model protocol has no token
stream, so the first byte arrives when generation ends.

Safety: binds 127.0.0.1 by default; optional bearer token (constant-time compare; 401 in OpenAI's error shape);
bodies over `max_body_bytes` -> 413, invalid JSON -> 400, a well-formed body with bad fields -> 400, all as
`{"error": {"message", "type", "param", "code"}}`. The token is never logged or echoed.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from assembly.providers.base import Model
from assembly.providers.types import GenerateRequest, GenerateResponse, Message, ModelError

log = logging.getLogger("assembly.serve")

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


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


def to_generate_request(body: ChatCompletionBody, *, default_max_tokens: int, max_tokens_limit: int) -> GenerateRequest:
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


def _usage(response: GenerateResponse) -> dict[str, int]:
    i, o = response.usage.input_tokens, response.usage.output_tokens
    return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}


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


_PIECE = re.compile(r"\s*\S+\s*|\s+")


async def completion_chunks(cid: str, created: int, model_id: str, request: GenerateRequest,
                            response: GenerateResponse, include_usage: bool) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_id,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
        if include_usage and "usage" not in extra:
            data["usage"] = None
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()

    yield chunk({"role": "assistant", "content": ""})
    for piece in _PIECE.findall(_content(request, response)):
        yield chunk({"content": piece})
    yield chunk(_message_extras(request, response), _finish(response.finish_reason))
    if include_usage:
        data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_id,
                "system_fingerprint": None, "choices": [], "usage": _usage(response)}
        yield f"data: {json.dumps(data)}\n\n".encode()
    yield b"data: [DONE]\n\n"


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


def create_app(
    model: Model,
    *,
    model_id: str | None = None,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    default_max_tokens: int = 512,
    max_tokens_limit: int = 4096,
    close_model: bool = False,
) -> FastAPI:
    """The FastAPI app serving `model`. `model_id` (default: the model's spec name) is what /v1/models lists and
    replies carry; requests may name any model (one model per server). `close_model`: aclose it at shutdown."""
    served = model_id or model.name
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if close_model:
            await model.aclose()

    app = FastAPI(title="assembly serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.model = model

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, type=exc.type, param=exc.param, code=exc.code,
                              headers=exc.headers)

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
        return {"status": "ok", "model": served}

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
        greq = to_generate_request(body, default_max_tokens=default_max_tokens, max_tokens_limit=max_tokens_limit)
        try:
            response = await model.generate(greq)
        except ModelError as exc:
            if exc.status in (400, 404, 413, 422):
                raise APIError(400, f"the model rejected the request: {exc}") from None
            if exc.retryable:
                raise APIError(503, f"the model is temporarily unavailable: {exc}", type="server_error",
                               headers={"Retry-After": "1"}) from None
            raise APIError(500, f"the model failed: {exc}", type="server_error") from None
        except Exception as exc:  # a bug in the model: say what, not the traceback
            log.exception("model failed")
            raise APIError(500, f"the model failed: {type(exc).__name__}", type="server_error") from None
        cid = "chatcmpl-" + uuid.uuid4().hex
        created = int(time.time())
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(
                completion_chunks(cid, created, served, greq, response, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return completion_json(cid, created, served, greq, response)

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
        self.server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def run_server(
    model: Model,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    model_id: str | None = None,
    max_tokens_limit: int = 4096,
    log_level: str = "info",
) -> None:
    """Serve `model` in the foreground until interrupted; the model is closed at shutdown."""
    import uvicorn

    app = create_app(model, model_id=model_id, token=token, max_body_bytes=max_body_bytes,
                     max_tokens_limit=max_tokens_limit, close_model=True)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")).run()
