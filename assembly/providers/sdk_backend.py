"""What the SDK-based HTTP backends (openai, anthropic) share: SDK failures -> ModelError, the call loop that drops
parameters a server rejects, and their common base class `SDKBackend` (endpoint, key, name, client, `from_spec`,
`generate` with the structured-output fallback).

Both official SDKs are Stainless-generated and raise the same exception classes (APITimeoutError,
APIConnectionError, APIStatusError, APIResponseValidationError), so one mapping serves both; what differs (the key
variable named in messages, the client's name, OpenAI's insufficient_quota case) comes from the backend's
`SDKProvider`.

Every message is redacted, and the SDK exception (which holds the request and its headers) is never chained to
ours: `call_with_fallbacks` raises the ModelError outside the `except` block.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar, TypeVar

from assembly.providers.base import Model
from assembly.providers.types import GenerateRequest, GenerateResponse, ModelError
from assembly.providers.wrappers import (
    MissingAPIKeyError,
    redact,
    retry_after_seconds,
    status_is_retryable,
    wrap_from_options,
)

T = TypeVar("T")

PLACEHOLDER_KEY = "assembly-no-key"  # sent to a custom base URL when no key is set


def malformed_response_error(where: str, base_url: str, detail: str, key: str) -> ModelError:
    """`<where>: malformed response from <base_url>: <detail>`, the detail redacted."""
    return ModelError(f"{where}: malformed response from {base_url}: {redact(detail, key)}")


def model_error_from_sdk(
    exc: Exception,
    sdk: ModuleType,
    *,
    where: str,
    base_url: str,
    model: str,
    key: str,
    key_variable: str,
    client: str,
    quota_exhausted: Callable[[Exception, str], bool] | None = None,
) -> ModelError:
    """Our ModelError for an exception raised by `sdk` (the `openai` or `anthropic` module).

    where: the message prefix (the model's name); key: the key in use (redacted from messages; the placeholder key
    changes the 401 hint); key_variable: the environment variable that 401/403 messages name; client: the SDK's
    name in the message for an unexpected exception; quota_exhausted(exc, detail): True for a 429 that no retry can
    help (it is then not retryable).
    """
    if isinstance(exc, sdk.APITimeoutError):
        return ModelError(f"{where}: request timed out", retryable=True)
    if isinstance(exc, sdk.APIConnectionError):
        return ModelError(f"{where}: could not connect to {base_url}", retryable=True)
    if isinstance(exc, sdk.APIStatusError):
        status = exc.status_code
        detail = redact(str(getattr(exc, "message", "") or exc), key)
        if status == 401:
            hint = f"check {key_variable}" if key != PLACEHOLDER_KEY else f"the server wants a key: set {key_variable}"
            err = ModelError(f"{where}: authentication failed (401); {hint}", status=401)
        elif status == 403:
            err = ModelError(f"{where}: permission denied (403); the key in {key_variable} may lack access "
                             f"to model {model!r}: {detail}", status=403)
        elif status == 404:
            err = ModelError(f"{where}: model {model!r} or endpoint not found at {base_url} (404): "
                             f"{detail}", status=404)
        elif status == 429 and quota_exhausted is not None and quota_exhausted(exc, detail):
            err = ModelError(f"{where}: quota exhausted (429 insufficient_quota): {detail}", status=429)
        else:
            err = ModelError(f"{where}: HTTP {status}: {detail}", retryable=status_is_retryable(status),
                             status=status)
        err.retry_after = retry_after_seconds(getattr(exc.response, "headers", None))  # type: ignore[attr-defined]
        return err
    if isinstance(exc, sdk.APIResponseValidationError):
        return malformed_response_error(where, base_url, str(exc), key)
    if isinstance(exc, ValueError):  # json.JSONDecodeError and friends
        return malformed_response_error(where, f"{base_url} (not valid JSON)", str(exc), key)
    return ModelError(f"{where}: unexpected {type(exc).__name__} from the {client} client: {redact(str(exc), key)}")


def token_count(value: Any) -> int:
    """A token count from a reply's usage: a positive number as an int, else 0 (absent, None or malformed)."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else 0


def rejected(err: ModelError, *words: str) -> bool:
    """Whether `err` is a 400/422 naming any of `words` (the server rejected a parameter we sent)."""
    return err.status in (400, 422) and any(w in str(err) for w in words)


async def call_with_fallbacks(
    call: Callable[[], Awaitable[T]],
    to_error: Callable[[Exception], ModelError],
    drop_rejected: Callable[[ModelError], bool],
) -> T:
    """`await call()`, every failure turned into a ModelError by `to_error`. When `drop_rejected(error)` is True
    (it stopped sending what the server rejected), call again; otherwise raise the error, outside the `except`
    block so that the SDK exception is not attached. Cancellation propagates untouched."""
    while True:
        try:
            return await call()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every SDK failure becomes a ModelError with a safe message
            failure = to_error(exc)
        if not drop_rejected(failure):
            raise failure


