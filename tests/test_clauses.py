"""Specification clauses (`assembly spec`): built from the store's records, written as Markdown, YAML or JSON, refused
for unfinished runs, compared across runs (`assembly spec diff`), and built for a study from its intervals."""

from __future__ import annotations

import json

import pytest
import yaml

import assembly
from assembly.clauses import CLAUSE_SCHEMA, Clause, clause_for
from assembly.layout import PROMPT_LAYOUT
from assembly.providers.scripted import ScriptedModel
from tests.conftest import MINIMAL
from tests.test_cli import call
from transcripts import Store


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def run(db, *, name="scripted:a", seed=None, jurors=None, question=None):
    spec = yaml.safe_load(MINIMAL)
    if question:
        spec["question"] = question
    # A model that leans to the second option, so the tallies and the minority differ from a uniform draw.
    model = ScriptedModel(name=name, scores=lambda r: {c: 0.6 if c == "Keep access" else 0.2 for c in r.choices})
    return assembly.deliberate(spec, models=model, db=db, seed=seed, jurors=jurors)


def test_run_clause_says_what_the_store_says(tmp_path, capsys):
    db = tmp_path / "s.duckdb"
    result = run(db)
    store = Store(db)
    clause = clause_for(store, "latest")
    assert clause.schema_ == CLAUSE_SCHEMA and clause.question == result.question
    assert clause.decision.winner == result.verdict.winner and clause.decision.rule == "plurality"
    assert clause.decision.statement == result.verdict.text
    shares = {o: (pre, post) for o, pre, post in store.sql(
        "SELECT option, pre_share, post_share FROM opinion_shift WHERE run_id = ?", [result.run_id]).rows()}
    tally = result.tallies[0]
    for o in clause.support.options:
        assert (o.pre_share, o.post_share) == shares[o.option]
        assert o.win_probability == tally["win_probability"][o.option]
        assert o.expected == pytest.approx(tally["expected"][o.option])
    assert clause.support.stability == result.stability and clause.support.valid == {"pre": 6, "post": 6}
    minority = sum(1 for j in result.jurors if j.post is not None and j.post != result.verdict.winner)
    assert clause.minority.jurors == minority and clause.minority.of == 6
    assert clause.minority.report == result.verdict.minority_report
    p = clause.provenance
    assert p.run_id == result.run_id and p.store == str(db.resolve()) and p.seeds == [5]
    assert p.population == "us_adults" and p.stratify == ["party", "sex"] and p.human_seats == []
    assert {a: sum(g.values()) for a, g in p.jury.items()} == {"party": 6, "sex": 6}
    juror = next(m for m in p.models if m.role == "juror")
    assert juror.spec == "scripted:a" and juror.reported == ["scripted:a"] and juror.calls > 0
    assert p.prompt_layout == PROMPT_LAYOUT and p.procedure["rounds"] == 2 and p.finished_at is not None

    code, out, err = call(capsys, "spec", result.run_id[:12], "--db", str(db))
    assert code == 0, err
    for heading in ("# Clause:", "## Decision", "## Support", "## Minority view", "## Provenance"):
        assert heading in out
    assert result.run_id in out and "scripted:a" in out
    for suffix, read in ((".yaml", yaml.safe_load), (".json", json.loads)):
        target = tmp_path / f"clause{suffix}"
        code, out, err = call(capsys, "spec", "latest", "--db", str(db), "-o", str(target))
        assert code == 0 and out.strip() == str(target), err
        data = read(target.read_text())
        assert data["schema"] == CLAUSE_SCHEMA and Clause.model_validate(data) == clause


