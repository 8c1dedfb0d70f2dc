"""The fixed statement rule (assembly.evaluation.statements): each part can fail on its own."""

from __future__ import annotations

from assembly.evaluation.statements import check_statement, summarize_checks

Q = "Should the town ban cars from the old market square?"
OPTIONS = ["Ban cars", "Keep access for deliveries"]


def test_a_juror_speaking_on_the_question_passes():
    c = check_statement("I run a bakery near the square, and my deliveries come by van every morning, so a full "
                        "ban worries me.", Q, OPTIONS)
    assert c.on_topic and c.own_voice and c.readable and c.ok


def test_each_part_fails_on_its_own():
    off_topic = check_statement("I love my grandchildren and we go fishing together whenever the weather is warm.",
                                Q, OPTIONS)
    assert not off_topic.on_topic and off_topic.own_voice and off_topic.readable
    assistant = check_statement("Sure! Here is my statement: banning cars from the square would help pedestrians "
                                "and local shops.", Q, OPTIONS)
    assert assistant.on_topic and not assistant.own_voice
    narrator = check_statement("The juror believes that cars should stay in the market square for deliveries.",
                               Q, OPTIONS)
    assert narrator.on_topic and not narrator.own_voice
    echo = check_statement("I think the town should ban cars from the old market square.", Q, OPTIONS)
    assert echo.on_topic and echo.own_voice and not echo.readable  # the question read back
    loop = check_statement("I want cars banned I want cars banned I want cars banned I want cars banned.", Q, OPTIONS)
    assert not loop.readable
    short = check_statement("I agree, ban cars.", Q, OPTIONS)
    assert not short.readable


def test_summaries_are_shares():
    checks = [check_statement("I run a bakery near the square, and my deliveries come by van every morning.", Q,
                              OPTIONS),
              check_statement("Fishing is nice when the weather is warm and the lake is calm today.", Q, OPTIONS)]
    s = summarize_checks(checks)
    assert s["statements"] == 2 and s["on_topic"] == 0.5 and s["own_voice"] == 0.5 and s["ok"] == 0.5
    assert summarize_checks([])["ok"] == 0.0
