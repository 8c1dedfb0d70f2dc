"""The openai backend against a fake Chat Completions server on 127.0.0.1 (the real SDK, no network)."""

from __future__ import annotations

import pytest

pytest.importorskip("openai")

from assembly.providers.openai import OpenAIModel  # noqa: E402
from assembly.providers.registry import load_model  # noqa: E402
from assembly.providers.types import GenerateRequest, Message, ModelError  # noqa: E402
from assembly.providers.wrappers import MissingAPIKeyError  # noqa: E402
from tests.fakes import fake_server_fixture, load_fast, run_once as run  # noqa: E402

KEY = "sk-test-SECRET0123456789abcdef"


def completion(text="Hello there.", prompt_tokens=11, completion_tokens=3, **message_extra):
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "fake-model-2025",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, **message_extra},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def error(status, message, code=None):
    return status, {"error": {"message": message, "type": "error", "param": None, "code": code}}


fake = fake_server_fixture("/v1")


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def req(text="Say hello", **kw):
    return GenerateRequest(messages=[Message(role="system", content="Be brief."), Message(role="user", content=text)],
                           **kw)


def model_for(server, **options):
    return load_fast(f"openai:fake-model@{server.base_url}", **options)


def assert_no_key(text):
    assert KEY not in text and KEY[8:] not in text


def test_success_sends_our_request_and_reads_usage(fake):
    server = fake((200, completion()))
    response = run(model_for(server), req(seed=7, stop=["\n\n"], temperature=0.3, max_tokens=40))
    assert response.text == "Hello there."
    assert response.usage.input_tokens == 11 and response.usage.output_tokens == 3
    assert response.model == f"openai:fake-model@{server.base_url}"
    assert response.raw["model"] == "fake-model-2025" and response.attempts == 1
    (sent,) = server.requests
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    body = sent["json"]
    assert body["model"] == "fake-model"
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    assert body["max_tokens"] == 40 and body["temperature"] == 0.3 and body["seed"] == 7 and body["stop"] == ["\n\n"]
    assert "response_format" not in body


def test_json_schema_uses_response_format(fake):
    server = fake((200, completion('{"vote": "yes"}')))
    schema = {"title": "Ballot vote", "type": "object", "properties": {"vote": {"type": "string"}}}
    run(model_for(server), req(json_schema=schema))
    fmt = server.requests[0]["json"]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["schema"] == schema and fmt["json_schema"]["name"] == "Ballot_vote"


def test_server_without_response_format_is_asked_again_without_it(fake):
    server = fake(error(400, "response_format is not supported by this server"), (200, completion("{}")))
    model = OpenAIModel("fake-model", base_url=server.base_url)
    schema = {"type": "object"}
    response = run(model, req(json_schema=schema))
    assert response.text == "{}" and response.raw["json_schema_sent"] is False
    assert "response_format" in server.requests[0]["json"] and "response_format" not in server.requests[1]["json"]


def test_sampling_parameters_rejected_by_the_official_api_are_dropped(fake):
    server = fake(error(400, "Unsupported parameter: 'temperature' is not supported with this model."),
                  (200, completion("ok")))
    model = OpenAIModel("fake-model", base_url=server.base_url)
    model.official = True  # pretend the fake is api.openai.com
    assert run(model, req()).text == "ok"
    assert "temperature" in server.requests[0]["json"] and "temperature" not in server.requests[1]["json"]
    # a self-hosted server naming temperature in a 400 is not second-guessed
    other = fake(error(400, "temperature must be <= 1"))
    with pytest.raises(ModelError, match="temperature"):
        run(OpenAIModel("fake-model", base_url=other.base_url), req())
    assert len(other.requests) == 1


def test_429_then_success_is_retried(fake):
    server = fake(error(429, "Rate limit reached"), (200, completion()))
    response = run(model_for(server), req())
    assert response.attempts == 2 and len(server.requests) == 2


def test_500_then_success_is_retried(fake):
    server = fake(error(500, "internal"), error(503, "unavailable"), (200, completion()))
    response = run(model_for(server), req())
    assert response.attempts == 3 and len(server.requests) == 3


