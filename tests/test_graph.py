"""The assembly graph on the scripted model: phase order, private pre-ballots, bounded prompts, recording."""

from __future__ import annotations

import duckdb
import pytest

from assembly import deliberate
from assembly.errors import AssemblyError
from assembly.layout import PROMPT_LAYOUT
from assembly.providers.scripted import ScriptedModel
from assembly.providers.types import ModelError


def juror_reply(request) -> str:
    tags = request.tags
    who = tags.get("participant", "?")
    return f"[{tags.get('phase')} r{tags.get('round')} {who}] I think the square matters to the town."


def run(question_file, tmp_path, model=None, **overrides):
    model = model or ScriptedModel(juror_reply, choose=lambda r: "Ban cars")
    db = tmp_path / "store.duckdb"
    result = deliberate(question_file, models=model, db=db, **overrides)
    return result, model, db


def phases_in_order(db, run_id):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [r[0] for r in con.execute("select phase from turns where run_id = ? order by seq", [run_id]).fetchall()]
    finally:
        con.close()


def test_phase_order_and_records(question_file, tmp_path):
    result, model, db = run(question_file, tmp_path)
    phases = phases_in_order(db, result.run_id)
    # Compress repeats: the transcript follows the procedure.
    compressed = [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]
    # Unanimous jury (the scripted juror always picks the first option): no minority report.
    assert compressed == ["opening", "testimony", "question", "answer", "question", "answer", "floor",
                          "deliberation", "summary", "floor", "deliberation", "summary", "verdict"]
    assert phases.count("testimony") == 2 and phases.count("deliberation") == 12 and phases.count("summary") == 2
    con = duckdb.connect(str(db), read_only=True)
    try:
        ballots = con.execute("select phase, count(*) from ballots where run_id = ? group by phase order by phase",
                              [result.run_id]).fetchall()
        assert ballots == [("post", 6), ("pre", 6)]
        assert con.execute("select status from runs where id = ?", [result.run_id]).fetchall() == [("completed",)]
        calls = con.execute("select count(*) from llm_calls where run_id = ?", [result.run_id]).fetchall()[0][0]
        assert calls == len(model.history)
        rules = {r[0] for r in con.execute("select rule from tallies where run_id = ?", [result.run_id]).fetchall()}
        assert rules == {"plurality", "majority"}
    finally:
        con.close()
    assert result.verdict.winner == "Ban cars" and result.post_counts["Ban cars"] == 6


def test_pre_ballot_sees_no_other_participant(question_file, tmp_path):
    result, model, _ = run(question_file, tmp_path)
    pre = [r for r in model.history if r.tags.get("phase") == "ballot-pre"]
    # every juror's ballot is scored under the default three option orders, each order once
    assert sorted((r.tags["participant"], r.tags["order"]) for r in pre) == [
        (f"juror-{i:02d}", k) for i in range(1, 7) for k in range(3)]
    spoken = [r for r in model.history if not str(r.tags.get("phase", "")).startswith("ballot")]
    # Every distinctive marker any participant produced must be absent from every pre-ballot prompt.
    markers = [f"[{r.tags.get('phase')} r{r.tags.get('round')} {r.tags.get('participant')}]" for r in spoken]
    for request in pre:
        prompt = "\n".join(m.content for m in request.messages)
        assert not any(marker in prompt for marker in markers)
        assert "Ada Planner" not in prompt and "Moderator" not in prompt
    # ...while post-ballot prompts do carry the deliberation.
    post = [r for r in model.history if r.tags.get("phase") == "ballot-post"]
    assert any("[summary" in m.content for r in post for m in r.messages)


def test_prompt_size_bounded_as_rounds_grow(question_file, tmp_path):
    def longest_statement_prompt(rounds):
        _, model, _ = run(question_file, tmp_path / f"r{rounds}", rounds=rounds)
        sizes = [sum(len(m.content) for m in r.messages) for r in model.history if r.tags.get("phase") == "deliberation"]
        return max(sizes)

    (tmp_path / "r2").mkdir()
    (tmp_path / "r6").mkdir()
    two, six = longest_statement_prompt(2), longest_statement_prompt(6)
    assert six <= two * 1.15


