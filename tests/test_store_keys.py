"""Natural keys (migration 0006): writing a recorded key again writes nothing, call numbers never repeat, and a
store from before the keys upgrades with every row."""

from __future__ import annotations

import threading

import duckdb
import pytest

from transcripts import Store, StoreError, migrations
from transcripts.samples import write_run
from transcripts.store import TABLES


def counts(path) -> dict[str, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {t: con.execute(f"select count(*) from {t}").fetchall()[0][0] for t in TABLES}
    finally:
        con.close()


def test_writing_a_recorded_key_again_writes_nothing(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    run_id = store.begin_run(question="Q?", spec={})
    turn = store.add_turn(run_id, seq=0, phase="opening", round=None, speaker_id="moderator", content="Welcome.")
    ballot = store.add_ballot(run_id, participant_id="j1", phase="pre", ballot_type="single", choice="a")
    targeted = store.add_ballot(run_id, participant_id="j1", phase="final", ballot_type="single", choice="a",
                                target=3)
    tally = store.add_tally(run_id, phase="post", rule="plurality", winner="a", winners=["a"], scores={"a": 1})
    verdict = store.add_verdict(run_id, text="a wins.")
    before = counts(store.path)
    # a node re-run after a resume writes the same things again
    assert store.add_turn(run_id, seq=0, phase="opening", round=None, speaker_id="moderator",
                          content="Welcome.") == turn
    assert store.add_ballot(run_id, participant_id="j1", phase="pre", ballot_type="single", choice="a") == ballot
    assert store.add_ballot(run_id, participant_id="j1", phase="final", ballot_type="single", choice="a",
                            target=3) == targeted
    assert store.add_tally(run_id, phase="post", rule="plurality", winner="a", winners=["a"],
                           scores={"a": 1}) == tally
    assert store.add_verdict(run_id, text="a wins.") == verdict
    assert counts(store.path) == before
    # other keys are other rows
    store.add_ballot(run_id, participant_id="j1", phase="final", ballot_type="single", choice="b", target=4)
    store.add_turn(run_id, seq=1, phase="opening", round=None, speaker_id="moderator", content="Next.")
    assert counts(store.path)["ballots"] == before["ballots"] + 1
    assert counts(store.path)["turns"] == before["turns"] + 1


def test_the_keys_hold_for_every_writer(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    run_id = write_run(store, n_jurors=4, rounds=1)
    for table, row in [
        ("turns", f"('t', '{run_id}', 0, 'p', null, 'j', 'again', null, null, now()::timestamp)"),
        ("verdicts", f"('v', '{run_id}', 'again', null, null, null, now()::timestamp)"),
    ]:
        with pytest.raises(StoreError, match="(?i)constraint|duplicate"):
            store.sql(f"insert into {table} values {row}", write=True)
    with pytest.raises(StoreError, match="(?i)constraint|duplicate"):
        store.sql("insert into llm_calls (id, run_id, seq, model, request_hash, messages, created_at) "
                  f"values ('c', '{run_id}', 1, 'm', 'h', '[]', now()::timestamp)", write=True)


def test_calls_from_many_threads_get_distinct_numbers(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    run_id = store.begin_run(question="Q?", spec={})

    def record(worker: int) -> None:
        for i in range(25):
            store.add_llm_call(run_id, model="m", request_hash=f"{worker}-{i}", messages=[])

    threads = [threading.Thread(target=record, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = store.sql("select seq from llm_calls order by seq")["seq"].to_list()
    assert seqs == list(range(1, 101))
    # a second Store object on the same run (another process, a resume) continues the numbering
    other = Store(store.path)
    other.add_llm_call(run_id, model="m", request_hash="late", messages=[])
    assert other.sql("select max(seq) m from llm_calls")["m"][0] == 101


def test_a_store_from_before_the_keys_upgrades_with_every_row(tmp_path, monkeypatch):
    path = tmp_path / "s.duckdb"
    everything = migrations.known()
    monkeypatch.setattr(migrations, "known", lambda: [m for m in everything if m.number <= 5])
    old = Store(path)
    run_id = write_run(old, n_jurors=4, rounds=2)
    con = duckdb.connect(str(path))  # two calls that got one number (the old race), and a re-vote from an import
    con.execute("insert into llm_calls (id, run_id, seq, model, request_hash, messages, created_at) "
                "select 'dup' || seq, run_id, seq, model, 'h' || seq, messages, created_at + interval 1 second "
                "from llm_calls where run_id = ? and seq in (2, 5)", [run_id])
    con.execute("insert into ballots select * replace ('again' as id, 'b' as choice) from ballots "
                "where run_id = ? and phase = 'post' limit 1", [run_id])
    calls = con.execute("select id, seq from llm_calls order by seq, created_at, id").fetchall()
    comment = con.execute("select comment from duckdb_columns() where table_name = 'turns' "
                          "and column_name = 'content'").fetchall()
    con.close()
    before = counts(path)
    monkeypatch.setattr(migrations, "known", lambda: everything)
    store = Store(path)
    assert [n for (n,) in store.sql("select number from schema_migrations order by number").rows()] == \
        [m.number for m in everything]
    assert counts(path) == before  # every row kept
    after = store.sql("select id, seq from llm_calls order by seq").rows()
    assert [i for i, _ in after] == [i for i, _ in calls]  # renumbered in recorded order
    assert [s for _, s in after] == list(range(1, len(calls) + 1))
    assert store.sql("select comment from duckdb_columns() where table_name = 'turns' "
                     "and column_name = 'content'").rows() == comment
    # the upgraded store holds the keys: a repeated turn writes nothing
    store.add_turn(run_id, seq=0, phase="opening", round=None, speaker_id="moderator", content="Again.")
    assert counts(path)["turns"] == before["turns"]
    store.add_llm_call(run_id, model="m", request_hash="new", messages=[])
    assert store.sql("select max(seq) m from llm_calls")["m"][0] == len(calls) + 1
