"""The write API the engine calls: what it records, what it refuses, and that refusals leave the store as it was."""

from __future__ import annotations

import json
import os
import socket

import pytest
from ulid import ULID

from transcripts import Store, StoreError, default_store_path
from transcripts.samples import write_run


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "s.duckdb")


def counts(store: Store) -> dict[str, int]:
    tables = ["runs", "participants", "participant_attributes", "turns", "ballots", "tallies", "verdicts", "llm_calls"]
    return {t: store.sql(f"select count(*) n from {t}")["n"][0] for t in tables}


def test_begin_run_records_a_running_run_with_its_writer(store):
    run_id = store.begin_run(question="Q?", spec={"options": ["a", "b"], "k": 1}, seed=7, provenance="simulated",
                             versions={"assembly": "0.1"}, config_path="q.yaml")
    ULID.from_str(run_id)  # a valid ULID
    row = store.run(run_id)
    assert row["status"] == "running"
    assert row["pid"] == os.getpid() and row["host"] == socket.gethostname()
    assert row["spec"] == {"options": ["a", "b"], "k": 1} and row["options"] == ["a", "b"]
    assert row["seed"] == 7 and row["versions"] == {"assembly": "0.1"} and row["config_path"] == "q.yaml"
    assert row["started_at"] is not None and row["finished_at"] is None


def test_a_whole_run_lands_and_reads_back(store):
    run_id = write_run(store, seed=3)
    c = counts(store)
    assert c["runs"] == 1 and c["participants"] == 14 and c["participant_attributes"] == 36
    assert c["turns"] == 2 + 3 * 5 and c["ballots"] == 24 and c["tallies"] == 1 and c["verdicts"] == 1
    assert c["llm_calls"] == c["turns"]
    row = store.run(run_id)
    assert row["status"] == "completed" and row["finished_at"] >= row["started_at"]
    assert row["summary"]["winner"] in ("Yes", "No", "Unsure")
    # every turn points at the call that produced it
    orphans = store.sql("select count(*) n from turns t anti join llm_calls c on c.id = t.call_id")["n"][0]
    assert orphans == 0
    # plain-text columns read as prose
    first = store.sql("select system, prompt, response from llm_calls order by seq limit 1").row(0)
    assert first[0].startswith("You are") and first[1].startswith("[opening]") and first[2].startswith("Welcome")


def test_recorded_calls_come_back_in_call_order(store):
    run_id = store.begin_run(question="Q?", spec={})
    ids = [
        store.add_llm_call(run_id, model="m", role="juror", participant_id="j1", phase="pre", request_hash=f"h{i}",
                           messages=[{"role": "user", "content": f"q{i}"}], params={"t": 0}, response=f"r{i}",
                           choice="a" if i % 2 else None, choice_logprobs={"a": -0.1, "b": -2.3} if i % 2 else None,
                           input_tokens=10 + i, output_tokens=i, duration_s=0.5, attempts=1, error=None, seed=1,
                           cost_usd=0.01)
        for i in range(5)
    ]
    calls = store.recorded_calls(run_id)
    assert [c["id"] for c in calls] == ids
    assert [c["seq"] for c in calls] == [1, 2, 3, 4, 5]
    assert [c["request_hash"] for c in calls] == [f"h{i}" for i in range(5)]
    assert calls[1]["choice_logprobs"] == {"a": -0.1, "b": -2.3} and calls[0]["choice_logprobs"] is None
    assert calls[4]["input_tokens"] == 14 and calls[4]["response"] == "r4"


def test_call_order_continues_across_store_objects(tmp_path):
    path = tmp_path / "s.duckdb"
    first = Store(path)
    run_id = first.begin_run(question="Q?", spec={})
    first.add_llm_call(run_id, model="m", request_hash="a", messages=[], response="1")
    second = Store(path)  # e.g. a resumed engine
    second.add_llm_call(run_id, model="m", request_hash="b", messages=[], response="2")
    assert [c["request_hash"] for c in second.recorded_calls(run_id)] == ["a", "b"]
    assert [c["seq"] for c in second.recorded_calls(run_id)] == [1, 2]


