"""`assembly serve` in-process on 127.0.0.1, hit with the real openai client and raw HTTP."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import threading
import time

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from assembly.providers.base import Model  # noqa: E402
from assembly.providers.openai import OpenAIModel  # noqa: E402
from assembly.providers.scripted import ScriptedModel  # noqa: E402
from assembly.providers.types import GenerateRequest, GenerateResponse, Message, ModelError, Usage  # noqa: E402
from assembly.serving.app import create_app  # noqa: E402
from assembly.serving.server import ServerThread  # noqa: E402
from tests.fakes import PeakConcurrencyModel, run_once  # noqa: E402

TOKEN = "serve-token-0123456789"


@pytest.fixture
def scripted():
    return ScriptedModel({"hello": "Hello, fellow juror. I am listening.", "vote": "I vote yes"},
                         name="scripted:juror", scores_options=True)


@pytest.fixture
def server(scripted):
    with ServerThread(create_app(scripted, model_id="juror", token=TOKEN, max_body_bytes=4096)) as srv:
        yield srv


def client(server, key=TOKEN):
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=30)


def test_chat_completion_with_the_openai_client(server, scripted):
    reply = client(server).chat.completions.create(
        model="juror", messages=[{"role": "developer", "content": "Be brief."},
                                 {"role": "user", "content": [{"type": "text", "text": "Say hello"}]}],
        max_tokens=20, temperature=0.2, seed=3, stop="\n\n")
    assert reply.choices[0].message.content == "Hello, fellow juror. I am listening."
    assert reply.choices[0].finish_reason == "stop" and reply.model == "juror"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens > 0
    (seen,) = scripted.history
    assert [m.role for m in seen.messages] == ["system", "user"] and seen.messages[1].content == "Say hello"
    assert (seen.max_tokens, seen.temperature, seen.seed, seen.stop) == (20, 0.2, 3, ["\n\n"])


def test_streaming_chunks_end_with_done(server):
    stream = client(server).chat.completions.create(
        model="juror", messages=[{"role": "user", "content": "hello?"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello, fellow juror. I am listening."
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    raw = httpx.post(server.base_url + "/chat/completions", headers={"Authorization": f"Bearer {TOKEN}"},
                     json={"messages": [{"role": "user", "content": "hello"}], "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)


def test_models_endpoint(server):
    models = client(server).models.list()
    (entry,) = models.data
    assert entry.id == "juror" and entry.owned_by == "assembly"
    assert entry.model_extra["x_assembly"] == {"scores_options": True, "spec": "scripted:juror"}
    assert client(server).models.retrieve("juror").id == "juror"
    with pytest.raises(openai.NotFoundError):
        client(server).models.retrieve("other")
    assert httpx.get(server.url + "/health").json()["status"] == "ok"  # no token needed


def test_bad_or_missing_token_is_401(server):
    with pytest.raises(openai.AuthenticationError):
        client(server, key="wrong").chat.completions.create(model="juror", messages=[{"role": "user", "content": "x"}])
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        reply = httpx.post(server.base_url + "/chat/completions", headers=headers,
                           json={"messages": [{"role": "user", "content": "x"}]})
        assert reply.status_code == 401
        error = reply.json()["error"]
        assert error["code"] == "invalid_api_key" and TOKEN not in reply.text
    assert httpx.get(server.base_url + "/models").status_code == 401


def test_oversized_body_is_413(server):
    big = {"messages": [{"role": "user", "content": "x" * 10_000}]}
    reply = httpx.post(server.base_url + "/chat/completions", headers={"Authorization": f"Bearer {TOKEN}"}, json=big)
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "request_too_large"

    def chunked():  # no Content-Length: the limit is enforced while reading
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    reply = httpx.post(server.base_url + "/chat/completions", headers={"Authorization": f"Bearer {TOKEN}"},
                       content=chunked())
    assert reply.status_code == 413
    with pytest.raises(openai.APIStatusError) as info:
        client(server).chat.completions.create(model="juror", messages=[{"role": "user", "content": "z" * 10_000}])
    assert info.value.status_code == 413


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"messages": [', "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"model": "juror"}', "messages"),
        (b'{"messages": []}', "messages"),
        (b'{"messages": [{"role": "user", "content": "x"}], "n": 2}', "n=1"),
        (b'{"messages": [{"role": "tool", "content": "x"}]}', "role"),
        (b'{"messages": [{"role": "user", "content": "x"}], "temperature": 9}', "temperature"),
        (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}', "max_tokens"),
        (b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}', "text parts"),
        (b'{"messages": [{"role": "user", "content": "x"}], "choices": ["a", "a"]}', "choices"),
        (b'{"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}', "top_logprobs"),
        (b'{"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": -1}', "top_logprobs"),
        (b'{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}', "top_logprobs"),
        (b'{"messages": [{"role": "user", "content": "x"}], "logprobs": true, "stream": true}', "logprobs"),
    ],
)
def test_malformed_requests_are_400_in_openai_shape(server, body, fragment):
    reply = httpx.post(server.base_url + "/chat/completions", content=body,
                       headers={"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and fragment in error["message"]


def test_bad_top_logprobs_names_the_parameter(server):
    with pytest.raises(openai.BadRequestError) as info:
        client(server).chat.completions.create(model="juror", messages=[{"role": "user", "content": "x"}],
                                               logprobs=True, top_logprobs=25)
    assert info.value.status_code == 400 and info.value.body["param"] == "top_logprobs"


def test_logprobs_are_null_when_the_model_cannot_report_them(server, scripted):
    reply = client(server).chat.completions.create(model="juror", messages=[{"role": "user", "content": "hello"}],
                                                   logprobs=True, top_logprobs=2)
    assert reply.choices[0].logprobs is None and reply.choices[0].message.content.startswith("Hello")
    assert scripted.history[-1].top_logprobs == 2


def test_unknown_route_is_openai_shaped_404(server):
    reply = httpx.get(server.base_url + "/nothing", headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 404 and "error" in reply.json()


def test_choices_extension_and_json_schema(server, scripted):
    reply = client(server).chat.completions.create(
        model="juror", messages=[{"role": "user", "content": "Your vote?"}],
        extra_body={"choices": ["no", "yes"]})
    message = reply.choices[0].message
    assert message.content == "yes" and message.model_extra["x_choice"] == "yes"
    assert message.model_extra["x_choice_logprobs"] == {"no": -5.0, "yes": 0.0}
    schema = {"type": "object", "properties": {"vote": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "v", "schema": schema}}
    with pytest.raises(openai.BadRequestError) as info:  # a model that cannot honour it: refused, not ignored
        client(server).chat.completions.create(model="juror", messages=[{"role": "user", "content": "json"}],
                                               response_format=fmt)
    assert info.value.body["param"] == "response_format" and info.value.body["code"] == "unsupported_response_format"
    scripted.honours_json_schema = True
    client(server).chat.completions.create(
        model="juror", messages=[{"role": "user", "content": "json please"}], response_format=fmt)
    assert scripted.history[-1].json_schema == schema


def test_our_openai_backend_gets_scored_ballots_from_our_server(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", TOKEN)
    model = OpenAIModel("juror", base_url=server.base_url)
    assert model.server_choices and model.scores_options  # detected from /v1/models on loopback
    ballot = GenerateRequest(messages=[Message(role="user", content="Your vote?")], choices=["no", "yes"])
    response = run_once(model, ballot)
    assert response.choice == "yes" and response.choice_logprobs == {"no": -5.0, "yes": 0.0}


def test_concurrent_requests_reach_the_model_together():
    model = PeakConcurrencyModel("test:concurrent", delay=0.1, text="ok")
    with ServerThread(create_app(model)) as srv:
        async def main():
            async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="none", max_retries=0) as c:
                return await asyncio.gather(*(
                    c.chat.completions.create(model="m", messages=[{"role": "user", "content": str(i)}])
                    for i in range(6)))

        replies = asyncio.run(main())
    assert all(r.choices[0].message.content == "ok" for r in replies)
    assert model.peak >= 3  # requests were not serialised: a batching model gets them together


class Failing(Model):
    name = "test:failing"

    def __init__(self, error: Exception):
        self.error = error

    async def generate(self, request):
        raise self.error


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ModelError("overloaded", retryable=True, status=529), 503),
        (ModelError("context too long", status=400), 400),
        (ModelError("weights missing"), 500),
        (RuntimeError("bug with a secret inside"), 500),
    ],
)
def test_model_errors_become_http_errors(error, status):
    with ServerThread(create_app(Failing(error))) as srv:
        reply = httpx.post(srv.base_url + "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert reply.status_code == status
    assert "error" in reply.json() and "secret" not in reply.text


# ---------------------------------------------------------------------------------------------------------------------
# Limits: caps on a request, the bounded queue, clients that hang up (fake models: fast and deterministic)

BODY = {"messages": [{"role": "user", "content": "x"}]}


def eventually(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


class Gate(Model):
    """Holds every call until `opened` is set (a threading.Event: the server's loop runs on its own thread). Counts
    calls in flight, calls cancelled (their client hung up) and streams closed before their end."""

    name = "test:gate"

    def __init__(self):
        self.opened = threading.Event()
        self.in_flight = self.cancelled = self.streams_abandoned = 0

    async def _wait(self):
        self.in_flight += 1
        try:
            while not self.opened.is_set():
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1

    async def generate(self, request):
        await self._wait()
        return GenerateResponse(text="done", model=self.name, usage=Usage(input_tokens=1, output_tokens=1))

    async def stream(self, request):
        finished = False
        try:
            yield "first "
            await self._wait()
            yield "second"
            finished = True
            yield GenerateResponse(text="first second", model=self.name, usage=Usage(input_tokens=1, output_tokens=2))
        finally:
            self.streams_abandoned += not finished


class BreaksMidStream(Model):
    name = "test:breaks"

    async def generate(self, request):
        raise AssertionError("streamed only")

    async def stream(self, request):
        yield "a first piece"
        raise ModelError("the weights caught fire")


def test_a_failure_after_the_first_byte_ends_the_stream_with_an_error_event():
    with ServerThread(create_app(BreaksMidStream())) as srv:
        reply = httpx.post(srv.base_url + "/chat/completions", json={**BODY, "stream": True})
    events = [json.loads(e[6:]) for e in reply.text.split("\n\n") if e.startswith("data: {")]
    assert reply.status_code == 200 and events[1]["choices"][0]["delta"]["content"] == "a first piece"
    assert events[-1]["error"]["type"] == "server_error" and "caught fire" in events[-1]["error"]["message"]
    assert "[DONE]" not in reply.text


def test_choices_beyond_the_caps_are_400(scripted):
    with ServerThread(create_app(scripted, max_choices=3, max_choice_chars=8)) as srv:
        url = srv.base_url + "/chat/completions"
        many = httpx.post(url, json={**BODY, "choices": ["a", "b", "c", "d"]})
        long = httpx.post(url, json={**BODY, "choices": ["yes", "x" * 9]})
        fine = httpx.post(url, json={**BODY, "choices": ["yes", "x" * 8]})
    assert many.status_code == 400 and many.json()["error"]["code"] == "too_many_choices"
    error = long.json()["error"]
    assert long.status_code == 400 and error["code"] == "choice_too_long" and error["param"] == "choices[1]"
    assert fine.status_code == 200 and len(scripted.history) == 1  # the refused ones never reached the model


def test_a_full_queue_answers_429_at_once_and_a_closing_server_503():
    gate = Gate()
    app = create_app(gate, max_queue=2)
    with ServerThread(app) as srv:
        url = srv.base_url + "/chat/completions"
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            held = [pool.submit(httpx.post, url, json=BODY, timeout=30) for _ in range(2)]
            eventually(lambda: gate.in_flight == 2)
            start = time.monotonic()
            extra = httpx.post(url, json=BODY, timeout=5)
            assert time.monotonic() - start < 1.0  # turned away at once, not queued
            assert extra.status_code == 429 and extra.headers["retry-after"] == "1"
            assert extra.json()["error"]["code"] == "rate_limit_exceeded"
            assert httpx.get(srv.url + "/health").json()["in_flight"] == 2
            gate.opened.set()
            assert [f.result().status_code for f in held] == [200, 200]
        assert httpx.post(url, json=BODY).status_code == 200  # their places came back
        app.state.admission.close()  # what stop() and Ctrl-C do first
        closing = httpx.post(url, json=BODY)
        assert closing.status_code == 503 and closing.json()["error"]["code"] == "server_shutting_down"
        assert httpx.get(srv.url + "/health").status_code == 503


def test_a_client_that_hangs_up_is_cancelled_and_frees_its_place():
    gate = Gate()
    with ServerThread(create_app(gate, max_queue=1)) as srv:
        url = srv.base_url + "/chat/completions"
        with pytest.raises(httpx.ReadTimeout):  # the client gives up while its request is queued/decoding
            httpx.post(url, json=BODY, timeout=httpx.Timeout(5.0, read=0.3))
        eventually(lambda: gate.cancelled == 1)  # starlette alone would have let it run
        eventually(lambda: httpx.get(srv.url + "/health").json()["in_flight"] == 0)
        with httpx.stream("POST", url, json={**BODY, "stream": True}, timeout=5) as reply:
            for line in reply.iter_lines():  # read the first delta, then leave
                if "first" in line:
                    break
        eventually(lambda: gate.streams_abandoned == 1)
        eventually(lambda: httpx.get(srv.url + "/health").json()["in_flight"] == 0)
        gate.opened.set()
        assert httpx.post(url, json=BODY).status_code == 200  # max_queue=1: the place is free again


# ---------------------------------------------------------------------------------------------------------------------
# A real (tiny, random) transformers model behind the server


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    pytest.importorskip("assembly.providers.local")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<|im_start|>", "<|im_end|>", "<pad>"]
    corpus = ["the juror said yes", "the witness said no", "hello world, I vote for the market square",
              "user assistant system", "we should ban cars on saturdays"] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                                bos_token="<|im_start|>", eos_token="<|im_end|>")
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    fast.save_pretrained(folder)
    config = transformers.LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8192,
                                      eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
                                      bos_token_id=fast.bos_token_id)
    import torch

    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_tiny_local_model_behind_the_server(tiny_model_dir, monkeypatch):
    from assembly.providers.registry import load_model

    local = load_model(f"local:{tiny_model_dir}", threads=1, dtype="float32", batch_wait_ms=50)
    with ServerThread(create_app(local, model_id="tiny")) as srv:
        sync = openai.OpenAI(base_url=srv.base_url, api_key="none", max_retries=0, timeout=120)
        reply = sync.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello juror"}],
                                             max_tokens=6, seed=1, temperature=0)
        assert isinstance(reply.choices[0].message.content, str) and reply.usage.completion_tokens <= 6
        assert reply.choices[0].finish_reason in ("stop", "length")
        stream = sync.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}],
                                              max_tokens=4, stream=True)
        assert sum(1 for _ in stream) >= 2

        async def many():
            async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="none", max_retries=0, timeout=120) as c:
                return await asyncio.gather(*(
                    c.chat.completions.create(model="tiny", max_tokens=3,
                                              messages=[{"role": "user", "content": f"juror {i} says"}])
                    for i in range(4)))

        before = local.stats["batches"]
        replies = asyncio.run(many())
        assert len(replies) == 4
        assert local.stats["batches"] - before < 4  # concurrent HTTP requests shared forward passes
        assert local.stats["max_batch_seen"] >= 2

        monkeypatch.setenv("OPENAI_API_KEY", "none")
        remote = OpenAIModel("tiny", base_url=srv.base_url)
        assert remote.scores_options  # a LocalModel scores options; the server says so
        ballot = GenerateRequest(messages=[Message(role="user", content="Vote")], choices=["yes", "no"])
        response = run_once(remote, ballot)
        assert response.choice in ("yes", "no")
        assert sum(2.718281828 ** v for v in response.choice_logprobs.values()) == pytest.approx(1.0, abs=1e-3)

        # a prompt starting like an earlier one reuses its stored prefix, and says so as OpenAI does
        shared = Message(role="system", content="the jury heard the witness and voted " * 12)
        again = OpenAIModel("tiny", base_url=srv.base_url)

        async def twice():
            try:
                return [await again.generate(GenerateRequest(messages=[shared, Message(role="user", content=own)],
                                                             max_tokens=2, seed=1)) for own in ("yes", "no no")]
            finally:
                await again.aclose()

        first, second = asyncio.run(twice())
        assert first.usage.cached_input_tokens == 0 < second.usage.cached_input_tokens < second.usage.input_tokens
    asyncio.run(local.aclose())
    json.dumps(reply.model_dump())  # the reply is plain JSON all the way down


def test_tiny_local_model_returns_openai_logprobs(tiny_model_dir):
    from assembly.providers.registry import load_model

    local = load_model(f"local:{tiny_model_dir}", threads=1, dtype="float32")
    with ServerThread(create_app(local, model_id="tiny")) as srv:
        sync = openai.OpenAI(base_url=srv.base_url, api_key="none", max_retries=0, timeout=120)
        reply = sync.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello juror"}],
                                             max_tokens=4, temperature=0, logprobs=True, top_logprobs=5)
        plain = sync.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello juror"}],
                                             max_tokens=4, temperature=0)
    asyncio.run(local.aclose())
    choice = reply.choices[0]
    content = choice.logprobs.content
    # one entry per generated token, the end-of-turn token that stopped the answer included
    assert len(content) == reply.usage.completion_tokens >= 1
    for entry in content:
        top = entry.top_logprobs
        assert len(top) == 5 and [t.logprob for t in top] == sorted((t.logprob for t in top), reverse=True)
        assert sum(math.exp(t.logprob) for t in top) <= 1 + 1e-6
        assert len({bytes(t.bytes) for t in top}) == 5  # distinct tokens, even those that print alike ("\ufffd")
        # greedy decoding: the token taken is the likeliest one
        assert entry.bytes == top[0].bytes and entry.logprob == pytest.approx(top[0].logprob, abs=1e-5)
        for t in (entry, *top):
            assert t.bytes == list(t.token.encode()) or t.token == "\ufffd"  # a byte that is part of a character
    assert plain.choices[0].logprobs is None and plain.choices[0].message.content == choice.message.content


def test_openai_client_scores_ballots_from_top_logprobs_of_assembly_serve(tiny_model_dir, monkeypatch):
    import torch

    from assembly.providers.registry import load_model

    local = load_model(f"local:{tiny_model_dir}", threads=1, dtype="float32").load()
    # make the random model answer with a letter: A, else B (the rest of the vocabulary far below)
    tokenizer, hf = local.tokenizer, local.hf_model
    head = torch.nn.Linear(hf.lm_head.in_features, hf.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(hf.lm_head.weight)
        head.bias.zero_()
        head.bias[tokenizer.convert_tokens_to_ids("A")] = 6.0
        head.bias[tokenizer.convert_tokens_to_ids("B")] = 5.0
    hf.lm_head = head
    monkeypatch.setenv("OPENAI_API_KEY", "none")
    with ServerThread(create_app(local, model_id="tiny")) as srv:
        remote = OpenAIModel("tiny", base_url=srv.base_url, server_choices=False)
        assert remote.scores_options and not remote.server_choices

        async def ballots():
            try:
                return await asyncio.gather(*(remote.generate(GenerateRequest(
                    messages=[Message(role="user", content="Vote")], choices=shown, max_tokens=16, temperature=0))
                    for shown in (["yes", "no"], ["no", "yes"])))
            finally:
                await remote.aclose()

        forward, backward = asyncio.run(ballots())
    asyncio.run(local.aclose())
    for response, first in ((forward, "yes"), (backward, "no")):
        assert response.raw["choice_method"] == "top_logprobs" and response.choice == first
        probabilities = {o: math.exp(v) for o, v in response.choice_logprobs.items()}
        assert sum(probabilities.values()) == pytest.approx(1.0)
        # A and B differ by the bias (1.0) plus the random model's own small logits
        assert probabilities[first] == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.05)


# ---------------------------------------------------------------------------------------------------------------------
# Streaming, JSON schemas, prompts that do not fit (tiny local models)

WORDS = ["the jury heard the witness and voted yes", "i think the city should build the new park",
         "no i do not support the new tax on cars", "we should listen to every juror before we vote"]


@pytest.fixture(scope="module")
def small_context_dir(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.fakes import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-64"), WORDS, max_positions=64, sharpen=8.0)


def _local(folder):
    from assembly.providers.local import LocalModel

    return LocalModel(folder, dtype="float32", threads=1).load()


def _never_ends(local):
    """The random model never ends its answer by itself: every answer runs to max_tokens."""
    import torch

    hf, eos = local.hf_model, local.tokenizer.eos_token_id
    head = torch.nn.Linear(hf.lm_head.in_features, hf.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(hf.lm_head.weight)
        head.bias.zero_()
        head.bias[eos] = -1e4
    hf.lm_head = head


def _slow(local, seconds: float):
    """Every forward pass takes at least `seconds` (so a test can act while the model decodes)."""
    forward = local._forward

    def slow(**kwargs):
        time.sleep(seconds)
        return forward(**kwargs)

    local._forward = slow


def test_a_prompt_that_does_not_fit_is_400_not_cut(small_context_dir):
    local = _local(small_context_dir)
    long = " ".join(["the jury heard the witness"] * 20)  # ~100 tokens; the model reads 64
    with ServerThread(create_app(local, max_prompt_tokens=20)) as srv:
        url = srv.base_url + "/chat/completions"

        def ask(content, max_tokens=4):
            return httpx.post(url, json={"messages": [{"role": "user", "content": content}],
                                         "max_tokens": max_tokens}, timeout=30)

        too_long, too_much, over_cap = ask(long), ask("the park", max_tokens=60), ask(" ".join(WORDS[:3]))
        fits = ask("the park")
    asyncio.run(local.aclose())
    for reply in (too_long, too_much, over_cap):
        error = reply.json()["error"]
        assert reply.status_code == 400 and error["code"] == "context_length_exceeded", reply.text
        assert error["param"] == "messages" and set(error) == {"message", "type", "param", "code"}
    assert "context is 64 tokens" in too_long.json()["error"]["message"]
    assert "60 for max_tokens" in too_much.json()["error"]["message"]
    assert "at most 20" in over_cap.json()["error"]["message"]
    assert fits.status_code == 200 and local.stats["requests"] == 1  # refused before the queue, not truncated


def test_a_long_prompt_loses_its_middle_never_its_system_message_or_persona(small_context_dir):
    from assembly.providers.chat import prompt_ids, render_chat
    from assembly.providers.types import GenerateResponse

    local = _local(small_context_dir)
    tok = local.tokenizer
    system = Message(role="system", content="we should listen to every juror before we vote")
    persona = "i think the city should build the new park"  # a juror's persona opens the user message (layout 2)
    heard = " ".join(["the witness said no"] * 25)
    messages = [system, Message(role="user", content=f"{persona} {heard} do you support the tax")]
    full = prompt_ids(tok, messages)
    kept, dropped = local._prompt_ids(messages, 40)
    head = tok(render_chat(tok, [system], add_generation_prompt=False)[0], add_special_tokens=False)["input_ids"]
    assert len(kept) == 40 and dropped == len(full) - 40
    assert kept[: len(head)] == head  # the whole system turn
    assert persona in tok.decode(kept[len(head):])  # then the start of the user turn, persona first
    assert kept[-12:] == full[-12:]  # and the end: the instruction and the generation prompt
    answered = asyncio.run(local.generate(GenerateRequest(messages=messages, max_tokens=2)))
    assert answered.raw["truncated_prompt_tokens"] > 0
    # a system message that alone leaves no room is refused, and its batch-mate is not failed with it
    huge = [Message(role="system", content=heard), Message(role="user", content="vote")]

    async def both():
        return await asyncio.gather(local.generate(GenerateRequest(messages=huge, max_tokens=2)),
                                    local.generate(GenerateRequest(messages=messages[1:], max_tokens=2)),
                                    return_exceptions=True)

    refused, other = asyncio.run(both())
    asyncio.run(local.aclose())
    assert isinstance(refused, ModelError) and refused.status == 400 and "system message" in str(refused)
    assert isinstance(other, GenerateResponse) and other.raw["truncated_prompt_tokens"] > 0


def test_stable_text_holds_back_what_may_still_change():
    from assembly.providers.streaming import stable_text

    assert stable_text("  Hello wor") == "Hello wor"
    assert stable_text("caf\ufffd") == "caf"  # half of "é"
    assert stable_text("Hi there \n") == "Hi there"  # a finished answer is stripped
    assert stable_text("yes EN", ["END"]) == "yes"  # "EN" may begin the stop string
    assert stable_text("yes ENx", ["END"]) == "yes ENx"
    assert stable_text("yes END and more", ["END", "more"]) == "yes"


def test_stream_deltas_add_up_to_the_answer_and_respect_stop_strings(small_context_dir):
    local = _local(small_context_dir)

    async def run(**kw):
        items = [item async for item in local.stream(GenerateRequest(
            messages=[Message(role="user", content="what about the tax")], max_tokens=12, temperature=0, **kw))]
        return items[:-1], items[-1]

    deltas, whole = asyncio.run(run())
    assert len(deltas) >= 3 and "".join(deltas) == whole.text and whole.finish_reason == "length"
    words = whole.text.split()
    stop = f"{words[3]} {words[4]}"  # two words: the first is held back until the second settles it
    deltas, cut = asyncio.run(run(stop=[stop]))
    asyncio.run(local.aclose())
    assert "".join(deltas) == cut.text == whole.text[: whole.text.find(stop)].strip()
    assert cut.finish_reason == "stop" and not any(words[3] in d for d in deltas[3:])


def test_streaming_sends_text_while_the_model_decodes(tiny_model_dir):
    local = _local(tiny_model_dir)
    _never_ends(local)
    _slow(local, 0.03)  # 40 passes of >= 30 ms: generation takes over a second
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 40, "temperature": 1.0, "seed": 3}
    arrivals = []
    with ServerThread(create_app(local)) as srv:
        url = srv.base_url + "/chat/completions"
        start = time.monotonic()
        with httpx.stream("POST", url, json={**body, "stream": True, "stream_options": {"include_usage": True}},
                          timeout=60) as reply:
            for line in reply.iter_lines():
                if line.startswith("data: {"):
                    arrivals.append((time.monotonic() - start, json.loads(line[6:])))
        whole = httpx.post(url, json=body, timeout=60).json()
    asyncio.run(local.aclose())
    content = [(t, c["choices"][0]["delta"]["content"]) for t, c in arrivals
               if c["choices"] and c["choices"][0]["delta"].get("content")]
    finished = next(t for t, c in arrivals if c["choices"] and c["choices"][0]["finish_reason"])
    assert len(content) >= 5 and content[0][0] < finished - 0.5  # the first text long before the end
    assert "".join(x for _, x in content) == whole["choices"][0]["message"]["content"]
    assert arrivals[-1][1]["usage"]["completion_tokens"] == 40


def test_a_cancelled_request_leaves_its_batch_and_the_queue(tiny_model_dir):
    local = _local(tiny_model_dir)
    local.max_batch = 2  # a full batch: the third request cannot join it and waits in the queue
    _never_ends(local)
    _slow(local, 0.01)

    def ask(max_tokens, seed):
        return GenerateRequest(messages=[Message(role="user", content="hello")], max_tokens=max_tokens,
                               temperature=1.0, seed=seed)

    async def run():
        long = asyncio.ensure_future(local.generate(ask(300, 1)))
        short = asyncio.ensure_future(local.generate(ask(30, 2)))
        await asyncio.sleep(0.15)  # both are decoding, in one batch
        queued = asyncio.ensure_future(local.generate(ask(5, 3)))  # waits for the next batch
        await asyncio.sleep(0.05)
        long.cancel()
        queued.cancel()
        start = time.monotonic()
        answer = await short
        return answer, time.monotonic() - start

    answer, waited = asyncio.run(run())
    time.sleep(0.2)  # the batcher takes the cancelled request from its inbox and skips it
    asyncio.run(local.aclose())
    assert answer.usage.output_tokens == 30 and waited < 2.0
    assert local.stats["batches"] == 1 and local.stats["requests"] == 2
    assert local.stats["generated_tokens"] < 30 + 60  # the long row was dropped long before its 300 tokens


def test_a_client_that_hangs_up_mid_stream_frees_its_row(tiny_model_dir):
    local = _local(tiny_model_dir)
    _never_ends(local)
    _slow(local, 0.01)
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 400, "temperature": 1.0, "seed": 1,
            "stream": True}
    with ServerThread(create_app(local, max_queue=1)) as srv:
        url = srv.base_url + "/chat/completions"
        with httpx.stream("POST", url, json=body, timeout=30) as reply:
            seen = 0
            for line in reply.iter_lines():
                seen += '"content"' in line
                if seen >= 4:
                    break
        eventually(lambda: httpx.get(srv.url + "/health").json()["in_flight"] == 0)
        time.sleep(0.1)
        decoded = local.stats["generated_tokens"]
        time.sleep(0.3)
        assert local.stats["generated_tokens"] == decoded < 100  # the row left the decoding loop
        after = httpx.post(url, json={**body, "stream": False, "max_tokens": 3}, timeout=30)
    asyncio.run(local.aclose())
    assert after.status_code == 200


def test_response_format_constrains_a_local_model_to_the_schema(tiny_model_dir):
    pytest.importorskip("lmformatenforcer")
    local = _local(tiny_model_dir)
    assert local.honours_json_schema
    schema = {"type": "object", "properties": {"vote": {"type": "string", "enum": ["yes", "no"]},
                                               "sure": {"type": "boolean"}}, "required": ["vote", "sure"]}
    with ServerThread(create_app(local, model_id="tiny")) as srv:
        c = openai.OpenAI(base_url=srv.base_url, api_key="none", max_retries=0, timeout=60)

        def ask(fmt, **kw):
            return c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "your ballot"}],
                                             max_tokens=150, response_format=fmt, **kw).choices[0]

        ballots = [ask({"type": "json_schema", "json_schema": {"name": "ballot", "schema": schema}}, **kw)
                   for kw in ({"temperature": 0}, {"temperature": 1.0, "seed": 3})]
        anything = ask({"type": "json_object"}, temperature=0)
    asyncio.run(local.aclose())
    for ballot in ballots:  # a random model, yet every answer is JSON that matches the schema
        data = json.loads(ballot.message.content)
        assert ballot.finish_reason == "stop" and set(data) == {"vote", "sure"}
        assert data["vote"] in ("yes", "no") and isinstance(data["sure"], bool)
    assert isinstance(json.loads(anything.message.content), dict)


def test_response_format_is_refused_when_the_model_cannot_honour_it(tiny_model_dir, monkeypatch):
    from assembly.providers import constrained
    from assembly.providers.local import LocalModel

    monkeypatch.setattr(constrained, "available", lambda: False)  # lm-format-enforcer not installed
    local = LocalModel(tiny_model_dir, dtype="float32", threads=1)
    with ServerThread(create_app(local)) as srv:
        reply = httpx.post(srv.base_url + "/chat/completions",
                           json={**BODY, "response_format": {"type": "json_object"}})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "response_format"
    assert local.stats["requests"] == 0


# ---------------------------------------------------------------------------------------------------------------------
# The command


@pytest.fixture
def serve_cli(monkeypatch):
    import typer
    from typer.testing import CliRunner

    import assembly.serving.server
    from assembly.cli.serve import serve

    calls = []
    monkeypatch.setattr(assembly.serving.server, "run_server", lambda model, **kw: calls.append((model, kw)))
    app = typer.Typer()
    app.command()(serve)
    runner = CliRunner()
    return lambda *args, **kw: (runner.invoke(app, list(args), **kw), calls)


def test_serve_command_options(serve_cli, monkeypatch):
    monkeypatch.setenv("ASSEMBLY_SERVE_TOKEN", "from-env")
    result, calls = serve_cli("--model", "scripted:x", "--port", "8123", "--max-body-kb", "8", "--name", "juror")
    assert result.exit_code == 0, result.output
    ((model, kw),) = calls
    assert model.name == "scripted:x"
    assert kw["token"] == "from-env" and kw["port"] == 8123 and kw["host"] == "127.0.0.1"
    assert kw["max_body_bytes"] == 8 * 1024 and kw["model_id"] == "juror"
    assert "from-env" not in result.output


def test_serve_command_refuses_bad_combinations(serve_cli, monkeypatch):
    from assembly.errors import SpecError

    monkeypatch.delenv("ASSEMBLY_SERVE_TOKEN", raising=False)
    result, calls = serve_cli("--model", "openai:gpt-4.1-mini", "--adapter", "/tmp/adapter")
    assert isinstance(result.exception, SpecError) and "--adapter" in str(result.exception) and not calls
    result, calls = serve_cli("--model", "scripted:x", "--host", "0.0.0.0")
    assert result.exit_code == 0 and "without --token" in result.output


def test_serve_command_passes_its_limits(serve_cli):
    from assembly.errors import SpecError

    result, calls = serve_cli("--model", "scripted:x", "--max-queue", "5", "--max-prompt-tokens", "100",
                              "--max-choices", "4", "--max-choice-chars", "50")
    assert result.exit_code == 0, result.output
    ((_, kw),) = calls
    assert (kw["max_queue"], kw["max_prompt_tokens"], kw["max_choices"], kw["max_choice_chars"]) == (5, 100, 4, 50)
    result, calls = serve_cli("--model", "scripted:x", "--max-queue", "0")
    assert isinstance(result.exception, SpecError) and "--max-queue" in str(result.exception) and len(calls) == 1


def test_a_request_that_arrives_while_a_batch_decodes_joins_it_and_returns_before_it_ends(tiny_model_dir):
    local = _local(tiny_model_dir)
    _never_ends(local)
    _slow(local, 0.01)

    def ask(max_tokens, seed, **kw):
        return GenerateRequest(messages=[Message(role="user", content="hello " * seed)], max_tokens=max_tokens,
                               temperature=1.0, seed=seed, **kw)

    async def run():
        long = asyncio.ensure_future(local.generate(ask(200, 1)))
        await asyncio.sleep(0.2)  # decoding
        late = await local.generate(ask(10, 7))  # a text request: joins the decoding batch
        scored = await local.generate(ask(1, 2, choices=["yes", "no"]))  # scored between two decoding steps
        done_early = not long.done()
        return late, scored, done_early, await long

    late, scored, done_early, long = asyncio.run(run())
    joined = local.stats["joined_requests"]
    asyncio.run(local.aclose())
    assert done_early  # both came back while the long row was still decoding
    assert late.usage.output_tokens == 10 and long.usage.output_tokens == 200
    assert scored.choice in ("yes", "no")
    assert joined == 1 and local.stats["batches"] == 2  # the long row's batch and the scoring pass inside it
    alone = asyncio.run(_one(tiny_model_dir, ask(10, 7)))
    assert late.text == alone.text  # its own seed: the same answer as when it runs alone


async def _one(folder, request):
    local = _local(folder)
    _never_ends(local)
    try:
        return await local.generate(request)
    finally:
        await local.aclose()
