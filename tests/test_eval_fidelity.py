"""The fidelity runner end to end with scripted models that answer by persona, so R and steerability are predictable."""

import asyncio
import json
import math

import numpy as np
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from assembly.evaluation import fidelity
from assembly.evaluation.config import EvalConfig
from assembly.evaluation.fidelity import evaluate_survey
from assembly.evaluation.panels import PanelError, seat_panel
from assembly.evaluation.selection import select_questions
from assembly.evaluation.summary import summarise
from assembly.evaluation.survey import COLUMNS, SurveyFormatError, read_survey
from assembly.providers.base import Model
from assembly.providers.scripted import ScriptedModel
from assembly.providers.types import GenerateResponse
from juries.population import Population

# Human answers: Democrats mostly Yes, Republicans mostly No.
HUMAN = {
    "Q1": (["Yes", "No"], {("overall", "all"): [55, 45], ("party", "Democrat"): [80, 20],
                           ("party", "Republican"): [30, 70], ("party", "Independent"): [50, 50]}),
    "Q2": (["Red", "Green", "Blue"], {("overall", "all"): [4, 4, 2], ("party", "Democrat"): [6, 2, 2],
                                      ("party", "Republican"): [2, 6, 2]}),
}


def write_fixture(path, human=HUMAN):
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for qid, (options, groups) in human.items():
            for (attribute, group), counts in groups.items():
                for option, count in zip(options, counts):
                    w.writerow([qid, f"Question {qid}?", json.dumps(options), attribute, group, option, count])
    return path


@pytest.fixture
def population():
    return Population(pl.DataFrame({
        "party": ["Democrat", "Democrat", "Republican", "Republican", "Independent"],
        "ideology": ["Liberal", "Moderate", "Conservative", "Moderate", "Moderate"],
        "weight": [3.0, 1.0, 3.0, 1.0, 2.0],
    }), name="toy")


def persona(attributes, seed):
    return f"You are a {attributes['party']} ({attributes['ideology']}). [persona seed {seed}]"


SIM = {"Democrat": [0.8, 0.2], "Republican": [0.2, 0.8]}
FILE_ORDER = {o: i for options, _ in HUMAN.values() for i, o in enumerate(options)}


class PersonaModel(Model):
    """Scores options: P(options) by the party named in the system prompt, uniform without a party. The
    probabilities belong to the options in the file's order, whatever order they are shown in (the eval scores
    each ballot under several orders), so the order-averaged distribution is the scripted one."""

    name = "test:persona"
    scores_options = True

    def __init__(self):
        self.batches = []
        self.in_flight = 0

    async def generate(self, request):
        self.in_flight += 1
        await asyncio.sleep(0)  # let every concurrent call start: the runner must fire a question's calls at once
        self.batches.append(self.in_flight)
        self.in_flight -= 1
        persona = "\n".join(m.content for m in request.messages)
        k = len(request.choices)
        probs = next((p for party, p in SIM.items() if party in persona), None)
        if probs is None or k != 2:
            probs = [1.0 / k] * k if probs is None else ([0.6, 0.2, 0.2] if "Democrat" in persona else [0.2, 0.6, 0.2])
        in_file_order = sorted(request.choices, key=FILE_ORDER.__getitem__)
        logprobs = {c: math.log(p) for c, p in zip(in_file_order, probs)}
        best = max(logprobs, key=logprobs.get)
        return GenerateResponse(text=best, model=self.name, choice=best, choice_logprobs=logprobs)


def run(survey, model, population, **config):
    cfg = EvalConfig(**{"jurors_per_group": 4, "seed": 1, "option_orders": 3, "calibration": "none", **config})
    return asyncio.run(evaluate_survey(survey, model, cfg, population=population, persona_fn=persona))


