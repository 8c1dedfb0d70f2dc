"""Shared-prefix prefill in the local backend: the same answers as plain prefill, fewer tokens computed."""

from __future__ import annotations

import asyncio
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assembly.providers import GenerateRequest, Message  # noqa: E402
from assembly.providers.forward import MIN_SHARED_TOKENS  # noqa: E402
from assembly.providers.local import LocalModel  # noqa: E402
from assembly.providers.prefixes import PrefixStore, common_prefix_length, prefix_groups  # noqa: E402
from tests.fakes import build_tiny_llama  # noqa: E402

WORDS = ("the jury heard the witness and voted yes the moderator asked the jury a question about the park "
         "i think the city should build the new park no i do not support the new tax on cars").split()
SHARED = " ".join(WORDS * 2)  # well over MIN_SHARED_TOKENS tokens, every one in the vocabulary
OWN = ["i think the city should build", "no i do not support the new tax on cars and the park",
       "yes", "we voted", "the moderator asked the jury a question"]  # different lengths: pads sit mid-row
OPTIONS = ["yes", "no", "the new park"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-prefix"), [" ".join(WORDS)], max_positions=512)


def model(folder, **options) -> LocalModel:
    torch.set_num_threads(1)
    return LocalModel(folder, dtype="float32", threads=1, batch_wait_ms=50, **options)


def prompts(shared: str = SHARED, **kw) -> list[GenerateRequest]:
    return [GenerateRequest(messages=[Message(role="system", content=shared), Message(role="user", content=own)],
                            seed=i, **kw) for i, own in enumerate(OWN)]


def both(folder, requests):
    async def go(m):
        try:
            return await m.generate_many(requests), m
        finally:
            await m.aclose()

    return asyncio.run(go(model(folder))), asyncio.run(go(model(folder, prefix_sharing=False)))


def test_generation_with_a_shared_prefix_gives_the_same_tokens_as_plain_prefill(tiny_dir):
    (shared, m), (plain, p) = both(tiny_dir, prompts(max_tokens=10, temperature=0.9))
    assert [r.text for r in shared] == [r.text for r in plain]
    assert [r.usage.output_tokens for r in shared] == [r.usage.output_tokens for r in plain]
    n = common_prefix_length([m.tokenizer(r.messages[0].content)["input_ids"] for r in prompts()])
    assert n >= MIN_SHARED_TOKENS
    cached = [r.usage.cached_input_tokens for r in shared]
    assert cached[0] == 0 and len(set(cached[1:])) == 1 and cached[1] >= n  # the first row paid for the prefix
    assert all(r.usage.cached_input_tokens == 0 for r in plain)
    assert m.stats["prompt_tokens"] == p.stats["prompt_tokens"] == sum(r.usage.input_tokens for r in shared)
    assert m.stats["prefilled_tokens"] == m.stats["prompt_tokens"] - sum(cached)
    assert p.stats["prefilled_tokens"] == p.stats["prompt_tokens"]


def test_choice_scores_with_a_shared_prefix_match_plain_prefill(tiny_dir):
    (shared, m), (plain, _) = both(tiny_dir, prompts(choices=OPTIONS))
    for a, b in zip(shared, plain):
        assert a.choice == b.choice
        assert a.choice_logprobs == pytest.approx(b.choice_logprobs, abs=1e-4)
    assert shared[1].usage.cached_input_tokens > 0 and m.stats["prefilled_tokens"] < m.stats["prompt_tokens"]


def test_a_prefix_computed_once_serves_later_batches(tiny_dir):
    m = model(tiny_dir)

    async def go():
        first = await m.generate_many(prompts(max_tokens=4, temperature=0.0))
        before = dict(m.stats)
        second = await m.generate_many(prompts(choices=OPTIONS))  # the next phase: same shared block
        await m.aclose()
        return first, before, second

    first, before, second = asyncio.run(go())
    assert len(m.prefixes) == 1
    assert all(r.usage.cached_input_tokens > 0 for r in second)  # the first row too: the prefix was stored
    assert m.stats["prefix_tokens_reused"] >= second[0].usage.cached_input_tokens
    sent = m.stats["prompt_tokens"] - before["prompt_tokens"]
    assert m.stats["prefilled_tokens"] - before["prefilled_tokens"] == sent - sum(
        r.usage.cached_input_tokens for r in second)


def test_several_juries_in_one_batch_share_each_jury_s_prefix(tiny_dir):
    """A study batches several juries' prompts together: the same preamble, then each jury's own shared block. Each
    group's prefix is computed once, and the answers are those of plain prefill."""
    juries = [SHARED + " " + " ".join(WORDS), SHARED + " " + " ".join(reversed(WORDS))]
    mixed = [r for pair in zip(*(prompts(block, choices=OPTIONS) for block in juries)) for r in pair]  # interleaved
    (shared, m), (plain, p) = both(tiny_dir, mixed)
    for a, b in zip(shared, plain):
        assert a.choice == b.choice
        assert a.choice_logprobs == pytest.approx(b.choice_logprobs, abs=1e-4)
    tokens = [m.tokenizer(r.messages[0].content)["input_ids"] for r in mixed]
    groups = prefix_groups(tokens, MIN_SHARED_TOKENS)
    assert [rows for rows, _ in groups] == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]
    assert all(n > common_prefix_length(tokens) for _, n in groups)
    cached = [r.usage.cached_input_tokens for r in shared]
    assert all(cached[i] > common_prefix_length(tokens) for i in range(2, 10))  # each jury's block, not just the base
    assert m.stats["prefilled_tokens"] == m.stats["prompt_tokens"] - sum(cached) < p.stats["prefilled_tokens"]

    (texts, _), (plain_texts, _) = both(tiny_dir, [r.model_copy(update={"choices": None, "max_tokens": 8,
                                                                         "temperature": 0.9}) for r in mixed])
    assert [r.text for r in texts] == [r.text for r in plain_texts]


