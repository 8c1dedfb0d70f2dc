"""The FastAPI app serving one model: /health, /v1/models, /v1/chat/completions, and OpenAI-shaped errors."""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from assembly.providers.base import Model
from assembly.providers.types import GenerateResponse
from assembly.serving.disconnects import ClientGone, ClosingStream, answer
from assembly.serving.errors import APIError
from assembly.serving.limits import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CHOICE_CHARS,
    DEFAULT_MAX_CHOICES,
    DEFAULT_MAX_QUEUE,
    Admission,
    check_context,
    read_body,
)
from assembly.serving.replies import completion_chunks, completion_json, just, reply_content
from assembly.serving.schemas import parse_body, to_generate_request


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
        return exc.response()

    @app.exception_handler(ClientGone)
    async def _client_gone(request: Request, exc: ClientGone):
        return Response(status_code=499)  # nginx's "client closed request": for the access log, nobody reads it

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return APIError(exc.status_code, str(exc.detail)).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return APIError(400, str(exc.errors()[:3])).response()

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
        body = parse_body(await read_body(request, max_body_bytes))
        greq = to_generate_request(body, default_max_tokens=default_max_tokens, max_tokens_limit=max_tokens_limit,
                                   max_choices=max_choices, max_choice_chars=max_choice_chars)
        if greq.json_schema is not None and not model.honours_json_schema:
            raise APIError(400, f"response_format {body.response_format.get('type')!r} is not supported for this "
                                f"model: it cannot constrain its answer to a JSON schema", param="response_format",
                           code="unsupported_response_format")
        slot = admission.enter()
        try:
            await check_context(model, greq, max_prompt_tokens)
            cid = "chatcmpl-" + uuid.uuid4().hex
            created = int(time.time())
            if not body.stream:
                response = await answer(request, model.generate(greq))
                return completion_json(cid, created, served, greq, response)
            # Streaming: wait for the first delta here, so a request that fails at once still gets its HTTP status.
            items: AsyncIterator[str | GenerateResponse]
            if greq.choices:  # a scored choice is known all at once
                response = await answer(request, model.generate(greq))
                first, items = reply_content(greq, response), just(response)
            else:
                items = model.stream(greq)
                try:
                    first = await answer(request, anext(items))
                except BaseException:
                    await items.aclose()
                    raise
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            stream = ClosingStream(completion_chunks(cid, created, served, greq, first, items, include_usage),
                                   on_close=[slot.release, items.aclose], media_type="text/event-stream",
                                   headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            slot = None  # the stream holds it until its last byte
            return stream
        finally:
            if slot is not None:
                slot.release()

    return app

