"""Votes that carry the jurors' opinions: draws from the distribution, common random numbers, option orders,
calibration, itemised approval, and expected tallies with verdict stability."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import pytest
import yaml

from assembly import deliberate
from assembly.ballot import Ballot
from assembly.ballot_types import KINDS, draws_for, kind_of
from assembly.casting import BallotProcedure, NeutralPriors, cast_ballot, option_orders, position_bias
from assembly.config import parse_spec
from assembly.errors import SpecError
from assembly.providers.scripted import ScriptedModel
from assembly.providers.types import ModelError
from assembly.stability import expected_results
from tests.conftest import MINIMAL

OPTIONS = ["Ban cars", "Keep access", "Ban only in summer"]
P = {"Ban cars": 0.5, "Keep access": 0.3, "Ban only in summer": 0.2}


def fixed(distribution):
    """A scoring model whose juror distribution is `distribution` whatever the order or persona."""
    return ScriptedModel(scores=lambda r: distribution)


def cast(model, seed, **kw):
    kw.setdefault("procedure", BallotProcedure(option_orders=3, calibration="none"))
    return asyncio.run(cast_ballot(model, juror_id="j", persona="A voter.", question="Q?", options=OPTIONS,
                                   seed=1, vote_seed=seed, **kw))


def within_binomial(count: int, n: int, p: float, z: float = 4.0) -> bool:
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p))


def test_single_votes_follow_the_distribution_within_binomial_tolerance():
    n = 2000
    votes = Counter(KINDS["single"].vote(P, OPTIONS, draws_for(seed, 3), "sample")["choice"] for seed in range(n))
    for option, p in P.items():
        assert within_binomial(votes[option], n, p), (option, votes[option])
    # through the caster too (scored under three orders, then drawn): same law
    model = fixed(P)
    cast_votes = Counter(cast(model, seed).choice for seed in range(300))
    for option, p in P.items():
        assert within_binomial(cast_votes[option], 300, p), (option, cast_votes[option])


def test_mode_is_the_argmax_and_ties_go_to_the_first_listed_option():
    assert KINDS["single"].vote(P, OPTIONS, draws_for(0, 3), "mode") == {"choice": "Ban cars"}
    even = dict.fromkeys(OPTIONS, 1 / 3)
    assert KINDS["single"].vote(even, OPTIONS, draws_for(0, 3), "mode") == {"choice": "Ban cars"}
    assert KINDS["ranked"].vote(P, OPTIONS, draws_for(0, 3), "mode") == {"ranking": OPTIONS}


def test_ranked_votes_are_plackett_luce_draws():
    n = 3000
    rankings = [tuple(KINDS["ranked"].vote(P, OPTIONS, draws_for(s, 3), "sample")["ranking"]) for s in range(n)]
    assert all(sorted(r) == sorted(OPTIONS) for r in rankings)
    first = Counter(r[0] for r in rankings)
    for option, p in P.items():
        assert within_binomial(first[option], n, p)
    # Plackett–Luce: P(A, B, C) = pA * pB / (1 - pA)
    exact = P["Ban cars"] * P["Keep access"] / (1 - P["Ban cars"])
    assert within_binomial(rankings.count(tuple(OPTIONS)), n, exact)


def test_approval_draws_each_option_with_its_own_probability():
    approve = {"Ban cars": 0.9, "Keep access": 0.1, "Ban only in summer": 0.5}
    n = 2000
    counts = Counter(o for s in range(n) for o in KINDS["approval"].vote(approve, OPTIONS, draws_for(s, 3),
                                                                            "sample")["approvals"])
    for option, p in approve.items():
        assert within_binomial(counts[option], n, p)
    assert KINDS["approval"].vote(approve, OPTIONS, draws_for(0, 3), "mode") == {
        "approvals": ["Ban cars", "Ban only in summer"]}


def test_common_random_numbers_keep_a_vote_unless_the_distribution_moved_past_the_draw():
    single = KINDS["single"]
    moved = 0
    for seed in range(500):
        before = single.vote(P, OPTIONS, draws_for(seed, 3), "sample")["choice"]
        assert single.vote(P, OPTIONS, draws_for(seed, 3), "sample")["choice"] == before  # unchanged: same vote
        nudged = {"Ban cars": 0.55, "Keep access": 0.25, "Ban only in summer": 0.2}
        after = single.vote(nudged, OPTIONS, draws_for(seed, 3), "sample")["choice"]
        moved += after != before
        if after != before:  # only mass moving to Ban cars can change a vote, and only from Keep access
            assert (before, after) == ("Keep access", "Ban cars")
    assert within_binomial(moved, 500, 0.05)


def test_option_orders_are_balanced_cyclic_shifts_then_seeded_permutations():
    assert option_orders(3, 1) == [[0, 1, 2]]
    assert option_orders(3, 3) == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    assert [o[0] for o in option_orders(4, 2)] == [0, 2]  # evenly spaced leaders
    many = option_orders(3, 6, seed=1)
    assert len(many) == 6 and len({tuple(o) for o in many}) == 6  # all 3! orders, none twice
    assert len(option_orders(2, 5)) == 2  # capped at k!
    with pytest.raises(ValueError):
        option_orders(3, 0)


def first_listed(request):
    """A model with pure position bias: 70% on whatever is listed first."""
    shown = request.choices
    return {o: (0.7 if i == 0 else 0.3 / (len(shown) - 1)) for i, o in enumerate(shown)}


def test_averaging_over_orders_removes_position_bias_and_the_diagnostic_shows_it():
    model = ScriptedModel(scores=first_listed)
    one = cast(model, 0, procedure=BallotProcedure(option_orders=1, calibration="none"))
    assert one.probabilities["Ban cars"] == pytest.approx(0.7) and one.detail.get("position") is None
    three = cast(model, 0, procedure=BallotProcedure(option_orders=3, calibration="none"))
    assert all(v == pytest.approx(1 / 3) for v in three.probabilities.values())
    assert three.detail["orders"] == [OPTIONS, OPTIONS[1:] + OPTIONS[:1], OPTIONS[2:] + OPTIONS[:2]]
    assert three.method == "scored"
    bias = position_bias([three])
    assert bias["first"] == pytest.approx(0.7, abs=1e-3) and bias["expected"] == pytest.approx(1 / 3, abs=1e-3)
    assert bias["ratio"] == pytest.approx(2.1, abs=1e-2)


def test_neutral_calibration_divides_out_the_prior_computed_once_per_question():
    def scores(request):
        persona = "\n".join(m.content for m in request.messages)
        prior = {"Ban cars": 0.6, "Keep access": 0.2, "Ban only in summer": 0.2}  # the model's surface preference
        if "cyclist" in persona:  # the persona doubles the odds of Keep access
            tilted = {**prior, "Keep access": 0.4}
            return {o: v / sum(tilted.values()) for o, v in tilted.items()}
        return prior

    model = ScriptedModel(scores=scores)
    priors = NeutralPriors()
    procedure = BallotProcedure(option_orders=3, calibration="neutral")

    async def both():
        return await asyncio.gather(*(cast_ballot(model, juror_id=f"j{i}", persona=persona, question="Q?",
                                                  options=OPTIONS, seed=1, vote_seed=i, procedure=procedure,
                                                  priors=priors)
                                      for i, persona in enumerate(["I am a cyclist.", "I run a shop."])))

    cyclist, shop = asyncio.run(both())
    assert cyclist.probabilities == pytest.approx({"Ban cars": 0.25, "Keep access": 0.5, "Ban only in summer": 0.25})
    assert shop.probabilities == pytest.approx(dict.fromkeys(OPTIONS, 1 / 3))
    priors_asked = [r for r in model.history if r.tags.get("phase") == "ballot-prior"]
    assert len(priors_asked) == 3  # one per order, shared by both jurors
    assert all("I am" not in m.content for r in priors_asked for m in r.messages)  # no persona in the prior
    assert cyclist.detail["calibration"] == "neutral" and len(cyclist.detail["prior"]) == 3


def test_approval_is_scored_as_one_yes_no_question_per_option_in_one_batch():
    def scores(request):
        prompt = request.messages[-1].content
        yes = 0.8 if "\nKeep access\n" in prompt else 0.3
        return {"Yes": yes, "No": 1 - yes}

    model = ScriptedModel(scores=scores)
    ballot = asyncio.run(cast_ballot(model, juror_id="j", persona="p", question="Q?", options=OPTIONS,
                                     ballot_type="approval", seed=1, vote_seed=3,
                                     procedure=BallotProcedure(option_orders=3, calibration="none")))
    assert ballot.probabilities == pytest.approx({"Ban cars": 0.3, "Keep access": 0.8, "Ban only in summer": 0.3})
    asked = model.history
    assert len(asked) == 6  # 3 options x both orders of Yes/No
    assert sorted(tuple(r.choices) for r in asked) == [("No", "Yes")] * 3 + [("Yes", "No")] * 3
    assert all("Would this option be acceptable to you?" in r.messages[-1].content for r in asked)
    assert ballot.approvals == KINDS["approval"].vote(ballot.probabilities, OPTIONS, draws_for(3, 3),
                                                      "sample")["approvals"]


def test_a_backend_that_cannot_score_gets_structured_output_in_one_order_per_juror():
    model = ScriptedModel(['{"choice": "Keep access", "reason": "deliveries"} and {braces} later'],
                          scores_options=False)
    ballot = cast(model, 0)
    assert ballot.choice == "Keep access" and ballot.method == "structured" and ballot.rationale == "deliveries"
    assert len(model.history) == 1 and model.history[0].json_schema["additionalProperties"] is False
    shown = {tuple(cast(ScriptedModel(['{"choice": "Keep access", "reason": "x"}'], scores_options=False),
                        seed).detail["orders"][0]) for seed in range(20)}
    assert len(shown) == 3  # jurors see different orders, so order effects average out over the jury
    bad = cast(ScriptedModel(["no json here"], scores_options=False), 0,
               procedure=BallotProcedure(option_orders=3, calibration="none", max_attempts=2))
    assert bad.status == "abstain" and "after 2 attempts" in bad.reason and bad.attempts == 2


def test_an_abstention_after_a_model_error_records_the_attempts_made():
    def reply(request):  # a bad reply, then the backend fails on the re-ask
        if request.tags["attempt"] == 1:
            return "no json here"
        raise ModelError("server went away")

    ballot = cast(ScriptedModel(reply, scores_options=False), 0,
                  procedure=BallotProcedure(option_orders=3, calibration="none", max_attempts=5))
    assert ballot.status == "abstain" and ballot.reason == "model error: server went away" and ballot.attempts == 2


def test_expected_tallies_and_stability():
    certain = [Ballot(participant_id=f"j{i}", phase="post", type="single", choice="Ban cars",
                      probabilities={"Ban cars": 1.0, "Keep access": 0.0, "Ban only in summer": 0.0})
               for i in range(5)]
    out = expected_results(certain, OPTIONS, ["plurality", "majority"], redraws=200)
    assert out["plurality"]["stability"] == 1.0 and out["plurality"]["expected"]["Ban cars"] == 5.0
    split = [Ballot(participant_id=f"j{i}", phase="post", type="single", choice=OPTIONS[i % 2],
                    probabilities={"Ban cars": 0.5, "Keep access": 0.5, "Ban only in summer": 0.0})
             for i in range(11)]
    out = expected_results(split, OPTIONS, ["plurality", "majority"], redraws=1000, seed=3)
    assert out["plurality"]["expected"] == {"Ban cars": 5.5, "Keep access": 5.5, "Ban only in summer": 0.0}
    assert within_binomial(round(out["plurality"]["win_probability"]["Ban cars"] * 1000), 1000, 0.5)
    assert 0.3 < out["plurality"]["stability"] < 0.7
    # a structured ballot (no distribution) stays as cast; an all-structured jury has nothing to redraw
    fixed_votes = [Ballot(participant_id="a", phase="post", type="single", choice="Keep access")]
    assert expected_results(fixed_votes, OPTIONS, ["plurality"])["plurality"]["redraws"] == 1


@pytest.mark.parametrize("ballot_type", ["single", "yes_no", "ranked", "approval"])
def test_every_ballot_type_runs_through_the_graph(ballot_type, tmp_path):
    data = yaml.safe_load(MINIMAL)
    data["ballot"] = {"type": ballot_type}
    if ballot_type != "yes_no":
        data["ballot"]["options"] = OPTIONS
    options = data["ballot"].get("options", ["Yes", "No"])
    data["procedure"].update(rounds=1, option_orders=3)  # the scripted model has no prior: calibration is neutral
    split = {o: (i + 1.0) for i, o in enumerate(options)}
    model = ScriptedModel(scores=lambda r: {"Yes": 0.6, "No": 0.4} if r.choices[0] in ("Yes", "No") and
                          ballot_type == "approval" else {c: split[c] for c in r.choices})
    result = deliberate(data, models=model, db=tmp_path / "s.duckdb")
    assert result.status == "completed" and result.abstentions == {"pre": 0, "post": 0}
    assert all(j.pre is not None and j.post is not None for j in result.jurors)
    assert result.tallies and all("stability" in t for t in result.tallies)
    assert result.stability is not None and 0.0 <= result.stability <= 1.0
    assert result.tallies[0]["rule"] == kind_of(ballot_type).default_rules[0]


def test_unchanged_distributions_change_no_vote_and_a_split_jury_is_not_unanimous(tmp_path):
    data = yaml.safe_load(MINIMAL)
    data["jury"]["size"] = 12
    data["procedure"].update(rounds=0, calibration="none")  # fixed(P) would calibrate to uniform: its prior is P
    result = deliberate(data, models=fixed(P), db=tmp_path / "s.duckdb")
    assert result.changed == 0  # common random numbers: same distribution, same draw, same vote
    assert len({j.post for j in result.jurors}) > 1  # votes follow a 0.5/0.3/0.2 split, not its argmax
    plurality = result.tallies[0]
    assert plurality["expected"] == pytest.approx({o: 12 * p for o, p in P.items()})


@pytest.mark.parametrize("field, value, message", [
    ("option_orders", 0, "procedure.option_orders"),
    ("option_orders", 25, "procedure.option_orders"),
    ("vote", "argmax", "procedure.vote"),
    ("calibration", "pmi", "procedure.calibration"),
])
def test_bad_ballot_procedure_is_a_one_line_error_naming_the_field(field, value, message):
    data = yaml.safe_load(MINIMAL)
    data["procedure"][field] = value
    with pytest.raises(SpecError) as info:
        parse_spec(data, "q.yaml")
    text = str(info.value)
    assert text.startswith(f"q.yaml: {message}:") and "\n" not in text


def test_the_scored_ballot_prompt_reads_as_it_always_has():
    """The instruction after the persona, pinned: recorded runs replay and adapters were tuned on these words."""
    from assembly.casting import ballot_messages

    def own(phase):
        return ballot_messages(persona="P", question="Q?", options=["a", "b"], ballot_type="single", phase=phase,
                               context=None, structured=False)[-1].content

    assert own("pre") == ("This is a private, secret ballot. You have not heard anyone else yet: vote on your own "
                          "view.\nChoose exactly one option:\n- a\n- b\n\nYour answer:")
    assert own("post") == ("This is a private, secret ballot. Vote on your view now, after the deliberation.\n"
                           "Choose exactly one option:\n- a\n- b\n\nYour answer:")
