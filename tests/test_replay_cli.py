"""`assembly run --replay RUN` reproduces a recorded run's transcript exactly, with no model."""

from __future__ import annotations

import json
import subprocess

import duckdb

from tests.scripted_cli import SCRIPTED_CLI
from tests.test_resume import set_layout


def cli(*args):
    return subprocess.run([*SCRIPTED_CLI, *args], capture_output=True, text=True, timeout=300)


def transcript(db, run_id):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("select seq, phase, speaker_id, content from turns where run_id = ? order by seq",
                           [run_id]).fetchall()
    finally:
        con.close()


def test_replay_reproduces_transcript(question_file, tmp_path):
    db = tmp_path / "r.duckdb"
    first = cli("run", str(question_file), "--model", "scripted:demo", "--db", str(db), "--json")
    assert first.returncode == 0, first.stderr
    original = json.loads(first.stdout)
    again = cli("run", str(question_file), "--replay", original["run_id"], "--db", str(db), "--json")
    assert again.returncode == 0, again.stderr
    replayed = json.loads(again.stdout)
    assert replayed["run_id"] != original["run_id"]
    assert transcript(db, replayed["run_id"]) == transcript(db, original["run_id"])
    assert replayed["post_counts"] == original["post_counts"]
    con = duckdb.connect(str(db), read_only=True)
    try:
        provenance = con.execute("select provenance from runs where id = ?", [replayed["run_id"]]).fetchall()
    finally:
        con.close()
    assert provenance == [("replay",)]


def test_replay_miss_is_clear(question_file, tmp_path):
    db = tmp_path / "r.duckdb"
    first = json.loads(cli("run", str(question_file), "--model", "scripted:demo", "--db", str(db), "--json").stdout)
    question_file.write_text(question_file.read_text().replace("market square", "harbour front"))
    again = cli("run", str(question_file), "--replay", first["run_id"], "--db", str(db))
    assert again.returncode == 2
    assert "Traceback" not in again.stderr and "replay" in again.stderr.lower()
    lines = again.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and sum(line.startswith("error") for line in lines) == 1


def test_replay_unknown_run(question_file, tmp_path):
    db = tmp_path / "r.duckdb"
    cli("run", str(question_file), "--model", "scripted:demo", "--db", str(db))
    again = cli("run", str(question_file), "--replay", "01NOTARUN", "--db", str(db))
    assert again.returncode == 2 and "01NOTARUN" in again.stderr and "Traceback" not in again.stderr


def test_replay_of_another_prompt_layout_is_refused(question_file, tmp_path):
    db = tmp_path / "r.duckdb"
    first = json.loads(cli("run", str(question_file), "--model", "scripted:demo", "--db", str(db), "--json").stdout)
    set_layout(db, first["run_id"], "2")
    again = cli("run", str(question_file), "--replay", first["run_id"], "--db", str(db))
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "prompt layout 2" in again.stderr and again.stderr.strip().splitlines()[-1].startswith("error:")
