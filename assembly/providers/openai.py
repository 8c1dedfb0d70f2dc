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

import re
import urllib.parse
from typing import Any

import openai as _sdk

from assembly.providers.sdk_errors import PLACEHOLDER_KEY  # noqa: F401  (re-exported)
from assembly.providers.sdk_errors import SDKBackend, SDKProvider, rejected
from assembly.providers.types import GenerateRequest, GenerateResponse, ModelError, Usage

OFFICIAL_BASE_URL = "https://api.openai.com/v1"
_REASONING = re.compile(r"^(o\d|gpt-[5-9])")
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _insufficient_quota(exc: Exception, detail: str) -> bool:
    """A 429 for an exhausted quota (not a rate limit): retrying cannot help."""
    return getattr(exc, "code", None) == "insufficient_quota" or "insufficient_quota" in detail


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


class OpenAIModel(SDKBackend):
    provider = SDKProvider(
        prefix="openai", sdk=_sdk, client_class=_sdk.AsyncOpenAI, client_name="OpenAI",
        official_base_url=OFFICIAL_BASE_URL, base_url_variable="OPENAI_BASE_URL", key_variable="OPENAI_API_KEY",
        quota_exhausted=_insufficient_quota,
    )
    own_options = ("api_key", "timeout", "server_choices", "reasoning_effort")
    schema_param_words = ("response_format", "json_schema")

    def __init__(
        self,
        model: str,
        *,
        server_choices: bool | None = None,
        reasoning_effort: str | None = None,
        **endpoint: Any,
    ):
        """`endpoint`: base_url, api_key, name, timeout (see SDKBackend)."""
        super().__init__(model, **endpoint)
        self.reasoning_effort = reasoning_effort
        # reasoning models on the official API reject temperature/top_p; any other official model that answers 400
        # naming them is asked again without them (and not sent them again)
        self._send_sampling = not (self.official and bool(_REASONING.match(model)))
        if server_choices is None:
            server_choices = not self.official and _detect_assembly_server(self.base_url, self._key)
        self.server_choices = bool(server_choices)
        self.scores_options = self.server_choices

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

    def _create(self, request: GenerateRequest, native_schema: bool) -> Any:
        return self._client.chat.completions.create(**self._params(request, native_schema))

    def _drop_rejected(self, failure: ModelError) -> bool:
        if self.official and self._send_sampling and rejected(failure, "temperature", "top_p"):
            self._send_sampling = False
            return True
        return False

    def _response(self, completion: Any, request: GenerateRequest, duration: float) -> GenerateResponse:
        try:
            choice = completion.choices[0]
            message = choice.message
            text = message.content
            extra = message.model_extra or {}
        except (AttributeError, IndexError, TypeError, KeyError):
            raise self._malformed(f"no choices[0].message in {str(completion)[:200]}") from None
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
        if request.json_schema and not self._native_schema:
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
