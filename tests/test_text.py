"""What a model wrote, trimmed one way everywhere (assembly.text), and what a local model is shown, rendered one way
for run time and training (assembly.providers.chat)."""

from __future__ import annotations

import pytest

from assembly.providers.chat import prompt_ids, render_chat, reply_ids
from assembly.text import clean_turn, clip_words, strip_speaker

NAMES = ["Moderator", "Maria Lopez", "Ada Planner"]


@pytest.mark.parametrize("text, expected", [
    ("Maria Lopez: I think the square should close.", "I think the square should close."),
    ("maria: I think so.", "I think so."),  # a first name, any case
    ("Juror 3: We should wait.", "We should wait."),
    ("**Moderator:** Let us begin.", "Let us begin."),
    ("Cost: the closure costs the traders money.", "Cost: the closure costs the traders money."),
    ("Answer: yes, with exceptions.", "Answer: yes, with exceptions."),
    ("Bo Trader: deliveries first.", "Bo Trader: deliveries first."),  # not a participant of this run
    ("I agree: it is crowded.", "I agree: it is crowded."),
])
def test_strip_speaker_only_strips_speakers(text, expected):
    assert strip_speaker(text, NAMES) == expected


def test_clean_turn_keeps_a_legitimate_opening_and_drops_quotes():
    assert clean_turn('"Cost: too high for the stalls."', 30, NAMES) == "Cost: too high for the stalls."
    assert clean_turn('Ada Planner: "Footfall rises."', 30, NAMES) == "Footfall rises."


def test_clip_words_cuts_at_a_sentence_end_not_a_decimal_point():
    text = "Traders said the levy for every stall in the market is 3.5 percent of turnover this year and next"
    assert clip_words(text, 15) == "Traders said the levy for every stall in the market is 3.5 percent of turnover…"
    text = "We heard the planner. She said footfall rises when cars leave. Traders disagree strongly about it"
    assert clip_words(text, 13) == "We heard the planner. She said footfall rises when cars leave."
    assert clip_words("One. Two three four.", 4) == "One. Two three four."
    assert clip_words("line one\nline two", 10) == "line one\nline two"
    assert clip_words("line one\nline two", 10, one_line=True) == "line one line two"
    assert clip_words("", 5) == ""


class FakeTokenizer:
    """Characters as token ids; a ChatML-like template with an end-of-turn marker."""

    eos_token_id = 0
    chat_template = "chatml"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        text = "".join(f"<|{m['role']}|>{m['content']}<|end|>\n" for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([1] if add_special_tokens else []) + [ord(c) for c in text]}


def test_chat_ids_take_the_reply_with_its_end_of_turn_marker():
    tok = FakeTokenizer()
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    text, templated = render_chat(tok, messages)
    assert templated and text.endswith("<|assistant|>")
    assert prompt_ids(tok, messages) == [ord(c) for c in text]  # templated: no extra special tokens
    assert "".join(map(chr, reply_ids(tok, messages, "Yes"))) == "Yes<|end|>"


def test_chat_ids_without_a_template_end_with_eos():
    tok = FakeTokenizer()
    tok.chat_template = None
    messages = [{"role": "user", "content": "U"}]
    text, templated = render_chat(tok, messages)
    assert not templated and text == "User: U\n\nAssistant:"
    assert prompt_ids(tok, messages)[0] == 1
    assert reply_ids(tok, messages, "No") == [ord(" "), ord("N"), ord("o"), 0]
