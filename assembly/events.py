"""What a run says while it runs, as typed events: the recorder (assembly.recorder.RunRecorder) persists the
recorded kinds, and the live view and any parent graph read all of them from LangGraph's custom stream.

Recorded: `Turn`, `BallotCast`, `Tallied`, `VerdictReached`, `ModelCall`. Live only: `PhaseStarted`, `Speaking`.
`as_dict()` is what `on_event` callbacks receive (a plain dict with a `kind`), the same in every mode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from assembly.ballot import Ballot
from assembly.ballot_types import kind_of


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str]
    recorded: ClassVar[bool] = True

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class PhaseStarted(Event):
    kind: ClassVar[str] = "phase"
    recorded: ClassVar[bool] = False
    phase: str
    round: int | None = None


@dataclass(frozen=True)
class Speaking(Event):
    kind: ClassVar[str] = "speaking"
    recorded: ClassVar[bool] = False
    phase: str
    round: int | None
    speaker: str


@dataclass(frozen=True)
class Turn(Event):
    """One utterance at its reserved transcript position."""

    kind: ClassVar[str] = "turn"
    seq: int
    phase: str
    round: int | None
    speaker_id: str
    speaker: str  # the display name
    content: str
    call_id: str | None = None
    tokens: int = 0
    duration_s: float | None = None


@dataclass(frozen=True)
class BallotCast(Event):
    kind: ClassVar[str] = "ballot"
    ballot: Ballot
    speaker: str  # the juror's display name

    def as_dict(self) -> dict[str, Any]:  # "choice": the ballot as one line (its choice, ranking or approvals)
        return {"kind": self.kind, "phase": f"ballot-{self.ballot.phase}", "speaker": self.speaker,
                "choice": kind_of(self.ballot.type).label(self.ballot), "status": self.ballot.status}


@dataclass(frozen=True)
class Tallied(Event):
    """One phase's tallies under every rule, each a dict of assembly.voting.Tally fields plus the expected results
    over redraws (assembly.stability)."""

    kind: ClassVar[str] = "tally"
    phase: str
    tallies: list[dict[str, Any]]


@dataclass(frozen=True)
class VerdictReached(Event):
    kind: ClassVar[str] = "verdict"
    text: str
    minority_report: str | None
    winner: str | None
    rule: str | None


@dataclass(frozen=True)
class ModelCall(Event):
    """One model call as the store's llm_calls table holds it (`fields`: Store.add_llm_call's keyword arguments),
    with the id turns and ballots point at."""

    kind: ClassVar[str] = "call"
    call_id: str
    fields: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:  # the live view needs no prompts
        keep = ("role", "participant_id", "phase", "input_tokens", "output_tokens", "duration_s", "error")
        return {"kind": self.kind, "call_id": self.call_id, **{k: self.fields.get(k) for k in keep}}