def test_ballot_kinds_and_abstentions(store):
    run_id = store.begin_run(question="Q?", spec={"options": ["a", "b", "c"]})
    store.add_ballot(run_id, participant_id="j1", phase="pre", ballot_type="ranked", status="valid", choice="b",
                     ranking=["b", "a", "c"], attempts=2)
    store.add_ballot(run_id, participant_id="j2", phase="pre", ballot_type="approval", status="valid",
                     approvals=["a", "c"], probabilities={"a": 0.5, "c": 0.5})
    store.add_ballot(run_id, participant_id="j3", phase="post", ballot_type="single", status="abstain",
                     reason="no valid answer after 3 attempts", attempts=3)
    df = store.sql("select participant_id, ranking, approvals, status, reason, attempts from ballots order by 1")
    assert df["ranking"][0].to_list() == ["b", "a", "c"] and df["approvals"][1].to_list() == ["a", "c"]
    assert df.row(2)[3:] == ("abstain", "no valid answer after 3 attempts", 3)


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda s, r: s.begin_run(question="Q", spec={}, provenance="made-up"), "provenance"),
        (lambda s, r: s.begin_run(question="", spec={}), "question"),
        (lambda s, r: s.begin_run(question="Q", spec={}, run_id=r), "already exists"),
        (lambda s, r: s.add_participants(r, [{"id": "x", "role": "king"}]), "role"),
        (lambda s, r: s.add_participants(r, [{"id": "j", "role": "juror"}, {"id": "j", "role": "juror"}]), "j"),
        (lambda s, r: s.add_ballot(r, participant_id="j", phase="mid", ballot_type="single", choice="a"), "phase"),
        (lambda s, r: s.add_ballot(r, participant_id="j", phase="pre", ballot_type="single", status="abstain"),
         "reason"),
        (lambda s, r: s.add_turn("no-such-run", seq=0, phase="p", round=None, speaker_id="j", content="x"),
         "no run"),
        (lambda s, r: s.add_turn(r, seq=0, phase="p", round=None, speaker_id="j", content=None), "content"),
        (lambda s, r: s.finish_run(r, status="running"), "finish status"),
        (lambda s, r: s.add_llm_call(r, model="m", request_hash="h", messages=[], params={"x": object()}), "JSON"),
    ],
)
def test_bad_writes_are_refused_in_one_line_and_change_nothing(store, write, message):
    run_id = store.begin_run(question="Q?", spec={})
    store.add_participants(run_id, [{"id": "m", "role": "moderator"}])
    before = counts(store)
    with pytest.raises(StoreError) as err:
        write(store, run_id)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert counts(store) == before


def test_transaction_commits_together_or_not_at_all(store):
    run_id = store.begin_run(question="Q?", spec={})
    with pytest.raises(StoreError):
        with store.transaction():
            store.add_turn(run_id, seq=0, phase="p", round=None, speaker_id="j", content="kept?")
            store.add_ballot(run_id, participant_id="j", phase="bogus", ballot_type="single", choice="a")
    assert counts(store)["turns"] == 0
    with store.transaction():
        for i in range(3):
            store.add_turn(run_id, seq=i, phase="p", round=None, speaker_id="j", content=f"t{i}")
    assert counts(store)["turns"] == 3


def test_finish_run_records_status_reason_and_summary(store):
    run_id = store.begin_run(question="Q?", spec={})
    store.update_summary(run_id, {"population": {"party": {"Democrat": 0.5}}})
    store.finish_run(run_id, status="failed", reason="provider timed out", summary={"turns": 0})
    row = store.run(run_id)
    assert (row["status"], row["reason"]) == ("failed", "provider timed out")
    assert row["summary"] == {"turns": 0}


def test_participant_attributes_are_long_and_textual(store):
    run_id = store.begin_run(question="Q?", spec={})
    store.add_participants(run_id, [{"id": "p1", "role": "participant", "name": "P",
                                     "attributes": {"party": "Democrat", "joined_chat": True}, "extra": {"k": 1}}])
    rows = store.sql("select attribute, value from participant_attributes order by 1").rows()
    assert rows == [("joined_chat", "true"), ("party", "Democrat")]
    stored = json.loads(store.sql("select attributes::varchar a from participants")["a"][0])
    assert stored == {"party": "Democrat", "joined_chat": True}  # the original types survive in the JSON column


def test_closed_store_refuses_use(store):
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.begin_run(question="Q?", spec={})


def test_default_store_path(monkeypatch, tmp_path):
    monkeypatch.setenv("ASSEMBLY_STORE", str(tmp_path / "x.duckdb"))
    assert default_store_path() == tmp_path / "x.duckdb"
    monkeypatch.delenv("ASSEMBLY_STORE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_store_path() == tmp_path / "data" / "assembly" / "assembly.duckdb"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_store_path() == tmp_path / "home" / ".local" / "share" / "assembly" / "assembly.duckdb"


def test_store_with_no_path_uses_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv("ASSEMBLY_STORE", str(tmp_path / "nested" / "dir" / "a.duckdb"))
    store = Store()
    assert store.path == tmp_path / "nested" / "dir" / "a.duckdb" and store.path.exists()
