"""The anthropic backend against a local server speaking the Messages wire format (the real SDK, no network)."""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("anthropic")

from assembly.providers.anthropic import AnthropicModel  # noqa: E402
from assembly.providers.pricing import PriceTable  # noqa: E402
from assembly.providers.registry import load_model  # noqa: E402
from assembly.providers.types import GenerateRequest, Message, ModelError, Usage  # noqa: E402
from assembly.providers.wrappers import MissingAPIKeyError  # noqa: E402
from tests.fakes import fake_server_fixture, load_fast, run_once as run  # noqa: E402

KEY = "sk-ant-test-SECRET0123456789abcdef"


def message(text="Hello there.", input_tokens=12, output_tokens=4, stop_reason="end_turn", **usage_extra):
    """A Messages API reply; `usage_extra` adds usage fields (cache_read_input_tokens, ...)."""
    return {
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-fake-20250101",
        "content": [{"type": "text", "text": text}], "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens, **usage_extra},
    }


def error(status, kind, text):
    return status, {"type": "error", "error": {"type": kind, "message": text}}


fake = fake_server_fixture()  # no /v1 for Anthropic (the SDK adds /v1/messages)


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    for var in ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_CUSTOM_HEADERS", "ANTHROPIC_PROFILE"):
        monkeypatch.delenv(var, raising=False)


def req(*messages, **kw):
    messages = messages or (("system", "Be brief."), ("user", "Say hello"))
    return GenerateRequest(messages=[Message(role=r, content=c) for r, c in messages], **kw)


def model_for(server, **options):
    return load_fast(f"anthropic:claude-fake@{server.base_url}", **options)


def assert_no_key(error_value):
    for text in (str(error_value), repr(error_value)):
        assert KEY not in text and KEY[10:] not in text
    # the SDK exception (it holds the request and its headers) is never attached; only our own errors may be
    assert error_value.__cause__ is None
    context = error_value.__context__
    assert context is None or (type(context) is ModelError and KEY not in str(context) and context.__context__ is None)


def sent_key(request):
    headers = request["headers"]
    return headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")


def test_success_maps_system_messages_and_usage(fake):
    server = fake((200, message()))
    response = run(model_for(server), req(("system", "Be brief."), ("system", "You are a juror."),
                                          ("user", "Hi"), ("user", "Say hello"), stop=["\n\nJuror", " "]))
    assert response.text == "Hello there."
    assert response.usage.input_tokens == 12 and response.usage.output_tokens == 4
    assert response.finish_reason == "stop" and response.attempts == 1
    assert response.model == f"anthropic:claude-fake@{server.base_url}"
    (sent,) = server.requests
    assert sent["path"] == "/v1/messages"
    assert sent_key(sent) == KEY
    body = sent["json"]
    assert body["model"] == "claude-fake" and body["max_tokens"] == 256
    # one block per system message, the first (what a phase shares) marked for prompt caching (the default)
    assert body["system"] == [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                              {"type": "text", "text": "You are a juror."}]
    assert body["messages"] == [{"role": "user", "content": "Hi\n\nSay hello"}]
    assert body["stop_sequences"] == ["\n\nJuror"]  # whitespace-only stops are dropped
    assert "temperature" not in body and "output_config" not in body


def test_conversation_must_start_with_the_user(fake):
    server = fake((200, message()))
    run(model_for(server), req(("system", "s"), ("assistant", "I opened."), ("user", "Go on")))
    assert [m["role"] for m in server.requests[0]["json"]["messages"]] == ["user", "assistant", "user"]


def test_json_schema_uses_native_structured_output(fake):
    server = fake((200, message('{"vote": "yes"}')))
    schema = {"type": "object", "properties": {"vote": {"type": "string"},
                                               "why": {"type": "object", "properties": {"x": {"type": "string"}}}}}
    run(model_for(server), req(json_schema=schema))
    fmt = server.requests[0]["json"]["output_config"]["format"]
    assert fmt["type"] == "json_schema"
    assert fmt["schema"]["additionalProperties"] is False
    assert fmt["schema"]["properties"]["why"]["additionalProperties"] is False
    assert "additionalProperties" not in schema  # the caller's schema is not modified


