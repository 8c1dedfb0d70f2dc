"""The request body of POST /v1/chat/completions (the OpenAI fields we honour, plus `choices`) and the
GenerateRequest it becomes; a body that cannot be honoured is an APIError naming the field."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assembly.providers.types import GenerateRequest, Message
from assembly.serving.errors import APIError
from assembly.serving.limits import DEFAULT_MAX_CHOICE_CHARS, DEFAULT_MAX_CHOICES


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



def parse_body(raw: bytes) -> ChatCompletionBody:
    """The request body, validated; invalid JSON or a bad field is a 400 naming where."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object")
    try:
        return ChatCompletionBody.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise APIError(400, f"invalid request: {where}: {first['msg']}", param=where or None) from None


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

