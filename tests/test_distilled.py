"""The distilled mode: every juror's post-deliberation ballot scored in one batched pass, votes drawn like the full
mode's, the verdict written from the tally, recorded with the full mode's run lifecycle; and its training examples."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from assembly.casting import neutral_messages
from assembly.distilled import (
    DistilledUnavailable,
    adistill,
    distill,
    distilled_ballot_messages,
    distilled_prior_messages,
)
from assembly.providers.scripted import ScriptedModel
from juries import plain_persona
from tests.conftest import MINIMAL

OPTIONS = ["Ban cars", "Keep access", "Ban only in summer"]


def spec(**changes):
    data = yaml.safe_load(MINIMAL)
    data["jury"]["size"] = 6
    data["procedure"]["rounds"] = 1
    data.update(changes)
    return data


def draw_jurors(data, seed):
    from assembly.deliberation import draw, resolve_spec

    return draw(resolve_spec(data, seed=seed))[1].jurors


def by_persona(request):
    """A scoring double whose answer depends on who the juror is (the persona message), not on the option order."""
    persona = next((m.content for m in request.messages[1:] if m.role == "system"), "")
    lean = "Democrat" in persona
    return {"Ban cars": 0.7 if lean else 0.1, "Keep access": 0.1 if lean else 0.6, "Ban only in summer": 0.2 if lean
            else 0.3}


def test_a_distilled_run_scores_every_juror_once_and_records_a_run(tmp_path):
    from transcripts import Store

    model = ScriptedModel(scores=by_persona)
    events = []
    result = distill(spec(), models=model, db=tmp_path / "s.duckdb", seed=11, on_event=events.append)
    assert result.mode == "distilled" and result.status == "completed" and result.seed == 11
    # one scored call per juror and the shared calibration prior (MINIMAL: 3 option orders each); nothing generated
    assert all(r.choices for r in model.history)
    assert len(model.history) == 6 * 3
    first = model.history[0].messages  # the default prompt: the full mode's post-ballot, with the testimony digest
    assert "Expert testimony:\nAda Planner (town planner): Pedestrian squares raise footfall." in first[0].content
    assert first[1].content.startswith("Who you are:\nYou are ") and "after the deliberation" in first[2].content
    assert sum(result.post_counts.values()) == 6 and not result.pre_counts and result.abstentions == {"post": 0}
    assert result.verdict.winner == result.tallies[0]["winner"]
    assert result.verdict.winner in result.verdict.text and "no deliberation was simulated" in result.verdict.text
    assert result.usage.calls == len(model.history) and result.usage.input_tokens >= 0

    store = Store(tmp_path / "s.duckdb")
    run = store.run(result.run_id)
    assert run["status"] == "completed" and run["summary"]["mode"] == "distilled"
    ballots = store.sql("SELECT phase, status, probabilities FROM ballots WHERE run_id = ?", [result.run_id])
    assert ballots["phase"].unique().to_list() == ["post"] and ballots["status"].unique().to_list() == ["valid"]
    assert ballots.height == 6 and ballots["probabilities"].null_count() == 0
    tallies = store.sql("SELECT phase, rule FROM tallies WHERE run_id = ? ORDER BY rule", [result.run_id]).rows()
    assert tallies == [("post", "majority"), ("post", "plurality")]
    turns = store.sql("SELECT phase FROM turns WHERE run_id = ? ORDER BY seq", [result.run_id])["phase"].to_list()
    assert turns[0] == "verdict" and set(turns) <= {"verdict", "minority"}
    assert {e["kind"] for e in events} >= {"phase", "ballot"}


def test_the_compact_prompt_states_attributes_plainly_and_is_shorter(tmp_path):
    """procedure.distilled_prompt: compact: a short preamble with the question and testimony, the juror's attributes
    instead of the prose persona, then the options; calibrated on the same prompt without persona or testimony."""
    calls, priors = {}, {}
    for form in ("ballot", "compact", "brief"):
        data = spec()
        data["procedure"].update(distilled_prompt=form, calibration="neutral")
        model = ScriptedModel(scores=by_persona)
        result = distill(data, models=model, db=tmp_path / f"{form}.duckdb", seed=11)
        calls[form] = [r.messages for r in model.history if r.tags.get("participant") != "neutral-prior"]
        priors[form] = [r.messages for r in model.history if r.tags.get("participant") == "neutral-prior"]
        # what the run asks is what a distilled_ballot example for this juror is written in
        juror = result.jurors[0]
        asked = next(r.messages for r in model.history if r.tags.get("participant") == juror.id)
        persona = next(p for p in draw_jurors(data, 11) if p.id == juror.id).persona.text
        assert [m.model_dump() for m in asked] == [m.model_dump() for m in distilled_ballot_messages(
            persona=persona, attributes=juror.attributes, question=result.question, options=OPTIONS,
            ballot_type="single", witnesses=data["witnesses"], background=data["background"], prompt=form)]
    # each form is calibrated on its own prompt with no persona and no testimony (one call per option order)
    assert [m.model_dump() for m in priors["ballot"][0]] == [m.model_dump() for m in neutral_messages(
        question=result.question, options=OPTIONS, ballot_type="single", background=spec()["background"])]
    first = calls["compact"][0]
    assert "has deliberated" in first[0].content and f"Question: {result.question}" in first[0].content
    assert "Expert testimony:\n- Ada Planner (town planner): Pedestrian squares raise footfall." in first[0].content
    assert first[1].content.startswith("Who you are:\nParty: ") and "You are " not in first[1].content
    assert first[2].content.startswith("Choose exactly one option:\n- ")
    compact = priors["compact"]
    assert len(compact) == 3 and all(len(m) == 2 and "Expert testimony" not in m[0].content for m in compact)
    assert compact[0][0].content == first[0].content.split("\n\nExpert testimony:")[0]
    assert [m.model_dump() for m in compact[0]] == [m.model_dump() for m in distilled_prior_messages(
        question=result.question, options=OPTIONS, ballot_type="single", background=spec()["background"],
        prompt="compact")]

    def size(messages):
        return sum(len(m.content) for m in messages)

    assert len(calls["compact"]) == len(calls["ballot"])
    assert sum(map(size, calls["compact"])) < 0.8 * sum(map(size, calls["ballot"]))


def test_the_brief_prompt_shares_everything_but_the_juror(tmp_path):
    """procedure.distilled_prompt: brief: the question, testimony and options come first, the same for the whole
    jury in one option order; each juror's own part is their attributes on one line and the answer cue."""
    from assembly.distilled import BUILDERS, PROMPTS

    assert set(BUILDERS) == set(PROMPTS)  # every procedure.distilled_prompt has its builder
    data = spec()
    data["procedure"].update(distilled_prompt="brief", calibration="neutral")
    model = ScriptedModel(scores=by_persona)
    result = distill(data, models=model, db=tmp_path / "brief.duckdb", seed=11)
    asked = {r.tags.get("participant"): r.messages for r in model.history}
    first = asked[result.jurors[0].id]
    assert "Expert testimony:\n- Ada Planner (town planner): Pedestrian squares raise footfall." in first[0].content
    listed = first[0].content.split("Choose exactly one option:\n")[1].split("\n")
    assert sorted(listed) == sorted(f"- {o}" for o in OPTIONS)  # the options, last in the shared part
    assert first[1].content == "Who you are:\n" + plain_persona(result.jurors[0].attributes, labels=False)
    assert "\n" not in first[1].content.removeprefix("Who you are:\n") and first[2].content == "Your answer:"
    # one shared first message per option order, whoever the juror; the prior is it with no persona and no testimony
    jurors = [r.messages for r in model.history if r.tags.get("participant") != "neutral-prior"]
    assert len(jurors) == 6 * 3 and len({m[0].content for m in jurors}) == 3
    prior = next(r.messages for r in model.history if r.tags.get("participant") == "neutral-prior")
    assert [m.model_dump() for m in prior] == [m.model_dump() for m in distilled_prior_messages(
        question=result.question, options=OPTIONS, ballot_type="single", background=spec()["background"],
        prompt="brief")]
    assert len(prior) == 2 and "Expert testimony" not in prior[0].content and prior[1].content == "Your answer:"


