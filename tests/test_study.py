"""Studies end to end on scripted models: the CLI, the study record and its views against the summary, bad input
as one-line errors, and resume (finished runs skipped, interrupted ones continued, failed ones superseded)."""

from __future__ import annotations

import json

import duckdb
import pytest

from assembly.errors import SpecError
from assembly.providers.scripted import ScriptedModel
from assembly.study.runner import MAX_DRAWS, run_study
from tests.scripted_cli import SCRIPTED_CLI  # noqa: F401  (the subprocess CLI, for the end-to-end test)
from tests.test_cli import call, cli
from transcripts import Store, StoreError

QUICK = {"rounds": 1, "jurors": 4}


def partisan() -> ScriptedModel:
    """Democrats lean to banning cars, everyone else to keeping access: draws seat other mixes and differ."""

    def scores(request):
        text = "\n".join(m.content for m in request.messages)
        if "Democrat" in text:
            return {"Ban cars": 0.6, "Keep access": 0.2, "Ban only in summer": 0.2}
        return {"Ban cars": 0.2, "Keep access": 0.6, "Ban only in summer": 0.2}

    return ScriptedModel(scores=scores)


def rows(db, sql, *params):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def test_study_end_to_end_through_the_cli(question_file, tmp_path, capsys):
    db = tmp_path / "study.duckdb"
    code, out, err = cli("study", str(question_file), "--draws", "3", "--model", "scripted:demo", "--rounds", "1",
                         "--db", str(db), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "completed" and result["ran"] == 3 and result["skipped"] == 0
    q = result["summary"]["questions"][0]
    assert q["completed"] == 3 and {w["rule"] for w in q["win_rates"]} == {"plurality", "majority"}
    assert all(0 <= w["low"] <= w["share"] <= w["high"] <= 1 for w in q["win_rates"])
    assert "[3/3]" in err  # progress, one line per run when stderr is no terminal
    study_id = result["study_id"]
    assert rows(db, "select status, draws, questions, question from studies") == [
        ("completed", 3, 1, "Should the town council ban cars from the market square on Saturdays?")]
    assert rows(db, "select count(*), count(distinct seed) from runs where study_id = ? and status = 'completed'",
                study_id) == [(3, 3)]

    code, out, err = call(capsys, "study", str(question_file), "--resume", study_id[:8], "--db", str(db))
    assert code == 0, err
    assert "Who wins after deliberation" in out and "3 of 3 runs completed (3 already done)" in out

    page = tmp_path / "study.html"
    code, out, err = call(capsys, "report", "--study", study_id, "-o", str(page), "--db", str(db))
    assert code == 0, err
    html = page.read_text()
    assert "Probability of winning" in html and "Should the town council ban cars" in html and "<svg" in html


def test_the_study_record_and_its_views_agree_with_the_summary(question_file, tmp_path):
    db = tmp_path / "s.duckdb"
    result = run_study([question_file], db=db, settings={"draws": 5, **QUICK}, models=partisan(), concurrency=3)
    assert result.status == "completed" and result.ran == 5
    q = result.summary.questions[0]
    sid = result.study_id
    # each draw seated its own jury
    juries = rows(db, "select r.study_draw, string_agg(p.persona, '|' order by p.id) from runs r join participants p "
                      "on p.run_id = r.id and p.role = 'juror' where r.study_id = ? group by 1", sid)
    assert len({j for _, j in juries}) > 1
    assert [r[0] for r in rows(db, "select draw from study_draws where study_id = ? and current order by draw", sid)] \
        == [1, 2, 3, 4, 5]
    view = {(rule, option): (wins, draws, rate) for rule, option, wins, draws, rate in rows(
        db, "select rule, option, wins, draws, win_rate from study_win_rates where study_id = ?", sid)}
    for w in q.win_rates:
        if w.option != "(no winner)":
            assert view[w.rule, w.option] == (w.k, w.n, pytest.approx(w.share))
    shifts = {o: (pre, post, shift) for o, pre, post, shift in rows(
        db, "select option, pre_share, post_share, shift from study_shifts where study_id = ?", sid)}
    for s in q.shares:
        assert shifts[s.option] == pytest.approx((s.pre.mean, s.post.mean, s.shift.mean))
    groups = {(a, v, o): shift for a, v, o, shift in rows(
        db, "select attribute, value, option, shift from study_group_shifts where study_id = ?", sid)}
    assert q.group_shifts and {g.attribute for g in q.group_shifts} <= {"party", "sex"}
    for g in q.group_shifts:
        assert groups[g.attribute, g.group, g.option] == pytest.approx(g.mean)
    stored = Store(db).study(sid)
    assert stored["summary"]["questions"][0]["modal_winner"] == q.modal_winner
    assert stored["spec"]["settings"]["draws"] == 5 and stored["config_paths"] == [str(question_file.resolve())]


def test_resume_skips_finished_runs_continues_interrupted_and_supersedes_failed(question_file, tmp_path):
    db = tmp_path / "s.duckdb"
    first = run_study([question_file], db=db, settings={"draws": 3, **QUICK}, models=partisan())
    sid = first.study_id
    done = {d: r for d, r in rows(db, "select study_draw, id from runs where study_id = ?", sid)}
    con = duckdb.connect(str(db))
    con.execute("update runs set status = 'failed', reason = 'model error: boom' where id = ?", [done[1]])
    con.execute("update runs set status = 'interrupted', reason = 'interrupted by the user' where id = ?", [done[2]])
    con.execute("update studies set status = 'failed' where id = ?", [sid])
    con.close()

    model = partisan()
    again = run_study([question_file], db=db, resume=sid, models=model)
    assert again.status == "completed" and (again.skipped, again.ran) == (1, 2)
    current = dict(rows(db, "select draw, run_id from study_draws where study_id = ? and current", sid))
    assert current[3] == done[3]  # finished: kept, not run again
    assert current[2] == done[2]  # interrupted: the same run, continued (assembly.resuming)
    assert current[1] != done[1]  # failed: run again as a new run that supersedes it
    assert rows(db, "select superseded_by from runs where id = ?", done[1]) == [(current[1],)]
    assert rows(db, "select count(*) from study_draws where study_id = ? and not current", sid) == [(1,)]
    assert rows(db, "select status from runs where id in (?, ?)", current[1], current[2]) == [("completed",)] * 2
    assert rows(db, "select status from studies where id = ?", sid) == [("completed",)]
    assert again.summary.questions[0].completed == 3


def test_resume_refuses_another_file_or_another_plan(question_file, tmp_path):
    db = tmp_path / "s.duckdb"
    sid = run_study([question_file], db=db, settings={"draws": 2, **QUICK}, models=partisan()).study_id
    other = tmp_path / "other.yaml"
    other.write_text(question_file.read_text())
    with pytest.raises(SpecError, match=rf"^study {sid} was made from .*question.yaml, not .*other.yaml"):
        run_study([other], db=db, resume=sid, models=partisan())
    with pytest.raises(SpecError, match="no longer plans the same questions"):
        run_study([question_file], db=db, resume=sid, settings={"rounds": 2}, models=partisan())
    with pytest.raises(StoreError, match="no study matches 'NOPE'"):
        run_study([question_file], db=db, resume="NOPE", models=partisan())


@pytest.mark.parametrize(("args", "message"), [
    (["--draws", "0"], f"error: --draws 0: must be between 1 and {MAX_DRAWS}"),
    (["--draws", str(MAX_DRAWS + 1)], f"error: --draws {MAX_DRAWS + 1}: must be between 1 and {MAX_DRAWS}"),
    (["--concurrency", "0"], "error: --concurrency 0: must be between 1 and 64"),
    (["--executor", "spark"], "error: --executor 'spark': expected one of local, ray"),
    (["--resume", "01ZZZZ"], "error: no study matches '01ZZZZ'"),
])
def test_bad_study_input_is_one_line(question_file, tmp_path, capsys, args, message):
    code, out, err = call(capsys, "study", str(question_file), "--model", "scripted:demo", "--db",
                          str(tmp_path / "s.duckdb"), *args)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err


def test_a_bank_line_without_a_question_is_one_line(tmp_path, capsys):
    bank = tmp_path / "bank.jsonl"
    bank.write_text('{"id": "S1", "question": "Should buses be free?"}\n{"id": "S2", "topic": 4}\n')
    code, _, err = call(capsys, "study", str(bank), "--draws", "1", "--db", str(tmp_path / "s.duckdb"))
    assert code == 2
    assert err == f'error: {bank}:2: no question (the line needs a non-empty "question")\n'


def test_a_bank_study_on_the_scripted_model(tmp_path):
    bank = tmp_path / "bank.jsonl"
    bank.write_text("".join(json.dumps({"id": f"S{i}", "question": f"Should the town do thing {i}?",
                                        "affirming_statement": f"The town should do thing {i}.",
                                        "negating_statement": f"The town should NOT do thing {i}."}) + "\n"
                            for i in range(3)))
    template = tmp_path / "settings.yaml"
    template.write_text("jury: {size: 3, stratify: [party]}\nprocedure: {rounds: 0, questions: false, "
                        "option_orders: 1, calibration: none}\n")
    result = run_study([bank], db=tmp_path / "s.duckdb", settings={"draws": 2, "template": str(template)},
                       models=ScriptedModel())
    assert result.status == "completed" and [q.key for q in result.summary.questions] == ["S0", "S1", "S2"]
    assert result.summary.questions[0].options == ["The town should do thing 0.", "The town should NOT do thing 0."]
    assert rows(tmp_path / "s.duckdb", "select questions, question from studies") == [(3, None)]
