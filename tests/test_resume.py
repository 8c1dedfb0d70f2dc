"""`assembly run --resume RUN`: a run stopped by kill -9 or Ctrl-C, finished later, ends with the store an
uninterrupted run of the same seed writes: every turn, ballot, tally, verdict and model call once."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter

import duckdb
import pytest

from assembly.cli.app import main
from assembly.deliberation import adeliberate
from assembly.errors import AssemblyError
from assembly.layout import PROMPT_LAYOUT
from assembly.providers.scripted import ScriptedModel
from assembly.providers.types import ModelError
from assembly.resuming import aresume
from tests.conftest import MINIMAL
from tests.scripted_cli import SCRIPTED_CLI, digest_reply

SLOW = "slow:0.5"  # seconds a call, roughly: a run takes ~10 s, and a question waits 0.25-1 s for its answer, long
# enough for the store peeks (each opens the file, and may find it locked) to catch a run mid-phase
# A juror asked a witness, who has not answered yet: a task with two calls, cut between them.
MID_QUESTIONS = ("SELECT count(*) FILTER (phase = 'question') > count(*) FILTER (phase = 'answer') "
                 "FROM turns")
# Some jurors have spoken in round 1, others not yet: a fan-out cut half way.
MID_DELIBERATION = ("SELECT count(*) FILTER (phase = 'deliberation') BETWEEN 1 AND 5 FROM turns")


def rows(db, sql, params=()):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def store_of(db, run_id):
    """What an interrupted-and-resumed run must share with an uninterrupted one."""
    return {
        "turns": rows(db, "SELECT seq, phase, round, speaker_id, content FROM turns WHERE run_id = ? ORDER BY seq",
                      [run_id]),
        "ballots": rows(db, "SELECT participant_id, phase, ballot_type, status, choice, ranking, approvals, "
                            "probabilities::VARCHAR, method, detail::VARCHAR FROM ballots WHERE run_id = ? "
                            "ORDER BY participant_id, phase", [run_id]),
        "tallies": rows(db, "SELECT phase, rule, winner, winners, scores::VARCHAR, valid, abstained, "
                            "expected::VARCHAR, win_probability::VARCHAR, stability FROM tallies WHERE run_id = ? "
                            "ORDER BY phase, rule", [run_id]),
        "verdicts": rows(db, "SELECT text, minority_report, winner, rule FROM verdicts WHERE run_id = ?", [run_id]),
    }


def set_layout(db, run_id, layout):
    """Mark a recorded run as laid out by prompt layout `layout` (what an older assembly would have recorded)."""
    con = duckdb.connect(str(db))
    try:
        con.execute("UPDATE runs SET versions = json_merge_patch(versions, json_object('prompt_layout', ?)) "
                    "WHERE id = ?", [layout, run_id])
    finally:
        con.close()


def calls_of(db, run_id):
    return Counter(rows(db, "SELECT role, participant_id, phase, request_hash FROM llm_calls WHERE run_id = ?",
                        [run_id]))


def only_run(db):
    (run_id,), = rows(db, "SELECT id FROM runs")
    return run_id


def start(question, db):
    return subprocess.Popen([*SCRIPTED_CLI, "run", str(question), "--model", SLOW, "--db", str(db), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(db, proc, condition, timeout=120):
    """Until `condition` holds in the store (read-only peeks, as `assembly sql` would)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before it could be stopped: {proc.communicate()}"
        if db.exists():
            try:
                if rows(db, condition)[0][0]:
                    return
            except duckdb.Error:
                pass  # the writer holds the file for a moment
        time.sleep(0.03)
    raise AssertionError(f"not in time: {condition}")


