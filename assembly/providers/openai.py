"""OpenAI Chat Completions backend: OpenAI itself or any OpenAI-compatible server (vLLM, Ollama, llama.cpp,
`assembly serve`).

Spec: `openai:<model>[@<base url>]`, e.g. `openai:gpt-4.1-mini`, `openai:qwen2.5-7b@http://127.0.0.1:8000/v1`.

Keys and URLs (the official SDK's variables):
  - base URL: the spec's `@<base url>`, else OPENAI_BASE_URL, else https://api.openai.com/v1;
  - key: the `api_key` option, else OPENAI_API_KEY. With a custom base URL (spec or OPENAI_BASE_URL) and no key,
    a placeholder key is sent: self-hosted servers usually need none, and one that does answers 401, which names
    OPENAI_API_KEY. With the official URL and no key, building the model fails with MissingAPIKeyError.
    OPENAI_API_KEY is sent to whatever base URL is chosen (as the SDK does): don't point it at a server you don't
    trust.
  - `assembly serve` accepts its bearer token as the key (set OPENAI_API_KEY to it).

Behaviour:
  - SDK retries are off (`max_retries=0`): `from_spec` wraps the backend in assembly.providers.wrappers (retries
    with backoff on 429/5xx/timeouts, a concurrency limit, cost) unless told `retries=0, concurrency=None`.
  - `request.json_schema` -> `response_format={"type": "json_schema", ...}` (strict=False, since our schemas need
    not meet strict mode's rules). A server that rejects response_format (400/422 naming it) is asked again without
    it, and not sent it again; the caller validates the JSON either way.
  - `scores_options` is False, except against an `assembly serve` server (detected on loopback base URLs via
    GET /models, or forced with `server_choices=True`): then `request.choices` travel as the `choices` extension
    and the server's log-likelihood choice comes back, so ballots are scored, not re-asked.
  - Official OpenAI: `max_completion_tokens`, and no temperature/top_p for reasoning models (o-series, gpt-5 and
    later), which reject them; any other official model that answers 400 naming temperature/top_p is asked again
    without them. `max_tokens` counts reasoning tokens there: give reasoning models `reasoning_effort="low"` (a
    model option) or more tokens. Custom servers: `max_tokens`, temperature and top_p as given.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import urllib.parse
from typing import Any

import openai as _sdk

from assembly.providers.base import Model
from assembly.providers.types import GenerateRequest, GenerateResponse, ModelError, Usage
from assembly.providers.wrappers import (
    MissingAPIKeyError,
    redact,
    retry_after_seconds,
    status_is_retryable,
    wrap_from_options,
)

OFFICIAL_BASE_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "assembly-no-key"
_REASONING = re.compile(r"^(o\d|gpt-[5-9])")
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _is_official(base_url: str) -> bool:
    return urllib.parse.urlparse(base_url).hostname == "api.openai.com"


def _detect_assembly_server(base_url: str, api_key: str, timeout: float = 2.0) -> bool:
    """True when the server at a loopback base URL is `assembly serve` (its /models entries carry `x_assembly`)."""
    if urllib.parse.urlparse(base_url).hostname not in _LOOPBACK:
        return False
    try:
        import httpx

        reply = httpx.get(
            base_url.rstrip("/") + "/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )
        data = reply.json().get("data") or []
        return bool(data) and bool((data[0].get("x_assembly") or {}).get("scores_options"))
    except Exception:
        return False


class OpenAIModel(Model):
    scores_options = False

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        name: str | None = None,
        timeout: float = 120.0,
        server_choices: bool | None = None,
        reasoning_effort: str | None = None,
    ):
        self.model = model
        self.reasoning_effort = reasoning_effort
        spec_url = base_url
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or OFFICIAL_BASE_URL).rstrip("/")
        self.official = _is_official(self.base_url)
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.official:
                raise MissingAPIKeyError(
                    "OPENAI_API_KEY is not set; export it, or use --model embedded or a local: model"
                )
            key = PLACEHOLDER_KEY
        self._key = key  # only ever handed to the SDK client; never logged, raised or stored
        self.name = name or (f"openai:{model}@{spec_url}" if spec_url else f"openai:{model}")
        self._client = _sdk.AsyncOpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=timeout)
        self._send_schema = True
        # reasoning models on the official API reject temperature/top_p; any other official model that answers 400
        # naming them is asked again without them (and not sent them again)
        self._send_sampling = not (self.official and bool(_REASONING.match(model)))
        if server_choices is None:
            server_choices = not self.official and _detect_assembly_server(self.base_url, key)
        self.server_choices = bool(server_choices)
        self.scores_options = self.server_choices

    @classmethod
    def from_spec(cls, spec, **options) -> Model:
        """The backend for `spec`, wrapped (retries, concurrency, cost) per the wrap options in `options`."""
        own = {k: options[k] for k in ("api_key", "timeout", "server_choices", "reasoning_effort") if k in options}
        backend = cls(spec.model, base_url=spec.base_url, name=str(spec), **own)
        return wrap_from_options(backend, options)

    def __repr__(self) -> str:
        return f"OpenAIModel({self.name!r})"

    # ----------------------------------------------------------------------------------------------------------------

    def _params(self, request: GenerateRequest, with_schema: bool) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        params["max_completion_tokens" if self.official else "max_tokens"] = request.max_tokens
        if self._send_sampling:
            params["temperature"] = request.temperature
            params["top_p"] = request.top_p
        if self.reasoning_effort:
            params["reasoning_effort"] = self.reasoning_effort
        if request.seed is not None:
            params["seed"] = request.seed
        if request.stop:
            params["stop"] = list(request.stop)
        if request.json_schema and with_schema:
            title = str(request.json_schema.get("title") or "response")
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": re.sub(r"[^A-Za-z0-9_-]", "_", title)[:64], "schema": request.json_schema,
                                "strict": False},
            }
        if request.choices and self.server_choices:
            params["extra_body"] = {"choices": list(request.choices)}
        return params

    def _error(self, exc: Exception) -> ModelError:
        """Our ModelError for an SDK error; the message is redacted and the SDK exception (which holds the request
        and its headers) is not chained."""
        where = f"{self.name}"
        if isinstance(exc, _sdk.APITimeoutError):
            return ModelError(f"{where}: request timed out", retryable=True)
        if isinstance(exc, _sdk.APIConnectionError):
            return ModelError(f"{where}: could not connect to {self.base_url}", retryable=True)
        if isinstance(exc, _sdk.APIStatusError):
            status = exc.status_code
            detail = redact(str(getattr(exc, "message", "") or exc), self._key)
            if status == 401:
                hint = (
                    "check OPENAI_API_KEY" if self._key != PLACEHOLDER_KEY
                    else "the server wants a key: set OPENAI_API_KEY"
                )
                err = ModelError(f"{where}: authentication failed (401); {hint}", status=401)
            elif status == 403:
                err = ModelError(f"{where}: permission denied (403); the key in OPENAI_API_KEY may lack access "
                                 f"to model {self.model!r}: {detail}", status=403)
            elif status == 404:
                err = ModelError(f"{where}: model {self.model!r} or endpoint not found at {self.base_url} (404): "
                                 f"{detail}", status=404)
            elif status == 429 and (getattr(exc, "code", None) == "insufficient_quota" or "insufficient_quota" in detail):
                err = ModelError(f"{where}: quota exhausted (429 insufficient_quota): {detail}", status=429)
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
        return ModelError(f"{where}: unexpected {type(exc).__name__} from the OpenAI client: "
                          f"{redact(str(exc), self._key)}")

    @staticmethod
    def _rejects(err: ModelError, *words: str) -> bool:
        return err.status in (400, 422) and any(w in str(err) for w in words)

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        start = time.perf_counter()
        with_schema = self._send_schema
        while True:
            failure: ModelError | None = None
            try:
                completion = await self._client.chat.completions.create(**self._params(request, with_schema))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every SDK failure becomes a ModelError with a safe message
                failure = self._error(exc)
            if failure is None:
                break
            if with_schema and request.json_schema and self._rejects(failure, "response_format", "json_schema"):
                self._send_schema = with_schema = False
                continue
            if self.official and self._send_sampling and self._rejects(failure, "temperature", "top_p"):
                self._send_sampling = False
                continue
            # raised outside the except block: the SDK exception (holding the request headers) is not attached
            raise failure
        return self._response(completion, request, time.perf_counter() - start)

    def _response(self, completion: Any, request: GenerateRequest, duration: float) -> GenerateResponse:
        try:
            choice = completion.choices[0]
            message = choice.message
            text = message.content
            extra = message.model_extra or {}
        except (AttributeError, IndexError, TypeError, KeyError):
            raise ModelError(
                f"{self.name}: malformed response from {self.base_url}: no choices[0].message in "
                f"{redact(str(completion)[:200], self._key)}"
            ) from None
        if text is None:
            refusal = getattr(message, "refusal", None)
            if refusal:
                raise ModelError(f"{self.name}: the model refused: {refusal}")
            text = ""
        if not isinstance(text, str):
            raise ModelError(f"{self.name}: malformed response: message content is {type(text).__name__}")
        usage = getattr(completion, "usage", None)
        chosen, logprobs = None, None
        if request.choices and self.server_choices:
            chosen = extra.get("x_choice")
            logprobs = extra.get("x_choice_logprobs")
            if chosen not in request.choices:
                chosen, logprobs = None, None
        raw: dict[str, Any] = {"id": getattr(completion, "id", None), "model": getattr(completion, "model", None)}
        if getattr(completion, "system_fingerprint", None):
            raw["system_fingerprint"] = completion.system_fingerprint
        if request.json_schema and not self._send_schema:
            raw["json_schema_sent"] = False
        return GenerateResponse(
            text=text,
            model=self.name,
            choice=chosen,
            choice_logprobs=logprobs,
            usage=Usage(
                input_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                output_tokens=getattr(usage, "completion_tokens", 0) or 0,
            ),
            finish_reason=getattr(choice, "finish_reason", None),
            duration_s=duration,
            raw=raw,
        )

    async def aclose(self) -> None:
        await self._client.close()
