"""What a study reports, computed from its draws' outcomes: pure functions, no store (outcomes.py reads the store).

Per question, over the draws that completed:
  * win rates: for every rule and option, how many draws it won (post-ballot tallies), with a Wilson 95% interval
    (a rule with no winner in some draws, e.g. majority, gets a "(no winner)" row);
  * across-draw stability: the deciding rule's modal winner and the share of draws it won (Wilson);
  * within-draw stability: the mean over draws of each run's verdict stability (the share of redraws of its jurors'
    votes in which its winner wins again, assembly.stability), with a bootstrap interval;
  * vote shares: the mean share of valid ballots per option before and after deliberation, and the mean pre→post
    shift (paired within each draw), each with a percentile-bootstrap interval over draws;
  * shift by group: for each stratification attribute (`jury.stratify`) and group, the mean over draws of the
    group's post-minus-pre share per option, bootstrap interval (draws where the group cast no valid ballot in a
    phase are left out of that group's mean).
Interval methods: assembly/study/intervals.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from assembly.seeds import seed_for
from assembly.study.intervals import BOOTSTRAP_RESAMPLES, Estimate, Proportion, bootstrap_mean, proportion
from assembly.study.sources import StudyQuestion

NO_WINNER = "(no winner)"
METHODS = {
    "win_rates": "Wilson score interval, 95%, over completed draws",
    "means": f"percentile bootstrap over draws, {BOOTSTRAP_RESAMPLES} resamples, seeded per statistic, 95%; "
             "no interval with fewer than two draws",
}


@dataclass(frozen=True)
class DrawOutcome:
    """One run of a study, as the summary needs it."""

    question: str  # the question's key
    draw: int
    run_id: str
    status: str  # completed, failed, interrupted, running
    winners: dict[str, str | None] = field(default_factory=dict)  # rule -> post-ballot winner
    stability: float | None = None  # the deciding rule's verdict stability
    pre: dict[str, float] = field(default_factory=dict)  # option -> share of valid pre-ballots (empty: none valid)
    post: dict[str, float] = field(default_factory=dict)
    # (attribute, group) -> option -> the group's post-minus-pre share
    groups: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)


class WinRate(Proportion):
    rule: str
    option: str


class OptionShares(BaseModel):
    option: str
    pre: Estimate
    post: Estimate
    shift: Estimate  # post minus pre, paired within each draw


class GroupShift(Estimate):
    attribute: str
    group: str
    option: str


class QuestionSummary(BaseModel):
    key: str
    question: str
    options: list[str]
    rules: list[str]
    draws: int  # planned
    completed: int
    not_completed: int  # planned draws without a completed run: failed, interrupted, or not run yet
    win_rates: list[WinRate]
    modal_winner: str | None
    modal_agreement: Proportion  # draws whose deciding winner is the modal winner
    stability_within: Estimate
    shares: list[OptionShares]
    group_shifts: list[GroupShift]


class StudySummary(BaseModel):
    draws: int
    runs: int
    completed: int
    not_completed: int
    methods: dict[str, str]
    questions: list[QuestionSummary]


def summarise(questions: Sequence[StudyQuestion], outcomes: Sequence[DrawOutcome], draws: int) -> StudySummary:
    by_question: dict[str, list[DrawOutcome]] = {q.key: [] for q in questions}
    for o in outcomes:
        if o.question in by_question:
            by_question[o.question].append(o)
    summaries = [summarise_question(q, by_question[q.key], draws) for q in questions]
    completed = sum(s.completed for s in summaries)
    return StudySummary(draws=draws, runs=draws * len(questions), completed=completed,
                        not_completed=sum(s.not_completed for s in summaries), methods=METHODS, questions=summaries)


def summarise_question(question: StudyQuestion, outcomes: Sequence[DrawOutcome], draws: int) -> QuestionSummary:
    spec = question.spec
    options, rules = list(spec.ballot.options), list(spec.ballot.rules)
    done = sorted((o for o in outcomes if o.status == "completed"), key=lambda o: o.draw)
    n = len(done)

    def seed(*parts) -> int:
        return seed_for("study-bootstrap", question.key, *parts)

    win_rates = []
    for rule in rules:
        counts = Counter(o.winners.get(rule) for o in done)
        win_rates += [WinRate(rule=rule, option=opt, **proportion(counts[opt], n).model_dump()) for opt in options]
        if counts[None]:
            win_rates.append(WinRate(rule=rule, option=NO_WINNER, **proportion(counts[None], n).model_dump()))
    deciding = [o.winners.get(rules[0]) for o in done]
    modal = modal_winner(deciding, options)
    shares = []
    for opt in options:
        pre = [o.pre[opt] for o in done if opt in o.pre]
        post = [o.post[opt] for o in done if opt in o.post]
        shift = [o.post[opt] - o.pre[opt] for o in done if opt in o.pre and opt in o.post]
        shares.append(OptionShares(option=opt, pre=bootstrap_mean(pre, seed("pre", opt)),
                                   post=bootstrap_mean(post, seed("post", opt)),
                                   shift=bootstrap_mean(shift, seed("shift", opt))))
    group_shifts = []
    stratify = list(spec.jury.stratify)
    groups = sorted({g for o in done for g in o.groups if g[0] in stratify},
                    key=lambda g: (stratify.index(g[0]), g[1]))
    for attribute, group in groups:
        for opt in options:
            values = [o.groups[(attribute, group)][opt] for o in done
                      if opt in o.groups.get((attribute, group), {})]
            estimate = bootstrap_mean(values, seed("group", attribute, group, opt))
            group_shifts.append(GroupShift(attribute=attribute, group=group, option=opt, **estimate.model_dump()))
    return QuestionSummary(
        key=question.key, question=spec.question, options=options, rules=rules, draws=draws, completed=n,
        not_completed=draws - n, win_rates=win_rates, modal_winner=modal,
        modal_agreement=proportion(sum(w == modal for w in deciding) if modal is not None else 0, n),
        stability_within=bootstrap_mean([o.stability for o in done if o.stability is not None], seed("stability")),
        shares=shares, group_shifts=group_shifts,
    )


def modal_winner(winners: Sequence[str | None], options: Sequence[str]) -> str | None:
    """The option that won most draws; a tie goes to the option listed first (as a tie in a tally does)."""
    counts = Counter(w for w in winners if w is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(o for o in options if counts.get(o) == top)
