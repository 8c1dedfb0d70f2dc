"""ReplayModel: answers by request hash + occurrence, independent of arrival order; clear misses."""

from __future__ import annotations

import asyncio

import pytest

from assembly.providers.replay_backend import ReplayMissError, ReplayModel
from assembly.providers.scripted import ScriptedModel
from assembly.providers.types import GenerateRequest, GenerateResponse, Message, ModelError


def req(text: str, *, choices=None, **tags) -> GenerateRequest:
    return GenerateRequest(messages=[Message(role="system", content="You are a juror."),
                                     Message(role="user", content=text)], choices=choices, tags=tags)


class FakeStore:
    """What assembly.recorder.RecordingModel records, kept as the store's recorded_calls() returns it."""

    def __init__(self):
        self.calls: list[dict] = []

    def record(self, event):
        self.calls.append({**event.fields, "id": event.call_id})


def record(model, request: GenerateRequest, response: GenerateResponse | None = None, error: str | None = None):
    """A store row like the recorder's (hash with the model's name; model column from the response)."""
    return {
        "request_hash": request.hash(model.name),
        "model": response.model if response else model.name,
        "role": request.tags.get("role"),
        "participant_id": request.tags.get("participant"),
        "phase": request.tags.get("phase"),
        "response": response.text if response else None,
        "choice": response.choice if response else None,
        "choice_logprobs": response.choice_logprobs if response else None,
        "input_tokens": response.usage.input_tokens if response else 0,
        "output_tokens": response.usage.output_tokens if response else 0,
        "error": error,
    }


async def run_and_record(model, requests):
    records = []
    for request in requests:
        response = await model.generate(request)
        records.append(record(model, request, response))
    return records


def test_occurrence_count_for_repeated_identical_requests():
    model = ScriptedModel(["first", "second", "third"], name="openai:gpt-4.1-mini", scores_options=False)
    same = req("What do you think?", role="juror", phase="deliberation")
    records = asyncio.run(run_and_record(model, [same, same, same]))
    replay = ReplayModel(records)
    texts = [asyncio.run(replay.generate(same)).text for _ in range(3)]
    assert texts == ["first", "second", "third"]
    with pytest.raises(ReplayMissError, match="#4 like this one.*only 3 time"):
        asyncio.run(replay.generate(same))


def test_concurrent_arrival_order_does_not_matter():
    model = ScriptedModel(lambda r: "answer to " + r.messages[-1].content, name="local:x", scores_options=False)
    requests = [req(f"q{i}") for i in range(8)] + [req("q0")]  # q0 asked twice
    records = asyncio.run(run_and_record(model, requests))
    replay = ReplayModel(records, name="replay:run1")

    async def main():
        return await asyncio.gather(*(replay.generate(r) for r in reversed(requests)))

    out = asyncio.run(main())
    assert [o.text for o in out] == ["answer to " + r.messages[-1].content for r in reversed(requests)]
    assert replay.book.remaining == 0
    assert all(o.raw["replayed"] and o.model == "local:x" for o in out)


def test_identical_prompts_go_back_to_their_own_participant():
    model = ScriptedModel(["for p1", "for p2"], name="local:x", scores_options=False)
    a = req("Same prompt", role="juror", participant="p1", phase="pre")
    b = req("Same prompt", role="juror", participant="p2", phase="pre")
    records = asyncio.run(run_and_record(model, [a, b]))
    replay = ReplayModel(records)
    assert asyncio.run(replay.generate(b)).text == "for p2"  # asked in the other order
    assert asyncio.run(replay.generate(a)).text == "for p1"


