"""The question file (question.yaml): pydantic models with unknown keys rejected, and errors that name the file,
the field path and what was expected."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from assembly.ballot import BallotType
from assembly.ballot_types import kind_of
from assembly.casting import DEFAULT_CALIBRATION, DEFAULT_OPTION_ORDERS, MAX_OPTION_ORDERS, BallotProcedure
from assembly.errors import SpecError
from assembly.providers.registry import parse_model_spec
from assembly.voting import RULES, RULES_FOR_BALLOT



class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class BallotSpec(Strict):
    type: BallotType = "single"
    options: list[str] = Field(default_factory=list)
    rules: list[str] = Field(default_factory=list)

    @field_validator("options", mode="before")
    @classmethod
    def _scalars_as_text(cls, value):
        """YAML 1.1 reads `[Yes, No]` as booleans and `[1, 2]` as numbers: options are text, so take them as written."""
        if isinstance(value, list):
            return ["Yes" if v is True else "No" if v is False else str(v) if isinstance(v, (int, float)) else v
                    for v in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> "BallotSpec":
        if self.type == "yes_no" and not self.options:
            self.options = ["Yes", "No"]
        if len(self.options) < 2:
            raise ValueError(f"needs at least two options, got {len(self.options)}")
        if any(not o for o in self.options):
            raise ValueError("an option is empty")
        if len(set(self.options)) != len(self.options):
            raise ValueError(f"options repeat: {self.options}")
        if not self.rules:
            self.rules = list(kind_of(self.type).default_rules)
        allowed = RULES_FOR_BALLOT[self.type]
        for rule in self.rules:
            if rule not in RULES:
                raise ValueError(f"unknown voting rule {rule!r}{suggest(rule, RULES)}; expected one of {list(RULES)}")
            if rule not in allowed:
                raise ValueError(f"rule {rule!r} does not apply to {self.type} ballots; use one of {list(allowed)}")
        return self


class JurySpec(Strict):
    size: int = Field(12, ge=2, le=500)
    population: str = "us_adults"
    stratify: list[str] = Field(default_factory=lambda: ["party", "age", "sex"])
    quotas: dict[str, dict[str, int]] | None = None
    seed: int = 0


class WitnessSpec(Strict):
    name: str
    expertise: str
    stance: str | None = None
    brief: str | None = None
    documents: list[str] = Field(default_factory=list)

    @field_validator("name", "expertise")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value


DistilledPrompt = Literal["ballot", "compact", "brief"]


class ProcedureSpec(Strict):
    rounds: int = Field(2, ge=0, le=20)
    questions: bool = True
    questioners: int = Field(4, ge=0, le=100)
    words_per_turn: int = Field(60, ge=10, le=600)
    recent_turns: int = Field(4, ge=0, le=50)
    testimony_words: int = Field(150, ge=20, le=2000)
    ballot_attempts: int = Field(3, ge=1, le=10)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    vote: Literal["sample", "mode"] = "sample"  # a vote is a draw from the juror's distribution, or its mode
    option_orders: int = Field(DEFAULT_OPTION_ORDERS, ge=1, le=MAX_OPTION_ORDERS)  # orders each ballot is scored in
    calibration: Literal["none", "neutral"] = DEFAULT_CALIBRATION  # neutral: divide out the no-persona, no-context prior
    # --mode distilled's ballot prompt: the full mode's ballot (prose persona), the compact one (attributes stated
    # plainly) or the brief one (everything but the juror's one-line attributes shared): assembly.distilled
    distilled_prompt: DistilledPrompt = "ballot"

    def ballot_procedure(self) -> BallotProcedure:
        return BallotProcedure(vote=self.vote, option_orders=self.option_orders, calibration=self.calibration,
                               max_attempts=self.ballot_attempts, temperature=self.temperature)


class ModelsSpec(Strict):
    default: str = "embedded"
    juror: str | None = None
    witness: str | None = None
    moderator: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "ModelsSpec":
        for role in ("default", "juror", "witness", "moderator"):
            spec = getattr(self, role)
            if spec is not None:
                try:
                    parse_model_spec(spec)
                except SpecError as exc:
                    raise ValueError(str(exc)) from None
        return self

    def for_role(self, role: str) -> str:
        return getattr(self, role, None) or self.default


class AssemblySpec(Strict):
    """One assembly: what is asked, of whom, how, and by which models."""

    question: str
    background: str = ""
    ballot: BallotSpec
    jury: JurySpec = Field(default_factory=JurySpec)
    witnesses: list[WitnessSpec] = Field(default_factory=list)
    procedure: ProcedureSpec = Field(default_factory=ProcedureSpec)
    models: ModelsSpec = Field(default_factory=ModelsSpec)
    store: str | None = None
    title: str | None = None

    @field_validator("question")
    @classmethod
    def _question(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _witness_names(self) -> "AssemblySpec":
        names = [w.name for w in self.witnesses]
        if len(set(names)) != len(names):
            raise ValueError(f"witness names repeat: {names}")
        return self


# --- loading ---------------------------------------------------------------------------------------------------


def suggest(word: str, candidates) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or ''."""
    match = difflib.get_close_matches(str(word), list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def read_yaml(path: str | Path, error: type[Exception] = SpecError) -> Any:
    """A YAML file's data; a missing, malformed or non-UTF-8 file raises `error` with a one-line message."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}:{where}: malformed YAML: {problem}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a UTF-8 text file") from None


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """Walk the pydantic model tree along an error location to find the model that owns the last key."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if field is None:
            return None
        annotation = field.annotation
        args = getattr(annotation, "__args__", ()) or ()
        candidates = [annotation, *args]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return current


def format_validation_error(source: str, exc: ValidationError, root: type[BaseModel]) -> str:
    """One line for a pydantic error: `source: field.path: problem`, with a "did you mean" for a misspelt key (the
    question file's errors here, the training config's in finetune.config)."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    path = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        owner = _model_at(root, loc)
        hint = suggest(loc[-1], owner.model_fields) if owner else ""
        expected = f"; expected one of {', '.join(owner.model_fields)}" if owner and not hint else ""
        message = f"unknown key{hint}{expected}"
    elif err["type"] == "missing":
        message = "is required"
    else:
        message = err["msg"].removeprefix("Value error, ")
        if "input" in err and err["type"] not in ("value_error",) and not isinstance(err["input"], (dict, list)):
            message += f" (got {err['input']!r})"
    more = len(exc.errors()) - 1
    tail = f" (+{more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {path}: {message}{tail}"


def parse_spec(data: Any, source: str = "<spec>", base_dir: Path | None = None) -> AssemblySpec:
    """Validate a dict into an AssemblySpec; SpecError names the source, field path and problem."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping of keys (question, ballot, jury, ...), got {type(data).__name__}")
    try:
        spec = AssemblySpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(source, exc, AssemblySpec)) from None
    base = base_dir or Path.cwd()
    for i, witness in enumerate(spec.witnesses):
        for j, doc in enumerate(witness.documents):
            path = Path(doc) if Path(doc).is_absolute() else base / doc
            if not path.is_file():
                raise SpecError(f"{source}: witnesses.{i}.documents.{j}: file not found: {doc}")
            witness.documents[j] = str(path.resolve())
    return spec


def load_spec(path: str | Path) -> AssemblySpec:
    """Read and validate a question file."""
    path = Path(path)
    return parse_spec(read_yaml(path), str(path), path.parent)


def apply_overrides(
    spec: AssemblySpec,
    *,
    model: str | None = None,
    seed: int | None = None,
    jurors: int | None = None,
    rounds: int | None = None,
    store: str | None = None,
) -> AssemblySpec:
    """CLI/API overrides, validated like the file (so a bad --model is the same one-line error).

    `model` replaces `models.default` only: a role the file gives its own model (`models.juror: …`) keeps it, so
    `--model` changes every role the file leaves to the default."""
    data = spec.model_dump()
    if model is not None:
        data["models"]["default"] = model
    if seed is not None:
        data["jury"]["seed"] = seed
    if jurors is not None:
        data["jury"]["size"] = jurors
    if rounds is not None:
        data["procedure"]["rounds"] = rounds
    if store is not None:
        data["store"] = store
    return parse_spec(data, "overrides")
