"""`assembly serve` in-process on 127.0.0.1, hit with the real openai client and raw HTTP."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from assembly.providers.base import Model  # noqa: E402
from assembly.providers.openai import OpenAIModel  # noqa: E402
from assembly.providers.scripted import ScriptedModel  # noqa: E402
from assembly.providers.types import GenerateRequest, Message, ModelError  # noqa: E402
from assembly.serve import ServerThread, create_app  # noqa: E402
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
    client(server).chat.completions.create(
        model="juror", messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_schema", "json_schema": {"name": "v", "schema": schema}})
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
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
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
# The command


@pytest.fixture
def serve_cli(monkeypatch):
    import typer
    from typer.testing import CliRunner

    import assembly.serve
    from assembly.cli.serve import serve

    calls = []
    monkeypatch.setattr(assembly.serve, "run_server", lambda model, **kw: calls.append((model, kw)))
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
