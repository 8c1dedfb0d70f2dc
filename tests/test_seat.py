"""A person in a juror's seat (`assembly run --seat`): they read the juror's prompt, their statements reach the other
jurors, their ballots are counted exactly as cast, and the seat is recorded as human — on a terminal and on a pipe."""

from __future__ import annotations

import asyncio
import io
import subprocess

import pytest
import yaml
from rich.console import Console

import assembly
from assembly.errors import AssemblyError
from assembly.providers.scripted import ScriptedModel
from assembly.seat import Terminal, rank_logprobs
from tests.conftest import MINIMAL
from tests.scripted_cli import SCRIPTED_CLI
from transcripts import Store

OPTIONS = ["Ban cars", "Keep access", "Ban only in summer"]
# Three jurors each hearing four turns: everyone hears everyone in the next round.
SMALL = MINIMAL.replace("size: 6", "size: 3").replace("stratify: [party, sex]", "stratify: [party]").replace(
    "rounds: 2\n", "rounds: 2\n  recent_turns: 4\n")
SEAT = "juror-02"


def small_file(tmp_path, text: str = SMALL):
    path = tmp_path / "q.yaml"
    path.write_text(text)
    return path


def check_recorded(db, statement: str, choice: str) -> None:
    """The person's statement reached the other jurors' next-round prompts; their ballot counts; the seat is theirs."""
    store = Store(db)
    (run_id,) = store.sql("SELECT id FROM runs WHERE status = 'completed'").row(0)
    heard = store.sql("SELECT DISTINCT participant_id FROM llm_calls WHERE run_id = ? AND phase = 'deliberation' AND "
                      "participant_id <> ? AND messages::VARCHAR LIKE ?", [run_id, SEAT, f"%{statement}%"]).rows()
    assert sorted(heard) == [("juror-01",), ("juror-03",)]
    said = store.sql("SELECT content FROM turns WHERE run_id = ? AND speaker_id = ? AND phase = 'deliberation'",
                     [run_id, SEAT]).rows()
    assert (statement,) in said
    ballots = dict(store.sql("SELECT phase, choice FROM ballots WHERE run_id = ? AND participant_id = ?",
                             [run_id, SEAT]).rows())
    assert ballots == {"pre": choice, "post": choice}
    post = store.sql("SELECT choice FROM ballots WHERE run_id = ? AND phase = 'post' AND status = 'valid'",
                     [run_id]).rows()
    (scores,) = store.sql("SELECT scores FROM tallies WHERE run_id = ? AND phase = 'post' AND rule = 'plurality'",
                          [run_id]).row(0)
    assert yaml.safe_load(scores)[choice] == sum(1 for (c,) in post if c == choice) >= 1
    (extra,) = store.sql("SELECT extra FROM participants WHERE run_id = ? AND id = ?", [run_id, SEAT]).row(0)
    assert yaml.safe_load(extra) == {"model": "human", "provenance": "human"}
    models = set(store.sql("SELECT DISTINCT model FROM llm_calls WHERE run_id = ? AND participant_id = ?",
                           [run_id, SEAT]).rows())
    assert models == {("human",)}


