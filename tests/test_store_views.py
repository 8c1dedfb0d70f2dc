"""The readable views, checked against numbers worked out by hand."""

from __future__ import annotations

import pytest

from transcripts import Store


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "s.duckdb")


def jury(store: Store, options=("a", "b", "c")) -> str:
    run_id = store.begin_run(question="Which?", spec={"options": list(options)})
    store.add_participants(run_id, [
        {"id": "mod", "role": "moderator", "name": "Mo"},
        {"id": "j1", "role": "juror", "name": "Ann", "attributes": {"party": "Democrat"}},
        {"id": "j2", "role": "juror", "name": "Bob", "attributes": {"party": "Democrat"}},
        {"id": "j3", "role": "juror", "name": "Cy", "attributes": {"party": "Republican"}},
        {"id": "j4", "role": "juror", "name": "Di", "attributes": {"party": "Republican"}},
    ])
    return run_id


def single(store, run_id, who, phase, choice=None, **kw):
    status = "valid" if choice else "abstain"
    store.add_ballot(run_id, participant_id=who, phase=phase, ballot_type="single", status=status, choice=choice,
                     reason=None if choice else "no answer", **kw)


@pytest.fixture
def voted(store):
    run_id = jury(store)
    for who, choice in [("j1", "a"), ("j2", "a"), ("j3", "b"), ("j4", None)]:
        single(store, run_id, who, "pre", choice)
    for who, choice in [("j1", "a"), ("j2", "b"), ("j3", "b"), ("j4", "c")]:
        single(store, run_id, who, "post", choice)
    single(store, run_id, "j1", "post", "c", target="5")  # a vote on a statement, not on the question
    return run_id


def test_transcript_is_in_reading_order_with_names_and_roles(store):
    run_id = jury(store)
    for seq, who, text in [(2, "j1", "third"), (0, "mod", "first"), (1, "j2", "second"), (3, "ghost", "fourth")]:
        store.add_turn(run_id, seq=seq, phase="discussion", round=1, speaker_id=who, content=text)
    rows = store.sql("select seq, speaker, speaker_role, content from transcript").rows()
    assert rows == [(0, "Mo", "moderator", "first"), (1, "Bob", "juror", "second"), (2, "Ann", "juror", "third"),
                    (3, None, None, "fourth")]


def test_ballot_changes_pairs_pre_and_post(store, voted):
    rows = store.sql("select participant_id, name, pre_choice, post_choice, changed from ballot_changes order by 1").rows()
    assert rows == [("j1", "Ann", "a", "a", False), ("j2", "Bob", "a", "b", True), ("j3", "Cy", "b", "b", False),
                    ("j4", "Di", None, "c", True)]  # j4 went from abstaining to voting


def test_ballot_changes_with_a_missing_side_is_unknown(store):
    run_id = jury(store)
    single(store, run_id, "j1", "pre", "a")
    rows = store.sql("select participant_id, pre_choice, post_choice, changed from ballot_changes").rows()
    assert rows == [("j1", "a", None, None)]


def test_opinion_shift_shares_and_deltas(store, voted):
    df = store.sql("select option, pre_votes, pre_valid, pre_share, post_votes, post_valid, post_share, delta "
                   "from opinion_shift order by option")
    assert df["option"].to_list() == ["a", "b", "c"]
    assert df["pre_votes"].to_list() == [2, 1, 0] and df["pre_valid"].to_list() == [3, 3, 3]
    assert df["post_votes"].to_list() == [1, 2, 1] and df["post_valid"].to_list() == [4, 4, 4]
    assert df["pre_share"].to_list() == pytest.approx([2 / 3, 1 / 3, 0])
    assert df["post_share"].to_list() == pytest.approx([0.25, 0.5, 0.25])
    assert df["delta"].to_list() == pytest.approx([0.25 - 2 / 3, 0.5 - 1 / 3, 0.25])


def test_options_nobody_chose_still_appear(store):
    run_id = jury(store, options=("a", "b", "c", "d"))
    single(store, run_id, "j1", "pre", "a")
    single(store, run_id, "j1", "post", "a")
    df = store.sql("select option, pre_share, post_share from opinion_shift order by option")
    assert df.rows() == [("a", 1.0, 1.0), ("b", 0.0, 0.0), ("c", 0.0, 0.0), ("d", 0.0, 0.0)]


