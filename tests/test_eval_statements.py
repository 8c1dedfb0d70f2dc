"""The fixed statement rule: each part can fail on its own."""

from assembly.evaluation.statements import check_statement, rates

Q = "Should the town council ban cars from the market square on Saturdays?"
OPTIONS = ["Ban cars", "Keep access"]


def test_a_good_statement_passes_every_part():
    c = check_statement("I run a stall and my customers come by car, so a ban on Saturdays would hurt us.", Q, OPTIONS)
    assert c.on_topic and c.own_voice and not c.assistant_talk and not c.degenerate and c.ok


def test_each_failure_is_caught():
    off = check_statement("I love my grandchildren and we go fishing together every summer by the lake.", Q, OPTIONS)
    assert not off.on_topic and not off.ok
    third = check_statement("The council should ban cars because the market square gets crowded.", Q, OPTIONS)
    assert third.on_topic and not third.own_voice and not third.ok
    ai = check_statement("As an AI language model I think the market square ban on cars is complex.", Q, OPTIONS)
    assert ai.assistant_talk and not ai.ok
    loop = check_statement("I think cars cars I think cars cars I think cars cars I think cars cars", Q, OPTIONS)
    assert loop.degenerate and not loop.ok
    assert check_statement("I agree.", Q, OPTIONS).degenerate


def test_rates_are_shares():
    checks = [check_statement(t, Q, OPTIONS) for t in (
        "I run a stall and my customers come by car, so a ban on Saturdays would hurt us.",
        "The weather was lovely yesterday and the birds were singing in the trees.")]
    r = rates(checks)
    assert r["statements"] == 2 and r["ok"] == 0.5 and r["on_topic"] == 0.5
    assert rates([]) == {"statements": 0}