def test_401_is_not_retried_and_names_the_variable(fake):
    server = fake(error(401, f"Incorrect API key provided: {KEY}.", code="invalid_api_key"))
    with pytest.raises(ModelError) as info:
        run(model_for(server), req())
    assert len(server.requests) == 1
    assert info.value.status == 401 and not info.value.retryable
    assert "OPENAI_API_KEY" in str(info.value)
    assert_no_key(str(info.value))
    # the SDK exception (it holds the request and its headers) is not attached to ours
    assert info.value.__cause__ is None and info.value.__context__ is None


@pytest.mark.parametrize("status", [400, 403, 404])
def test_client_errors_are_not_retried_and_key_never_leaks(fake, status):
    server = fake(error(status, f"bad request; you sent Authorization: Bearer {KEY}"))
    with pytest.raises(ModelError) as info:
        run(model_for(server), req())
    assert len(server.requests) == 1 and info.value.status == status and not info.value.retryable
    assert_no_key(str(info.value))


def test_insufficient_quota_429_is_not_retried(fake):
    server = fake(error(429, "You exceeded your current quota", code="insufficient_quota"))
    with pytest.raises(ModelError, match="quota"):
        run(model_for(server), req())
    assert len(server.requests) == 1


def test_malformed_json_is_a_clear_error(fake):
    server = fake((200, b'{"id": "chatcmpl-1", "choices": [{"mess'))
    with pytest.raises(ModelError, match="malformed response") as info:
        run(model_for(server), req())
    assert not info.value.retryable and len(server.requests) == 1
    assert_no_key(str(info.value))


def test_response_without_choices_is_a_clear_error(fake):
    server = fake((200, {"id": "x", "object": "chat.completion", "choices": []}))
    with pytest.raises(ModelError, match="malformed response"):
        run(model_for(server), req())


def test_timeouts_and_refused_connections_are_retryable(fake):
    server = fake((200, completion(), 1.0))
    with pytest.raises(ModelError, match="timed out") as info:
        run(OpenAIModel("fake-model", base_url=server.base_url, timeout=0.2), req())
    assert info.value.retryable
    dead = fake((200, completion()))
    url = dead.base_url
    dead.close()
    with pytest.raises(ModelError, match="could not connect") as info:
        run(OpenAIModel("fake-model", base_url=url), req())
    assert info.value.retryable


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY is not set"):
        load_model("openai:gpt-4.1-mini")
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        OpenAIModel("gpt-4.1-mini")


def test_custom_base_url_needs_no_key(fake, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    server = fake((200, completion("local answer")))
    assert run(model_for(server), req()).text == "local answer"
    failing = fake(error(401, "key required"))
    with pytest.raises(ModelError, match="set OPENAI_API_KEY"):
        run(model_for(failing), req())


def test_base_url_from_environment(fake, monkeypatch):
    server = fake((200, completion("via env")))
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    model = OpenAIModel("fake-model")
    assert model.name == "openai:fake-model" and not model.official
    assert run(model, req()).text == "via env"


def test_official_api_parameters(monkeypatch):
    model = OpenAIModel("gpt-5.4-mini")
    params = model._params(req(max_tokens=50), with_schema=True)
    assert params["max_completion_tokens"] == 50 and "temperature" not in params and "max_tokens" not in params
    params = OpenAIModel("gpt-4.1-mini")._params(req(temperature=0.2), with_schema=True)
    assert params["temperature"] == 0.2 and "reasoning_effort" not in params
    assert OpenAIModel("gpt-5.4", reasoning_effort="low")._params(req(), True)["reasoning_effort"] == "low"
    assert model.scores_options is False and "SECRET" not in repr(model)


def test_from_spec_wraps_with_cost(fake, monkeypatch):
    server = fake((200, completion(prompt_tokens=1_000_000, completion_tokens=0)))
    model = model_for(server, prices={f"openai:fake-model@{server.base_url}": [2.0, 8.0]})
    assert run(model, req()).cost_usd == pytest.approx(2.0)