def test_seat_outside_the_jury_is_refused_before_the_run(tmp_path):
    db = tmp_path / "s.duckdb"
    proc = subprocess.run([*SCRIPTED_CLI, "run", str(small_file(tmp_path)), "--model", "scripted:demo", "--db", str(db),
                           "--seat", "juror-09"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "juror-09" in proc.stderr and "juror-01" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not db.exists() or Store(db).sql("SELECT count(*) FROM runs").item() == 0


def test_seat_from_a_pipe(tmp_path):
    db = tmp_path / "s.duckdb"
    typed = "2\nI run the bakery and need deliveries before nine.\nStill deliveries first.\n2\n"
    proc = subprocess.run([*SCRIPTED_CLI, "run", str(small_file(tmp_path)), "--model", "scripted:demo", "--db", str(db),
                           "--seat", SEAT, "--json"], input=typed, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["status"] == "completed"  # stdout stays the result; the seat talks on stderr
    assert "Whose seat you are in (juror-02)" in proc.stderr and "1. Ban cars" in proc.stderr
    check_recorded(db, "I run the bakery and need deliveries before nine.", "Keep access")


def test_seat_on_a_terminal(tmp_path):
    pexpect = pytest.importorskip("pexpect")
    db = tmp_path / "s.duckdb"
    # With witnesses and questions: the seat may be asked for a question as well.
    child = pexpect.spawn(SCRIPTED_CLI[0], [*SCRIPTED_CLI[1:], "run", str(small_file(tmp_path)), "--model",
                                            "scripted:demo", "--db", str(db), "--seat", SEAT],
                          encoding="utf-8", timeout=120, dimensions=(50, 200))
    statements = iter(["Saturday trade keeps my family fed.", "I have not changed my mind."])
    asked = []
    while True:
        found = child.expect([r"The number of your choice:", r"Your statement \(one line\):",
                              r"Your question \(one line\):", pexpect.EOF])
        if found == 3:
            break
        asked.append(found)
        child.sendline("3" if found == 0 else next(statements) if found == 1 else "What about deliveries?")
    child.close()
    assert child.exitstatus == 0, child.before
    assert asked.count(0) == 2 and asked.count(1) == 2
    check_recorded(db, "Saturday trade keeps my family fed.", "Ban only in summer")


def seated(tmp_path, text: str, typed: str, **kwargs):
    """A run in process with the person's input given as text; returns the result and the store."""
    terminal = Terminal(stdin=io.StringIO(typed), console=Console(file=io.StringIO()))
    db = tmp_path / "s.duckdb"
    result = asyncio.run(assembly.adeliberate(yaml.safe_load(text), db=db, seat=SEAT, seat_terminal=terminal,
                                              **kwargs))
    return result, Store(db)


def test_ranked_seat_keeps_the_persons_order_through_orders_and_calibration(tmp_path):
    text = SMALL.replace("type: single", "type: ranked").replace("rules: [plurality, majority]", "rules: [borda]")
    text = text.replace("calibration: none", "calibration: neutral")  # three orders, each divided by the prior
    result, store = seated(tmp_path, text, "3 1 2\nOne.\nTwo.\n2 3 1\n", models=ScriptedModel(),
                           rounds=2, jurors=3)
    rankings = dict(store.sql("SELECT phase, ranking FROM ballots WHERE participant_id = ?", [SEAT]).rows())
    assert rankings == {"pre": [OPTIONS[2], OPTIONS[0], OPTIONS[1]], "post": [OPTIONS[1], OPTIONS[2], OPTIONS[0]]}
    assert result.status == "completed"


def test_approval_and_structured_seats(tmp_path):
    text = SMALL.replace("type: single", "type: approval").replace("rules: [plurality, majority]", "rules: [approval]")
    _, store = seated(tmp_path, text, "1 3\nOne.\nTwo.\n0\n", models=ScriptedModel())
    approvals = dict(store.sql("SELECT phase, approvals FROM ballots WHERE participant_id = ?", [SEAT]).rows())
    assert approvals == {"pre": [OPTIONS[0], OPTIONS[2]], "post": []}
    # A backend without option scores: the person's answer becomes the structured reply the ballot asks for.
    (tmp_path / "s.duckdb").unlink()
    _, store = seated(tmp_path, SMALL, "x\n9\n2\nOne.\nTwo.\n1\n", models=ScriptedModel(scores_options=False))
    ballots = dict(store.sql("SELECT phase, choice FROM ballots WHERE participant_id = ? AND method = 'structured'",
                             [SEAT]).rows())
    assert ballots == {"pre": OPTIONS[1], "post": OPTIONS[0]}


def test_a_seat_whose_person_leaves_fails_the_run(tmp_path):
    with pytest.raises(AssemblyError, match="stopped answering"):
        seated(tmp_path, SMALL, "2\n", models=ScriptedModel())
    (status,) = Store(tmp_path / "s.duckdb").sql("SELECT status FROM runs").row(0)
    assert status == "failed"


def test_rank_logprobs_survive_calibration_and_noise():
    """Neighbouring ranks stay further apart than calibration (log 1e6) plus Gumbel noise (< 31) can move them."""
    for k in (2, 5, 12):
        logprobs = rank_logprobs([f"o{i}" for i in range(k)])
        gaps = [logprobs[f"o{i}"] - logprobs[f"o{i + 1}"] for i in range(k - 1)]
        assert min(gaps) > 45 and min(logprobs.values()) >= -700