def test_rows_are_grouped_by_the_prefix_they_share():
    base = list(range(40))
    a, b = base + [100] * 40, base + [200] * 40
    rows = [a + [1], b + [2], a + [3, 4], b + [5]]
    assert prefix_groups(rows, 32) == [([0, 2], 80), ([1, 3], 80)]
    assert prefix_groups(rows + [base + [9]], 32) == [([0, 2], 80), ([1, 3], 80), ([4], 40)]  # alone: the base
    assert prefix_groups(rows + [base + [9], base + [8]], 32) == [([0, 2], 80), ([1, 3], 80), ([4, 5], 40)]
    assert prefix_groups([[7] * 50, a], 32) == [([0, 1], 0)]
    assert prefix_groups([a, a], 32) == [([0, 1], 79)]  # each row keeps a token of its own
    assert prefix_groups([], 32) == []


def test_prompts_without_a_long_common_prefix_are_prefilled_whole(tiny_dir):
    requests = [GenerateRequest(messages=[Message(role="user", content=f"{w} {SHARED}")], max_tokens=3, seed=1)
                for w in ("yes", "no", "park")]
    (shared, m), _ = both(tiny_dir, requests)
    assert all(r.usage.cached_input_tokens == 0 for r in shared)
    assert m.stats["prefilled_tokens"] == m.stats["prompt_tokens"] and len(m.prefixes) == 0


def test_prefix_store_matches_leading_runs_and_stays_within_its_budget():
    def states(n: int):
        return [(torch.arange(n, dtype=torch.float32).view(1, 1, n, 1),) * 2]

    store = PrefixStore(max_tokens=10)
    store.put([1, 2, 3, 4], states(4))
    n, layers = store.longest([1, 2, 3, 9, 9])
    assert n == 3 and layers[0][0].shape[2] == 3  # a stored prompt serves any prompt sharing its first part
    assert store.longest([7, 8])[0] == 0
    store.put([1, 2, 3, 4, 5, 6], states(6))  # its own prefix [1, 2, 3, 4] is dropped: this entry serves it
    assert len(store) == 1 and store.tokens == 6
    store.put([5, 6, 7], states(3))
    store.put([8, 9], states(2))  # 6 + 3 + 2 > 10: the least recently used goes
    assert len(store) == 2 and store.tokens == 5 and store.longest([1, 2])[0] == 0
    store.put(list(range(20)), states(20))  # larger than the whole budget: not kept
    assert store.tokens == 5
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2 and common_prefix_length([]) == 0
