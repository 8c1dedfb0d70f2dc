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
  - `request.json_schema` -> `response_format={"type": "json_schema", ...}`, strict when the schema qualifies for
    strict mode (`strict_qualifies`: every object closed and listing all its properties as required, as the ballot
    schemas are), else strict=False. A server that rejects response_format (400/422 naming it) is asked again
    without it, and not sent it again; the caller validates the JSON either way.
  - Constrained choice (`request.choices`), so ballots are scored, not re-asked:
      - against an `assembly serve` server (detected on loopback base URLs via GET /models, or forced with
        `server_choices=True`) the choices travel as the server's `choices` extension and its log-likelihood
        choice comes back;
      - otherwise the options are lettered under the last user message (assembly.providers.letters) and one token
        is asked for with `logprobs=True, top_logprobs=20` at temperature 0: the letters' log-probabilities,
        renormalised over the options, are `choice_logprobs` (`raw["choice_method"] = "top_logprobs"`).
    `scores_options` is True except for official reasoning models (o-series, gpt-5 and later reject logprobs);
    the `score_choices` option forces it on or off. A server that answers without logprobs, or rejects them
    (400/422 naming logprobs), or whose likeliest first tokens hold none of the letters (a model that thinks
    aloud first), turns it off: that call raises ChoiceScoringUnavailable, as do later choice requests without a
    call, and ballots fall back to structured output from then on.
  - Official OpenAI: `max_completion_tokens`, and no temperature/top_p for reasoning models (o-series, gpt-5 and
    later), which reject them; any other official model that answers 400 naming temperature/top_p is asked again
    without them. `max_tokens` counts reasoning tokens there: give reasoning models `reasoning_effort="low"` (a
    model option) or more tokens. Custom servers: `max_tokens`, temperature and top_p as given.
  - Prompt caching: OpenAI and vLLM (automatic prefix caching) cache prompt prefixes by themselves when they are
    byte-identical, so nothing is sent for it: prompts put what a phase's participants share first (system
    message) and what is one participant's own last. OpenAI caches prompts of 1,024 tokens or more. The reply's
    `usage.prompt_tokens_details.cached_tokens` (and `cache_write_tokens`, where given) becomes
    `Usage.cached_input_tokens` (`cache_write_tokens`); `input_tokens` stays `prompt_tokens`, cached ones included.
    Costs price cached tokens at the table's `cached_input` rate (assembly.providers.pricing).
