"""Prompt layout: the version an adapter was tuned on, and the warning when it is not today's."""

from __future__ import annotations

import json
import logging

from assembly.layout import PROMPT_LAYOUT, adapter_layout, statement_messages, warn_on_other_layout
from assembly.providers.chat import joined_system


def test_an_adapter_tuned_on_another_layout_gives_a_warning(tmp_path, caplog):
    current, old, unnumbered = (tmp_path / name for name in ("current", "old", "unnumbered"))
    for folder, card in ((current, {"prompt_layout": PROMPT_LAYOUT}), (old, {"prompt_layout": 1}), (unnumbered, {})):
        folder.mkdir()
        (folder / "card.json").write_text(json.dumps(card))
    with caplog.at_level(logging.WARNING, logger="assembly.layout"):
        assert warn_on_other_layout("local:m", current) is False
        assert not caplog.records
        assert warn_on_other_layout("local:m", old) is True
        assert "layout 1" in caplog.records[-1].getMessage()
    assert adapter_layout(unnumbered) == 1 and adapter_layout(tmp_path / "no-card") == 1


def test_the_persona_and_what_a_juror_heard_come_after_the_shared_block():
    def messages(persona, heard):
        return statement_messages(persona=persona, question="Ban cars?", options=["Yes", "No"], testimony="T.",
                                  summary="S.", heard=heard, prompt="Speak.", words=30)

    a = messages("You are Ann.", [{"speaker": "Bo", "content": "No cars."}])
    b = messages("You are Cy.", [])
    assert a[0] == b[0] and "Ban cars?" in a[0].content and "S." in a[0].content  # identical shared block
    assert a[0].content.rstrip().endswith("The moderator asks: Speak.") and "Speak." not in a[2].content
    assert [m.role for m in a] == ["system", "system", "user"] and a[1].content == "Who you are:\nYou are Ann."
    assert "Bo: No cars." in a[2].content and "Bo:" not in b[2].content and "Ann" not in a[2].content
    joined = joined_system([m.model_dump() for m in a])  # what a chat template or an OpenAI server is sent
    assert len(joined) == 2 and joined[0]["content"] == f"{a[0].content}\n\n{a[1].content}"
