"""The openai backend against a fake Chat Completions server on 127.0.0.1 (the real SDK, no network)."""

from __future__ import annotations

import asyncio
import math

import pytest

pytest.importorskip("openai")

from assembly.casting import BallotProcedure, ballot_schema, cast_ballot  # noqa: E402
from assembly.providers.openai import OpenAIModel, strict_qualifies  # noqa: E402
from assembly.providers.registry import load_model  # noqa: E402
from assembly.providers.types import (  # noqa: E402
    ChoiceScoringUnavailable,
    GenerateRequest,
    Message,
    ModelError,
    Usage,
)
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
    assert fmt["json_schema"]["strict"] is False  # not closed: strict mode would reject it


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


def with_cached(body, cached_tokens, **details):
    """`body` whose usage reports `cached_tokens` under prompt_tokens_details (as OpenAI and vLLM do)."""
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": cached_tokens, **details}
    return body


def test_cached_prompt_tokens_are_read_priced_and_recorded(fake, tmp_path):
    from assembly.providers.replay_backend import ReplayModel
    from assembly.recorder import RecordingModel, RunRecorder
    from transcripts import Store

    server = fake((200, with_cached(completion(prompt_tokens=2000, completion_tokens=100), 1536)))
    name = f"openai:fake-model@{server.base_url}"
    model = model_for(server, prices={name: {"input": 2.0, "output": 8.0, "cached_input": 0.5}})
    store = Store(tmp_path / "s.duckdb")
    run_id = store.begin_run(question="Q?", spec={})
    recorder = RunRecorder(store, run_id)
    recording = RecordingModel(model, recorder)

    async def once():
        try:
            return await recording.generate(req())
        finally:
            await model.aclose()  # the recorder leaves closing to the model's owner

    response = asyncio.run(once())
    recorder.write_pending()
    # prompt_tokens already counts the cached ones: input_tokens stays every prompt token sent
    assert response.usage == Usage(input_tokens=2000, output_tokens=100, cached_input_tokens=1536)
    assert response.cost_usd == pytest.approx((464 * 2.0 + 1536 * 0.5 + 100 * 8.0) / 1e6)  # 0.002496
    assert store.sql("SELECT input_tokens, cached_input_tokens, cache_write_tokens, cost_usd FROM llm_calls "
                     "WHERE run_id = ?", [run_id]).rows() == [(2000, 1536, 0, pytest.approx(0.002496))]
    replayed = asyncio.run(ReplayModel(store.recorded_calls(run_id), name=name).generate(req()))
    assert replayed.usage == response.usage


def test_cached_rate_defaults_to_half_the_input_price(fake):
    server = fake((200, with_cached(completion(prompt_tokens=2000, completion_tokens=100), 1536,
                                    cache_write_tokens=400)))
    model = model_for(server, prices={f"openai:fake-model@{server.base_url}": [2.0, 8.0]})
    response = run(model, req())
    assert response.usage == Usage(input_tokens=2000, output_tokens=100, cached_input_tokens=1536,
                                   cache_write_tokens=400)
    # cached at 50% of input (no cached_input given); OpenAI's cache writes cost what input does
    assert response.cost_usd == pytest.approx((64 * 2.0 + 1536 * 1.0 + 400 * 2.0 + 100 * 8.0) / 1e6)  # 0.003264


@pytest.mark.parametrize("details", [None, {}, {"cached_tokens": None}, {"cached_tokens": 0, "audio_tokens": 0}])
def test_servers_without_cached_token_counts_read_as_none_cached(fake, details):
    body = completion(prompt_tokens=50, completion_tokens=5)
    body["usage"]["prompt_tokens_details"] = details
    server = fake((200, body))
    assert run(model_for(server), req()).usage == Usage(input_tokens=50, output_tokens=5)


# ---------------------------------------------------------------------------------------------------------------------
# Ballots: options scored from top_logprobs, strict structured output, and the fallback between them

OPTIONS = ["Ban cars", "Keep access", "Ban only in summer"]