def test_distilled_votes_are_drawn_like_the_full_modes(tmp_path):
    """Same seed, same juror distributions: the distilled votes are the full mode's post votes (common random
    numbers), so the two modes differ only where the predicted distributions differ."""
    from assembly.deliberation import deliberate

    model = ScriptedModel(scores=by_persona)
    full = deliberate(spec(), models=model, db=tmp_path / "f.duckdb", seed=3)
    fast = distill(spec(), models=ScriptedModel(scores=by_persona), db=tmp_path / "d.duckdb", seed=3)
    assert {j.id: j.post for j in fast.jurors} == {j.id: j.post for j in full.jurors}
    assert fast.post_counts == full.post_counts
    flipped = distill(spec(), models=ScriptedModel(scores=lambda r: {o: 1 / 3 for o in OPTIONS}),
                      db=tmp_path / "d.duckdb", seed=3)
    assert flipped.post_counts != full.post_counts or flipped.tallies[0]["expected"] != fast.tallies[0]["expected"]


def test_a_model_that_cannot_score_is_refused_before_anything_is_recorded(tmp_path):
    from transcripts import Store

    with pytest.raises(DistilledUnavailable, match="cannot score options"):
        distill(spec(), models=ScriptedModel(scores_options=False), db=tmp_path / "s.duckdb")
    assert Store(tmp_path / "s.duckdb").sql("SELECT count(*) FROM runs").item() == 0


