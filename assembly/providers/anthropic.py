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
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
import urllib.parse
from typing import Any, Literal

import anthropic as _sdk

from assembly.providers.base import Model
from assembly.providers.types import GenerateRequest, GenerateResponse, ModelError, Usage
from assembly.providers.wrappers import (
    MissingAPIKeyError,
    redact,
    retry_after_seconds,
    status_is_retryable,
    wrap_from_options,
)

OFFICIAL_BASE_URL = "https://api.anthropic.com"
PLACEHOLDER_KEY = "assembly-no-key"
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "refusal"}


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


class AnthropicModel(Model):
    scores_options = False

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        name: str | None = None,
        timeout: float = 120.0,
        structured: Literal["native", "instruction"] = "native",
    ):
        self.model = model
        spec_url = base_url
        self.base_url = (base_url or os.environ.get("ANTHROPIC_BASE_URL") or OFFICIAL_BASE_URL).rstrip("/")
        self.official = urllib.parse.urlparse(self.base_url).hostname == "api.anthropic.com"
        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            if self.official:
                raise MissingAPIKeyError(
                    "ANTHROPIC_API_KEY is not set; export it, or use --model embedded or a local: model"
                )
            key = PLACEHOLDER_KEY
        self._key = key  # only ever handed to the SDK client; never logged, raised or stored
        self.name = name or (f"anthropic:{model}@{spec_url}" if spec_url else f"anthropic:{model}")
        self._client = _sdk.AsyncAnthropic(api_key=key, base_url=self.base_url, max_retries=0, timeout=timeout)
        if structured not in ("native", "instruction"):
            raise ValueError("structured must be 'native' or 'instruction'")
        self._native_schema = structured == "native"

    @classmethod
    def from_spec(cls, spec, **options) -> Model:
        own = {k: options[k] for k in ("api_key", "timeout", "structured") if k in options}
        backend = cls(spec.model, base_url=spec.base_url, name=str(spec), **own)
        return wrap_from_options(backend, options)

    def __repr__(self) -> str:
        return f"AnthropicModel({self.name!r})"

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
            params["system"] = "\n\n".join(system)
        stops = [s for s in (request.stop or []) if s.strip()]  # the API rejects whitespace-only stop sequences
        if stops:
            params["stop_sequences"] = stops
        return params

    def _error(self, exc: Exception) -> ModelError:
        """Our ModelError for an SDK error: redacted message, SDK exception (holding request headers) not chained."""
        where = self.name
        if isinstance(exc, _sdk.APITimeoutError):
            return ModelError(f"{where}: request timed out", retryable=True)
        if isinstance(exc, _sdk.APIConnectionError):
            return ModelError(f"{where}: could not connect to {self.base_url}", retryable=True)
        if isinstance(exc, _sdk.APIStatusError):
            status = exc.status_code
            detail = redact(str(getattr(exc, "message", "") or exc), self._key)
            if status == 401:
                hint = (
                    "check ANTHROPIC_API_KEY" if self._key != PLACEHOLDER_KEY
                    else "the server wants a key: set ANTHROPIC_API_KEY"
                )
                err = ModelError(f"{where}: authentication failed (401); {hint}", status=401)
            elif status == 403:
                err = ModelError(f"{where}: permission denied (403); the key in ANTHROPIC_API_KEY may lack access "
                                 f"to model {self.model!r}: {detail}", status=403)
            elif status == 404:
                err = ModelError(f"{where}: model {self.model!r} or endpoint not found at {self.base_url} (404): "
                                 f"{detail}", status=404)
            else:
                err = ModelError(f"{where}: HTTP {status}: {detail}", retryable=status_is_retryable(status),
                                 status=status)
            err.retry_after = retry_after_seconds(getattr(exc.response, "headers", None))  # type: ignore[attr-defined]
            return err
        if isinstance(exc, _sdk.APIResponseValidationError):
            return ModelError(f"{where}: malformed response from {self.base_url}: {redact(str(exc), self._key)}")
        if isinstance(exc, ValueError):  # json.JSONDecodeError and friends
            return ModelError(f"{where}: malformed response from {self.base_url} (not valid JSON): "
                              f"{redact(str(exc), self._key)}")
        return ModelError(f"{where}: unexpected {type(exc).__name__} from the Anthropic client: "
                          f"{redact(str(exc), self._key)}")

    @staticmethod
    def _format_rejected(err: ModelError) -> bool:
        return err.status in (400, 422) and any(w in str(err) for w in ("output_config", "format", "schema"))

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        start = time.perf_counter()
        native = self._native_schema
        while True:
            failure: ModelError | None = None
            try:
                message = await self._client.messages.create(**self._params(request, native))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every SDK failure becomes a ModelError with a safe message
                failure = self._error(exc)
            if failure is None:
                break
            if native and request.json_schema and self._format_rejected(failure):
                self._native_schema = native = False
                continue
            # raised outside the except block: the SDK exception (holding the request headers) is not attached
            raise failure
        return self._response(message, time.perf_counter() - start)

    def _response(self, message: Any, duration: float) -> GenerateResponse:
        try:
            blocks = message.content
            text = "".join(b.text for b in blocks if getattr(b, "type", None) == "text")
        except (AttributeError, TypeError):
            raise ModelError(
                f"{self.name}: malformed response from {self.base_url}: no text content in "
                f"{redact(str(message)[:200], self._key)}"
            ) from None
        usage = getattr(message, "usage", None)
        stop = getattr(message, "stop_reason", None)
        return GenerateResponse(
            text=text,
            model=self.name,
            usage=Usage(
                input_tokens=getattr(usage, "input_tokens", 0) or 0,
                output_tokens=getattr(usage, "output_tokens", 0) or 0,
            ),
            finish_reason=_FINISH.get(stop, stop),
            duration_s=duration,
            raw={"id": getattr(message, "id", None), "model": getattr(message, "model", None), "stop_reason": stop},
        )

    async def aclose(self) -> None:
        await self._client.close()
