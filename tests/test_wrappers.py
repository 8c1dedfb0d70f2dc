"""Wrappers around any Model: retries only on retryable errors, concurrency limit, cost table, response cache."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from assembly.errors import SpecError
from assembly.providers.base import Model
from assembly.providers.pricing import PriceTable
from assembly.providers.scripted import ScriptedModel
from assembly.providers.types import GenerateRequest, GenerateResponse, Message, ModelError, Usage
from assembly.providers.wrappers import (
    CachedModel,
    CostModel,
    LimitedModel,
    ResponseCache,
    RetryingModel,
    redact,
    wrap,
)
from tests.fakes import PeakConcurrencyModel


def req(text: str = "hello", **kw) -> GenerateRequest:
    return GenerateRequest(messages=[Message(role="user", content=text)], **kw)


class Flaky(Model):
    """Raises the given errors in turn, then answers."""

    def __init__(self, errors: list[Exception], name: str = "flaky"):
        self.errors = list(errors)
        self.calls = 0
        self.name = name

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return GenerateResponse(text=f"ok after {self.calls}", model=self.name, usage=Usage(input_tokens=10,
                                                                                            output_tokens=5))


def fast_retry(model: Model, attempts: int = 4, **kw) -> RetryingModel:
    return RetryingModel(model, attempts=attempts, initial_wait=0.001, max_wait=0.01, jitter=0.001, **kw)


def test_retry_on_retryable_errors_counts_attempts():
    inner = Flaky([ModelError("429", retryable=True, status=429), ModelError("503", retryable=True, status=503)])
    response = asyncio.run(fast_retry(inner).generate(req()))
    assert response.text == "ok after 3"
    assert response.attempts == 3
    assert inner.calls == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, None])
def test_no_retry_on_non_retryable_errors(status):
    inner = Flaky([ModelError(f"bad {status}", retryable=False, status=status)])
    with pytest.raises(ModelError, match=f"bad {status}"):
        asyncio.run(fast_retry(inner).generate(req()))
    assert inner.calls == 1


def test_retry_exhaustion_raises_model_error_with_last_error():
    errors = [ModelError(f"overloaded #{i}", retryable=True, status=529) for i in range(5)]
    inner = Flaky(errors)
    with pytest.raises(ModelError) as info:
        asyncio.run(fast_retry(inner, attempts=3).generate(req()))
    assert inner.calls == 3
    assert "gave up after 3 attempts" in str(info.value)
    assert "overloaded #2" in str(info.value)
    assert info.value.retryable is False and info.value.status == 529
    assert info.value.last_error.status == 529


def test_other_exceptions_are_not_retried():
    inner = Flaky([KeyError("bug")])
    with pytest.raises(KeyError):
        asyncio.run(fast_retry(inner).generate(req()))
    assert inner.calls == 1


def test_retry_after_hint_lengthens_the_wait():
    err = ModelError("429", retryable=True, status=429)
    err.retry_after = 0.2
    inner = Flaky([err])
    start = time.perf_counter()
    asyncio.run(RetryingModel(inner, attempts=2, initial_wait=0.001, max_wait=0.5, jitter=0).generate(req()))
    assert time.perf_counter() - start >= 0.19


def test_concurrency_limit_is_respected():
    inner = PeakConcurrencyModel("slow", delay=0.02)
    limited = LimitedModel(inner, 3)

    async def main():
        return await asyncio.gather(*(limited.generate(req(str(i))) for i in range(12)))

    out = asyncio.run(main())
    assert [r.text for r in out] == [str(i) for i in range(12)]
    assert inner.peak == 3 and limited.peak_in_flight == 3
    # a second event loop gets its own semaphore
    asyncio.run(main())
    assert inner.peak == 3


def test_generate_many_goes_through_the_limit():
    inner = PeakConcurrencyModel("slow", delay=0.02)
    limited = LimitedModel(inner, 2)
    out = asyncio.run(limited.generate_many([req(str(i)) for i in range(6)]))
    assert len(out) == 6 and inner.peak == 2


def test_cost_from_the_shipped_table_and_overrides(tmp_path):
    model = ScriptedModel(["a b c"], name="openai:gpt-4.1-mini")
    response = asyncio.run(CostModel(model).generate(req("one two three four")))
    # ScriptedModel counts words: 4 in, 3 out; gpt-4.1-mini is $0.40 / $1.60 per 1M
    assert response.cost_usd == pytest.approx((4 * 0.40 + 3 * 1.60) / 1e6)

    dated = ScriptedModel(["x"], name="openai:gpt-4.1-mini-2025-04-14")
    assert asyncio.run(CostModel(dated).generate(req("y"))).cost_usd == pytest.approx((0.4 + 1.6) / 1e6)

    unknown = ScriptedModel(["x"], name="openai:some-new-model")
    assert asyncio.run(CostModel(unknown).generate(req("y"))).cost_usd is None

    yaml_file = tmp_path / "prices.yaml"
    yaml_file.write_text("openai:some-new-model: {input: 1000000, output: 2000000}\n")
    priced = CostModel(unknown, prices=yaml_file)
    assert asyncio.run(priced.generate(req("y"))).cost_usd == pytest.approx(3.0)
    assert priced.total_cost_usd == pytest.approx(3.0)

    json_file = tmp_path / "prices.json"
    json_file.write_text(json.dumps({"openai:gpt-4.1-mini": [1e6, 0]}))
    assert asyncio.run(CostModel(model, prices=json_file).generate(req("a b"))).cost_usd == pytest.approx(2.0)
    assert asyncio.run(CostModel(model, prices={"openai:gpt-4.1-mini": {"input": 0, "output": 0}}).generate(
        req("a"))).cost_usd == 0.0


def test_price_lookup_rules():
    table = PriceTable.load()
    assert table.lookup("openai:gpt-4.1") != table.lookup("openai:gpt-4.1-mini")
    assert table.lookup("anthropic:claude-sonnet-4-5-20250929") == table.lookup("anthropic:claude-sonnet-4-5")
    assert table.lookup("openai:gpt-4.1-mini@http://127.0.0.1:8000/v1") is None  # self-hosted: no vendor price
    assert table.lookup("openai:gpt-5.4-mini-2026-03-17") == table.lookup("openai:gpt-5.4-mini")
    assert table.lookup("openai:gpt-5.4-mini") != table.lookup("openai:gpt-5")
    assert table.lookup("anthropic:claude-opus-4-9") is None  # unknown version: unknown price, not Opus 4's
    custom = PriceTable.load({"openai:mine@http://127.0.0.1:8000/v1": [0.1, 0.2]})
    assert custom.lookup("openai:mine@http://127.0.0.1:8000/v1").output == 0.2


class FixedUsage(Model):
    """Answers "ok" with the given usage, under the given model name."""

    def __init__(self, name: str, usage: Usage):
        self.name = name
        self.usage = usage

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        return GenerateResponse(text="ok", model=self.name, usage=self.usage)


def test_cached_and_cache_write_tokens_are_priced_at_their_rates():
    usage = Usage(input_tokens=1_000_000, cached_input_tokens=600_000, cache_write_tokens=300_000,
                  output_tokens=100_000)

    def cost(name, prices=None):
        return asyncio.run(CostModel(FixedUsage(name, usage), prices=prices).generate(req())).cost_usd

    # shipped: gpt-4.1-mini $0.40 in, $0.10 cached, $1.60 out; writes at the input price (OpenAI adds nothing)
    assert cost("openai:gpt-4.1-mini") == pytest.approx(0.1 * 0.40 + 0.6 * 0.10 + 0.3 * 0.40 + 0.1 * 1.60)
    assert cost("openai:gpt-4.1-mini-2025-04-14") == cost("openai:gpt-4.1-mini")
    # shipped: claude-haiku-4-5 $1 in, $0.10 cache reads, $1.25 5-minute cache writes, $5 out
    assert cost("anthropic:claude-haiku-4-5") == pytest.approx(0.1 * 1.0 + 0.6 * 0.10 + 0.3 * 1.25 + 0.1 * 5.0)
    # a table without cache rates: the provider's shares of input (openai 0.5 / 1, anthropic 0.1 / 1.25, else 1 / 1)
    plain = {"openai:new": [2.0, 10.0], "anthropic:new": [2.0, 10.0], "other:new": [2.0, 10.0]}
    assert cost("openai:new", plain) == pytest.approx(0.1 * 2 + 0.6 * 1.0 + 0.3 * 2.0 + 0.1 * 10)
    assert cost("anthropic:new", plain) == pytest.approx(0.1 * 2 + 0.6 * 0.2 + 0.3 * 2.5 + 0.1 * 10)
    assert cost("other:new", plain) == pytest.approx(1.0 * 2 + 0.1 * 10)
    # rates given by the user win, as a mapping or a list [input, output, cached_input, cache_write]
    given = {"openai:new": {"input": 2.0, "output": 10.0, "cached_input": 0.2, "cache_write": 3.0},
             "anthropic:new": [2.0, 10.0, 0.5]}
    assert cost("openai:new", given) == pytest.approx(0.1 * 2 + 0.6 * 0.2 + 0.3 * 3.0 + 0.1 * 10)
    assert cost("anthropic:new", given) == pytest.approx(0.1 * 2 + 0.6 * 0.5 + 0.3 * 2.5 + 0.1 * 10)
    # with nothing cached, the cost is the plain input/output one
    nothing = asyncio.run(CostModel(FixedUsage("openai:gpt-4.1-mini", Usage(input_tokens=1_000_000)))
                          .generate(req())).cost_usd
    assert nothing == pytest.approx(0.40)


def test_bad_price_tables_are_spec_errors(tmp_path):
    with pytest.raises(SpecError, match="gpt-x"):
        PriceTable.load({"gpt-x": "cheap"})
    with pytest.raises(SpecError, match="negative"):
        PriceTable.load({"gpt-x": {"input": 1, "output": 2, "cached_input": -0.1}})
    with pytest.raises(SpecError, match="gpt-x"):
        PriceTable.load({"gpt-x": [1, 2, 3, 4, 5]})
    with pytest.raises(SpecError, match="does not exist"):
        PriceTable.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="bad.json"):
        PriceTable.load(bad)


def test_cache_replays_occurrences_across_instances(tmp_path):
    first = ScriptedModel(["one", "two", "three"], name="scripted:a", scores_options=False)
    cached = CachedModel(first, tmp_path / "cache")
    texts = [asyncio.run(cached.generate(req("same"))).text for _ in range(3)]
    assert texts == ["one", "two", "three"] and cached.misses == 3

    second = ScriptedModel(["other"], name="scripted:a", scores_options=False)
    again = CachedModel(second, tmp_path / "cache")
    replayed = [asyncio.run(again.generate(req("same"))) for _ in range(3)]
    assert [r.text for r in replayed] == ["one", "two", "three"]
    assert all(r.raw["cached"] and r.cost_usd == 0.0 for r in replayed)
    assert second.history == [] and again.hits == 3
    # a fourth occurrence is new: the model is asked and the answer stored
    assert asyncio.run(again.generate(req("same"))).text == "other"
    assert len(ResponseCache(tmp_path / "cache")) == 4
    # another model name is another key
    third = CachedModel(ScriptedModel(["b"], name="scripted:b"), tmp_path / "cache")
    assert asyncio.run(third.generate(req("same"))).text == "b"


def test_cache_never_stores_errors_and_is_safe_across_threads(tmp_path):
    path = tmp_path / "c.sqlite"
    flaky = CachedModel(Flaky([ModelError("boom", retryable=False)]), path)
    with pytest.raises(ModelError):
        asyncio.run(flaky.generate(req()))
    assert len(flaky.cache) == 0

    def worker(i: int) -> None:
        model = CachedModel(ScriptedModel([f"w{i}"], name="scripted:w"), path)
        for j in range(5):
            asyncio.run(model.generate(req(f"q{j}")))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cache = ResponseCache(path)
    assert len(cache) == 5  # first writer wins for each (hash, occurrence)


def test_wrap_composes_and_delegates(tmp_path):
    inner = ScriptedModel(["hi"], name="openai:gpt-4.1-mini", scores_options=True)
    model = wrap(inner, retries=3, concurrency=2, prices=True, cache=tmp_path / "cache")
    chain = []
    m = model
    while hasattr(m, "inner") and m is not inner:
        chain.append(type(m).__name__)
        m = m.inner
    assert chain == ["CachedModel", "CostModel", "RetryingModel", "LimitedModel"]
    assert model.name == "openai:gpt-4.1-mini" and model.scores_options is True
    response = asyncio.run(model.generate(req("x")))
    assert response.attempts == 1 and response.cost_usd is not None
    assert len(model.history) == 1  # unknown attributes reach the wrapped model
    assert model.innermost is inner
    bare = wrap(inner, retries=0, concurrency=None, prices=False)
    assert bare is inner
    asyncio.run(model.aclose())


def test_scores_options_is_read_live_through_every_wrapper(tmp_path):
    from assembly.recorder import RecordingModel

    inner = ScriptedModel(["hi"], name="openai:m", scores_options=True)
    wrapped = wrap(inner, retries=3, concurrency=2, prices=True, cache=tmp_path / "cache")
    recorded = RecordingModel(wrapped, recorder=None)
    assert wrapped.scores_options is True and recorded.scores_options is True
    inner.scores_options = False  # what a backend does when it finds it cannot score options after all
    assert wrapped.scores_options is False and recorded.scores_options is False


def test_redact_hides_keys():
    text = "Incorrect API key provided: sk-proj-abcdef123456. Header Authorization: Bearer tok_ABCDEF123"
    clean = redact(text, "tok_ABCDEF123")
    assert "abcdef123456" not in clean and "tok_ABCDEF123" not in clean
    assert "sk-***" in clean
