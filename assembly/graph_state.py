"""The assembly graph's state and context.

`AssemblyState` is checkpointed: fanned-out results merge into dicts keyed by juror id, so completion order never
matters, and the next free transcript position (`next_seq`) is state, so a node re-run after a resume reserves the
positions it reserved the first time. `AssemblyContext` is not: the spec, who sits, which model plays each role,
the run's recorder.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from assembly.casting import NeutralPriors
from assembly.config import AssemblySpec
from assembly.events import Event
from assembly.providers.base import Model
from assembly.recorder import RunRecorder

MODERATOR_ID = "moderator"


def merge(left: dict | None, right: dict | None) -> dict:
    return {**(left or {}), **(right or {})}


def furthest(left: int | None, right: int | None) -> int:
    return max(left or 0, right or 0)


class AssemblyState(TypedDict, total=False):
    round: int
    ballots: Annotated[dict[str, dict], merge]  # "pre:juror-01" -> Ballot dump
    testimony: Annotated[dict[str, str], merge]  # witness id -> testimony
    questions: Annotated[dict[str, dict], merge]  # juror id -> {witness, question, answer}
    statements: Annotated[dict[str, dict], merge]  # "round:juror id" -> {speaker, content, seq}
    floor: Annotated[dict[str, dict], merge]  # round -> {seed, order}
    summaries: Annotated[list[str], operator.add]
    prompts: Annotated[dict[str, str], merge]  # round -> the moderator's invitation
    tallies: dict[str, list[dict]]  # phase -> tallies
    verdict: dict
    # The first transcript position not yet reserved. A reserving node returns its end; each fanned-out worker
    # returns the end of its own positions, and the furthest of them is the end of the whole reservation.
    next_seq: Annotated[int, furthest]


@dataclass
class Participant:
    id: str
    role: str
    name: str
    persona: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class AssemblyContext:
    """Run-scoped, not checkpointed: the spec, who sits, which model plays each role, the run's recorder."""

    spec: AssemblySpec
    jurors: list[Participant]
    witnesses: list[Participant]
    models: dict[str, Model]  # role -> model (already wrapped for recording)
    recorder: RunRecorder
    run_id: str
    seed: int
    documents: dict[str, str] = field(default_factory=dict)  # witness id -> document text
    priors: NeutralPriors = field(default_factory=NeutralPriors)  # calibration priors, once per run

    def name_of(self, participant_id: str) -> str:
        if participant_id == MODERATOR_ID:
            return "Moderator"
        for p in (*self.jurors, *self.witnesses):
            if p.id == participant_id:
                return p.name
        return participant_id

    def speaker_names(self) -> list[str]:
        """Who may label a turn "<name>:" (a label `clean_turn` strips): every participant and "Moderator"."""
        return ["Moderator", *(p.name for p in (*self.jurors, *self.witnesses))]

    def emit(self, event: Event) -> None:
        self.recorder.record(event)


def free_seq(state: AssemblyState) -> int:
    """The first unreserved transcript position, as of the state this node or route was given."""
    return state.get("next_seq") or 0