def resume_cli(db, run_id):
    proc = subprocess.run([*SCRIPTED_CLI, "run", "--resume", run_id, "--db", str(db), "--json"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def question(tmp_path_factory):
    path = tmp_path_factory.mktemp("resume") / "question.yaml"
    path.write_text(MINIMAL)
    return path


class Uninterrupted:
    """The same question and seed run to the end in a store of its own, beside the run a test interrupts."""

    def __init__(self, question):
        self.db = question.parent / "uninterrupted.duckdb"
        self.proc = start(question, self.db)
        self._run_id = None

    @property
    def run_id(self) -> str:
        if self._run_id is None:
            out, err = self.proc.communicate(timeout=300)
            assert self.proc.returncode == 0, err
            self._run_id = json.loads(out)["run_id"]
        return self._run_id


@pytest.fixture(scope="module")
def uninterrupted(question):
    baseline = Uninterrupted(question)
    yield baseline
    stop(baseline.proc)


def stop(proc) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def assert_same_as_uninterrupted(db, run_id, uninterrupted):
    base_db, base_id = uninterrupted.db, uninterrupted.run_id
    ours, theirs = store_of(db, run_id), store_of(base_db, base_id)
    for table in ours:
        assert ours[table] == theirs[table], table
    seqs = [s for (s,) in rows(db, "SELECT seq FROM turns WHERE run_id = ?", [run_id])]
    assert len(seqs) == len(set(seqs))
    calls = rows(db, "SELECT seq FROM llm_calls WHERE run_id = ? ORDER BY seq", [run_id])
    assert [s for (s,) in calls] == list(range(1, len(calls) + 1))  # no duplicate (run_id, seq), no gap
    assert calls_of(db, run_id) == calls_of(base_db, base_id)  # the same calls, none made twice, none missing
    dangling = rows(db, "SELECT count(*) FROM turns t WHERE t.run_id = ? AND t.call_id IS NOT NULL AND NOT EXISTS "
                        "(SELECT 1 FROM llm_calls c WHERE c.id = t.call_id)", [run_id])
    assert dangling == [(0,)]
    assert rows(db, "SELECT status, reason FROM runs WHERE id = ?", [run_id]) == [("completed", None)]


def test_a_run_killed_mid_task_resumes_to_the_uninterrupted_store(question, uninterrupted, tmp_path):
    db = tmp_path / "killed.duckdb"
    proc = start(question, db)
    try:
        wait_until(db, proc, MID_QUESTIONS)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        stop(proc)
    run_id = only_run(db)
    # kill -9 leaves the run as it was: 'running', no end; a question recorded, its answer not
    assert rows(db, "SELECT status, finished_at FROM runs") == [("running", None)]
    before = rows(db, "SELECT count(*) FROM turns")[0][0]
    assert rows(db, MID_QUESTIONS) == [(True,)]
    result = resume_cli(db, run_id[:10])  # a unique prefix
    assert 0 < before < len(store_of(uninterrupted.db, uninterrupted.run_id)["turns"])
    assert result["run_id"] == run_id and result["status"] == "completed"
    assert_same_as_uninterrupted(db, run_id, uninterrupted)
    assert result["usage"]["calls"] == sum(calls_of(db, run_id).values())  # usage counts the whole run


def test_a_run_stopped_with_ctrl_c_resumes_to_the_uninterrupted_store(question, uninterrupted, tmp_path):
    db = tmp_path / "sigint.duckdb"
    proc = start(question, db)
    try:
        wait_until(db, proc, MID_DELIBERATION)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert rows(db, "SELECT status, reason FROM runs") == [("interrupted", "interrupted by the user")]
    assert rows(db, MID_DELIBERATION) == [(True,)]
    run_id = only_run(db)
    assert resume_cli(db, "latest")["run_id"] == run_id
    assert_same_as_uninterrupted(db, run_id, uninterrupted)


# -- in process: failures, and what --resume refuses --------------------------------------------------------------


class FailsInDeliberation(ScriptedModel):
    """The slow double's replies, failing at the first deliberation statement (a provider outage, say)."""

    async def generate(self, request):
        if request.tags.get("phase") == "deliberation":
            raise ModelError("the provider is down", retryable=False)
        return await super().generate(request)


def test_a_failed_run_resumes_and_refusals_are_one_line(question_file, tmp_path, capsys):
    db = tmp_path / "s.duckdb"
    with pytest.raises(AssemblyError, match="provider is down"):
        asyncio.run(adeliberate(question_file, db=db, models=FailsInDeliberation(digest_reply, name="m")))
    run_id = only_run(db)
    assert rows(db, "SELECT status FROM runs") == [("failed",)]

    original = question_file.read_text()
    question_file.write_text(original.replace("words_per_turn: 30", "words_per_turn: 40"))
    with pytest.raises(AssemblyError, match=r"changed since run .* began \(procedure.words_per_turn differs\)"):
        asyncio.run(aresume(run_id, db=db, models=ScriptedModel(digest_reply, name="m")))
    question_file.write_text(original)
    set_layout(db, run_id, "2")  # recorded by an older assembly: resuming would mix two prompt layouts
    with pytest.raises(AssemblyError, match=r"prompt layout 2, .* resume it with the assembly version"):
        asyncio.run(aresume(run_id, db=db, models=ScriptedModel(digest_reply, name="m")))
    set_layout(db, run_id, str(PROMPT_LAYOUT))

    result = asyncio.run(aresume(run_id, db=db, models=ScriptedModel(digest_reply, name="m")))
    assert result.status == "completed"
    again = tmp_path / "again.duckdb"
    base = asyncio.run(adeliberate(question_file, db=again, models=ScriptedModel(digest_reply, name="m")))
    assert store_of(db, run_id) == store_of(again, base.run_id)
    # the failed calls stay on record; every other call is the uninterrupted run's, once
    failed = rows(db, "SELECT count(*) FROM llm_calls WHERE error IS NOT NULL")[0][0]
    assert failed >= 1
    ok = Counter(rows(db, "SELECT role, participant_id, phase, request_hash FROM llm_calls WHERE error IS NULL"))
    assert ok == calls_of(again, base.run_id)
    assert sum(calls_of(db, run_id).values()) == sum(calls_of(again, base.run_id).values()) + failed

    for args, message in [
        (["--resume", run_id], "already completed"),
        (["--resume", "01NOTARUN"], "01NOTARUN"),
        (["--resume", run_id, "--seed", "3"], "drop --seed"),
        ([], "give a question file"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main(["run", *args, "--db", str(db)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
