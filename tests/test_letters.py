"""Letter scoring (assembly.providers.letters) and the request hash it must not disturb; torch-free."""

from __future__ import annotations

import math

import pytest

from assembly.providers.letters import LETTERS, letter_logprobs, with_letter_listing
from assembly.providers.types import GenerateRequest, Message


def test_listing_goes_under_the_last_user_message():
    messages = [Message(role="system", content="You are a juror."), Message(role="user", content="Vote?"),
                Message(role="assistant", content="Hm."), Message(role="user", content="Your ballot:")]
    out, letters = with_letter_listing(messages, ["Ban cars", "Keep access"])
    assert letters == ["A", "B"]
    assert out[:3] == messages[:3] and len(out) == 4
    assert out[3].content == ("Your ballot:\n\nOptions:\nA. Ban cars\nB. Keep access\n"
                              "Answer with the letter of your choice only.")
    assert messages[3].content == "Your ballot:"  # the caller's messages are not modified
    alone, _ = with_letter_listing([Message(role="system", content="s")], ["x"])
    assert alone[-1].role == "user" and alone[-1].content.startswith("Options:\nA. x")
    with pytest.raises(ValueError, match="at most 26"):
        with_letter_listing(messages, [str(i) for i in range(len(LETTERS) + 1)])


def test_letter_logprobs_match_stripped_tokens_and_normalise():
    top = {"B": -0.5, " A": -1.0, "A": -2.0, "\nC": -3.0, "The": -4.0}
    got = letter_logprobs(top, ["A", "B", "C"], ["x", "y", "z"])
    scores = {"x": -1.0, "y": -0.5, "z": -3.0}  # " A" beats "A": the best per letter counts
    norm = math.log(sum(math.exp(v) for v in scores.values()))
    assert got == pytest.approx({o: v - norm for o, v in scores.items()})
    assert sum(math.exp(v) for v in got.values()) == pytest.approx(1.0)


def test_missing_letters_get_an_upper_bound_below_the_smallest_seen():
    got = letter_logprobs({"A": -0.1, "B": -1.0, "zzz": -6.0}, ["A", "B", "C", "D"], ["a", "b", "c", "d"])
    floor = -6.0 - math.log(2)
    norm = math.log(math.exp(-0.1) + math.exp(-1.0) + 2 * math.exp(floor))
    assert got["c"] == pytest.approx(floor - norm) and got["d"] == got["c"]
    assert got["a"] == pytest.approx(-0.1 - norm)
    with pytest.raises(ValueError):
        letter_logprobs({}, ["A"], ["a"])


def test_unset_top_logprobs_leaves_request_hashes_as_recorded():
    request = GenerateRequest(messages=[Message(role="user", content="Your vote?")], choices=["yes", "no"],
                              max_tokens=16, temperature=0.0, seed=3)
    # the hash this request had before GenerateRequest gained `top_logprobs`: recorded runs must still replay
    assert request.hash("openai:m") == "f914e13a55c81a269159166aaf8c580ca1f68394e4c8d29a15846552b84df7d8"
    assert "top_logprobs" not in request.payload()
    asked = request.model_copy(update={"top_logprobs": 2})
    assert asked.payload()["top_logprobs"] == 2 and asked.hash("openai:m") != request.hash("openai:m")