def test_models_per_role_are_keyed_by_their_own_names():
    juror = ScriptedModel(["juror says"], name="local:small", scores_options=False)
    moderator = ScriptedModel(["moderator says"], name="anthropic:claude-sonnet-4-5", scores_options=False)
    prompt = req("Identical prompt")
    records = asyncio.run(run_and_record(juror, [prompt])) + asyncio.run(run_and_record(moderator, [prompt]))
    by_model = ReplayModel.for_models(records)
    assert set(by_model) == {"local:small", "anthropic:claude-sonnet-4-5"}
    assert asyncio.run(by_model["anthropic:claude-sonnet-4-5"].generate(prompt)).text == "moderator says"
    assert asyncio.run(by_model["local:small"].generate(prompt)).text == "juror says"
    # one ReplayModel for everything also finds both (each request tried against each recorded model name)
    single = ReplayModel(records, name="replay:r")
    assert {asyncio.run(single.generate(prompt)).text for _ in range(2)} == {"juror says", "moderator says"}


def test_miss_names_the_request():
    model = ScriptedModel(["x"], name="local:x", scores_options=False)
    records = asyncio.run(run_and_record(model, [req("Something recorded")]))
    replay = ReplayModel(records)
    changed = req("Please cast your ballot on the market square question now", role="juror",
                  participant="p7", phase="post_ballot")
    with pytest.raises(ReplayMissError) as info:
        asyncio.run(replay.generate(changed))
    message = str(info.value)
    for part in ("role=juror", "participant=p7", "phase=post_ballot", "Please cast your ballot", "local:x"):
        assert part in message
    assert isinstance(info.value, ModelError) and info.value.retryable is False


def test_choices_and_scores_options_mirror_the_recording():
    scoring = ScriptedModel(name="local:x", scores_options=True, choose=lambda r: "no")
    ballot = req("Vote", choices=["yes", "no"], role="juror", phase="pre")
    records = asyncio.run(run_and_record(scoring, [ballot]))
    replay = ReplayModel(records)
    assert replay.scores_options is True
    out = asyncio.run(replay.generate(ballot))
    assert out.choice == "no" and out.choice_logprobs == {"yes": -5.0, "no": 0.0}
    assert out.usage.input_tokens == records[0]["input_tokens"]

    plain = ScriptedModel(["no, I think"], name="openai:m", scores_options=False)
    assert ReplayModel(asyncio.run(run_and_record(plain, [ballot]))).scores_options is False


def test_recorded_failures_replay_as_failures():
    model = ScriptedModel(["fine"], name="local:x")
    bad = req("this failed")
    records = [record(model, bad, None, error="local:x: HTTP 500: overloaded")]
    with pytest.raises(ModelError, match="overloaded"):
        asyncio.run(ReplayModel(records).generate(bad))


def test_round_trip_through_the_recorder():
    """The shape assembly.recorder writes is the shape ReplayModel reads."""
    recorder_mod = pytest.importorskip("assembly.recorder")
    store = FakeStore()
    inner = ScriptedModel(lambda r: "re: " + r.messages[-1].content, name="local:x", scores_options=True)
    recording = recorder_mod.RecordingModel(inner, store)
    requests = [req("a", role="juror", participant="p1"), req("b", role="moderator"), req("a", role="juror",
                participant="p2"), req("Vote", choices=["yes", "no"], role="juror", participant="p1", phase="pre")]
    originals = [asyncio.run(recording.generate(r)) for r in requests]

    replay_store = FakeStore()
    replayed = recorder_mod.RecordingModel(ReplayModel(store.calls, name="local:x"), replay_store)

    async def main():
        return await asyncio.gather(*(replayed.generate(r) for r in reversed(requests)))

    again = list(reversed(asyncio.run(main())))
    assert [(o.text, o.choice, o.choice_logprobs) for o in originals] == [
        (a.text, a.choice, a.choice_logprobs) for a in again]
    # same model name, so the replayed run records the same hashes
    assert sorted(c["request_hash"] for c in store.calls) == sorted(c["request_hash"] for c in replay_store.calls)


def test_records_without_hash_are_rejected():
    with pytest.raises(ValueError, match="request_hash"):
        ReplayModel([{"model": "m", "response": "x"}])