def test_rejected_format_falls_back_to_an_instruction(fake):
    server = fake(error(400, "invalid_request_error", "output_config.format: unsupported schema"), (200, message("{}")))
    model = AnthropicModel("claude-fake", base_url=server.base_url)
    assert run(model, req(json_schema={"type": "object"})).text == "{}"
    second = server.requests[1]["json"]
    assert "output_config" not in second and "JSON schema" in second["system"][-1]["text"]  # after the cached block


def test_429_then_success_is_retried(fake):
    server = fake(error(429, "rate_limit_error", "Number of requests has exceeded your rate limit"), (200, message()))
    response = run(model_for(server), req())
    assert response.attempts == 2 and len(server.requests) == 2


def test_500_then_success_is_retried(fake):
    server = fake(error(500, "api_error", "Internal server error"), (200, message()))
    response = run(model_for(server), req())
    assert response.attempts == 2 and len(server.requests) == 2


def test_529_overloaded_is_retried(fake):
    server = fake(error(529, "overloaded_error", "Overloaded"), (200, message()))
    assert run(model_for(server), req()).attempts == 2


def test_401_is_not_retried_and_names_the_variable(fake):
    server = fake(error(401, "authentication_error", f"invalid x-api-key: {KEY}"))
    with pytest.raises(ModelError) as info:
        run(model_for(server), req())
    assert len(server.requests) == 1 and sent_key(server.requests[0]) == KEY
    assert info.value.status == 401 and not info.value.retryable
    assert "ANTHROPIC_API_KEY" in str(info.value)
    assert_no_key(info.value)


@pytest.mark.parametrize("status", [400, 403, 404])
def test_client_errors_are_not_retried(fake, status):
    server = fake(error(status, "invalid_request_error", f"echo of the header x-api-key: {KEY}"))
    with pytest.raises(ModelError) as info:
        run(model_for(server), req())
    assert len(server.requests) == 1 and info.value.status == status
    assert_no_key(info.value)


def test_malformed_json_is_a_clear_error(fake):
    server = fake((200, b'{"type": "message", "content": [{"te'))
    with pytest.raises(ModelError, match="malformed response") as info:
        run(model_for(server), req())
    assert not info.value.retryable and len(server.requests) == 1
    assert_no_key(info.value)


def test_exhausted_retries_report_the_last_error(fake):
    server = fake(error(503, "api_error", "down"))
    with pytest.raises(ModelError, match="gave up after 3 attempts.*503") as info:
        run(model_for(server), req())
    assert len(server.requests) == 3
    assert_no_key(info.value)


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(MissingAPIKeyError, match="ANTHROPIC_API_KEY is not set"):
        load_model("anthropic:claude-sonnet-4-5")