def test_scoring_backend_gives_predicted_r_and_steerability(tmp_path, population):
    survey = read_survey(write_fixture(tmp_path / "s.csv"), nominal_ids={"Q2"})
    model = PersonaModel()
    result = run(survey, model, population)
    summary = summarise(result)
    groups = {g["group"]: g for g in summary["groups"]}
    # Q1 only for R (Q2 is nominal): Democrat sim (.8,.2) vs human (.8,.2) -> 1; Republican (.2,.8) vs (.3,.7) -> .9
    assert groups["Democrat"]["R"] == pytest.approx(1.0)
    assert groups["Republican"]["R"] == pytest.approx(0.9)
    assert groups["Independent"]["R"] == pytest.approx(1.0)  # uniform sim vs (.5,.5)
    # no-persona prompt -> uniform: Democrat R = 1 - .3 = .7, Republican 1 - .2 = .8
    assert groups["Democrat"]["R_no_persona"] == pytest.approx(0.7)
    assert groups["Republican"]["R_no_persona"] == pytest.approx(0.8)
    # human baselines from the file: uniform .7 / .8; overall (.55,.45) -> .75 / .75
    assert groups["Democrat"]["R_uniform"] == pytest.approx(0.7)
    assert groups["Democrat"]["R_overall"] == pytest.approx(0.75)
    assert groups["Republican"]["R_overall"] == pytest.approx(0.75)
    # TV averages both questions: Democrat Q1 0, Q2 (.6,.2,.2) vs (.6,.2,.2) -> 0
    assert groups["Democrat"]["TV"] == pytest.approx(0.0)
    assert groups["Republican"]["TV"] == pytest.approx((0.1 + 0.0) / 2)
    # ignore-persona: the population panel's mean, predicted from who was drawn
    pop = result.panels["population"]
    expected = np.mean([SIM.get(j.attributes["party"], [0.5, 0.5]) for j in pop], axis=0)
    assert groups["Democrat"]["R_ignore_persona"] == pytest.approx(1 - abs(expected[0] - 0.8))
    # steerability: Dem 1 - (1 - .5) = .5; Rep .9 - (1 - .6) = .5
    (steer,) = summary["steerability"]
    assert (steer["group_a"], steer["group_b"]) == ("Democrat", "Republican")
    assert steer["steer_a"] == pytest.approx(0.5)
    assert steer["steer_b"] == pytest.approx(0.5)
    assert steer["steerability"] == pytest.approx(0.5)
    assert steer["R_between_sim"] == pytest.approx(0.4)
    assert steer["R_between_human"] == pytest.approx(0.5)
    assert steer["shift_direction_agreement"] == 1.0
    assert summary["attributes"]["party"]["R"] == pytest.approx((1.0 + 0.9 + 1.0) / 3)
    assert summary["invalid_rate"] == 0.0
    # ballots: Q1 3 groups x 4 + population 4 + no-persona 1; Q2 2 groups x 4 + 4 + 1. Calls are model calls: each
    # ballot is scored under the default 3 option orders, of which 2 exist for Q1's two options
    assert summary["ballots"] == 17 + 13
    assert summary["calls"] == 17 * 2 + 13 * 3
    assert summary["calls_per_ballot"] == pytest.approx((17 * 2 + 13 * 3) / 30, abs=1e-3)
    # every call of a question was in flight together (batching): the larger question is now Q2, 13 ballots x 3
    # orders (Q1: 17 x 2)
    assert max(model.batches) == 13 * 3
    json.dumps(summary)  # serialisable


def test_group_attribute_always_holds_and_panels_are_reused(tmp_path, population):
    survey = read_survey(write_fixture(tmp_path / "s.csv"))
    model = ScriptedModel(choose=lambda r: r.choices[0])
    result = run(survey, model, population, jurors_per_group=6)
    for label, jurors in result.panels.items():
        if label != "population":
            attribute, group = label.split("=")
            assert all(j.attributes[attribute] == group for j in jurors)
            assert len({j.seed for j in jurors}) == len(jurors)  # a persona seed per juror
    # the same jurors sat for both questions: each juror's system prompt appears once per question and option order
    # it was asked in (the default 3 orders: 2 exist for Q1's two options, 3 for Q2's three)
    prompts = ["\n".join(m.content for m in r.messages) for r in model.history]
    dem = [j.persona for j in result.panels["party=Democrat"]]
    assert all(sum(p in prompt for prompt in prompts) == 2 + 3 for p in dem)