"""

from __future__ import annotations

import logging
import math
import re
import urllib.parse
from typing import Any

import openai as _sdk

from assembly.providers.chat import joined_system
from assembly.providers.letters import LETTERS, letter_logprobs, with_letter_listing
from assembly.providers.sdk_backend import PLACEHOLDER_KEY  # noqa: F401  (re-exported)
from assembly.providers.sdk_backend import SDKBackend, SDKProvider, rejected, token_count
from assembly.providers.types import (
    ChoiceScoringUnavailable,
    GenerateRequest,
    GenerateResponse,
    ModelError,
    Usage,
)

log = logging.getLogger(__name__)

OFFICIAL_BASE_URL = "https://api.openai.com/v1"
TOP_LOGPROBS = 20  # the official API's maximum
_REASONING = re.compile(r"^(o\d|gpt-[5-9])")
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
_SUBSCHEMA_ONE = ("items", "additionalProperties", "not", "contains", "if", "then", "else")
_SUBSCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")


def strict_qualifies(schema: Any, root: bool = True) -> bool:
    """Whether OpenAI's strict structured-output mode accepts `schema`: an object at the root, and every object
    in it closed (`additionalProperties: false`) and listing each of its properties in `required`, recursively.
    Conservative (a subschema that is not an object fails), since a rejected strict schema costs the request its
    response_format altogether."""
    if not isinstance(schema, dict):
        return False
    types = schema.get("type")
    is_object = types == "object" or (isinstance(types, list) and "object" in types) or "properties" in schema
    if root and not is_object:
        return False
    if is_object:
        properties = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False or set(schema.get("required") or []) != set(properties):
            return False
    subschemas: list[Any] = []
    for key in _SUBSCHEMA_ONE:
        value = schema.get(key)
        if key in schema and not (key == "additionalProperties" and value is False):
            subschemas.extend(value if isinstance(value, list) else [value])
    for key in _SUBSCHEMA_LISTS:
        subschemas.extend(schema.get(key) or [])
    for key in _SUBSCHEMA_MAPS:
        subschemas.extend((schema.get(key) or {}).values())
    return all(strict_qualifies(sub, root=False) for sub in subschemas)


def _field(obj: Any, name: str) -> Any:
    """`obj.name` or `obj[name]`: the SDK leaves parts of a non-standard reply as plain dicts."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _usage(usage: Any) -> Usage:
    """Usage from a completion's `usage`: prompt_tokens (every prompt token, cached ones included) and
    prompt_tokens_details.cached_tokens / cache_write_tokens where the server reports them (OpenAI; vLLM with
    --enable-prompt-tokens-details); absent fields count 0."""
    details = _field(usage, "prompt_tokens_details")
    return Usage(
        input_tokens=token_count(_field(usage, "prompt_tokens")),
        output_tokens=token_count(_field(usage, "completion_tokens")),
        cached_input_tokens=token_count(_field(details, "cached_tokens")),
        cache_write_tokens=token_count(_field(details, "cache_write_tokens")),
    )


