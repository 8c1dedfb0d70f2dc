"""The distilled one-pass mode: the record format, its forgiving parser, and a run recorded like any other."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from assembly.distilled import (
    format_record,
    match_option,
    parse_record,
    read_ballot,
    record_from_run,
    run_distilled,
)
from tests.conftest import MINIMAL

OPTIONS = ["Ban cars", "Keep access", "Ban only in summer"]


def spec(**jury):
    data = yaml.safe_load(MINIMAL)
    data["jury"].update(size=4, **jury)
    data["procedure"]["rounds"] = 1
    return data


def test_parser_is_forgiving_but_never_invents_a_vote():
    text = """Here is the record.
## Pre-ballot:
J1: Ban cars
- J2: keep access.
Juror 3 (Maria): Ban only in summer
J3: Keep access
J9: Ban cars
DELIBERATION
Round 1
J2: Deliveries need the square
and I run a stall there.
J1: Cars make it unsafe for kids.
**POST BALLOT**
J1: ban CARS
J2: Keep
J3: Ban
J4: maybe later
VERDICT: The jury chose to ban cars.
"""
    record = parse_record(text, 4)
    assert record.pre == {1: "Ban cars", 2: "keep access.", 3: "Ban only in summer"}
    assert record.post == {1: "ban CARS", 2: "Keep", 3: "Ban", 4: "maybe later"}
    assert record.statements == [(1, 2, "Deliveries need the square and I run a stall there."),
                                 (1, 1, "Cars make it unsafe for kids.")]
    assert record.verdict == "The jury chose to ban cars."
    assert any("J9" in issue for issue in record.issues)
    assert any("J3 has more than one pre-ballot line" in issue for issue in record.issues)
    assert any("Here is the record" in issue for issue in record.issues)
    headless = parse_record("J1: Yes\nJ2: No\nJ1: No", 2)  # what the demo's tuned model wrote once
    assert headless.pre == {1: "Yes", 2: "No"} and not headless.post and len(headless.issues) == 3

    def vote(line, phase="post", kind="single", options=OPTIONS):
        return read_ballot(line, juror_id="juror-01", phase=phase, ballot_type=kind, options=options, label="J1")

    assert vote("ban CARS").choice == "Ban cars"
    assert vote("Keep").choice == "Keep access"  # a unique prefix
    assert vote("Ban").status == "abstain" and "not one of the options" in vote("Ban").reason  # ambiguous
    assert vote(None).reason == "the generated record has no post-ballot line for J1"
    assert vote("(no vote)").status == "abstain"
    assert vote("Ban cars > Ban only in summer > Keep access", kind="ranked").ranking == [
        "Ban cars", "Ban only in summer", "Keep access"]
    assert "rank every option" in vote("Ban cars > Keep access", kind="ranked").reason
    assert vote("Ban cars; Keep access", kind="approval").approvals == ["Ban cars", "Keep access"]
    assert vote("(none)", kind="approval").approvals == []
    assert match_option("Yes, but only in summer", ["Yes", "Yes, but only in summer"]) == "Yes, but only in summer"
    with pytest.raises(ValueError):
        match_option("Nope", ["Yes", "No"])


def test_format_and_parse_round_trip():
    labels = ["J1", "J2", "J3"]
    pre = {"J1": {"choice": "Ban cars"}, "J2": {"choice": "Keep access"}, "J3": None}
    post = {"J1": {"choice": "Ban cars"}, "J2": {"choice": "Ban cars"}, "J3": {"status": "abstain"}}
    text = format_record(labels=labels, ballot_type="single", pre=pre, post=post,
                         statements=[(1, "J2", "I changed my mind " * 30), (1, "J1", "Safety first.")],
                         verdict="Ban cars won.")
    assert "J3: (no vote)" in text and text.splitlines()[0] == "PRE-BALLOT" and "ROUND 1" in text
    record = parse_record(text, 3)
    assert record.pre == {1: "Ban cars", 2: "Keep access", 3: "(no vote)"} and not record.issues
    assert len(record.statements[0][2].split()) <= 41  # clipped to the record's words per statement
    ranked = format_record(labels=["J1"], ballot_type="ranked", pre={"J1": {"ranking": OPTIONS}}, post={},
                           statements=[])
    assert "J1: Ban cars > Keep access > Ban only in summer" in ranked
    assert text.splitlines()[-1] == "END" and ranked.splitlines()[-1] == "END"


def test_the_record_ends_at_end():
    """A small model runs on after the verdict; END closes the record and what follows is ignored, and said so."""
    text = "PRE-BALLOT\nJ1: Yes\nPOST-BALLOT\nJ1: No\nVERDICT: No won.\n**END**\nPOST-BALLOT\nJ1: Yes\nVERDICT: again"
    record = parse_record(text, 1)
    assert record.post == {1: "No"} and record.verdict == "No won."
    assert record.issues == ["ignored 3 line(s) after END"]


def test_a_recorded_run_becomes_a_whole_assembly_example(tmp_path):
    import assembly
    from assembly.providers.scripted import ScriptedModel
    from transcripts import Store

    db = tmp_path / "s.duckdb"
    result = assembly.deliberate(spec(), models=ScriptedModel(choose=lambda r: "Ban only in summer"), db=str(db), seed=4)
    store = Store(db)
    messages, record = record_from_run(store, result.run_id)
    assert messages[0]["role"] == "system" and "Jurors (4):" in messages[1]["content"]
    assert "party " in messages[1]["content"] and "Ada Planner (town planner)" in messages[1]["content"]
    parsed = parse_record(record, 4)
    assert parsed.post == {i: "Ban only in summer" for i in range(1, 5)} and len(parsed.statements) == 4
    assert parsed.verdict
    assert record.endswith("\nEND") and not parsed.issues


def scripted_record(request):
    return """PRE-BALLOT
