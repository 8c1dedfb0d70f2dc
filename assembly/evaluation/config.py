"""What an evaluation runs (EvalConfig: panel size, seed, attributes and groups, baselines, the ballot procedure)
and the opposed pairs its steerability is measured on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from assembly.ballot_types import VOTE_MODES
from assembly.casting import MAX_OPTION_ORDERS, BallotProcedure
from assembly.config import DEFAULT_CALIBRATION, DEFAULT_OPTION_ORDERS

# Pairs of opposed groups for steerability: (attribute, group A, group B).
DEFAULT_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("party", "Democrat", "Republican"),
    ("ideology", "Very liberal", "Very conservative"),
    ("ideology", "Liberal", "Conservative"),
)
CALIBRATIONS = ("none", "neutral")  # assembly.casting: none, or divide by the model's no-persona prior


@dataclass
class EvalConfig:
    jurors_per_group: int = 10
    seed: int = 0
    attributes: list[str] | None = None  # None: every attribute in the file except `overall`
    groups: list[str] | None = None  # None: every group of those attributes; else only these group labels
    mode: Literal["ballot", "assembly"] = "ballot"
    population: str = "us_adults"
    ignore_persona: bool = True  # jurors from the whole population
    no_persona: bool = True  # one prompt without a persona
    exact_positions: bool = False  # use SurveyQuestion.positions (e.g. OpinionQA ordinals) for R when known
    pairs: tuple[tuple[str, str, str], ...] = DEFAULT_PAIRS
    max_concurrency: int = 0  # cap on calls in flight (0: every call of a question at once)
    assembly_rounds: int = 1  # mode="assembly": deliberation rounds per mini-assembly
    # the engine's ballot procedure (assembly.casting.BallotProcedure): scored ballots are averaged over this many
    # option orders, optionally divided by the model's no-persona prior, and the vote is a draw or the mode
    option_orders: int = DEFAULT_OPTION_ORDERS
    calibration: str = DEFAULT_CALIBRATION  # none | neutral
    vote: str = "sample"  # sample | mode

    def __post_init__(self) -> None:
        # one check for the API and the CLI, so the message names both the field and the flag
        if not 1 <= self.option_orders <= MAX_OPTION_ORDERS:
            raise ValueError(f"--option-orders (option_orders) must be 1 to {MAX_OPTION_ORDERS}, "
                             f"got {self.option_orders}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"--calibration {self.calibration!r}: expected one of {', '.join(CALIBRATIONS)}")
        if self.vote not in VOTE_MODES:
            raise ValueError(f"--vote {self.vote!r}: expected one of {', '.join(VOTE_MODES)}")

    def procedure(self) -> BallotProcedure:
        return BallotProcedure(vote=self.vote, option_orders=self.option_orders, calibration=self.calibration)