class Failing(ScriptedModel):
    """Fails its first call: with a model error, or as Ctrl-C does (SIGINT: asyncio.run cancels the main task)."""

    def __init__(self, error: BaseException | None):
        super().__init__(scores=by_persona)
        self.error = error
        self.pressed = False

    async def generate(self, request):
        if self.error is None:
            import os
            import signal

            if not self.pressed:  # one press: a second one makes asyncio.run raise at once, as it should
                self.pressed = True
                os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(5)
        raise self.error


@pytest.mark.parametrize("mode", ["full", "distilled"])
def test_both_modes_record_failure_and_interruption_the_same_way(tmp_path, mode, ctrl_c):
    from assembly.deliberation import adeliberate
    from assembly.errors import AssemblyError
    from assembly.providers.types import ModelError
    from transcripts import Store

    conduct = adistill if mode == "distilled" else adeliberate
    db = tmp_path / f"{mode}.duckdb"
    with pytest.raises(AssemblyError, match="model error: out of memory"):
        asyncio.run(conduct(spec(), models=Failing(ModelError("out of memory")), db=db))
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(conduct(spec(), models=Failing(None), db=db))
    rows = Store(db).sql("SELECT status, reason FROM runs ORDER BY started_at").rows()
    assert rows == [("failed", "model error: out of memory"), ("interrupted", "interrupted by the user")]


@pytest.mark.parametrize("form", ["ballot", "compact"])
def test_distilled_ballot_examples_come_from_recorded_post_ballots(tmp_path, form):
    """`finetune prepare --types distilled_ballot`: the distilled prompt -> the full run's recorded post-ballot
    distribution, options in a seeded order of their own; distilled runs themselves are left out."""
    from assembly.deliberation import deliberate
    from finetune.dataset import PrepareOptions, build_examples
    from transcripts import Store

    db = tmp_path / "s.duckdb"
    full = deliberate(spec(), models=ScriptedModel(scores=by_persona), db=db, seed=3)
    distill(spec(), models=ScriptedModel(scores=by_persona), db=db, seed=4)
    store = Store(db)
    examples = build_examples(store, PrepareOptions(validation=0, types=("distilled_ballot",), distilled_prompt=form))
    assert len(examples) == 6 and {e["run_id"] for e in examples} == {full.run_id}
    recorded = {r["participant_id"]: r for r in store.sql(
        "SELECT participant_id, probabilities, p.persona, p.attributes FROM ballots b JOIN participants p "
        "ON p.id = b.participant_id AND p.run_id = b.run_id WHERE b.run_id = ? AND phase = 'post'",
        [full.run_id]).iter_rows(named=True)}
    described = {pid: r["persona"] if form == "ballot" else plain_persona(json.loads(r["attributes"]))
                 for pid, r in recorded.items()}
    orders = set()
    for e in examples:
        target = e["target"]
        shown = target["choices"]
        orders.add(tuple(shown))
        assert [OPTIONS[i] for i in target["order"]] == shown
        juror = next(pid for pid, text in described.items() if e["messages"][1]["content"].endswith(text))
        probabilities = json.loads(recorded[juror]["probabilities"])
        assert target["distribution"] == pytest.approx([probabilities[o] for o in shown])
        expected = distilled_ballot_messages(
            persona=recorded[juror]["persona"], attributes=json.loads(recorded[juror]["attributes"]),
            question=full.question, options=shown, ballot_type="single", witnesses=spec()["witnesses"],
            background=spec()["background"], prompt=form)
        assert e["messages"][:-1] == [m.model_dump() for m in expected]
        # and the calibration prior's prompt, for training on the calibrated distribution (TrainConfig.calibrated):
        # the prompt the distilled run divides by
        assert target["prior_messages"] == [m.model_dump() for m in distilled_prior_messages(
            question=full.question, options=shown, ballot_type="single", background=spec()["background"],
            prompt=form)]
        assert e["messages"][-1]["content"] in shown
    assert len(orders) > 1  # shuffled per example
    fixed = build_examples(store, PrepareOptions(validation=0, types=("distilled_ballot",), shuffle_options=False))
    assert {tuple(e["target"]["choices"]) for e in fixed} == {tuple(OPTIONS)}


