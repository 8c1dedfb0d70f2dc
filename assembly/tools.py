"""The assembly as a tool for other agents: the arguments a tool call gives, the question file they make, the run,
and the short summary a calling model reads. The MCP server (assembly.mcp_server) and the LangChain tool
(assembly.langchain_tool) are thin wrappers over these, so both validate and answer alike."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assembly.ballot import BallotType
from assembly.config import AssemblySpec, format_validation_error
from assembly.errors import SpecError
from assembly.result import AssemblyResult

# One description per argument, shared by the pydantic schema and the MCP tool's signature.
HELP = {
    "question": "The question the citizens' assembly deliberates on, in plain words.",
    "options": "The ballot's options (at least two), e.g. ['Yes', 'No'] or three policy choices.",
    "ballot_type": "single (choose one), yes_no, ranked (rank every option) or approval (approve any).",
    "jurors": "How many jurors to draw (2..500; default 12).",
    "rounds": "Deliberation rounds (0..20; default 2).",
    "model": "Model spec for every role, e.g. embedded, openai:gpt-4.1-mini (default: the server's or the file's).",
    "seed": "The run's seed: jury draw, speaking orders, vote draws (default 0).",
    "population": "The population frame jurors are drawn from: a built-in name (us_adults) or a CSV/Parquet path.",
    "run_id": "A run id, a unique prefix of one, or 'latest'.",
}


class DeliberateArgs(BaseModel):
    """What a tool call asks for; everything else comes from the base question file or the defaults."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    question: str = Field(min_length=1, description=HELP["question"])
    options: list[str] = Field(min_length=2, description=HELP["options"])
    ballot_type: BallotType = Field("single", description=HELP["ballot_type"])
    jurors: int | None = Field(None, ge=2, le=500, description=HELP["jurors"])
    rounds: int | None = Field(None, ge=0, le=20, description=HELP["rounds"])
    model: str | None = Field(None, description=HELP["model"])
    seed: int | None = Field(None, description=HELP["seed"])
    population: str | None = Field(None, description=HELP["population"])


class RunRecord(BaseModel):
    """A recorded run as `get_run` returns it: where it stands and, once completed, its result."""

    run_id: str
    status: str
    reason: str | None = None
    question: str
    options: list[str] = Field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None
    result: AssemblyResult | None = None


def parse_args(arguments: dict[str, Any], tool: str = "deliberate") -> DeliberateArgs:
    """Validated tool arguments; a one-line SpecError naming the argument otherwise."""
    try:
        return DeliberateArgs.model_validate(arguments)
    except ValidationError as exc:
        raise SpecError(format_validation_error(tool, exc, DeliberateArgs)) from None


def tool_spec(args: DeliberateArgs, base: AssemblySpec | None = None) -> dict[str, Any]:
    """The question file a call makes: `base` (witnesses, procedure, models) with the call's question, options and
    population. The voting rules follow the ballot type unless the base's type is the same."""
    data = base.model_dump(mode="json") if base is not None else {}
    data["question"] = args.question
    ballot = data.get("ballot") or {}
    rules = ballot.get("rules") if base is not None and base.ballot.type == args.ballot_type else []
    data["ballot"] = {**ballot, "type": args.ballot_type, "options": list(args.options), "rules": rules or []}
    if args.population is not None:
        data.setdefault("jury", {})["population"] = args.population
    return data


async def run_deliberation(args: DeliberateArgs, *, base: AssemblySpec | None = None, model: str | None = None,
                           **kwargs) -> AssemblyResult:
    """One recorded assembly for a tool call. `model`: the caller's default when the call names none; `kwargs` go
    to `adeliberate` (db, models, model_options)."""
    from assembly.deliberation import adeliberate

    return await adeliberate(tool_spec(args, base), model=args.model or model, seed=args.seed, jurors=args.jurors,
                             rounds=args.rounds, **kwargs)


def summarise(result: AssemblyResult) -> str:
    """A few sentences a calling model (or person) reads before the JSON."""
    v = result.verdict
    stability = f"; it wins again in {result.stability:.0%} of redraws of the votes" if result.stability is not None else ""
    votes = ", ".join(f"{o} {n}" for o, n in result.post_counts.items())
    minority = f" Minority report: {v.minority_report}" if v.minority_report else ""
    return (f"{len(result.jurors)} simulated jurors deliberated on: {result.question} "
            f"Decision: {v.winner or 'no winner'} under {v.rule}{stability}. Post-ballot votes: {votes}. "
            f"Verdict: {v.text}{minority} (run {result.run_id} in {result.store})")


def describe_run(record: RunRecord) -> str:
    if record.result is not None:
        return summarise(record.result)
    why = f": {record.reason}" if record.reason else ""
    return f"run {record.run_id} is {record.status}{why} ({record.question})"