def test_speaking_order_shuffled_with_logged_seed(question_file, tmp_path):
    result, model, _ = run(question_file, tmp_path, rounds=3)
    orders = [tuple(result.floor[str(r)]["order"]) for r in (1, 2, 3)]
    assert len(set(orders)) > 1
    assert all(isinstance(result.floor[str(r)]["seed"], int) for r in (1, 2, 3))


def test_same_seed_same_requests(question_file, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, first, _ = run(question_file, tmp_path / "a")
    _, second, _ = run(question_file, tmp_path / "b")
    key = lambda r: (r.tags.get("phase"), str(r.tags.get("participant")), r.seed)  # noqa: E731
    assert sorted(map(key, first.history)) == sorted(map(key, second.history))
    assert {r.hash("m") for r in first.history} == {r.hash("m") for r in second.history}


def test_generative_backend_reasks_then_abstains(question_file, tmp_path):
    attempts = {}

    def reply(request):
        if request.json_schema is None:
            return "A thought."
        who = request.tags["participant"]
        attempts[who] = attempts.get(who, 0) + 1
        if who.endswith("1"):
            return "I refuse to say."  # never valid: abstains after max attempts
        if attempts[who] == 1:
            return '{"choice": "Nope"}'  # invalid first, valid on the re-ask
        return '{"choice": "keep access", "reason": "deliveries"}'

    model = ScriptedModel(reply, scores_options=False)
    result, _, db = run(question_file, tmp_path, model=model)
    assert result.abstentions == {"pre": 1, "post": 1}
    assert result.post_counts["Keep access"] == 5
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("select status, reason, attempts from ballots where run_id = ? and status = 'abstain'",
                           [result.run_id]).fetchall()
    finally:
        con.close()
    assert len(rows) == 2 and all("3 attempts" in r[1] and r[2] == 3 for r in rows)


def test_ranked_ballots_and_all_rules(question_file, tmp_path):
    text = question_file.read_text().replace("type: single", "type: ranked").replace(
        "rules: [plurality, majority]", "rules: [schulze, irv, borda, plurality]")
    question_file.write_text(text)
    result, _, _ = run(question_file, tmp_path)
    assert [t["rule"] for t in result.tallies] == ["schulze", "irv", "borda", "plurality"]
    assert all(t["winner"] in result.options for t in result.tallies)


def test_failed_run_is_recorded_with_reason(question_file, tmp_path):
    def explode(request):
        if request.tags.get("phase") == "summary":
            raise ModelError("backend went away")
        return "fine"

    class Failing(ScriptedModel):
        async def generate(self, request):
            explode(request)
            return await super().generate(request)

    db = tmp_path / "store.duckdb"
    with pytest.raises(AssemblyError, match="backend went away"):
        deliberate(question_file, models=Failing(), db=db)
    con = duckdb.connect(str(db), read_only=True)
    try:
        status, reason = con.execute("select status, reason from runs").fetchall()[0]
        turns = con.execute("select count(*) from turns").fetchall()[0][0]
    finally:
        con.close()
    assert status == "failed" and "backend went away" in reason
    assert turns > 5  # what was said before the failure is kept


def test_split_jury_gets_a_minority_report_from_the_minority(question_file, tmp_path):
    def choose(request):
        juror_number = int(request.tags["participant"].split("-")[1])
        return "Keep access" if juror_number <= 2 else "Ban cars"  # jurors 1-2 dissent

    result, model, db = run(question_file, tmp_path, model=ScriptedModel(juror_reply, choose=choose))
    assert result.verdict.winner == "Ban cars" and result.post_counts["Keep access"] == 2
    assert result.verdict.minority_report
    minority_prompt = next(r for r in model.history if r.tags.get("phase") == "minority")
    text = minority_prompt.messages[-1].content
    dissenters = [j.name for j in result.jurors if j.post == "Keep access"]
    majority = [j.name for j in result.jurors if j.post == "Ban cars"]
    assert all(name in text for name in dissenters)
    assert not any(f"{name}:" in text for name in majority)  # the report is built from what the minority said


def test_turns_lose_a_speaker_label_but_keep_a_labelled_opening(question_file, tmp_path):
    def reply(request):
        phase = request.tags.get("phase")
        if phase == "deliberation":
            return "Juror 2: Cost: deliveries would take longer for every stall."
        if phase == "summary":
            return "Moderator: The jury weighed deliveries against footfall."
        if phase == "testimony":
            return "Cost: a closed square needs a delivery window."
        return "I think the square matters to the town."

    result, _, db = run(question_file, tmp_path, model=ScriptedModel(reply, choose=lambda r: "Ban cars"))
    con = duckdb.connect(str(db), read_only=True)
    try:
        turns = dict(con.execute("select phase, any_value(content) from turns where run_id = ? group by phase",
                                 [result.run_id]).fetchall())
    finally:
        con.close()
    assert turns["deliberation"] == "Cost: deliveries would take longer for every stall."
    assert turns["summary"] == "The jury weighed deliveries against footfall."
    assert turns["testimony"] == "Cost: a closed square needs a delivery window."


def test_juror_prompts_put_the_shared_block_first_and_each_juror_hears_a_window_of_their_own(question_file,
                                                                                             tmp_path):
    spec = question_file.read_text().replace("  questioners: 2\n", "  questioners: 4\n  recent_turns: 2\n")
    question_file.write_text(spec)
    result, model, db = run(question_file, tmp_path)
    personas = {row[0]: row[1] for row in duckdb.connect(str(db), read_only=True).execute(
        "select id, persona from participants where run_id = ? and role = 'juror'", [result.run_id]).fetchall()}
    order_1 = result.floor["1"]["order"]
    for phase in ("deliberation", "ballot-pre", "ballot-post"):
        for round_ in (1, 2) if phase == "deliberation" else (None,):
            calls = [r for r in model.history if r.tags.get("phase") == phase and r.tags.get("round") == round_]
            assert len({r.messages[0].content for r in calls}) == 1  # one shared system message for the phase
            for r in calls:
                assert personas[r.tags["participant"]] not in r.messages[0].content
                assert r.messages[1].content == f"Who you are:\n{personas[r.tags['participant']]}"
    heard = {}
    exchanges = [r for r in model.history if r.tags.get("phase") == "question"]
    assert len(exchanges) == 4
    for r in (r for r in model.history if r.tags.get("phase") == "deliberation"):
        said = [j for j in order_1 if f"[deliberation r1 {j}]" in r.messages[2].content]
        me = r.tags["participant"]
        # the witness exchanges were heard in plenary: all four in the shared block, none in the juror's own part
        assert all(f"[question rNone {q.tags['participant']}]" in r.messages[0].content for q in exchanges)
        assert "[question rNone" not in r.messages[2].content
        assert f"The moderator asks: Round {r.tags['round']} of 2." in r.messages[0].content
        if r.tags["round"] == 1:
            assert not said and "What you heard just now" not in r.messages[2].content
        else:
            assert me not in said and len(said) == 2
            i, n = order_1.index(me), len(order_1)
            assert set(said) == {order_1[(i - 1) % n], order_1[(i + 1) % n]}  # who sat either side in round 1
            heard[(2, me)] = frozenset(said)
    assert len({v for (round_, _), v in heard.items() if round_ == 2}) > 1
    assert duckdb.connect(str(db), read_only=True).execute(
        "select versions->>'prompt_layout' from runs where id = ?", [result.run_id]).fetchone()[0] == str(PROMPT_LAYOUT)
