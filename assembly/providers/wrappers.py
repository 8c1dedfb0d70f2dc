"""Wrappers around any Model: retries, a concurrency limit, cost accounting and a response cache.

Backends stay plain (one HTTP call per `generate`, SDK retries off); these add behaviour around them, composed by
`wrap()` in this order, outermost first:

    CachedModel -> CostModel -> RetryingModel -> LimitedModel -> backend

so a cache hit costs nothing and touches no limit, cost is counted once per successful call, and a request waiting
out a backoff does not hold a concurrency slot.

Every wrapper reports the inner model's `name`, `scores_options` and `honours_json_schema` (read live: a backend
that finds it cannot score options after all turns it off mid-run) and its token counts, forwards `aclose`, and
forwards unknown attributes (e.g. a ScriptedModel's `history`) to the model it wraps. `stream` is not forwarded:
the base class's answers through `generate`, so retries, limits and costs still apply.

This module also holds the few helpers the HTTP backends (openai, anthropic) share: `MissingAPIKeyError`,
`redact` and `status_is_retryable`.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from assembly.errors import AssemblyError, MissingAPIKeyError  # noqa: F401  (re-exported for backends)
from assembly.providers.base import Model
from assembly.providers.pricing import PriceSource, PriceTable
from assembly.providers.types import GenerateRequest, GenerateResponse, ModelError

# --------------------------------------------------------------------------------------------------------------------
# Helpers shared by the HTTP backends


_KEY_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-]{6,}"),  # OpenAI and Anthropic (sk-ant-...) key shapes
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{6,}"),
    re.compile(r"(?i)(x-api-key['\"]?\s*[:=]\s*['\"]?)[A-Za-z0-9._\-]{6,}"),
]


def redact(text: str, *secrets: str | None) -> str:
    """`text` with the given secrets and anything shaped like an API key replaced by '***'."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _KEY_PATTERNS[0].sub("sk-***", text)
    for pattern in _KEY_PATTERNS[1:]:
        text = pattern.sub(lambda m: m.group(1) + "***", text)
    return text


def status_is_retryable(status: int | None) -> bool:
    """429 (rate limit), 408 (timeout), 409 (conflict/lock) and every 5xx (incl. Anthropic's 529 overloaded)."""
    return status is not None and (status in (408, 409, 429) or status >= 500)