def test_unfinished_runs_have_no_clause(tmp_path, capsys):
    db = tmp_path / "s.duckdb"
    store = Store(db)
    running = store.begin_run(question="Q?", options=["A", "B"])
    failed = store.begin_run(question="Q?", options=["A", "B"])
    store.finish_run(failed, "failed", reason="model error: boom")
    for run_id, status in ((running, "running"), (failed, "failed")):
        target = tmp_path / "clause.json"
        code, out, err = call(capsys, "spec", run_id, "--db", str(db), "-o", str(target))
        one_line_error(code, err, status, "completed run")
        assert not target.exists() and out == ""
    one_line_error(*call(capsys, "spec", running, "--db", str(db), "-o", str(tmp_path / "c.txt"))[::2], "format")
    one_line_error(*call(capsys, "spec", "diff", running, "--db", str(db))[::2], "expected RUN or diff A B")


def test_diff_compares_decision_support_and_provenance(tmp_path, capsys):
    db = tmp_path / "s.duckdb"
    a = run(db, name="scripted:a")
    b = run(db, name="scripted:b", seed=9, jurors=4)
    code, out, err = call(capsys, "spec", a.run_id, "-o", str(tmp_path / "a.yaml"), "--db", str(db))
    assert code == 0, err
    code, out, err = call(capsys, "spec", "diff", str(tmp_path / "a.yaml"), b.run_id, "--db", str(db), "-o",
                          str(tmp_path / "d.json"))
    assert code == 0, err
    diff = json.loads((tmp_path / "d.json").read_text())
    assert diff["schema"] == "assembly.clause-diff/1" and diff["b"] == f"run {b.run_id}"
    assert diff["decision_changed"] == (a.verdict.winner != b.verdict.winner)
    changes = {c["field"]: (c["a"], c["b"]) for c in diff["provenance"]}
    assert changes["models.juror.spec"] == ("scripted:a", "scripted:b")
    assert changes["seeds"] == ([5], [9]) and changes["jury_size"] == (6, 4)
    assert "procedure.rounds" not in changes and "population" not in changes
    store = Store(db)
    post = {(r, o): s for r, o, s in store.sql("SELECT run_id, option, post_share FROM opinion_shift").rows()}
    for row in diff["support"]:
        o = row["option"]
        assert row["post_share_delta"] == pytest.approx(post[(b.run_id, o)] - post[(a.run_id, o)])
    code, out, err = call(capsys, "spec", "diff", a.run_id, b.run_id, "--db", str(db))
    assert code == 0 and "# Clause diff:" in out and "models.juror.spec" in out, err

    other = run(db, question="Should the library open on Sundays?")
    one_line_error(*call(capsys, "spec", "diff", a.run_id, other.run_id, "--db", str(db))[::2],
                   "different questions")


def test_study_clause_gives_win_probabilities_with_intervals(tmp_path, question_file):
    runner = pytest.importorskip("assembly.study.runner")
    db = tmp_path / "s.duckdb"
    model = ScriptedModel(scores=lambda r: {c: 0.6 if c == "Keep access" else 0.2 for c in r.choices})
    study = runner.run_study([question_file], db=db, models=model, settings={"draws": 3, "jurors": 3, "rounds": 1})
    store = Store(db)
    from assembly.clauses.records import has_studies

    if not has_studies(store):
        pytest.skip("this store has no studies table (migration 0007)")
    clause = clause_for(store, study.study_id[:14])
    q = study.summary.questions[0]
    assert clause.support.basis == "study" and clause.support.draws == 3 == q.completed
    assert clause.decision.winner == q.modal_winner and clause.decision.statement_run in clause.provenance.runs
    wins = {w.option: w for w in q.win_rates if w.rule == q.rules[0]}
    for o in clause.support.options:
        assert o.win_probability == wins[o.option].share
        assert (o.win_interval.low, o.win_interval.high) == (wins[o.option].low, wins[o.option].high)
        assert o.post_interval is not None
    assert clause.provenance.study_id == study.study_id and len(clause.provenance.seeds) == 3
    assert {a: sum(g.values()) for a, g in clause.provenance.jury.items()} == {"party": 3, "sex": 3}
