"""A specification clause: what one assembly (or a study of many) decided, how strongly, who disagreed, and exactly
how the decision was made — typed, so an AI specification can cite it and a later clause can be compared with it.

`schema` names the format (`assembly.clause/1`); a reader checks it before trusting the fields. Shares are fractions
of the valid ballots (0..1); for a study every estimate comes with its 95% interval over the draws.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CLAUSE_SCHEMA = "assembly.clause/1"
DIFF_SCHEMA = "assembly.clause-diff/1"


class Interval(BaseModel):
    """A 95% interval (Wilson for win rates, percentile bootstrap for means: assembly/study/intervals.py)."""

    low: float
    high: float


class OptionSupport(BaseModel):
    option: str
    pre_share: float | None = None  # share of valid pre-ballots backing it (study: the mean over draws)
    post_share: float | None = None
    shift: float | None = None  # post minus pre
    expected: float | None = None  # run: the deciding rule's expected score under redraws of the jurors' votes
    win_probability: float | None = None  # run: share of redraws it wins; study: share of draws it won
    pre_interval: Interval | None = None  # study only
    post_interval: Interval | None = None
    shift_interval: Interval | None = None
    win_interval: Interval | None = None


class RuleOutcome(BaseModel):
    """One voting rule's post-ballot result (the first listed rule decides)."""

    rule: str
    winner: str | None = None
    pre_winner: str | None = None  # run only
    stability: float | None = None  # run: share of redraws in which `winner` wins again


class Decision(BaseModel):
    winner: str | None
    rule: str | None  # the deciding rule
    statement: str  # the verdict as the moderator wrote it (study: the verdict of `statement_run`)
    pre_winner: str | None = None  # the deciding rule's winner before deliberation (run only)
    statement_run: str | None = None  # study: the draw whose verdict `statement` is (the first the winner won)


class Support(BaseModel):
    basis: Literal["run", "study"]
    options: list[OptionSupport]
    rules: list[RuleOutcome] = Field(default_factory=list)
    valid: dict[str, int] = Field(default_factory=dict)  # run: phase -> valid ballots
    abstained: dict[str, int] = Field(default_factory=dict)
    stability: float | None = None  # run: the verdict's stability; study: its mean over draws
    stability_interval: Interval | None = None
    redraws: int | None = None  # run: redraws the expectations come from
    draws: int | None = None  # study: completed draws
    agreement: float | None = None  # study: share of draws the winner won under the deciding rule
    agreement_interval: Interval | None = None


class MinorityView(BaseModel):
    jurors: int  # post-ballot voters who did not back the winner
    of: int  # valid post-ballots
    options: list[str]  # what they backed instead
    report: str | None = None  # the minority report
    run_id: str | None = None  # study: the draw it comes from


class ModelUse(BaseModel):
    role: str
    spec: str  # as configured (models.<role>)
    reported: list[str] = Field(default_factory=list)  # what the backend said answered (llm_calls.model)
    calls: int = 0


class Provenance(BaseModel):
    run_id: str | None = None
    study_id: str | None = None
    runs: list[str] = Field(default_factory=list)  # study: its completed draws
    store: str
    source: str | None = None  # runs.provenance: simulated, replay, imported-real, ...
    population: str | None = None
    population_shares: dict[str, dict[str, float]] = Field(default_factory=dict)  # stratified attributes
    jury_size: int | None = None
    stratify: list[str] = Field(default_factory=list)
    jury: dict[str, dict[str, float]] = Field(default_factory=dict)  # attribute -> group -> seats (study: mean)
    human_seats: list[str] = Field(default_factory=list)  # seats a person took (assembly run --seat)
    ballot_type: str | None = None
    rules: list[str] = Field(default_factory=list)
    procedure: dict[str, Any] = Field(default_factory=dict)
    witnesses: list[str] = Field(default_factory=list)
    models: list[ModelUse] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)
    prompt_layout: int | None = None
    seeds: list[int] = Field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Clause(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    schema_: Literal["assembly.clause/1"] = Field(CLAUSE_SCHEMA, alias="schema")
    question: str
    options: list[str]
    decision: Decision
    support: Support
    minority: MinorityView | None = None
    provenance: Provenance

    @property
    def label(self) -> str:
        """How the clause is named in a diff: its study or run id."""
        p = self.provenance
        return f"study {p.study_id}" if p.study_id else f"run {p.run_id}"

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class Change(BaseModel):
    field: str  # dotted path, e.g. models.juror.spec, procedure.rounds
    a: Any = None
    b: Any = None


class OptionDelta(BaseModel):
    option: str
    a_post_share: float | None = None
    b_post_share: float | None = None
    post_share_delta: float | None = None
    a_pre_share: float | None = None
    b_pre_share: float | None = None
    pre_share_delta: float | None = None
    a_win_probability: float | None = None
    b_win_probability: float | None = None
    win_probability_delta: float | None = None


class ClauseDiff(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    schema_: Literal["assembly.clause-diff/1"] = Field(DIFF_SCHEMA, alias="schema")
    question: str
    a: str  # the clauses compared: "run <id>", "study <id>"
    b: str
    decision_changed: bool  # the winner differs
    decision: list[Change]
    support: list[OptionDelta]
    provenance: list[Change]

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)
