"""Test doubles shared by several test modules: a local fake HTTP API server (for the openai and anthropic backends,
driven by the real SDKs, no network), a model that records how many calls it had in flight, and `run_once`."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from assembly.providers.base import Model
from assembly.providers.registry import load_model
from assembly.providers.types import GenerateRequest, GenerateResponse, Usage

# wrap options for backends under test: a few quick retries, no cost table
FAST_RETRIES = {"retries": 3, "initial_wait": 0.01, "max_wait": 0.05, "prices": False}


class FakeServer:
    """Replies in turn from `replies` ((status, dict | bytes[, delay])); the last one repeats. Records requests.

    Listens on 127.0.0.1; `base_url` is its address followed by `base_path` (e.g. "/v1")."""

    def __init__(self, replies, base_path: str = ""):
        self.replies = list(replies)
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                fake.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "json": json.loads(body)})
                reply = fake.replies.pop(0) if len(fake.replies) > 1 else fake.replies[0]
                status, payload, *delay = reply
                if delay:
                    time.sleep(delay[0])
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.handle_error = lambda request, address: None  # a client that timed out is not news
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}{base_path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def fake_server_fixture(base_path: str = ""):
    """A pytest fixture `fake(*replies) -> FakeServer` whose servers are closed after the test; in a test module:
    `fake = fake_server_fixture("/v1")`."""

    @pytest.fixture
    def fake():
        servers = []

        def make(*replies):
            server = FakeServer(replies, base_path)
            servers.append(server)
            return server

        yield make
        for s in servers:
            s.close()

    return fake


def load_fast(spec: str, **options) -> Model:
    """`load_model(spec)` with FAST_RETRIES, overridden by `options`."""
    return load_model(spec, **{**FAST_RETRIES, **options})


def run_once(model: Model, request: GenerateRequest) -> GenerateResponse:
    """`model.generate(request)` in a fresh event loop, closing the model afterwards."""

    async def main():
        try:
            return await model.generate(request)
        finally:
            await model.aclose()

    return asyncio.run(main())


class PeakConcurrencyModel(Model):
    """Answers after `delay` seconds with `text` (default: the last message's content) and 1+1 tokens; `active` is
    the number of calls in flight, `peak` the most seen at once."""

    def __init__(self, name: str = "test:concurrent", delay: float = 0.02, text: str | None = None):
        self.name = name
        self.delay = delay
        self.text = text
        self.active = 0
        self.peak = 0

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(self.delay)
        self.active -= 1
        text = request.messages[-1].content if self.text is None else self.text
        return GenerateResponse(text=text, model=self.name, usage=Usage(input_tokens=1, output_tokens=1))


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_llama(folder, texts, *, max_positions: int = 256, sharpen: float = 1.0):
    """A randomly initialised 2-layer Llama and a word-level tokenizer trained in memory on `texts`, saved to
    `folder` (no hub). `sharpen` scales the weight matrices so greedy decoding is not all ties."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(list(texts) + ["user assistant system"],
                                trainers.WordLevelTrainer(special_tokens=specials))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        eos_token="<|im_end|>", bos_token="<|im_start|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=backend.get_vocab_size(), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_positions, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    model = LlamaForCausalLM(config)
    if sharpen != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(sharpen if p.dim() > 1 else 1.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