def test_scripted_model_by_persona(tmp_path, population):
    """ScriptedModel choosing 'Yes' for Democrats, 'No' otherwise: p(choice) = 1 / (1 + e^-5)."""
    human = {"Q1": HUMAN["Q1"]}
    survey = read_survey(write_fixture(tmp_path / "s.csv", human))
    model = ScriptedModel(choose=lambda r: "Yes" if "Democrat" in r.messages[1].content else "No")
    summary = summarise(run(survey, model, population, attributes=["party"]))
    p = 1 / (1 + math.exp(-5))
    groups = {g["group"]: g for g in summary["groups"]}
    assert groups["Democrat"]["R"] == pytest.approx(1 - abs(p - 0.8))
    assert groups["Republican"]["R"] == pytest.approx(1 - abs((1 - p) - 0.3))
    steer = summary["steerability"][0]
    assert steer["steer_a"] == pytest.approx((1 - abs(p - 0.8)) - (1 - abs(p - 0.3)))


def test_sampled_ballots_and_invalid_rate(tmp_path, population):
    """A backend without scoring: JSON ballots count one vote each; unparseable replies become invalid."""

    def reply(request):
        persona = "\n".join(m.content for m in request.messages)
        if "Democrat" in persona:
            return '{"choice": "Yes", "reason": "r"}'
        if "Republican" in persona:
            return '{"choice": "no", "reason": "r"}'  # case-insensitive match is accepted
        return "I would rather not say."

    survey = read_survey(write_fixture(tmp_path / "s.csv", {"Q1": HUMAN["Q1"]}))
    model = ScriptedModel(reply, scores_options=False)
    summary = summarise(run(survey, model, population, attributes=["party"]))
    groups = {g["group"]: g for g in summary["groups"]}
    assert groups["Democrat"]["R"] == pytest.approx(0.8)  # (1,0) vs (.8,.2)
    assert groups["Republican"]["R"] == pytest.approx(0.7)  # (0,1) vs (.3,.7)
    assert groups["Independent"]["R"] is None and groups["Independent"]["invalid_rate"] == 1.0
    assert groups["Democrat"]["invalid_rate"] == 0.0
    assert groups["Democrat"]["R_no_persona"] is None  # the persona-less prompt never answered validly
    assert 0 < summary["invalid_rate"] < 1
    # re-asks happened (3 attempts per invalid juror): calls count model calls now, re-asks included
    assert summary["ballots"] < summary["calls"] == len(model.history)


class Ballots(fidelity.EvalHooks):
    """Keeps every ballot by panel."""

    def __init__(self):
        self.by_panel = {}

    def on_ballot(self, question, panel, juror, ballot):
        self.by_panel.setdefault(panel, []).append(ballot)


def run_q1(tmp_path, population, model, **config):
    survey = read_survey(write_fixture(tmp_path / "s.csv", {"Q1": HUMAN["Q1"]}))
    cfg = EvalConfig(**{"jurors_per_group": 15, "seed": 1, "attributes": ["party"], "groups": ["Democrat"],
                        "option_orders": 3, "calibration": "none", **config})
    hooks = Ballots()
    result = asyncio.run(evaluate_survey(survey, model, cfg, population=population, persona_fn=persona, hooks=hooks))
    return result, hooks.by_panel


def test_r_sampled_scores_the_tally_of_the_drawn_votes(tmp_path, population):
    """Every juror's distribution is (.7, .3): R pools it exactly; R_sampled scores the 15 votes drawn from it."""
    model = ScriptedModel(scores=lambda r: {"Yes": 0.7, "No": 0.3})
    result, ballots = run_q1(tmp_path, population, model)
    (record,) = result.records
    assert record["R"] == pytest.approx(1 - abs(0.7 - 0.8))
    yes = sum(b.choice == "Yes" for b in ballots["party=Democrat"]) / 15
    assert 0 < yes < 1  # the jurors split: their votes are draws, not the mode
    assert record["sampled"] == pytest.approx([yes, 1 - yes])
    assert record["R_sampled"] == pytest.approx(1 - abs(yes - 0.8))  # human Democrats: (.8, .2)
    assert record["TV_sampled"] == pytest.approx(abs(yes - 0.8))
    assert record["R_sampled"] != pytest.approx(record["R"])  # 15 votes can never make .7
    (group,) = summarise(result)["groups"]
    assert group["R_sampled"] == pytest.approx(record["R_sampled"]) and group["TV_sampled"] == record["TV_sampled"]
    # vote="mode": every juror votes Yes, so the tally is (1, 0)
    result, _ = run_q1(tmp_path, population, model, vote="mode")
    assert result.records[0]["R_sampled"] == pytest.approx(0.8) and result.records[0]["R"] == pytest.approx(0.9)


