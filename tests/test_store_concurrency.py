"""Several processes on one store file: a reader during a run, two runs at once, a writer killed with SIGKILL."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from transcripts import Store, StoreError
from transcripts.samples import write_run

WRITER = textwrap.dedent(
    """
    import sys, time
    from transcripts import Store
    store = Store(sys.argv[1])
    run_id = store.begin_run(question="Q?", spec={"options": ["a", "b"]})
    print("run", run_id, flush=True)
    for i in range(int(sys.argv[2])):
        store.add_turn(run_id, seq=i, phase="deliberation", round=1, speaker_id="j1", content=f"turn {i}")
        print("wrote", i, flush=True)  # acknowledged: add_turn has returned
        time.sleep(float(sys.argv[3]))
    store.finish_run(run_id, status="completed")
    print("done", flush=True)
    """
)


def spawn_writer(path, turns: int, pause: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(turns), str(pause)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_reader_queries_while_another_process_writes(tmp_path):
    path = tmp_path / "s.duckdb"
    Store(path)
    writer = spawn_writer(path, turns=120, pause=0.005)
    reader = Store(path, read_only=True)
    seen = []
    while writer.poll() is None:
        seen.append(reader.sql("select count(*) n from turns")["n"][0])  # must never raise a lock error
    out, err = writer.communicate()
    assert writer.returncode == 0, err
    assert len(seen) > 3, "the reader should have read several times during the run"
    assert seen == sorted(seen)
    assert any(0 < n < 120 for n in seen), f"never saw the run in progress: {seen[:5]}..."
    assert reader.sql("select count(*) n from turns")["n"][0] == 120
    assert reader.sql("select status from runs")["status"][0] == "completed"


def _forked_writer(path: str, seed: int) -> None:
    write_run(Store(path), seed=seed)


def test_two_runs_at_once_both_land_completely(tmp_path):
    path = tmp_path / "s.duckdb"
    write_run(Store(path), seed=0)  # the parent's engine exists before the fork: the child must not reuse it
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_forked_writer, args=(str(path), seed)) for seed in (1, 2)]
    other = subprocess.Popen([sys.executable, "-c",
                              "import sys; from transcripts import Store; from transcripts.samples import write_run;"
                              "write_run(Store(sys.argv[1]), seed=3)", str(path)], stderr=subprocess.PIPE, text=True)
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    _, err = other.communicate(timeout=120)
    assert other.returncode == 0, err
    store = Store(path)
    per_run = store.sql(
        "select r.status, o.turns, o.ballots, o.calls, o.participants from runs r join run_overview o on o.run_id = r.id"
    ).rows()
    assert per_run == [("completed", 17, 24, 17, 14)] * 4
    # each run's call order is its own 1..n
    gaps = store.sql("select run_id from llm_calls group by run_id having max(seq) <> count(*) or min(seq) <> 1")
    assert gaps.is_empty()


def test_sigkill_mid_run_keeps_every_acknowledged_turn_and_marks_the_run_interrupted(tmp_path):
    path = tmp_path / "s.duckdb"
    Store(path)
    writer = spawn_writer(path, turns=10_000, pause=0.0)
    acknowledged = -1
    run_id = None
    for line in writer.stdout:
        word, value = line.split()
        if word == "run":
            run_id = value
        elif word == "wrote":
            acknowledged = int(value)
            if acknowledged >= 40:
                break
    writer.send_signal(signal.SIGKILL)
    writer.wait(30)
    assert writer.returncode == -signal.SIGKILL
    store = Store(path)  # opens cleanly (replays the write-ahead log) and notices the dead writer
    assert store.interrupted_on_open == [run_id]
    row = store.run(run_id)
    assert row["status"] == "interrupted" and "ended without finishing" in row["reason"]
    assert row["finished_at"] is not None
    seqs = store.sql("select seq from turns order by seq")["seq"].to_list()
    assert seqs[: acknowledged + 1] == list(range(acknowledged + 1))  # nothing acknowledged is lost
    assert seqs == list(range(len(seqs)))  # and nothing half-written
    assert Store(path).interrupted_on_open == []  # marked once


def test_a_live_writer_is_not_marked_interrupted(tmp_path):
    path = tmp_path / "s.duckdb"
    Store(path)
    writer = spawn_writer(path, turns=200, pause=0.01)
    assert writer.stdout.readline().startswith("run")
    try:
        assert Store(path).interrupted_on_open == []
        assert Store(path).sql("select status from runs")["status"][0] == "running"
    finally:
        writer.kill()
        writer.wait()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from transcripts import Store
    store = Store(sys.argv[1])
    with store.transaction():
        print("holding", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def test_lock_waits_are_bounded_and_explained(tmp_path):
    path = tmp_path / "s.duckdb"
    Store(path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "2.0"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    started = time.monotonic()
    with pytest.raises(StoreError, match="locked by another process") as err:
        Store(path, read_only=True, lock_timeout=0.3)
    assert time.monotonic() - started < 1.8
    assert "\n" not in str(err.value)
    patient = Store(path, read_only=True, lock_timeout=20)  # waits for the holder, then reads
    assert patient.sql("select count(*) n from runs")["n"][0] == 0
    holder.wait(10)


TURNSTILE_HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1] + ".turnstile", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a writer does while it waits for the database lock
    print("waiting", flush=True)
    time.sleep(float(sys.argv[2]))
    """
)


def test_readers_queue_behind_a_waiting_writer(tmp_path):
    path = tmp_path / "s.duckdb"
    Store(path)
    holder = subprocess.Popen([sys.executable, "-c", TURNSTILE_HOLDER, str(path), "1.5"], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "waiting"
    started = time.monotonic()
    with pytest.raises(StoreError, match="turnstile"):
        Store(path, read_only=True, lock_timeout=0.3)
    Store(path, read_only=True, lock_timeout=20).sql("select 1")  # gets in once the writer has gone
    assert time.monotonic() - started > 1.0
    holder.wait(10)
