"""One recorder per run (assembly.recorder.RunRecorder): events buffered in order, written in one transaction per
flush on a worker thread, kept on a failed write, and the same events the live view reads from the graph's custom
stream."""

from __future__ import annotations

import asyncio
import threading

import pytest
import yaml

from assembly.events import BallotCast, ModelCall, PhaseStarted, Turn
from assembly.recorder import RunRecorder
from assembly.ballot import Ballot
from assembly.providers.scripted import ScriptedModel
from tests.conftest import MINIMAL


def _turn(seq: int) -> Turn:
    return Turn(seq=seq, phase="deliberation", round=1, speaker_id="juror-01", speaker="Ann", content=f"turn {seq}")


def test_flush_writes_on_a_worker_thread_in_one_transaction(tmp_path):
    from transcripts import Store

    store = Store(tmp_path / "s.duckdb")
    run_id = store.begin_run(question="Q?", spec={})
    seen: list[str] = []
    transaction = store.transaction

    def watched():
        seen.append(threading.current_thread().name)
        return transaction()

    store.transaction = watched
    published = []
    recorder = RunRecorder(store, run_id, publish=published.append)
    recorder.record(PhaseStarted(phase="deliberation", round=1))  # live only: published, never written
    recorder.record(ModelCall(call_id="c1", fields={"model": "m", "request_hash": "h"}))
    for seq in range(3):
        recorder.record(Turn(seq=seq, phase="deliberation", round=1, speaker_id="juror-01", speaker="Ann",
                             content=f"turn {seq}", call_id="c1"))
    recorder.record(BallotCast(ballot=Ballot(participant_id="juror-01", phase="pre", type="yes_no", choice="yes"),
                               speaker="Ann"))
    assert recorder.pending == 5 and store.sql("SELECT count(*) FROM turns").item() == 0  # buffered, not written

    async def main():  # overlapping flushes share one write
        await asyncio.gather(recorder.flush(), recorder.flush(), recorder.flush())

    asyncio.run(main())
    assert len(seen) == 1 and seen[0] != threading.main_thread().name
    assert recorder.pending == 0 and recorder.written == 5
    assert store.sql("SELECT seq, call_id FROM turns ORDER BY seq").rows() == [(0, "c1"), (1, "c1"), (2, "c1")]
    assert store.sql("SELECT id FROM llm_calls").rows() == [("c1",)]
    assert store.sql("SELECT choice FROM ballots").rows() == [("yes",)]
    assert [e.kind for e in published] == ["phase", "call", "turn", "turn", "turn", "ballot"]


def test_a_failed_write_keeps_the_events_and_the_last_flush_saves_the_good_ones(tmp_path):
    from transcripts import Store, StoreError

    store = Store(tmp_path / "s.duckdb")
    run_id = store.begin_run(question="Q?", spec={})
    recorder = RunRecorder(store, run_id)
    recorder.record(_turn(0))
    recorder.record(Turn(seq=1, phase="p", round=None, speaker_id="j", speaker="J", content=None))  # not a string
    recorder.record(_turn(2))
    with pytest.raises(StoreError, match="content must be a string"):
        asyncio.run(recorder.flush())
    assert recorder.pending == 3 and store.sql("SELECT count(*) FROM turns").item() == 0  # rolled back, kept
    lost = asyncio.run(recorder.aclose())  # one bad record does not take the others with it
    assert len(lost) == 1 and "content must be a string" in lost[0] and recorder.pending == 0
    assert store.sql("SELECT content FROM turns ORDER BY seq").rows() == [("turn 0",), ("turn 2",)]


def test_the_run_says_when_records_could_not_be_written(tmp_path):
    from assembly.run_lifecycle import run_lifecycle
    from transcripts import Store

    store = Store(tmp_path / "s.duckdb")
    run_id = store.begin_run(question="Q?", spec={})

    async def run():
        async with run_lifecycle(store, run_id, close_store=False) as lifecycle:
            lifecycle.recorder.record(_turn(0))
            lifecycle.recorder.record(Turn(seq=1, phase="p", round=None, speaker_id="j", speaker="J", content=None))
            raise KeyError("boom")

    with pytest.raises(KeyError):
        asyncio.run(run())
    status, reason = store.sql("SELECT status, reason FROM runs").rows()[0]
    assert status == "failed" and reason.startswith("KeyError") and "1 record(s) could not be written" in reason
    assert store.sql("SELECT content FROM turns").rows() == [("turn 0",)]


def test_a_cancelled_flush_lets_its_write_finish_before_anyone_else_writes(tmp_path):
    from transcripts import Store

    store = Store(tmp_path / "s.duckdb")
    run_id = store.begin_run(question="Q?", spec={})
    recorder = RunRecorder(store, run_id)
    started, release = threading.Event(), threading.Event()
    transaction = store.transaction

    def slow():
        started.set()
        release.wait(5)
        return transaction()

    store.transaction = slow
    recorder.record(_turn(0))

    async def main():
        flushing = asyncio.ensure_future(recorder.flush())
        await asyncio.to_thread(started.wait, 5)
        flushing.cancel()
        await asyncio.sleep(0.05)
        assert not flushing.done()  # still waiting for the write it started
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await flushing

    asyncio.run(main())
    assert recorder.pending == 0 and store.sql("SELECT count(*) FROM turns").item() == 1


def test_a_call_written_twice_is_recorded_once(tmp_path):
    from transcripts import Store

    store = Store(tmp_path / "s.duckdb")
    run_id = store.begin_run(question="Q?", spec={})
    for _ in range(2):
        store.add_llm_call(run_id, model="m", request_hash="h", call_id="c1")
    assert store.sql("SELECT id, seq FROM llm_calls").rows() == [("c1", 1)]


def test_the_live_view_sees_what_the_store_records(tmp_path):
    """The full mode's on_event reads the graph's custom stream; every recorded event it shows is in the store."""
    from assembly.deliberation import deliberate
    from transcripts import Store

    data = yaml.safe_load(MINIMAL)
    data["jury"]["size"] = 4
    data["procedure"]["rounds"] = 1
    events: list[dict] = []
    result = deliberate(data, models=ScriptedModel(), db=tmp_path / "s.duckdb", on_event=events.append)
    kinds = [e["kind"] for e in events]
    store = Store(tmp_path / "s.duckdb")
    count = {table: store.sql(f"SELECT count(*) FROM {table} WHERE run_id = ?", [result.run_id]).item()
             for table in ("turns", "ballots", "llm_calls", "tallies", "verdicts")}
    assert kinds.count("turn") == count["turns"] > 0
    assert kinds.count("ballot") == count["ballots"] == 8
    assert kinds.count("call") == count["llm_calls"] > 0
    assert sum(len(e["tallies"]) for e in events if e["kind"] == "tally") == count["tallies"]
    assert kinds.count("verdict") == count["verdicts"] == 1
    assert kinds.index("verdict") > kinds.index("tally") > max(i for i, k in enumerate(kinds) if k == "ballot")
    turns = [e for e in events if e["kind"] == "turn"]
    recorded = store.sql("SELECT seq, content FROM turns WHERE run_id = ? ORDER BY seq", [result.run_id]).rows()
    assert sorted((t["seq"], t["content"]) for t in turns) == recorded