def _first_token_logprobs(choice: Any) -> dict[str, float]:
    """{token: logprob} of the first generated token: its top_logprobs and the token itself ({} when absent)."""
    content = _field(_field(choice, "logprobs"), "content") or []
    if not content:
        return {}
    first = content[0]
    top: dict[str, float] = {}
    for entry in [*(_field(first, "top_logprobs") or []), first]:
        token, value = _field(entry, "token"), _field(entry, "logprob")
        if isinstance(token, str) and isinstance(value, (int, float)):
            top[token] = max(float(value), top.get(token, -math.inf))
    return top


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
    own_options = ("api_key", "timeout", "server_choices", "score_choices", "reasoning_effort")
    schema_param_words = ("response_format", "json_schema")

    def __init__(
        self,
        model: str,
        *,
        server_choices: bool | None = None,
        score_choices: bool | None = None,
        reasoning_effort: str | None = None,
        **endpoint: Any,
    ):
        """`endpoint`: base_url, api_key, name, timeout (see SDKBackend). `server_choices`: use the `assembly serve`
        choices extension (None: detect it); `score_choices`: score ballots at all (None: unless an official
        reasoning model)."""
        super().__init__(model, **endpoint)
        self.reasoning_effort = reasoning_effort
        official_reasoning = self.official and bool(_REASONING.match(model))
        # reasoning models on the official API reject temperature/top_p; any other official model that answers 400
        # naming them is asked again without them (and not sent them again)
        self._send_sampling = not official_reasoning
        if server_choices is None:
            server_choices = not self.official and _detect_assembly_server(self.base_url, self._key)
        self.server_choices = bool(server_choices)
        # official reasoning models reject logprobs; other servers are tried, and turned off if they give none
        self.scores_options = (not official_reasoning) if score_choices is None else bool(score_choices)

    # ----------------------------------------------------------------------------------------------------------------

    def _by_letter(self, request: GenerateRequest) -> bool:
        """Whether `request` is a constrained choice scored from a lettered answer's top_logprobs."""
        return bool(request.choices) and not self.server_choices

    def _unavailable(self, why: str) -> ChoiceScoringUnavailable:
        """Turn choice scoring off (later ballots go straight to structured output) and say why."""
        if self.scores_options:
            log.warning("%s: ballots fall back to structured output: %s", self.name, why)
        self.scores_options = False
        return ChoiceScoringUnavailable(f"{self.name}: cannot score options from logprobs: {why}")

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        if not self._by_letter(request):
            return await super().generate(request)
        if not self.scores_options:  # turned off (by an earlier reply, or `score_choices=False`)
            raise ChoiceScoringUnavailable(f"{self.name}: option scoring is off for this model")
        if len(request.choices) > TOP_LOGPROBS:
            raise self._unavailable(f"{len(request.choices)} options; top_logprobs holds at most {TOP_LOGPROBS}")
        try:
            return await super().generate(request)
        except ChoiceScoringUnavailable:
            raise
        except ModelError as exc:
            if rejected(exc, "logprobs"):
                raise self._unavailable(f"the server rejected logprobs ({exc})") from None
            raise

    def _params(self, request: GenerateRequest, with_schema: bool) -> dict[str, Any]:
        by_letter = self._by_letter(request)
        messages = with_letter_listing(request.messages, request.choices)[0] if by_letter else request.messages
        params: dict[str, Any] = {
            "model": self.model,
            "messages": joined_system([{"role": m.role, "content": m.content} for m in messages]),
        }
        params["max_completion_tokens" if self.official else "max_tokens"] = 1 if by_letter else request.max_tokens
        if self._send_sampling:
            params["temperature"] = 0.0 if by_letter else request.temperature
            params["top_p"] = 1.0 if by_letter else request.top_p
        if self.reasoning_effort:
            params["reasoning_effort"] = self.reasoning_effort
        if request.seed is not None:
            params["seed"] = request.seed
        if by_letter:
            params.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
            return params
        if request.stop:
            params["stop"] = list(request.stop)
        if request.json_schema and with_schema:
            title = str(request.json_schema.get("title") or "response")
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": re.sub(r"[^A-Za-z0-9_-]", "_", title)[:64], "schema": request.json_schema,
                                "strict": strict_qualifies(request.json_schema)},
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
        raw: dict[str, Any] = {"id": getattr(completion, "id", None), "model": getattr(completion, "model", None)}
        if request.choices and self.server_choices:
            chosen = extra.get("x_choice")
            logprobs = extra.get("x_choice_logprobs")
            if chosen not in request.choices:
                chosen, logprobs = None, None
        elif self._by_letter(request):
            chosen, logprobs, top = self._letter_choice(choice, request.choices)
            raw.update(choice_method="top_logprobs", reply=text, top_logprobs=top)
            text = chosen
        if getattr(completion, "system_fingerprint", None):
            raw["system_fingerprint"] = completion.system_fingerprint
        if request.json_schema and not self._native_schema:
            raw["json_schema_sent"] = False
        return GenerateResponse(
            text=text,
            model=self.name,
            choice=chosen,
            choice_logprobs=logprobs,
            usage=_usage(usage),
            finish_reason=getattr(choice, "finish_reason", None),
            duration_s=duration,
            raw=raw,
        )

    def _letter_choice(self, choice: Any, options: list[str]) -> tuple[str, dict[str, float], dict[str, float]]:
        """The chosen option, {option: logprob} and the first token's {token: logprob}, from a lettered reply."""
        top = _first_token_logprobs(choice)
        if not top:
            raise self._unavailable("the server returned no logprobs (does it support logprobs/top_logprobs?)")
        letters = list(LETTERS[: len(options)])
        if not any(token.strip() in letters for token in top):  # e.g. a model that thinks aloud first
            raise self._unavailable(f"none of the letters {letters[0]}-{letters[-1]} is among the {len(top)} "
                                    f"likeliest first tokens of the reply: the model does not answer with a letter")
        logprobs = letter_logprobs(top, letters, options)
        best = max(range(len(options)), key=lambda i: (logprobs[options[i]], -i))
        return options[best], logprobs, {t: round(v, 4) for t, v in top.items()}
