"""What a chat completion answers, in OpenAI's wire format: the completion JSON, or the stream of chunks (role,
content deltas, finish with the `x_choice` extras, optional usage, [DONE])."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from assembly.providers.types import GenerateRequest, GenerateResponse, ModelError
from assembly.serving.errors import api_error


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


def reply_content(request: GenerateRequest, response: GenerateResponse) -> str:
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
            "message": {"role": "assistant", "content": reply_content(request, response),
                        **_message_extras(request, response)},
            "logprobs": _logprobs(request, response),
            "finish_reason": _finish(response.finish_reason),
        }],
        "usage": _usage(response),
    }


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
            yield f"data: {json.dumps(api_error(item).body())}\n\n".encode()
            return
    yield chunk(_message_extras(request, item), _finish(item.finish_reason))
    if include_usage:
        data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_id,
                "system_fingerprint": None, "choices": [], "usage": _usage(item)}
        yield f"data: {json.dumps(data)}\n\n".encode()
    yield b"data: [DONE]\n\n"


async def just(response: GenerateResponse) -> AsyncIterator[str | GenerateResponse]:
    yield response