def first_listed(request):
    """A model that favours whichever answer is listed first."""
    return {c: 0.6 if i == 0 else 0.4 for i, c in enumerate(request.choices)}


def test_position_bias_and_order_averaging(tmp_path, population):
    result, _ = run_q1(tmp_path, population, ScriptedModel(scores=first_listed), option_orders=2)
    summary = summarise(result)
    # each ballot shown both orders: .6 on the first-listed answer, .5 once averaged over orders
    assert summary["position_bias"] == {"first": 0.6, "expected": 0.5, "ratio": 1.2, "ballots": summary["ballots"]}
    assert summary["option_orders"] == 2 and summary["calls_per_ballot"] == 2
    assert result.records[0]["R"] == pytest.approx(1 - abs(0.5 - 0.8))  # the position effect averaged away
    single, _ = run_q1(tmp_path, population, ScriptedModel(scores=first_listed), option_orders=1)
    assert summarise(single)["position_bias"] is None and summarise(single)["calls_per_ballot"] == 1
    assert single.records[0]["R"] == pytest.approx(1 - abs(0.6 - 0.8))  # Yes, listed first, kept its edge


def test_neutral_calibration_prior_once_per_question(tmp_path, population):
    model = ScriptedModel(scores=first_listed)
    result, ballots = run_q1(tmp_path, population, model, option_orders=2, calibration="neutral")
    # the prior has the same lean as every juror, so dividing it out leaves (.5, .5)
    assert result.records[0]["R"] == pytest.approx(0.7)
    # 2 orders per ballot, and the no-persona prior once per order for the whole question (not per juror)
    assert result.calls == 2 * result.ballots + 2
    assert all(b.detail["calibration"] == "neutral" for bs in ballots.values() for b in bs)


def test_unseatable_group_is_skipped(tmp_path, population):
    human = {"Q1": (["Yes", "No"], {("party", "Democrat"): [8, 2], ("party", "Green"): [5, 5]})}
    survey = read_survey(write_fixture(tmp_path / "s.csv", human))
    summary = summarise(run(survey, PersonaModel(), population))
    assert "party=Green" in summary["skipped_groups"]
    assert [g["group"] for g in summary["groups"]] == ["Democrat"]
    assert summary["overall"] is None  # no overall row in this file


def test_select_questions(tmp_path):
    human = {f"Q{i}": HUMAN["Q1"] for i in range(10)}
    survey = read_survey(write_fixture(tmp_path / "s.csv", human))
    a = select_questions(survey, questions="3", seed=5)
    assert len(a) == 3 and list(a.questions) == [q for q in survey.questions if q in a.questions]
    assert list(select_questions(survey, questions="3", seed=5).questions) == list(a.questions)
    assert list(select_questions(survey, questions="Q7,Q2").questions) == ["Q7", "Q2"]
    split = select_questions(survey, split_ids=["Q1", "Q4", "Q99"])
    assert list(split.questions) == ["Q1", "Q4"]
    with pytest.raises(SurveyFormatError, match="not in the split: Q5"):
        select_questions(survey, split_ids=["Q1", "Q4"], questions="Q5")


def test_conditional_sampling_follows_the_frame(population):
    jurors = seat_panel(population, 4000, where={"party": "Democrat"}, seed=0, label="party=Democrat",
                        persona_fn=persona)
    assert all(j.attributes["party"] == "Democrat" for j in jurors)
    liberal = np.mean([j.attributes["ideology"] == "Liberal" for j in jurors])
    assert liberal == pytest.approx(0.75, abs=0.03)  # P(Liberal | Democrat) = 3 / 4 in the frame