J1: Ban cars
J2: Keep access
J3: Ban only in summer
DELIBERATION
ROUND 1
J1: The square is for people.
J2: My shop needs deliveries.
J4: Summer is when it is crowded.
POST-BALLOT
J1: Ban cars
J2: Ban cars
J3: Ban only in summer
J4: whatever
VERDICT: The jury would ban cars on Saturdays."""


def test_run_distilled_records_a_run_like_any_other(tmp_path):
    from assembly.providers.scripted import ScriptedModel
    from transcripts import Store

    model = ScriptedModel(scripted_record, scores_options=False)
    store = Store(tmp_path / "s.duckdb")
    events = []
    result = asyncio.run(run_distilled(spec(), model, store, seed=11, on_event=events.append))
    json.dumps(result)  # JSON-serialisable
    assert result["status"] == "completed" and result["mode"] == "distilled" and result["seed"] == 11
    assert len(model.history) == 1  # one generation for the whole assembly
    assert model.history[0].stop == ["\nEND"]  # and it stops at the record's end
    prompt = model.history[0].messages[1].content
    assert "Jurors (4):" in prompt and all(f"J{i} " in prompt for i in range(1, 5))
    assert result["pre_counts"] == {"Ban cars": 1, "Keep access": 1, "Ban only in summer": 1}
    assert result["post_counts"] == {"Ban cars": 2, "Keep access": 0, "Ban only in summer": 1}
    assert result["abstentions"] == {"pre": 1, "post": 1}
    assert result["verdict"]["winner"] == "Ban cars" and result["verdict"]["text"].startswith("The jury would")
    assert result["usage"]["calls"] == 1 and result["usage"]["output_tokens"] > 0

    run_id = result["run_id"]
    run = store.run(run_id)
    assert run["status"] == "completed" and run["provenance"] == "simulated" and run["summary"]["mode"] == "distilled"
    assert run["seed"] == 11
    ballots = store.sql(f"SELECT participant_id, phase, status, choice, reason FROM ballots WHERE run_id = '{run_id}'")
    assert ballots.height == 8
    abstained = ballots.filter(ballots["status"] == "abstain")
    assert sorted(abstained["reason"].to_list()) == [
        "could not read J4's post-ballot: 'whatever' is not one of the options",
        "the generated record has no pre-ballot line for J4"]
    turns = store.sql(f"SELECT phase, round, speaker_id, content, call_id FROM turns WHERE run_id = '{run_id}' "
                      "ORDER BY seq")
    assert turns["phase"].to_list() == ["deliberation"] * 3 + ["verdict"]
    assert turns["speaker_id"][2] == "juror-04" and turns["call_id"].null_count() == 0
    tallies = store.sql(f"SELECT phase, rule, winner FROM tallies WHERE run_id = '{run_id}' ORDER BY phase, rule")
    assert tallies.rows() == [("post", "majority", "Ban cars"), ("post", "plurality", "Ban cars"),
                              ("pre", "majority", None), ("pre", "plurality", "Ban cars")]
    calls = store.sql(f"SELECT role, phase, output_tokens FROM llm_calls WHERE run_id = '{run_id}'")
    assert calls.rows()[0][:2] == ("distilled", "distilled")
    people = store.sql(f"SELECT id, role, attributes FROM participants WHERE run_id = '{run_id}' ORDER BY id")
    assert people["role"].to_list().count("juror") == 4
    assert {e["kind"] for e in events} >= {"phase", "turn", "ballot"}

    # distilled runs are the model's own output: prepare leaves them out unless asked
    from finetune.dataset import PrepareOptions, build_examples

    assert not build_examples(store, PrepareOptions(validation=0))
    assert build_examples(store, PrepareOptions(validation=0, include_distilled=True, types=("whole_assembly",)))


def test_a_failed_generation_is_a_failed_run(tmp_path):
    from assembly.errors import AssemblyError
    from assembly.providers.base import Model
    from assembly.providers.types import ModelError
    from transcripts import Store

    class Broken(Model):
        name = "broken"

        async def generate(self, request):
            raise ModelError("out of memory")

    store = Store(tmp_path / "s.duckdb")
    with pytest.raises(AssemblyError, match="out of memory"):
        asyncio.run(run_distilled(spec(), Broken(), store))
    runs = store.sql("SELECT status, reason FROM runs")
    assert runs.rows() == [("failed", "model error: out of memory")]


def test_defaults_take_the_specs_model_and_store(tmp_path):
    data = spec()
    data["models"] = {"default": "scripted:default"}  # replies with prose, never a record: every ballot abstains
    data["store"] = str(tmp_path / "from-spec.duckdb")
    result = asyncio.run(run_distilled(data))
    assert result["store"] == data["store"] and result["model"] == "scripted:default"
    assert result["abstentions"] == {"pre": 4, "post": 4} and result["verdict"]["winner"] is None
    assert "no verdict line" in result["verdict"]["text"]