@dataclass(frozen=True)
class SDKProvider:
    """What tells one SDK-based backend from another."""

    prefix: str  # the spec's provider, e.g. "openai"
    sdk: ModuleType  # the SDK module, whose exception classes are mapped
    client_class: Any  # its async client, e.g. openai.AsyncOpenAI
    client_name: str  # its name in messages, e.g. "OpenAI"
    official_base_url: str
    base_url_variable: str  # e.g. OPENAI_BASE_URL
    key_variable: str  # e.g. OPENAI_API_KEY
    quota_exhausted: Callable[[Exception, str], bool] | None = None  # see model_error_from_sdk


class SDKBackend(Model):
    """Base of the SDK-based HTTP backends. A subclass sets `provider`, `own_options` and `schema_param_words`, and
    implements `_create` (one SDK call) and `_response` (the SDK's reply -> GenerateResponse).

    Base URL: `base_url`, else $base_url_variable, else the official URL (`official`: it has the official URL's
    host). Key: `api_key`, else $key_variable; with neither, a custom base URL gets PLACEHOLDER_KEY and the official
    one raises MissingAPIKeyError naming the variable. The SDK client is built with its retries off.

    `generate` sends a request's JSON schema in the API's structured-output parameter while `_native_schema` holds;
    a 400/422 naming any of `schema_param_words` turns it off (for this request and later ones) and asks again.
    `_drop_rejected` may likewise drop other parameters a server rejects.
    """

    scores_options = False
    provider: ClassVar[SDKProvider]
    own_options: ClassVar[tuple[str, ...]] = ("api_key", "timeout")  # what `from_spec` hands to the constructor
    schema_param_words: ClassVar[tuple[str, ...]] = ()

    @property
    def honours_json_schema(self) -> bool:  # type: ignore[override]
        return self._native_schema  # the provider's structured output, until a server turns it down

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        name: str | None = None,
        timeout: float = 120.0,
    ):
        p = self.provider
        self.model = model
        self.base_url = (base_url or os.environ.get(p.base_url_variable) or p.official_base_url).rstrip("/")
        hostname = urllib.parse.urlparse(self.base_url).hostname
        self.official = hostname == urllib.parse.urlparse(p.official_base_url).hostname
        key = api_key or os.environ.get(p.key_variable)
        if not key:
            if self.official:
                raise MissingAPIKeyError(
                    f"{p.key_variable} is not set; export it, or use --model embedded or a local: model"
                )
            key = PLACEHOLDER_KEY
        self._key = key  # only ever handed to the SDK client; never logged, raised or stored
        self.name = name or (f"{p.prefix}:{model}@{base_url}" if base_url else f"{p.prefix}:{model}")
        self._client = p.client_class(api_key=key, base_url=self.base_url, max_retries=0, timeout=timeout)
        self._native_schema = True

    @classmethod
    def from_spec(cls, spec, **options) -> Model:
        """The backend for `spec`, wrapped (retries, concurrency, cost) per the wrap options in `options`."""
        own = {k: options[k] for k in cls.own_options if k in options}
        backend = cls(spec.model, base_url=spec.base_url, name=str(spec), **own)
        return wrap_from_options(backend, options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def _error(self, exc: Exception) -> ModelError:
        """Our ModelError for an SDK error: redacted message, SDK exception (holding request headers) not chained."""
        p = self.provider
        return model_error_from_sdk(
            exc, p.sdk, where=self.name, base_url=self.base_url, model=self.model, key=self._key,
            key_variable=p.key_variable, client=p.client_name, quota_exhausted=p.quota_exhausted,
        )

    def _create(self, request: GenerateRequest, native_schema: bool) -> Awaitable[Any]:
        """The SDK call for `request` (the schema in the structured-output parameter when `native_schema`)."""
        raise NotImplementedError

    def _response(self, reply: Any, request: GenerateRequest, duration: float) -> GenerateResponse:
        raise NotImplementedError

    def _drop_rejected(self, failure: ModelError) -> bool:
        """Whether `failure` rejected a parameter this backend has now stopped sending (then it asks again)."""
        return False

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        start = time.perf_counter()
        native = self._native_schema

        def drop_rejected(failure: ModelError) -> bool:
            nonlocal native
            if native and request.json_schema and rejected(failure, *self.schema_param_words):
                self._native_schema = native = False
                return True
            return self._drop_rejected(failure)

        reply = await call_with_fallbacks(lambda: self._create(request, native), self._error, drop_rejected)
        return self._response(reply, request, time.perf_counter() - start)

    def _malformed(self, detail: str) -> ModelError:
        return malformed_response_error(self.name, self.base_url, detail, self._key)

    async def aclose(self) -> None:
        await self._client.close()