def test_custom_base_url_without_key_and_from_environment(fake, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    server = fake((200, message("proxied")), error(401, "authentication_error", "key please"))
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    model = AnthropicModel("claude-fake")
    assert model.name == "anthropic:claude-fake"
    assert run(model, req()).text == "proxied"
    with pytest.raises(ModelError, match="set ANTHROPIC_API_KEY"):
        run(AnthropicModel("claude-fake"), req())


def test_cost_from_the_table(fake):
    server = fake((200, message(input_tokens=1000, output_tokens=1000)))
    model = load_model(f"anthropic:claude-sonnet-4-6@{server.base_url}", prices={
        f"anthropic:claude-sonnet-4-6@{server.base_url}": {"input": 3.0, "output": 15.0}})
    assert run(model, req()).cost_usd == pytest.approx(0.018)


# ---------------------------------------------------------------------------------------------------------------------
# Prompt caching: the system block is marked, cache reads and writes are read into Usage, priced and recorded


def test_prompt_cache_marks_the_system_block_only_when_on(fake):
    server = fake((200, message()))
    run(model_for(server), req(("system", "Shared by every juror."), ("user", "Your own part.")))
    run(model_for(server, prompt_cache=False), req(("system", "Shared by every juror."), ("user", "Your own part.")))
    run(model_for(server), req(("user", "No system message.")))
    on, off, no_system = (r["json"] for r in server.requests)
    assert on["system"] == [{"type": "text", "text": "Shared by every juror.", "cache_control": {"type": "ephemeral"}}]
    assert on["messages"] == [{"role": "user", "content": "Your own part."}]  # the juror's own part is not marked
    assert off["system"] == "Shared by every juror."
    assert "system" not in no_system
    assert "cache_control" not in json.dumps(off) and "cache_control" not in json.dumps(no_system)
    with pytest.raises(TypeError, match="prompt_cache"):
        AnthropicModel("claude-fake", base_url=server.base_url, prompt_cache="no")


def test_cache_reads_and_writes_are_read_priced_and_recorded(fake, tmp_path):
    from assembly.providers.replay_backend import ReplayModel
    from assembly.recorder import RecordingModel, RunRecorder
    from transcripts import Store

    server = fake((200, message(input_tokens=100, output_tokens=50, cache_creation_input_tokens=2000,
                                cache_read_input_tokens=0)),
                  (200, message(input_tokens=100, output_tokens=50, cache_creation_input_tokens=0,
                                cache_read_input_tokens=2000)),
                  (200, message(input_tokens=100, output_tokens=50, cache_creation_input_tokens=None,
                                cache_read_input_tokens=None)))
    name = f"anthropic:claude-sonnet-4-6@{server.base_url}"
    # input and output only: cache reads get Anthropic's 0.1 x input (0.30), 5-minute writes 1.25 x (3.75)
    model = load_fast(name, prices={name: {"input": 3.0, "output": 15.0}})
    store = Store(tmp_path / "s.duckdb")
    run_id = store.begin_run(question="Q?", spec={})
    recorder = RunRecorder(store, run_id)
    recording = RecordingModel(model, recorder)

    async def three():
        try:
            return [await recording.generate(req()) for _ in range(3)]
        finally:
            await model.aclose()

    write, read, plain = asyncio.run(three())
    recorder.write_pending()
    # the API's input_tokens leaves cache reads and writes out; ours counts every prompt token sent
    assert write.usage == Usage(input_tokens=2100, output_tokens=50, cached_input_tokens=0, cache_write_tokens=2000)
    assert read.usage == Usage(input_tokens=2100, output_tokens=50, cached_input_tokens=2000, cache_write_tokens=0)
    assert plain.usage == Usage(input_tokens=100, output_tokens=50)  # null cache fields count 0
    assert write.cost_usd == pytest.approx((100 * 3.0 + 2000 * 3.75 + 50 * 15.0) / 1e6)  # 0.00855
    assert read.cost_usd == pytest.approx((100 * 3.0 + 2000 * 0.30 + 50 * 15.0) / 1e6)  # 0.00165
    assert plain.cost_usd == pytest.approx((100 * 3.0 + 50 * 15.0) / 1e6)
    assert recording.cached_input_tokens == 2000 and recording.cache_write_tokens == 2000
    rows = store.sql("SELECT input_tokens, cached_input_tokens, cache_write_tokens, cost_usd FROM llm_calls "
                     "WHERE run_id = ? ORDER BY seq", [run_id]).rows()
    assert rows == [(2100, 0, 2000, pytest.approx(0.00855)), (2100, 2000, 0, pytest.approx(0.00165)),
                    (100, 0, 0, pytest.approx(0.00105))]
    costs = store.sql("SELECT input_tokens, cached_input_tokens, cache_write_tokens FROM call_costs "
                      "WHERE run_id = ?", [run_id]).rows()
    assert costs == [(4300, 2000, 2000)]
    # replay rebuilds the cached counts from the store
    replay = ReplayModel(store.recorded_calls(run_id), name=name)
    replayed = [asyncio.run(replay.generate(req())) for _ in range(2)]
    assert [r.usage for r in replayed] == [write.usage, read.usage]


def test_shipped_anthropic_prices_have_cache_rates():
    price = PriceTable.load().lookup("anthropic:claude-sonnet-4-6")
    assert (price.input, price.cached_input, price.cache_write) == (3.0, pytest.approx(0.3), pytest.approx(3.75))
