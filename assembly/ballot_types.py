"""One strategy per ballot type: what a ballot asks, how a reply is read, how a vote is drawn from a juror's
distribution, and how ballots count. Everything type-specific lives here; the caster, the graph, the summary and
the voting rules ask the strategy instead of testing `ballot.type`.

A scored ballot carries a distribution: for `single`, `yes_no` and `ranked`, the juror's probabilities over the
options (summing to 1); for `approval`, each option's probability of being approved, from its own yes/no question.
A vote is a draw from that distribution (`vote="sample"`, the default) or its mode (`vote="mode"`). Draws use
common random numbers: the uniforms come from a per-juror seed shared by the pre- and the post-ballot, so a
juror's vote changes only when their distribution moved past the draw.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from assembly.ballot import Ballot

VoteMode = Literal["sample", "mode"]
NO_APPROVALS = "(none)"
VOTE_MODES: tuple[str, ...] = ("sample", "mode")


def draws_for(seed: int, k: int) -> list[float]:
    """k + 1 uniforms in (0, 1) from a seed: the first decides a single choice, the others one option each."""
    rng = random.Random(seed)
    return [min(max(rng.random(), 1e-12), 1 - 1e-12) for _ in range(k + 1)]


def _match_option(value: object, options: Sequence[str]) -> str:
    """Accept an option written with different case or surrounding punctuation; reject anything else."""
    if not isinstance(value, str):
        raise ValueError(f"expected an option as text, got {value!r}")
    text = value.strip().strip(".\"'").strip()
    for option in options:
        if text == option or text.lower() == option.lower():
            return option
    raise ValueError(f"{value!r} is not one of the options")


class BallotKind:
    """The strategy interface; one instance per ballot type in KINDS."""

    name: str
    answer_key: str  # the JSON key a structured reply answers with
    default_rules: tuple[str, ...]
    itemised = False  # True: each option is scored as its own yes/no question (approval)

    def schema(self, options: Sequence[str]) -> dict:
        """JSON schema of a structured reply (it qualifies for OpenAI's strict mode: closed, all keys required)."""
        return {
            "type": "object",
            "properties": {self.answer_key: self._answer_schema(list(options)), "reason": {"type": "string"}},
            "required": [self.answer_key, "reason"],
            "additionalProperties": False,
        }

    def _answer_schema(self, options: list[str]) -> dict:
        return {"type": "array", "items": {"type": "string", "enum": options}}

    def parse(self, data: Mapping[str, Any], options: Sequence[str]) -> dict:
        """Ballot fields from a structured reply's JSON object; ValueError says what is wrong."""
        raise NotImplementedError

    def vote(self, distribution: Mapping[str, float], options: Sequence[str], draws: Sequence[float],
             mode: VoteMode) -> dict:
        """Ballot fields drawn from (or the mode of) a scored distribution."""
        raise NotImplementedError

    def preferred(self, ballot: Ballot) -> list[str]:
        """The options a valid ballot counts for: its choice, its first preference, or its approvals."""
        first = ballot.ranking[0] if ballot.ranking else ballot.choice
        return [first] if first is not None else []

    def label(self, ballot: Ballot | None) -> str | None:
        """How a vote reads in summaries and the live view."""
        if ballot is None or ballot.status != "valid":
            return None
        return "; ".join(self.preferred(ballot))

    def backs(self, ballot: Ballot, option: str) -> bool:
        """Whether a valid ballot supports `option` (the minority report speaks for those that do not)."""
        return option in self.preferred(ballot)

    def expected_counts(self, distribution: Mapping[str, float], options: Sequence[str]) -> dict[str, float]:
        """One juror's expected contribution to each option's first-choice (or approval) count."""
        return {o: float(distribution.get(o, 0.0)) for o in options}

    # One-line votes (the distilled record): `written_as` tells the model how; `read_line` reads one back.
    written_as = "choose exactly one option"

    def read_line(self, text: str, options: Sequence[str], match) -> dict:
        """Ballot fields from a one-line vote; `match(text, options)` names one option or raises ValueError."""
        return {"choice": match(text, options)}


class SingleChoice(BallotKind):
    answer_key = "choice"

    def __init__(self, name: str, default_rules: tuple[str, ...]):
        self.name = name
        self.default_rules = default_rules

    def _answer_schema(self, options: list[str]) -> dict:
        return {"type": "string", "enum": options}

    def parse(self, data, options):
        if "choice" not in data:
            raise ValueError('missing "choice"')
        return {"choice": _match_option(data["choice"], options)}

    def vote(self, distribution, options, draws, mode):
        if mode == "mode":
            return {"choice": max(options, key=lambda o: (distribution.get(o, 0.0), -options.index(o)))}
        total = sum(distribution.get(o, 0.0) for o in options) or 1.0
        cumulative = 0.0
        for option in options:  # inverse CDF in the file's option order: a fixed draw maps monotonically
            cumulative += distribution.get(option, 0.0) / total
            if draws[0] < cumulative:
                return {"choice": option}
        return {"choice": next(o for o in reversed(options) if distribution.get(o, 0.0) > 0)}


class Ranked(BallotKind):
    name = "ranked"
    answer_key = "ranking"
    default_rules = ("plurality", "borda", "schulze", "irv")

    def parse(self, data, options):
        ranking = [_match_option(v, options) for v in data.get("ranking") or []]
        if sorted(ranking) != sorted(options):
            raise ValueError("the ranking must list every option exactly once")
        return {"ranking": ranking}

    def vote(self, distribution, options, draws, mode):
        """Plackett–Luce: sort by log p + Gumbel noise (one Gumbel per option from the juror's draws)."""
        def key(i: int) -> tuple[float, int]:
            p = distribution.get(options[i], 0.0)
            if p <= 0:
                return (-math.inf, -i)
            noise = 0.0 if mode == "mode" else -math.log(-math.log(draws[1 + i]))
            return (math.log(p) + noise, -i)

        return {"ranking": [options[i] for i in sorted(range(len(options)), key=key, reverse=True)]}

    def label(self, ballot):
        if ballot is None or ballot.status != "valid":
            return None
        return " > ".join(ballot.ranking or [])

    written_as = "rank every option, most preferred first, separated by ' > '"

    def read_line(self, text, options, match):
        ranking = [match(p, options) for p in re.split(r"\s*(?:>|,|;)\s*", text) if p.strip()]
        if sorted(ranking) != sorted(options):
            raise ValueError(f"{text.strip()[:60]!r} does not rank every option exactly once")
        return {"ranking": ranking}


class Approval(BallotKind):
    name = "approval"
    answer_key = "approve"
    default_rules = ("approval",)
    itemised = True

    def parse(self, data, options):
        approvals = data.get("approve")
        if not isinstance(approvals, list):
            raise ValueError('"approve" must be a list of options')
        return {"approvals": sorted({_match_option(v, options) for v in approvals}, key=list(options).index)}

    def vote(self, distribution, options, draws, mode):
        """Each option approved with its own probability (its own draw), or when it is at least even (mode)."""
        if mode == "mode":
            return {"approvals": [o for o in options if distribution.get(o, 0.0) >= 0.5]}
        return {"approvals": [o for i, o in enumerate(options) if draws[1 + i] < distribution.get(o, 0.0)]}

    def preferred(self, ballot):
        return list(ballot.approvals or [])

    def label(self, ballot):
        if ballot is None or ballot.status != "valid":
            return None
        return "; ".join(ballot.approvals or []) or NO_APPROVALS

    written_as = f"list every acceptable option, separated by '; ', or {NO_APPROVALS}"

    def read_line(self, text, options, match):
        if re.sub(r"\W+", "", text.lower()) == "none":
            return {"approvals": []}
        chosen = {match(p, options) for p in re.split(r"\s*[;,]\s*", text) if p.strip()}
        return {"approvals": [o for o in options if o in chosen]}


KINDS: dict[str, BallotKind] = {
    "single": SingleChoice("single", ("plurality", "majority")),
    "yes_no": SingleChoice("yes_no", ("majority",)),
    "ranked": Ranked(),
    "approval": Approval(),
}


def kind_of(ballot_type: str) -> BallotKind:
    try:
        return KINDS[ballot_type]
    except KeyError:
        raise ValueError(f"unknown ballot type {ballot_type!r}; one of {', '.join(KINDS)}") from None
