"""A juror's private ballot, as cast and recorded. Voting rules read these; the store keeps them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

BallotType = Literal["single", "yes_no", "ranked", "approval"]
BallotPhase = Literal["pre", "post"]


class Ballot(BaseModel):
    participant_id: str
    phase: BallotPhase
    type: BallotType
    status: Literal["valid", "abstain"] = "valid"
    choice: str | None = None  # single / yes_no: the option; ranked: the first preference
    ranking: list[str] | None = None  # ranked: a permutation of the options, most preferred first
    approvals: list[str] | None = None  # approval: the approved options (may be empty)
    # scored ballots: the juror's distribution over the options (approval: each option's probability of approval)
    probabilities: dict[str, float] | None = None
    rationale: str | None = None
    reason: str | None = None  # why an abstention happened (never a silent default)
    attempts: int = 1
    call_ids: list[str] = Field(default_factory=list)
    method: str | None = None  # "scored:<how>" (a draw from the distribution), "structured" (a reply), ...
    detail: dict | None = None  # orders shown, per-order distributions, calibration prior, vote draws

    @model_validator(mode="after")
    def _consistent(self) -> "Ballot":
        if self.status == "abstain":
            if not self.reason:
                raise ValueError("an abstention must carry its reason")
            return self
        if self.type in ("single", "yes_no") and self.choice is None:
            raise ValueError(f"a valid {self.type} ballot needs a choice")
        if self.type == "ranked":
            if not self.ranking:
                raise ValueError("a valid ranked ballot needs a ranking")
            if len(set(self.ranking)) != len(self.ranking):
                raise ValueError(f"ranking repeats an option: {self.ranking}")
            self.choice = self.ranking[0]
        if self.type == "approval" and self.approvals is None:
            raise ValueError("a valid approval ballot needs its approvals (possibly empty)")
        return self

    def validate_against(self, options: list[str]) -> None:
        """Raise ValueError naming the offending value when the ballot does not fit the options."""
        if self.status == "abstain":
            return
        allowed = set(options)
        if self.choice is not None and self.choice not in allowed:
            raise ValueError(f"choice {self.choice!r} is not one of {options}")
        if self.ranking is not None and sorted(self.ranking) != sorted(options):
            raise ValueError(f"ranking {self.ranking} is not a permutation of {options}")
        if self.approvals is not None:
            bad = [a for a in self.approvals if a not in allowed]
            if bad:
                raise ValueError(f"approved {bad} not among {options}")