def test_distilled_runs_teach_another_distilled_prompt_only(tmp_path):
    """Context distillation: with `include_distilled`, a distilled run asked in the `ballot` prompt gives compact
    examples whose targets are its recorded (calibrated) answers; in its own prompt it teaches nothing."""
    from finetune.config import EXAMPLE_TYPES
    from finetune.dataset import PrepareOptions, build_examples
    from transcripts import Store

    db = tmp_path / "s.duckdb"
    data = spec()
    data["procedure"]["calibration"] = "neutral"
    teacher = distill(data, models=ScriptedModel(scores=by_persona), db=db, seed=4)
    store = Store(db)

    def examples(form, include, types=("distilled_ballot",)):
        return build_examples(store, PrepareOptions(validation=0, types=types, distilled_prompt=form,
                                                    include_distilled=include))

    assert examples("compact", False) == [] and examples("ballot", True) == []
    # nothing else is built from a distilled run: its calls are the model's own answers in its own prompt
    assert {e["type"] for e in examples("compact", True, types=EXAMPLE_TYPES)} == {"distilled_ballot"}
    taught = examples("compact", True)
    recorded = {r["attributes"]: json.loads(r["probabilities"])
                for r in store.sql(
                    "SELECT probabilities, p.attributes FROM ballots b JOIN participants p ON p.id = b.participant_id "
                    "AND p.run_id = b.run_id WHERE b.run_id = ? AND phase = 'post'", [teacher.run_id]
                ).iter_rows(named=True)}
    assert len(taught) == 6 and {e["run_id"] for e in taught} == {teacher.run_id}
    for e in taught:
        juror = next(key for key in recorded if e["messages"][1]["content"].endswith(plain_persona(json.loads(key))))
        shown = e["target"]["choices"]
        assert e["target"]["distribution"] == pytest.approx([recorded[juror][o] for o in shown])
        assert "Party:" in e["messages"][1]["content"]  # asked in the compact prompt, not the teacher's
        assert e["target"]["prior_messages"] == [m.model_dump() for m in distilled_prior_messages(
            question=teacher.question, options=shown, ballot_type="single", background=data["background"],
            prompt="compact")]  # and calibrated by the student's own prior, as a compact run is
    # and from the command line, in the brief prompt
    import typer
    from typer.testing import CliRunner

    from finetune import cli

    app = typer.Typer()
    app.command("prepare")(cli.prepare)
    app.command("train")(cli.train)
    store.close()
    flags = ["prepare", "--db", str(db), "--types", "distilled_ballot", "--validation", "0", "--json",
             "--distilled-prompt", "brief"]
    taught = CliRunner().invoke(app, [*flags, "--out", str(tmp_path / "b"), "--include-distilled"])
    assert taught.exit_code == 0, taught.output
    assert json.loads(taught.stdout)["examples"]["train"] == {"distilled_ballot": 6}
    alone = CliRunner().invoke(app, [*flags, "--out", str(tmp_path / "c")])
    assert isinstance(alone.exception, cli.FinetuneCliError) and "no training examples" in str(alone.exception)