def test_conditional_sampling_builtin_frame():
    from juries import load_population

    frame = load_population("us_adults")
    jurors = seat_panel(frame, 3000, where={"ideology": "Very conservative"}, seed=3, label="x",
                        persona_fn=lambda a, s: "")
    assert all(j.attributes["ideology"] == "Very conservative" for j in jurors)
    # the other attributes follow the frame's conditional distribution
    mask = frame.mask({"ideology": "Very conservative"}) * frame.weights
    codes = frame.codes("party")
    groups = frame.groups("party")
    expected = np.bincount(codes, weights=mask, minlength=len(groups)) / mask.sum()
    drawn = np.array([np.mean([j.attributes["party"] == g for j in jurors]) for g in groups])
    np.testing.assert_allclose(drawn, expected, atol=0.03)
    with pytest.raises(PanelError):
        seat_panel(frame, 2, where={"party": "Whig"}, seed=0, label="y", persona_fn=lambda a, s: "")


# --- CLI ------------------------------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, population):
    from assembly.cli.eval import survey as survey_command
    from assembly.providers.registry import ModelPool

    monkeypatch.setattr(ModelPool, "get", lambda self, spec: PersonaModel())
    monkeypatch.setattr(fidelity, "_default_population", lambda name: population)
    monkeypatch.setattr(fidelity, "_default_persona", persona)
    app = typer.Typer()
    app.command()(survey_command)
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


def test_cli_json(tmp_path, cli):
    path = write_fixture(tmp_path / "s.csv")
    out = cli(path, "--json", "--jurors-per-group", "3", "--attributes", "party", "--write-sim", tmp_path / "sim.csv",
              "--details")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    for key in ("schema", "file", "model", "mode", "seed", "jurors_per_group", "n_questions", "question_ids",
                "attributes", "groups", "steerability", "overall", "skipped_groups", "calls", "ballots",
                "invalid_rate", "wall_s", "ballots_per_s", "records", "pairs"):
        assert key in data
    assert data["attributes"]["party"]["n_groups"] == 3
    sim = read_survey(tmp_path / "sim.csv")
    assert ("party", "Democrat") in sim.questions["Q1"].distributions
    assert sim.questions["Q1"].distributions[("party", "Democrat")].n == pytest.approx(3)


def test_cli_table(tmp_path, cli):
    out = cli(write_fixture(tmp_path / "s.csv"), "-n", "2", "--questions", "Q1")
    assert out.exit_code == 0, out.output
    assert "Democrat" in out.stdout and "Steerability" in out.stdout


def test_cli_procedure_flags(tmp_path, cli):
    out = cli(write_fixture(tmp_path / "s.csv"), "--json", "--details", "-n", "2", "--option-orders", "1",
              "--vote", "mode", "--calibration", "neutral")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert (data["option_orders"], data["vote"], data["calibration"]) == (1, "mode", "neutral")
    assert data["position_bias"] is None  # one order: no position diagnostic
    assert data["calls_per_ballot"] > 1  # the calibration prior's calls count too
    assert all("R_sampled" in r and "TV_sampled" in r for r in data["records"])
    assert all("R_sampled" in g and "R_sampled_se" in g for g in data["groups"])
    table = cli(write_fixture(tmp_path / "s.csv"), "-n", "2", "--questions", "Q1", "--option-orders", "2")
    assert table.exit_code == 0, table.output
    assert "R smp" in table.stdout and "Option position" in table.stdout and "per ballot" in table.stdout


@pytest.mark.parametrize("flag, value", [("--option-orders", "0"), ("--option-orders", "99"),
                                         ("--calibration", "prior"), ("--vote", "argmax")])
def test_cli_procedure_flag_errors_are_one_line(tmp_path, cli, flag, value):
    out = cli(write_fixture(tmp_path / "s.csv"), flag, value)
    assert out.exit_code != 0
    assert flag in out.stderr and out.stderr.strip().count("\n") == 0


def test_cli_errors_are_one_line(tmp_path, cli):
    bad = tmp_path / "bad.csv"
    bad.write_text("question_id,question,options,attribute,group,option\n")
    out = cli(bad)
    assert out.exit_code == 2
    assert "missing column(s) count" in out.stderr and out.stderr.strip().count("\n") == 0
    out = cli(write_fixture(tmp_path / "s.csv"), "--attributes", "religion")
    assert out.exit_code == 2 and "--attributes: religion not in" in out.stderr
    split = tmp_path / "split.json"
    split.write_text('{"train": ["Q1"]}')
    out = cli(write_fixture(tmp_path / "s.csv"), "--split", split)
    assert out.exit_code == 2 and "no such split" in out.stderr