def retry_after_seconds(headers: Any) -> float | None:
    """The server's Retry-After (or retry-after-ms) hint in seconds, if any and sane."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000)
        value = headers.get("retry-after")
        if value is not None:
            return max(0.0, float(value))
    except (TypeError, ValueError):
        return None
    return None


# --------------------------------------------------------------------------------------------------------------------
# Wrappers


class ModelWrapper(Model):
    """Base for wrappers: delegates everything to `inner`."""

    def __init__(self, inner: Model):
        self.inner = inner

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def scores_options(self) -> bool:  # type: ignore[override]
        return self.inner.scores_options

    @property
    def honours_json_schema(self) -> bool:  # type: ignore[override]
        return self.inner.honours_json_schema

    def count_prompt_tokens(self, request: GenerateRequest) -> int | None:
        return self.inner.count_prompt_tokens(request)

    def context_window(self) -> int | None:
        return self.inner.context_window()

    @property
    def innermost(self) -> Model:
        model = self.inner
        while isinstance(model, ModelWrapper):
            model = model.inner
        return model

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        return await self.inner.generate(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, attr: str) -> Any:
        # only called when normal lookup fails; guard against recursion before `inner` is set
        if attr == "inner" or attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


class RetryingModel(ModelWrapper):
    """Retry `ModelError`s marked retryable (429, 5xx, timeouts, connection errors) with exponential backoff and
    jitter; never auth or bad-request errors. Other exceptions (bugs) propagate at once.

    The response's `attempts` is the number of calls made. A server's Retry-After hint (carried on the error as
    `retry_after`) lengthens a wait, capped at `max_wait`. When attempts run out, a ModelError with
    `retryable=False` (the retrying is done) names the attempts and the last error; `.last_error` holds it.
    """

    def __init__(
        self,
        inner: Model,
        *,
        attempts: int = 5,
        initial_wait: float = 1.0,
        max_wait: float = 30.0,
        jitter: float = 1.0,
    ):
        super().__init__(inner)
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self.attempts = attempts
        try:  # tenacity >= 9.1 renamed `initial` to `multiplier`
            self._wait = wait_exponential_jitter(multiplier=initial_wait, max=max_wait, jitter=jitter)
        except TypeError:
            self._wait = wait_exponential_jitter(initial=initial_wait, max=max_wait, jitter=jitter)
        self._max_wait = max_wait

    def _wait_for(self, state: RetryCallState) -> float:
        wait = self._wait(state)
        exc = state.outcome.exception() if state.outcome else None
        hint = getattr(exc, "retry_after", None)
        if isinstance(hint, (int, float)) and hint > wait:
            wait = min(float(hint), self._max_wait)
        return wait

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        attempt = 0
        try:
            async for state in AsyncRetrying(
                stop=stop_after_attempt(self.attempts),
                wait=self._wait_for,
                retry=retry_if_exception(lambda e: isinstance(e, ModelError) and e.retryable),
                reraise=True,
            ):
                with state:
                    attempt = state.retry_state.attempt_number
                    response = await self.inner.generate(request)
        except ModelError as exc:
            if not exc.retryable or attempt < self.attempts:
                raise
            error = ModelError(
                f"{self.name}: gave up after {attempt} attempts; last error: {exc}", retryable=False, status=exc.status
            )
            error.last_error = exc  # type: ignore[attr-defined]
            error.attempts = attempt  # type: ignore[attr-defined]
            raise error from None
        return response.model_copy(update={"attempts": attempt})


class LimitedModel(ModelWrapper):
    """At most `max_concurrent` calls in flight to the inner model (an asyncio.Semaphore per event loop).

    `in_flight` and `peak_in_flight` are kept for tests and progress displays.
    """

    def __init__(self, inner: Model, max_concurrent: int):
        super().__init__(inner)
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        self.max_concurrent = max_concurrent
        self.in_flight = 0
        self.peak_in_flight = 0
        self._semaphores: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Semaphore]] = {}

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        entry = self._semaphores.get(id(loop))
        if entry is None or entry[0] is not loop:
            self._semaphores = {k: v for k, v in self._semaphores.items() if not v[0].is_closed()}
            entry = (loop, asyncio.Semaphore(self.max_concurrent))
            self._semaphores[id(loop)] = entry
        return entry[1]

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        async with self._semaphore():
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                return await self.inner.generate(request)
            finally:
                self.in_flight -= 1


class CostModel(ModelWrapper):
    """Fill `cost_usd` from a price table (USD per million tokens) looked up by the model's spec name.

    A response that already has a cost keeps it; a model with no price gets None (unknown), never 0.
    `total_cost_usd` sums what this wrapper has seen.
    """

    def __init__(self, inner: Model, prices: PriceSource = None):
        super().__init__(inner)
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable.load(prices)
        self.total_cost_usd = 0.0

    def _priced(self, response: GenerateResponse) -> GenerateResponse:
        if response.cost_usd is None:
            cost = self.prices.cost(self.name, response.usage)
            if cost is None:
                return response
            response = response.model_copy(update={"cost_usd": cost})
        self.total_cost_usd += response.cost_usd or 0.0
        return response

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        return self._priced(await self.inner.generate(request))

    async def generate_many(self, requests: list[GenerateRequest]) -> list[GenerateResponse]:
        return [self._priced(r) for r in await self.inner.generate_many(requests)]


class ResponseCache:
    """A small SQLite file of responses keyed by (request hash, occurrence). Safe across processes: WAL journal,
    a busy timeout, one short connection per operation, and `INSERT OR IGNORE` (the first writer wins)."""

    def __init__(self, path: str | os.PathLike):
        path = Path(path).expanduser()
        if path.suffix.lower() not in (".sqlite", ".sqlite3", ".db"):
            path = path / "responses.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(
                "CREATE TABLE IF NOT EXISTS responses (request_hash TEXT NOT NULL, occurrence INTEGER NOT NULL, "
                "model TEXT NOT NULL, response TEXT NOT NULL, created REAL NOT NULL, "
                "PRIMARY KEY (request_hash, occurrence))"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30.0, isolation_level=None)

    def get(self, key: str, occurrence: int) -> GenerateResponse | None:
        con = self._connect()
        try:
            row = con.execute(
                "SELECT response FROM responses WHERE request_hash = ? AND occurrence = ?", (key, occurrence)
            ).fetchone()
        finally:
            con.close()
        return None if row is None else GenerateResponse.model_validate_json(row[0])

    def put(self, key: str, occurrence: int, model: str, response: GenerateResponse) -> None:
        con = self._connect()
        try:
            con.execute(
                "INSERT OR IGNORE INTO responses VALUES (?, ?, ?, ?, ?)",
                (key, occurrence, model, response.model_dump_json(), time.time()),
            )
        finally:
            con.close()

    def __len__(self) -> int:
        con = self._connect()
        try:
            return con.execute("SELECT count(*) FROM responses").fetchone()[0]
        finally:
            con.close()


class CachedModel(ModelWrapper):
    """Answer from a response cache keyed like replay: `request.hash(model.name)` plus an occurrence count, so the
    k-th identical request of a run gets the k-th cached answer (repeated sampled calls stay distinct) and a new
    run with the same cache reproduces the old one call for call. Misses call the model and are stored; errors are
    never cached. A hit is marked `raw["cached"] = True` and costs 0."""

    def __init__(self, inner: Model, cache: ResponseCache | str | os.PathLike):
        super().__init__(inner)
        self.cache = cache if isinstance(cache, ResponseCache) else ResponseCache(cache)
        self._seen: collections.Counter[str] = collections.Counter()
        self.hits = 0
        self.misses = 0

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        key = request.hash(self.name)
        occurrence = self._seen[key]  # claimed synchronously, before any await: arrival order decides
        self._seen[key] += 1
        cached = await asyncio.to_thread(self.cache.get, key, occurrence)
        if cached is not None:
            self.hits += 1
            return cached.model_copy(update={"cost_usd": 0.0, "duration_s": 0.0, "raw": {**cached.raw, "cached": True}})
        self.misses += 1
        response = await self.inner.generate(request)
        await asyncio.to_thread(self.cache.put, key, occurrence, self.name, response)
        return response


def wrap(
    model: Model,
    *,
    retries: int | None = 5,
    concurrency: int | None = 8,
    prices: PriceSource | bool = True,
    cache: ResponseCache | str | os.PathLike | None = None,
    initial_wait: float = 1.0,
    max_wait: float = 30.0,
) -> Model:
    """Compose the wrappers around `model` (see the module docstring for the order).

    retries: total attempts per call (None or <= 1: no retrying). concurrency: max calls in flight (None: no limit).
    prices: True for the shipped table, False/None for no cost accounting, or a path/dict/PriceTable overriding
    the shipped table. cache: a directory or .sqlite file for the response cache (None: no cache).
    """
    wrapped = model
    if concurrency:
        wrapped = LimitedModel(wrapped, concurrency)
    if retries and retries > 1:
        wrapped = RetryingModel(wrapped, attempts=retries, initial_wait=initial_wait, max_wait=max_wait)
    if prices is not False and prices is not None:
        wrapped = CostModel(wrapped, None if prices is True else prices)
    if cache is not None:
        wrapped = CachedModel(wrapped, cache)
    return wrapped


WRAP_OPTIONS = ("retries", "concurrency", "prices", "cache", "initial_wait", "max_wait")


def wrap_from_options(model: Model, options: dict[str, Any]) -> Model:
    """`wrap(model, **the wrap options found in options)`; what API backends' `from_spec` use."""
    return wrap(model, **{k: options[k] for k in WRAP_OPTIONS if k in options})

