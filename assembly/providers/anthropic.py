"""Anthropic Messages API backend.

Spec: `anthropic:<model>[@<base url>]`, e.g. `anthropic:claude-sonnet-4-5`. The base URL has no `/v1` (the SDK
adds `/v1/messages`).

Keys and URLs (the official SDK's variables):
  - base URL: the spec's `@<base url>`, else ANTHROPIC_BASE_URL, else https://api.anthropic.com;
  - key: the `api_key` option, else ANTHROPIC_API_KEY. The key is always passed explicitly, so the SDK never goes
    looking for profile or credential files. With a custom base URL and no key a placeholder is sent (a proxy or
    local server may need none; one that does answers 401, which names ANTHROPIC_API_KEY). With the official URL
    and no key, building the model fails with MissingAPIKeyError.

Behaviour:
  - SDK retries are off (`max_retries=0`); `from_spec` wraps the backend (retries, concurrency, cost) unless told
    `retries=0, concurrency=None`.
  - system messages are joined into the `system` field; consecutive same-role messages are merged (the API wants
    alternating turns starting with the user).
  - temperature/top_p are not sent: the anthropic 2.x SDK speaks API version 2026-10-21, which rejects sampling
    parameters (the SDK dropped them). `seed` has no Anthropic equivalent; runs on this backend are not seeded.
  - `request.json_schema` -> native structured output (`output_config={"format": {"type": "json_schema", ...}}`,
    objects closed with `additionalProperties: false` as the API requires). `structured="instruction"` (or a 400
    that rejects the format, after which the model stops sending it) puts the schema in the system prompt
    instead; the caller validates and re-asks either way.
  - `scores_options` is False: ballots use the engine's validate-and-re-ask fallback.
  - Prompt caching (model option `prompt_cache`, default True): `system` is sent as one text block per system
    message, the first marked `cache_control: {"type": "ephemeral"}` (5-minute TTL). In assembly.layout the first
    system message holds what every juror of a phase shares (preamble, question, background, options, testimony
    digest, moderator summary) and the second the juror's persona, so the shared block is cached and read back by
    the next juror's call. A request without a system message carries no marker. The API caches only prefixes of a minimum length (1,024 to 4,096 tokens depending
    on the model); below it the marker is ignored and the call costs what it would without it.
    `prompt_cache=False` sends `system` as a plain string. The reply's `usage.cache_read_input_tokens` becomes
    `Usage.cached_input_tokens` and `cache_creation_input_tokens` becomes `cache_write_tokens`; the API's
    `input_tokens` leaves both out, so `Usage.input_tokens` is input + cache reads + cache writes (every prompt
    token sent). Costs: cache reads at 0.1 x and 5-minute cache writes at 1.25 x the input price
    (assembly.providers.pricing).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Literal

import anthropic as _sdk

from assembly.providers.sdk_backend import (
    PLACEHOLDER_KEY,  # noqa: F401  (re-exported)
    SDKBackend,
    SDKProvider,
    token_count,
)
from assembly.providers.types import GenerateRequest, GenerateResponse, Usage

OFFICIAL_BASE_URL = "https://api.anthropic.com"
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "refusal"}
CACHE_CONTROL = {"type": "ephemeral"}  # the API's default TTL, 5 minutes (refreshed on every read)


def _closed_schema(schema: Any) -> Any:
    """A copy of a JSON schema with every object schema closed (`additionalProperties: false`)."""
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" or "properties" in node:
                node.setdefault("additionalProperties", False)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


def schema_instruction(schema: dict[str, Any]) -> str:
    return (
        "Reply with only a JSON value that conforms to this JSON schema, with no other text before or after it:\n"
        + json.dumps(schema, ensure_ascii=False)
    )


class AnthropicModel(SDKBackend):
    provider = SDKProvider(
        prefix="anthropic", sdk=_sdk, client_class=_sdk.AsyncAnthropic, client_name="Anthropic",
        official_base_url=OFFICIAL_BASE_URL, base_url_variable="ANTHROPIC_BASE_URL", key_variable="ANTHROPIC_API_KEY",
    )
    own_options = ("api_key", "timeout", "structured", "prompt_cache")
    schema_param_words = ("output_config", "format", "schema")

    def __init__(self, model: str, *, structured: Literal["native", "instruction"] = "native",
                 prompt_cache: bool = True, **endpoint: Any):
        """`endpoint`: base_url, api_key, name, timeout (see SDKBackend). `prompt_cache`: mark the system prompt
        for prompt caching (see the module docstring)."""
        super().__init__(model, **endpoint)
        if structured not in ("native", "instruction"):
            raise ValueError("structured must be 'native' or 'instruction'")
        if not isinstance(prompt_cache, bool):
            raise TypeError(f"prompt_cache must be true or false, not {prompt_cache!r}")
        self._native_schema = structured == "native"
        self.prompt_cache = prompt_cache

    # ----------------------------------------------------------------------------------------------------------------

    def _params(self, request: GenerateRequest, native_schema: bool) -> dict[str, Any]:
        system = [m.content for m in request.messages if m.role == "system"]
        turns: list[dict[str, Any]] = []
        for m in request.messages:
            if m.role == "system":
                continue
            if turns and turns[-1]["role"] == m.role:
                turns[-1]["content"] += "\n\n" + m.content
            else:
                turns.append({"role": m.role, "content": m.content})
        if not turns or turns[0]["role"] != "user":
            turns.insert(0, {"role": "user", "content": "Please respond."})
        params: dict[str, Any] = {"model": self.model, "max_tokens": request.max_tokens, "messages": turns}
        if request.json_schema:
            if native_schema:
                params["output_config"] = {
                    "format": {"type": "json_schema", "schema": _closed_schema(request.json_schema)}
                }
            else:
                system.append(schema_instruction(request.json_schema))
        if system:
            if self.prompt_cache:  # one block per system message; the first, what a phase shares, is the cached prefix
                params["system"] = [{"type": "text", "text": text} for text in system]
                params["system"][0]["cache_control"] = dict(CACHE_CONTROL)
            else:
                params["system"] = "\n\n".join(system)
        stops = [s for s in (request.stop or []) if s.strip()]  # the API rejects whitespace-only stop sequences
        if stops:
            params["stop_sequences"] = stops
        return params

    def _create(self, request: GenerateRequest, native_schema: bool) -> Any:
        return self._client.messages.create(**self._params(request, native_schema))

    def _response(self, message: Any, request: GenerateRequest, duration: float) -> GenerateResponse:
        try:
            blocks = message.content
            text = "".join(b.text for b in blocks if getattr(b, "type", None) == "text")
        except (AttributeError, TypeError):
            raise self._malformed(f"no text content in {str(message)[:200]}") from None
        usage = getattr(message, "usage", None)
        stop = getattr(message, "stop_reason", None)
        # the API's input_tokens leaves out the tokens read from and written to the prompt cache: add them back
        read = token_count(getattr(usage, "cache_read_input_tokens", None))
        written = token_count(getattr(usage, "cache_creation_input_tokens", None))
        return GenerateResponse(
            text=text,
            model=self.name,
            usage=Usage(
                input_tokens=token_count(getattr(usage, "input_tokens", None)) + read + written,
                output_tokens=token_count(getattr(usage, "output_tokens", None)),
                cached_input_tokens=read,
                cache_write_tokens=written,
            ),
            finish_reason=_FINISH.get(stop, stop),
            duration_s=duration,
            raw={"id": getattr(message, "id", None), "model": getattr(message, "model", None), "stop_reason": stop},
        )
