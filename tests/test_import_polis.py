"""Polis exports into the store: fixtures written by the test (plain and gzip), malformed ones refused whole."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from transcripts import Store, StoreError
from transcripts.polis import import_polis

COMMENTS = """timestamp,datetime,comment-id,author-id,agrees,disagrees,moderated,comment-body
1000,Mon,0,10,2,1,1,The bus should be free.
1300,Mon,2,11,0,2,-1,buy cheap watches here
1200,Mon,1,11,1,1,1,"Fares fund the service, so keep them."
1400,Mon,3,12,0,0,0,We need more night buses.
"""
VOTES = """timestamp,datetime,comment-id,voter-id,vote
2000,Mon,0,10,1
2001,Mon,0,11,-1
2002,Mon,1,10,0
2003,Mon,1,12,1
2004,Mon,2,12,-1
2005,Mon,9,12,1
2006,Mon,0,11,1
"""
MATRIX = """participant,group-id,n-comments,n-votes,n-agree,n-disagree,0,1,2,3
10,0,1,2,1,0,1,0,,
11,1,2,1,1,0,1,,,
12,,0,2,1,1,,1,-1,
"""
SUMMARY = """topic,Buses
url,https://pol.is/x
conversation-description,"How should the city fund its buses, and what should change?"
"""


def write(folder: Path, files: dict[str, str], gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        if gz:
            (folder / f"{name}.csv.gz").write_bytes(gzip.compress(text.encode()))
        else:
            (folder / f"{name}.csv").write_text(text)
    return folder


def export(tmp_path: Path, name: str = "buses", gz: bool = False, **changes) -> Path:
    files = {"comments": COMMENTS, "votes": VOTES, "participants-votes": MATRIX, "summary": SUMMARY}
    files.update(changes)
    return write(tmp_path / name, {k: v for k, v in files.items() if v is not None}, gz)


def counts(store: Store) -> dict[str, int]:
    return {t: store.sql(f"SELECT count(*) n FROM {t}")["n"][0] for t in ("runs", "participants", "turns", "ballots")}


@pytest.mark.parametrize("gz", [False, True])
def test_conversation_becomes_one_run(tmp_path, gz):
    store = Store(tmp_path / "s.duckdb")
    run_id = import_polis(store, export(tmp_path, gz=gz))
    run = store.run(run_id)
    assert run["provenance"] == "imported-real" and run["source"] == "polis" and run["license"] == "CC BY 4.0"
    assert run["external_id"] == "polis/buses" and run["status"] == "completed" and run["options"] is None
    assert run["question"] == "How should the city fund its buses, and what should change?"
    turns = store.sql(f"SELECT seq, phase, speaker_id, content FROM turns WHERE run_id = '{run_id}' ORDER BY seq")
    assert turns["phase"].to_list() == ["prompt", "statement", "statement", "statement"]
    assert turns["speaker_id"].to_list() == ["moderator", "p10", "p11", "p12"]  # time order; rejected comment 2 out
    assert turns["content"][2] == "Fares fund the service, so keep them."
    ballots = store.sql(f"SELECT participant_id, phase, choice, target FROM ballots WHERE run_id = '{run_id}' "
                        "ORDER BY participant_id, target")
    assert ballots.rows() == [("p10", "final", "Agree", "1"), ("p10", "final", "Pass", "2"),
                              ("p11", "final", "Agree", "1"),  # the later vote counts (changed from Disagree)
                              ("p12", "final", "Agree", "2")]
    groups = store.sql(f"SELECT participant_id, value FROM participant_attributes WHERE run_id = '{run_id}' "
                       "AND attribute = 'polis_group' ORDER BY participant_id")
    assert groups.rows() == [("p10", "0"), ("p11", "1")]
    summary = run["summary"]
    assert summary["skipped"] == {"rejected_comments": 1, "votes_on_unknown_comments": 1,
                                  "votes_on_rejected_comments": 1}
    assert set(summary["files"]) == ({f"{n}.csv.gz" for n in ("comments", "votes", "participants-votes", "summary")}
                                     if gz else {f"{n}.csv" for n in ("comments", "votes", "participants-votes",
                                                                      "summary")})
    assert import_polis(store, tmp_path / "buses") is None  # already there: skipped
    with pytest.raises(StoreError, match="already in the store"):
        import_polis(store, tmp_path / "buses", on_duplicate="error")


def test_matrix_gives_votes_when_the_vote_log_is_missing(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    run_id = import_polis(store, export(tmp_path, votes=None), include_rejected=True)
    ballots = store.sql(f"SELECT participant_id, choice, target FROM ballots WHERE run_id = '{run_id}' "
                        "ORDER BY participant_id, target")
    # with rejected comments kept, turns are 1: c0, 2: c1, 3: c2 (time order), 4: c3
    assert ballots.rows() == [("p10", "Agree", "1"), ("p10", "Pass", "2"), ("p11", "Agree", "1"),
                              ("p12", "Agree", "2"), ("p12", "Disagree", "3")]
    assert store.sql("SELECT count(*) n FROM turns")["n"][0] == 5


def test_question_falls_back_to_topic_or_argument(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    rid = import_polis(store, export(tmp_path, "a", summary="topic,Buses\n"))
    assert store.run(rid)["question"] == "Buses"
    with pytest.raises(StoreError, match="no conversation-description or topic"):
        import_polis(store, export(tmp_path, "b", summary=None))
    rid = import_polis(store, tmp_path / "b", question="What about buses?")
    assert store.run(rid)["question"] == "What about buses?"


@pytest.mark.parametrize("change, message", [
    ({"comments": COMMENTS.replace("author-id,", "author,")}, r"comments.csv:1: missing column\(s\) author-id"),
    ({"votes": VOTES.replace("2003,Mon,1,12,1", "2003,Mon,1,12,2")}, r"votes.csv:5: field 'vote': '2' is not -1, 0 or 1"),
    ({"votes": VOTES.replace("2003,Mon,1,12,1", "2003,Mon,1,twelve,1")}, r"votes.csv:5: field 'voter-id': 'twelve'"),
    ({"comments": COMMENTS + "1500,Mon,3,12,0,0,1,again\n"}, r"comments.csv:6: field 'comment-id': 3 appears twice"),
    ({"comments": COMMENTS.replace("1400,Mon,3,12,0,0,0,", "1400,Mon,3,12,0,0,7,")}, r"field 'moderated': 7"),
    ({"participants-votes": MATRIX + "13,0,0\n"}, r"participants-votes.csv:5: expected 10 fields, found 3"),
    ({"participants-votes": MATRIX.replace("12,,0,2,1,1,,1,-1,", "12,,0,2,1,1,,1,x,")}, r"field '2': 'x'"),
    ({"comments": None}, r"no comments.csv"),
])
def test_malformed_exports_are_refused_whole(tmp_path, change, message):
    store = Store(tmp_path / "s.duckdb")
    before = counts(store)
    with pytest.raises(StoreError, match=message) as info:
        import_polis(store, export(tmp_path, **change))
    assert "\n" not in str(info.value)
    assert counts(store) == before  # nothing half-imported


def test_broken_gzip_and_failed_write_leave_nothing(tmp_path, monkeypatch):
    store = Store(tmp_path / "s.duckdb")
    folder = export(tmp_path, gz=True)
    (folder / "votes.csv.gz").write_bytes(gzip.compress(VOTES.encode())[:30])
    with pytest.raises(StoreError, match=r"votes.csv.gz: unreadable"):
        import_polis(store, folder)
    assert counts(store)["runs"] == 0
    good = export(tmp_path, "good")
    real_insert = Store.insert_rows

    def failing(self, table, rows):
        if table == "ballots":
            raise StoreError("bulk insert into ballots: disk full")
        return real_insert(self, table, rows)

    monkeypatch.setattr(Store, "insert_rows", failing)
    with pytest.raises(StoreError, match="disk full"):
        import_polis(store, good)
    monkeypatch.undo()
    assert counts(store) == {"runs": 0, "participants": 0, "turns": 0, "ballots": 0}  # the transaction rolled back
    assert import_polis(store, good) is not None


def test_prepare_turns_polis_into_statements_and_votes(tmp_path):
    from finetune.dataset import PrepareOptions, build_examples

    store = Store(tmp_path / "s.duckdb")
    import_polis(store, export(tmp_path))
    examples = build_examples(store, PrepareOptions(validation=0))
    turns = [e for e in examples if e["type"] == "juror_turn"]
    assert {e["messages"][-1]["content"] for e in turns} == {"The bus should be free.",
                                                             "Fares fund the service, so keep them.",
                                                             "We need more night buses."}
    votes = [e for e in examples if e["type"] == "ballot"]
    assert votes and all(e["target"]["choices"][:2] == ["Agree", "Disagree"] for e in votes)
    # no demographics in Polis: one example per statement with the observed vote shares as the target
    first = next(e for e in votes if "The bus should be free." in e["messages"][0]["content"])
    assert first["target"]["distribution"] == [1.0, 0.0, 0.0] or first["target"]["distribution"] == [1.0, 0.0]
    assert json.dumps(first).count("You are a member of the public") == 1
