"""The CLI: results on stdout, one-line errors on stderr with a nonzero exit, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from assembly.cli.app import main
from tests.scripted_cli import SCRIPTED_CLI


def cli(*args: str) -> tuple[int, str, str]:
    proc = subprocess.run([*SCRIPTED_CLI, *args], capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def call(capsys, *args: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_run_json_parses_and_lands_in_store(question_file, tmp_path):
    db = tmp_path / "cli.duckdb"
    code, out, err = cli("run", str(question_file), "--model", "scripted:demo", "--db", str(db), "--json",
                         "--seed", "3", "--jurors", "4")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "completed" and len(result["jurors"]) == 4 and result["seed"] == 3
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("select count(*) from runs where status = 'completed'").fetchall() == [(1,)]
    finally:
        con.close()


def test_run_summary_text(question_file, tmp_path, capsys):
    code, out, err = call(capsys, "run", str(question_file), "--model", "scripted:demo", "--db",
                          str(tmp_path / "s.duckdb"))
    assert code == 0, err
    assert "Verdict" in out and "Pre → post ballot" in out and "representativeness" in out


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda t: t.replace("size: 6", "sise: 6"), "did you mean 'size'"),
        (lambda t: t.replace("options: [Ban cars, Keep access, Ban only in summer]", "options: []"), "at least two"),
        (lambda t: t + "models:\n  default: bogus:model\n", "unknown model spec"),
        (lambda t: t.replace("stance: Pedestrian squares raise footfall.", "documents: [missing.txt]"), "missing.txt"),
        (lambda t: t + "  quotas:\n    party: {Democrat: 6, Republican: 6}\n", "quota"),
        (lambda t: "question: [oops\n", "malformed YAML"),
    ],
)
def test_bad_input_is_one_line_error(question_file, tmp_path, mutate, expected):
    question_file.write_text(mutate(question_file.read_text()))
    db = tmp_path / "bad.duckdb"
    code, out, err = cli("run", str(question_file), "--model", "scripted:demo", "--db", str(db))
    assert code == 2
    assert expected in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    # Bad input never leaves a half-written run behind.
    if db.exists():
        con = duckdb.connect(str(db), read_only=True)
        try:
            assert con.execute("select count(*) from runs where status in ('running', 'completed')").fetchall() == [(0,)]
        finally:
            con.close()


def test_validate_ok_and_bad(question_file, capsys):
    code, out, _ = call(capsys, "validate", str(question_file))
    assert code == 0 and "ok" in out and "representativeness" in out
    question_file.write_text(question_file.read_text().replace("rounds: 2", "rounds: -1"))
    code, _, err = call(capsys, "validate", str(question_file))
    assert code == 2 and "procedure.rounds" in err


def test_jury_sample_json(question_file, capsys):
    code, out, _ = call(capsys, "jury", "sample", str(question_file), "--json", "--seed", "4")
    assert code == 0
    data = json.loads(out)
    assert len(data["jurors"]) == 6 and 0.0 <= data["overall"] <= 1.0
    code2, out2, _ = call(capsys, "jury", "sample", str(question_file), "--json", "--seed", "4")
    assert json.loads(out2) == data  # seeded: the same draw


def test_unknown_command_is_usage_error(capsys):
    code, _, err = call(capsys, "nonsense")
    assert code == 2 and "nonsense" in err


def test_examples_validate(capsys):
    for path in sorted(Path("examples").glob("*.yaml")):
        code, out, err = call(capsys, "validate", str(path))
        assert code == 0, f"{path}: {err}"


def test_run_distilled_mode_records_a_run(question_file, tmp_path):
    db = tmp_path / "d.duckdb"
    code, out, err = cli("run", str(question_file), "--mode", "distilled", "--model", "scripted:demo", "--db",
                         str(db), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["mode"] == "distilled" and len(summary["jurors"]) == 6
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("select phase, status from ballots where run_id = ?", [summary["run_id"]]).fetchall()
    finally:
        con.close()
    assert rows == [("post", "valid")] * 6  # scored, so never an unreadable ballot
    code, _, err = cli("run", str(question_file), "--mode", "distilled", "--rounds", "2", "--model", "scripted:x")
    assert code == 2 and "--rounds" in err and "Traceback" not in err


def test_unknown_mode(question_file, capsys):
    code, _, err = call(capsys, "run", str(question_file), "--mode", "quantum", "--model", "scripted:x")
    assert code == 2 and "quantum" in err


def test_the_test_double_is_no_production_backend(question_file, tmp_path):
    """`scripted` loads only where a test registers it (tests/scripted_cli.py); the real CLI refuses it."""
    real = [sys.executable, "-m", "assembly"]
    proc = subprocess.run([*real, "run", str(question_file), "--model", "scripted:demo", "--db",
                           str(tmp_path / "x.duckdb")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "unknown model spec 'scripted:demo'" in proc.stderr
    question_file.write_text(question_file.read_text() + "models:\n  juror: scripted:demo\n")
    proc = subprocess.run([*real, "validate", str(question_file)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "models: unknown model spec 'scripted:demo'" in proc.stderr


def test_transcripts_import_survey_and_polis(tmp_path, capsys):
    survey = tmp_path / "survey.csv"
    survey.write_text('question_id,question,options,attribute,group,option,count\n'
                      'Q1,Should we?,"[""Yes"", ""No""]",party,Democrat,Yes,3\n'
                      'Q1,Should we?,"[""Yes"", ""No""]",party,Democrat,No,1\n')
    db = tmp_path / "imports.duckdb"
    code, out, err = call(capsys, "transcripts", "import-survey", str(survey), "--source", "s", "--db", str(db),
                          "--json")
    assert code == 0, err
    assert len(json.loads(out)["runs"]) == 1
    split = tmp_path / "split.json"
    split.write_text('{"train": ["Q1"]}')
    code, _, err = call(capsys, "transcripts", "import-survey", str(survey), "--source", "s", "--db", str(db),
                        "--split", str(split), "--split-name", "test")
    assert code == 2 and "no split named 'test'" in err and len(err.strip().splitlines()) == 1
    code, _, err = call(capsys, "transcripts", "import-polis", str(tmp_path / "missing"), "--db", str(db))
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