def test_opinion_shift_counts_every_approved_option(store):
    run_id = jury(store)
    for who, phase, approved in [("j1", "pre", ["a", "b"]), ("j2", "pre", ["b"]),
                                 ("j1", "post", ["b"]), ("j2", "post", ["b", "c"])]:
        store.add_ballot(run_id, participant_id=who, phase=phase, ballot_type="approval", approvals=approved)
    df = store.sql("select option, pre_share, post_share from opinion_shift order by option")
    assert df.rows() == [("a", 0.5, 0.0), ("b", 1.0, 1.0), ("c", 0.0, 0.5)]


def test_ranked_ballots_count_their_first_preference(store):
    run_id = jury(store)
    store.add_ballot(run_id, participant_id="j1", phase="pre", ballot_type="ranked", ranking=["c", "a", "b"])
    store.add_ballot(run_id, participant_id="j1", phase="post", ballot_type="ranked", ranking=["a", "c", "b"])
    df = store.sql("select option, pre_votes, post_votes from opinion_shift order by option")
    assert df.rows() == [("a", 0, 1), ("b", 0, 0), ("c", 1, 0)]
    assert store.sql("select pre_choice, post_choice, changed from ballot_changes").row(0) == ("c", "a", True)


def test_opinion_shift_by_group(store, voted):
    df = store.sql("select value, option, pre_votes, pre_valid, post_votes, post_valid, delta "
                   "from opinion_shift_by_group where attribute = 'party' order by value, option")
    assert df.select("value", "option", "pre_votes", "pre_valid", "post_votes", "post_valid").rows() == [
        ("Democrat", "a", 2, 2, 1, 2), ("Democrat", "b", 0, 2, 1, 2), ("Democrat", "c", 0, 2, 0, 2),
        ("Republican", "a", 0, 1, 0, 2), ("Republican", "b", 1, 1, 1, 2), ("Republican", "c", 0, 1, 1, 2),
    ]
    assert df["delta"].to_list() == pytest.approx([-0.5, 0.5, 0, 0, -0.5, 0.5])


def test_call_costs_by_role_and_model(store):
    run_id = jury(store)
    for i, secs in enumerate([1.0, 3.0, 2.0]):
        store.add_llm_call(run_id, model="m1", role="juror", request_hash=f"h{i}", messages=[], input_tokens=10,
                           output_tokens=5, duration_s=secs, attempts=1 + i, cost_usd=0.01)
    store.add_llm_call(run_id, model="m2", role="moderator", request_hash="hm", messages=[], duration_s=9.0,
                       attempts=3, error="timeout")
    rows = store.sql("select role, model, calls, errors, attempts, input_tokens, output_tokens, cost_usd, total_s, "
                     "median_s from call_costs order by role").rows()
    assert rows[0] == ("juror", "m1", 3, 0, 6, 30, 15, pytest.approx(0.03), 6.0, 2.0)
    assert rows[1] == ("moderator", "m2", 1, 1, 3, 0, 0, None, 9.0, 9.0)


def test_speaking_share(store):
    run_id = jury(store)
    store.add_turn(run_id, seq=0, phase="d", round=1, speaker_id="j1", content="one two three")
    store.add_turn(run_id, seq=1, phase="d", round=1, speaker_id="j2", content="  four  ")
    store.add_turn(run_id, seq=2, phase="d", round=1, speaker_id="j1", content="five\nsix    seven eight")
    rows = store.sql("select speaker_id, name, turns, words, word_share from speaking_share").rows()
    assert rows == [("j1", "Ann", 2, 7, 0.875), ("j2", "Bob", 1, 1, 0.125)]


def test_run_overview_one_line_per_run(store, voted):
    other = store.begin_run(question="Empty?", spec={})
    store.add_verdict(voted, text="We chose b.", winner="b", rule="plurality")
    store.finish_run(voted, status="completed")
    rows = store.sql("select run_id, status, participants, ballots, turns, winner from run_overview").rows()
    assert rows == [(other, "running", 0, 0, 0, None), (voted, "completed", 5, 9, 0, "b")]
