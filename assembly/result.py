"""What a finished assembly returns to the CLI and to Python callers: typed and JSON-serialisable."""

from __future__ import annotations

from pydantic import BaseModel, Field


class JurorSummary(BaseModel):
    id: str
    name: str
    attributes: dict[str, str]
    pre: str | None = None  # pre-ballot vote: the choice, the ranking "A > B > C", or the approvals "A; C"
    post: str | None = None
    changed: bool = False


class Verdict(BaseModel):
    text: str
    minority_report: str | None = None
    winner: str | None = None
    rule: str | None = None


class Usage(BaseModel):
    calls: int = 0
    input_tokens: int = 0  # every prompt token sent, cached ones included
    cached_input_tokens: int = 0  # read from a provider's prompt cache, or a reused local prefix
    cache_write_tokens: int = 0  # written to a provider's prompt cache
    output_tokens: int = 0
    model_seconds: float = 0.0
    wall_seconds: float = 0.0
    tokens_per_second: float = 0.0
    cost_usd: float | None = None


class AssemblyResult(BaseModel):
    run_id: str
    store: str
    status: str
    mode: str = "full"  # full: the multi-agent graph; distilled: one scoring pass (assembly.distilled)
    question: str
    options: list[str]
    ballot_type: str
    seed: int
    jurors: list[JurorSummary]
    representativeness: dict[str, float]
    representativeness_overall: float
    pre_counts: dict[str, int]
    post_counts: dict[str, int]
    shift: dict[str, int]  # post minus pre, per option
    changed: int  # jurors whose choice changed between ballots
    abstentions: dict[str, int]
    tallies: list[dict]  # one per rule, post-ballot, with expected scores, win probabilities and stability
    pre_tallies: list[dict]
    stability: float | None = None  # P(the verdict's winner wins again when the jurors' votes are redrawn)
    position_bias: dict | None = None  # mass on first-listed options vs the order-averaged expectation
    verdict: Verdict
    floor: dict[str, dict] = Field(default_factory=dict)  # round -> speaking order and its seed
    usage: Usage = Field(default_factory=Usage)
    models: dict[str, str] = Field(default_factory=dict)  # role -> model spec