def lettered(letter="B", top=None, text=None):
    """A one-token completion answering `letter`, with top_logprobs `top` ({token: logprob})."""
    top = top if top is not None else {"B": -0.2, " A": -1.9, "A": -2.5, "C": -3.0, "The": -4.0}
    body = completion(letter if text is None else text, completion_tokens=1)
    body["choices"][0]["logprobs"] = {"content": [{
        "token": letter, "logprob": top.get(letter, -9.0), "bytes": list(letter.encode()),
        "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in top.items()]}]}
    return body


def normalised(scores):
    norm = math.log(sum(math.exp(v) for v in scores.values()))
    return {k: v - norm for k, v in scores.items()}


def test_choices_are_scored_from_top_logprobs(fake):
    server = fake((200, lettered()))
    model = model_for(server)
    assert model.scores_options  # a custom server that is not `assembly serve`: logprobs are tried
    response = run(model, req("Your vote?", choices=OPTIONS, max_tokens=16, temperature=0.7, seed=5))
    assert response.choice == "Keep access" and response.text == "Keep access"
    assert response.raw["choice_method"] == "top_logprobs" and response.raw["reply"] == "B"
    # " A" (-1.9) beats "A" (-2.5); "The" is no letter
    assert response.choice_logprobs == pytest.approx(
        normalised({"Ban cars": -1.9, "Keep access": -0.2, "Ban only in summer": -3.0}))
    assert sum(math.exp(v) for v in response.choice_logprobs.values()) == pytest.approx(1.0)
    body = server.requests[0]["json"]
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["max_tokens"] == 1 and body["temperature"] == 0.0 and body["seed"] == 5
    assert "response_format" not in body and "choices" not in body
    assert body["messages"][-1]["content"].endswith(
        "Options:\nA. Ban cars\nB. Keep access\nC. Ban only in summer\nAnswer with the letter of your choice only.")


def test_letters_follow_the_order_the_options_were_shown_in(fake):
    server = fake((200, lettered(top={"A": -0.1, "B": -2.0, "C": -4.0})))
    shown = ["Ban only in summer", "Ban cars", "Keep access"]
    response = run(model_for(server), req("Your vote?", choices=shown))
    assert response.choice == "Ban only in summer"
    assert response.choice_logprobs == pytest.approx(
        normalised({"Ban only in summer": -0.1, "Ban cars": -2.0, "Keep access": -4.0}))
    assert "A. Ban only in summer\nB. Ban cars\nC. Keep access" in server.requests[0]["json"]["messages"][-1]["content"]


def test_a_letter_missing_from_top_logprobs_gets_less_than_the_least_seen(fake):
    server = fake((200, lettered("A", top={"A": -0.3, "B": -1.5, "Hmm": -5.0})))
    response = run(model_for(server), req(choices=OPTIONS))
    assert response.choice_logprobs == pytest.approx(
        normalised({"Ban cars": -0.3, "Keep access": -1.5, "Ban only in summer": -5.0 - math.log(2)}))


@pytest.mark.parametrize("reply", [completion("B"), lettered("The", top={"The": -0.1, "I": -1.0})],
                         ids=["no logprobs", "no letter among them"])
def test_a_server_without_usable_logprobs_turns_scoring_off(fake, reply):
    server = fake((200, reply))
    model = model_for(server)
    with pytest.raises(ChoiceScoringUnavailable, match="cannot score options"):
        run(model, req(choices=OPTIONS))
    assert model.scores_options is False and model.innermost.scores_options is False  # the wrappers read it live
    assert len(server.requests) == 1  # not retried
    with pytest.raises(ChoiceScoringUnavailable):  # a ballot already on its way is refused without a call
        run(model, req(choices=OPTIONS))
    assert len(server.requests) == 1


def test_a_server_rejecting_logprobs_turns_scoring_off(fake):
    server = fake(error(400, "logprobs are not supported by this model"))
    model = model_for(server)
    with pytest.raises(ChoiceScoringUnavailable, match="rejected logprobs"):
        run(model, req(choices=OPTIONS))
    assert model.scores_options is False and len(server.requests) == 1
    other = fake(error(400, "context length exceeded"))  # other 400s stay what they are
    with pytest.raises(ModelError) as info:
        run(model_for(other), req(choices=OPTIONS))
    assert not isinstance(info.value, ChoiceScoringUnavailable)


def test_ballot_falls_back_to_structured_output(fake):
    structured = completion('{"choice": "Keep access", "reason": "Deliveries matter."}')
    server = fake((200, completion("B")), (200, structured))
    model = model_for(server)

    async def two_ballots():
        try:
            return [await cast_ballot(model, juror_id=f"j{i}", persona="A shop owner.", question="Ban cars?",
                                      options=OPTIONS, seed=1) for i in (1, 2)]
        finally:
            await model.aclose()

    first, second = asyncio.run(two_ballots())
    for ballot in (first, second):
        assert ballot.status == "valid" and ballot.method == "structured"
        assert ballot.choice == "Keep access" and ballot.rationale == "Deliveries matter."
    assert model.scores_options is False
    sent = [r["json"] for r in server.requests]
    assert len(sent) == 3  # one scoring attempt, then one structured call per ballot
    assert sent[0]["logprobs"] is True and all("logprobs" not in body for body in sent[1:])
    fmt = sent[1]["response_format"]["json_schema"]
    assert fmt["strict"] is True and fmt["schema"] == ballot_schema("single", fmt["schema"]["properties"]["choice"]
                                                                               ["enum"])


def test_scored_ballot_through_cast_ballot(fake):
    server = fake((200, lettered()))
    model = model_for(server)
    ballot = asyncio.run(cast_ballot(model, juror_id="j1", persona="A shop owner.", question="Ban cars?",
                                     options=OPTIONS, seed=1, procedure=BallotProcedure(vote="mode", calibration="none")))
    asyncio.run(model.aclose())
    assert ballot.method == "scored:top_logprobs" and ballot.choice == "Keep access"
    assert sum(ballot.probabilities.values()) == pytest.approx(1.0)


def test_scoring_defaults_and_the_score_choices_option(fake):
    server = fake((200, completion()))
    assert OpenAIModel("gpt-4.1-mini").scores_options is True
    assert OpenAIModel("gpt-5.4-mini").scores_options is False  # official reasoning models reject logprobs
    assert OpenAIModel("o4-mini", score_choices=True).scores_options is True
    assert OpenAIModel("fake-model", base_url=server.base_url, score_choices=False).scores_options is False
    assert model_for(server, score_choices=False).scores_options is False  # a model option via the spec
    official = OpenAIModel("gpt-4.1-mini")._params(req(choices=["yes", "no"], max_tokens=50), with_schema=True)
    assert official["max_completion_tokens"] == 1 and official["top_logprobs"] == 20


@pytest.mark.parametrize("ballot_type", ["single", "yes_no", "ranked", "approval"])
def test_ballot_schemas_qualify_for_strict_mode(ballot_type):
    assert strict_qualifies(ballot_schema(ballot_type, OPTIONS))


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"vote": {"type": "string"}}},  # no additionalProperties
    {"type": "object", "properties": {"vote": {"type": "string"}}, "required": [], "additionalProperties": False},
    {"type": "object", "additionalProperties": False, "required": ["inner"],
     "properties": {"inner": {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}}},
    {"type": "object", "additionalProperties": False, "required": ["items"],
     "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {}}}}},
    {"type": "array", "items": {"type": "string"}},  # strict mode wants an object at the root
    {"type": "object"},
])
def test_schemas_that_do_not_qualify_for_strict_mode(schema):
    assert not strict_qualifies(schema)


def test_strict_flag_follows_the_schema(fake):
    server = fake((200, completion("{}")))
    model = OpenAIModel("fake-model", base_url=server.base_url)
    closed = ballot_schema("single", OPTIONS)
    assert model._params(req(json_schema=closed), True)["response_format"]["json_schema"]["strict"] is True
    open_ = {"type": "object", "properties": {"vote": {"type": "string"}}}
    assert model._params(req(json_schema=open_), True)["response_format"]["json_schema"]["strict"] is False
