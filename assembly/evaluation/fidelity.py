"""The fidelity runner: do simulated sub-groups answer like the real ones?

For each question and each (attribute, group) of a FORMAT 1 file:
  1. seat N jurors conditioned on the group (`Population.sample(where={attribute: group})`, so the other attributes
     follow the population frame given the group), render each persona with its own seed, and ask each the question
     as a private ballot over the file's options — with `assembly.ballots.cast_ballot`, the same prompt and
     validation the engine uses, and its ballot procedure (`option_orders`, `calibration`, `vote`). A scoring
     backend gives each juror's option probabilities, averaged over option orders, and a vote drawn from them: the
     simulated distribution is the mean of the probabilities (R), and the tally of the votes is scored too
     (R_sampled: what an assembly of these jurors would count). Otherwise each valid ballot counts one vote and
     abstentions are the invalid rate.
  2. do the same with N jurors drawn from the whole population ("ignore persona": the model's own answer to a
     representative jury) and with one persona-less prompt ("no persona");
  3. score them against the human distributions (metrics.py) and the human baselines from the file itself.

Each (attribute, group) panel is drawn once and sits for every question (like a real jury), so differences between
questions are not sampling noise in the panel. All calls of a question (every group's jurors and the baselines) are
fired concurrently, so a batching backend (the local model) scores them in few forward passes.

`mode="assembly"` runs a full mini-assembly (`assembly.deliberate`) per (question, group) instead of single ballots,
and scores the post-deliberation ballots.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from assembly.ballot import Ballot
from assembly.ballot_types import VOTE_MODES
from assembly.ballots import MAX_OPTION_ORDERS, BallotProcedure, NeutralPriors, cast_ballot, position_bias
from assembly.config import DEFAULT_CALIBRATION, DEFAULT_OPTION_ORDERS
from assembly.evaluation import metrics as M
from assembly.evaluation.survey import OVERALL, Distribution, Survey, SurveyQuestion
from assembly.providers.base import Model
from assembly.seeds import stable_seed

# Pairs of opposed groups for steerability: (attribute, group A, group B).
DEFAULT_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("party", "Democrat", "Republican"),
    ("ideology", "Very liberal", "Very conservative"),
    ("ideology", "Liberal", "Conservative"),
)
CALIBRATIONS = ("none", "neutral")  # assembly.ballots: none, or divide by the model's no-persona prior

BallotFn = Callable[..., Awaitable[Ballot]]
ProgressFn = Callable[[int, int, str], None]


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
    # the engine's ballot procedure (assembly.ballots.BallotProcedure): scored ballots are averaged over this many
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


@dataclass
class Juror:
    id: str
    attributes: dict[str, str]
    persona: str
    seed: int


@dataclass
class Cast:
    """The jurors' ballots on one question for one panel, reduced to a distribution."""

    probs: np.ndarray | None  # the mean of the jurors' distributions; None when no ballot was valid
    n_jurors: int
    n_invalid: int
    ballots: list[Ballot] = field(default_factory=list)
    votes: np.ndarray | None = None  # the tally of the jurors' votes, as shares; None when no ballot was valid


def _distribution(ballot: Ballot, options: list[str]) -> np.ndarray | None:
    """A valid ballot's distribution over the options: its probabilities where scored, else one-hot on its vote."""
    if ballot.status != "valid":
        return None
    if ballot.probabilities:
        row = np.array([ballot.probabilities.get(o, 0.0) for o in options], dtype=float)
        return row / row.sum() if row.sum() > 0 else None
    if ballot.choice in options:
        return np.eye(len(options))[options.index(ballot.choice)]
    return None


def reduce_ballots(ballots: list[Ballot], options: list[str]) -> Cast:
    """The jurors' valid ballots two ways: the mean of their distributions (probabilities where scored, else one
    vote each), and the tally of their votes (each choice counts one; a scored ballot's choice is already a draw
    from its distribution, so the tally carries the sampling noise an assembly's count has)."""
    rows, votes, invalid = [], np.zeros(len(options)), 0
    for ballot in ballots:
        row = _distribution(ballot, options)
        if row is None:
            invalid += 1
            continue
        rows.append(row)
        if ballot.choice in options:
            votes[options.index(ballot.choice)] += 1
    probs = np.mean(rows, axis=0) if rows else None
    return Cast(probs, len(ballots), invalid, ballots, votes / votes.sum() if votes.sum() > 0 else None)


# --- jurors ---------------------------------------------------------------------------------------------------


class PanelError(Exception):
    """A group cannot be seated (the population frame has no such group)."""


def _default_population(name: str):
    from juries import load_population

    return load_population(name)


def _default_persona(attributes: dict[str, str], seed: int) -> str:
    from juries import render_persona

    return render_persona(attributes, seed).text


def seat_panel(
    population,
    n: int,
    *,
    where: dict[str, str] | None,
    seed: int,
    label: str,
    persona_fn: Callable[[dict[str, str], int], str],
) -> list[Juror]:
    """Draw n jurors (conditioned on `where`) and render their personas, each with its own seed."""
    rng = np.random.default_rng(seed)
    try:
        records = population.sample(n, rng, where=where)
    except Exception as exc:  # juries.JuryError and friends: the group is not in the frame
        raise PanelError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    jurors = []
    for i, attrs in enumerate(records):
        attrs = dict(attrs)
        persona_seed = stable_seed(seed, label, i)
        jurors.append(Juror(f"{label}#{i + 1}", attrs, persona_fn(attrs, persona_seed), persona_seed))
    return jurors


# --- the run --------------------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    config: EvalConfig
    model: str
    file: str
    questions: list[str]
    records: list[dict[str, Any]]  # one per (question, attribute, group)
    overall: list[dict[str, Any]]  # one per question with an `overall` row: the baselines against everyone
    pairs: list[dict[str, Any]]  # one per (question, pair)
    skipped: dict[str, str]  # "attribute=group" -> why it could not be seated
    panels: dict[str, list[Juror]]
    simulated: dict[str, dict[tuple[str, str], np.ndarray]]  # question_id -> (attribute, group) -> distribution
    calls: int = 0  # model calls (a scored ballot makes one per option order, plus the calibration priors)
    wall_s: float = 0.0
    invalid: int = 0
    ballots: int = 0
    position_bias: dict[str, float] | None = None  # assembly.ballots.position_bias over every ballot of the run


class EvalHooks:
    """Callbacks around the run; the defaults do nothing. The --db recorder (evaluation/store.py) overrides them."""

    def start_question(self, question: SurveyQuestion, seated: dict[str, list[Juror]], model):
        """Called before a question's ballots; returns the model to use for it (e.g. a recording wrapper)."""
        return model

    def on_ballot(self, question: SurveyQuestion, panel: str, juror: Juror | None, ballot: Ballot) -> None:
        """Every ballot as it arrives (juror is None for a mini-assembly's post ballots)."""

    def end_question(self, question: SurveyQuestion, records: list[dict[str, Any]]) -> None:
        """After a question's ballots are scored."""

    def assembly_db(self) -> str | None:
        """mode="assembly": the store the mini-assemblies write to (None: a temporary one)."""
        return None


class _Counter:
    def __init__(self) -> None:
        self.calls = 0


class _MeteredModel(Model):
    """Counts and caps the ballots' model calls one by one: a scored ballot makes one per option order (and the
    calibration prior more), so counting or capping ballots would misstate both the cost and the load."""

    def __init__(self, inner, counter: _Counter, semaphore: asyncio.Semaphore | None):
        self.inner = inner
        self.counter = counter
        self.semaphore = semaphore
        self.name = getattr(inner, "name", str(inner))

    @property
    def scores_options(self) -> bool:  # type: ignore[override]  # live: a backend can find mid-run it cannot score
        return bool(getattr(self.inner, "scores_options", False))

    async def generate(self, request):
        self.counter.calls += 1
        if self.semaphore is None:
            return await self.inner.generate(request)
        async with self.semaphore:
            return await self.inner.generate(request)


async def _cast_default(model, **kwargs) -> Ballot:
    return await cast_ballot(model, **kwargs)


async def evaluate_survey(
    survey: Survey,
    model,
    config: EvalConfig | None = None,
    *,
    population=None,
    persona_fn: Callable[[dict[str, str], int], str] | None = None,
    ballot_fn: BallotFn | None = None,
    deliberate_fn: Callable[..., Awaitable[Any]] | None = None,
    hooks: "EvalHooks | None" = None,
    progress: ProgressFn | None = None,
) -> EvalResult:
    """Run the evaluation of `model` on `survey`. Returns per-question records; `summarise()` aggregates them.

    population / persona_fn / ballot_fn default to juries.load_population(config.population), juries.render_persona
    and assembly.ballots.cast_ballot; tests pass fakes. `hooks` (EvalHooks) sees each question start and end and
    every ballot, and may wrap the model per question (the --db recorder does).
    """
    config = config or EvalConfig()
    if config.jurors_per_group < 1:
        raise ValueError("jurors_per_group must be at least 1")
    started = time.perf_counter()
    population = population if population is not None else _default_population(config.population)
    persona_fn = persona_fn or _default_persona
    ballot_fn = ballot_fn or _cast_default
    hooks = hooks or EvalHooks()
    n = config.jurors_per_group

    attributes = config.attributes or [a for a in survey.attributes() if a != OVERALL[0]]
    groups: list[tuple[str, str]] = []
    for q in survey:
        for key in q.distributions:
            if key[0] in attributes and key != OVERALL and key not in groups and (
                    config.groups is None or key[1] in config.groups):
                groups.append(key)
    groups.sort(key=lambda k: (attributes.index(k[0]), _group_order(*k)))

    panels: dict[str, list[Juror]] = {}
    skipped: dict[str, str] = {}
    for attribute, group in groups:
        label = f"{attribute}={group}"
        try:
            panels[label] = seat_panel(population, n, where={attribute: group}, seed=stable_seed(config.seed, label),
                                       label=label, persona_fn=persona_fn)
        except PanelError as exc:
            skipped[label] = str(exc)
    if config.ignore_persona:
        panels["population"] = seat_panel(population, n, where=None, seed=stable_seed(config.seed, "population"),
                                          label="population", persona_fn=persona_fn)

    counter = _Counter()
    semaphore = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency > 0 else None
    procedure = config.procedure()
    order_seed = stable_seed(config.seed, "orders")  # the orders beyond the cyclic shifts: one set per run

    async def ballot(q: SurveyQuestion, qmodel, panel: str, juror: Juror, priors: NeutralPriors) -> Ballot:
        seed = stable_seed(config.seed, q.question_id, juror.id)
        kwargs = dict(
            juror_id=juror.id,
            persona=juror.persona,
            question=q.question,
            options=list(q.options),
            ballot_type="single",
            phase="pre",
            seed=seed,
            vote_seed=seed,
            procedure=procedure,
            priors=priors,
            order_seed=order_seed,
        )
        result = await ballot_fn(qmodel, **kwargs)
        hooks.on_ballot(q, panel, juror, result)
        return result

    async def assembly_ballots(q: SurveyQuestion, qmodel, panel: str) -> list[Ballot]:
        from assembly.evaluation.assembly_mode import run_mini_assembly

        pre, post, calls = await run_mini_assembly(q, _key(panel), qmodel, config, deliberate_fn=deliberate_fn,
                                                   db=hooks.assembly_db())
        counter.calls += calls
        pre_casts[panel] = reduce_ballots(pre, q.options)
        for b in post:
            hooks.on_ballot(q, panel, None, b)
        return post

    records: list[dict[str, Any]] = []
    overall_records: list[dict[str, Any]] = []
    pair_records: list[dict[str, Any]] = []
    simulated: dict[str, dict[tuple[str, str], np.ndarray]] = {}
    total_invalid = 0
    total_ballots = 0
    every_ballot: list[Ballot] = []
    scores = bool(getattr(model, "scores_options", False))

    no_persona = [Juror(f"no-persona#{i + 1}", {}, "", 0) for i in range(1 if scores else n)]
    for index, q in enumerate(survey, 1):
        jobs: dict[str, Awaitable[list[Ballot]]] = {}
        present = [label for label in panels if label == "population" or _key(label) in q.distributions]
        seated = {label: panels[label] for label in present}
        if config.no_persona:
            seated["no-persona"] = no_persona
        qmodel = _MeteredModel(hooks.start_question(q, seated, model), counter, semaphore)
        priors = NeutralPriors()  # the calibration prior: computed once per question, shared by every panel
        pre_casts: dict[str, Cast] = {}
        for label, jurors in seated.items():
            if config.mode == "assembly" and label not in ("population", "no-persona"):
                jobs[label] = assembly_ballots(q, model, label)  # a mini-assembly records its own run
            else:
                jobs[label] = asyncio.gather(*(ballot(q, qmodel, label, j, priors) for j in jurors))
        results = await asyncio.gather(*jobs.values())
        casts = {label: reduce_ballots(list(b), q.options) for label, b in zip(jobs, results)}
        for cast in [*casts.values(), *pre_casts.values()]:
            every_ballot.extend(cast.ballots)
        for cast in casts.values():
            total_invalid += cast.n_invalid
            total_ballots += cast.n_jurors
        simulated[q.question_id] = {_key(label): c.probs for label, c in casts.items() if c.probs is not None}
        new_records = _question_records(q, casts, config, pre_casts)
        records.extend(new_records)
        hooks.end_question(q, new_records)
        overall_records.extend(_overall_record(q, casts, config))
        pair_records.extend(_pair_records(q, casts, config))
        if progress is not None:
            progress(index, len(survey), q.question_id)

    return EvalResult(
        config=config,
        model=getattr(model, "name", str(model)),
        file=survey.path,
        questions=list(survey.questions),
        records=records,
        overall=overall_records,
        pairs=pair_records,
        skipped=skipped,
        panels={k: v for k, v in panels.items()},
        simulated=simulated,
        calls=counter.calls,
        wall_s=time.perf_counter() - started,
        invalid=total_invalid,
        ballots=total_ballots,
        position_bias=position_bias(every_ballot),
    )


def _group_order(attribute: str, group: str) -> tuple[int, str]:
    try:
        from juries.vocabulary import CANONICAL_GROUPS

        canon = CANONICAL_GROUPS.get(attribute, ())
    except ImportError:  # pragma: no cover - juries ships with the package
        canon = ()
    return (canon.index(group) if group in canon else len(canon), group)


def _key(label: str) -> tuple[str, str]:
    """Panel label -> (attribute, group); the baselines are ("population", "all") and ("no-persona", "all")."""
    attribute, sep, group = label.partition("=")
    return (attribute, group) if sep else (label, "all")


def _positions(q: SurveyQuestion, config: EvalConfig):
    return q.positions if config.exact_positions and q.positions else None


def _r(p, q_, question: SurveyQuestion, config: EvalConfig) -> float | None:
    if question.nominal or p is None or q_ is None:
        return None
    return M.representativeness(p, q_, _positions(question, config))


def _tv(p, q_) -> float | None:
    if p is None or q_ is None:
        return None
    return M.total_variation(p, q_)


def _reference_overall(q: SurveyQuestion, attribute: str) -> np.ndarray:
    """The 'overall' human distribution: the file's overall row, else the attribute's groups pooled."""
    overall = q.overall()
    if overall is not None:
        return overall.probs
    pooled = sum(d.counts for (a, _), d in q.distributions.items() if a == attribute)
    return pooled / pooled.sum()


def _question_records(q: SurveyQuestion, casts: dict[str, Cast], config: EvalConfig,
                      pre_casts: dict[str, Cast] | None = None) -> list[dict[str, Any]]:
    out = []
    population = casts.get("population")
    no_persona = casts.get("no-persona")
    for label, cast in casts.items():
        if label in ("population", "no-persona"):
            continue
        key = _key(label)
        human: Distribution = q.distributions[key]
        h = human.probs
        overall = _reference_overall(q, key[0])
        sim = cast.probs
        pop = population.probs if population else None
        nop = no_persona.probs if no_persona else None
        out.append({
            "question_id": q.question_id,
            "attribute": key[0],
            "group": key[1],
            "k": q.k,
            "nominal": q.nominal,
            "n_human": human.n,
            "human": h.tolist(),
            "simulated": None if sim is None else sim.tolist(),
            "sampled": None if cast.votes is None else cast.votes.tolist(),
            "R": _r(sim, h, q, config),
            "TV": _tv(sim, h),
            "R_sampled": _r(cast.votes, h, q, config),
            "TV_sampled": _tv(cast.votes, h),
            "R_ignore_persona": _r(pop, h, q, config),
            "TV_ignore_persona": _tv(pop, h),
            "R_no_persona": _r(nop, h, q, config),
            "TV_no_persona": _tv(nop, h),
            "R_uniform": _r(M.uniform(q.k), h, q, config),
            "TV_uniform": _tv(M.uniform(q.k), h),
            "R_overall": _r(overall, h, q, config),
            "TV_overall": _tv(overall, h),
            "n_jurors": cast.n_jurors,
            "n_invalid": cast.n_invalid,
        })
        pre = (pre_casts or {}).get(label)
        if pre is not None:  # mode "assembly": the same jury's ballots before deliberation
            out[-1].update({"simulated_pre": None if pre.probs is None else pre.probs.tolist(),
                            "R_pre": _r(pre.probs, h, q, config), "TV_pre": _tv(pre.probs, h)})
    return out


def _overall_record(q: SurveyQuestion, casts: dict[str, Cast], config: EvalConfig) -> list[dict[str, Any]]:
    overall = q.overall()
    if overall is None:
        return []
    h = overall.probs
    pop = casts.get("population")
    nop = casts.get("no-persona")
    return [{
        "question_id": q.question_id,
        "nominal": q.nominal,
        "R_ignore_persona": _r(pop.probs if pop else None, h, q, config),
        "R_no_persona": _r(nop.probs if nop else None, h, q, config),
        "R_uniform": _r(M.uniform(q.k), h, q, config),
        "TV_ignore_persona": _tv(pop.probs if pop else None, h),
        "TV_no_persona": _tv(nop.probs if nop else None, h),
    }]


def _pair_records(q: SurveyQuestion, casts: dict[str, Cast], config: EvalConfig) -> list[dict[str, Any]]:
    out = []
    if q.nominal:
        return out
    pos = _positions(q, config)
    for attribute, a, b in config.pairs:
        la, lb = f"{attribute}={a}", f"{attribute}={b}"
        if la not in casts or lb not in casts:
            continue
        sa, sb = casts[la].probs, casts[lb].probs
        ha, hb = q.distributions[(attribute, a)].probs, q.distributions[(attribute, b)].probs
        if sa is None or sb is None:
            continue
        out.append({
            "question_id": q.question_id,
            "attribute": attribute,
            "group_a": a,
            "group_b": b,
            "steer_a": M.steerability(sa, ha, hb, pos),
            "steer_b": M.steerability(sb, hb, ha, pos),
            "R_between_sim": M.representativeness(sa, sb, pos),
            "R_between_human": M.representativeness(ha, hb, pos),
            # signed shift of the mean position, B minus A, in units of the scale (K-1): does the model move the
            # right way, and by how much compared with the real groups?
            "shift_sim": _mean_shift(sa, sb),
            "shift_human": _mean_shift(ha, hb),
        })
    return out


def _mean_shift(p: np.ndarray, q: np.ndarray) -> float:
    k = len(p)
    x = np.arange(k) / (k - 1)
    return float(np.dot(q, x) - np.dot(p, x))


# --- aggregation ----------------------------------------------------------------------------------------------

METRIC_KEYS = ("R", "TV", "R_sampled", "TV_sampled", "R_ignore_persona", "TV_ignore_persona", "R_no_persona",
               "TV_no_persona", "R_uniform", "TV_uniform", "R_overall", "TV_overall", "R_pre", "TV_pre")


def _mean(rows: Iterable[dict], key: str) -> float | None:
    return M.mean_or_none(r.get(key) for r in rows)


def _se(rows: Iterable[dict], key: str) -> float | None:
    """Standard error of the mean over questions (None with fewer than 2 values)."""
    vals = [r.get(key) for r in rows]
    vals = [float(v) for v in vals if v is not None]
    if len(vals) < 2:
        return None
    return float(np.std(vals, ddof=1) / math.sqrt(len(vals)))


def summarise(result: EvalResult) -> dict[str, Any]:
    """The JSON document of a run (keys documented in docs/fidelity.md)."""
    by_group: dict[tuple[str, str], list[dict]] = {}
    for rec in result.records:
        by_group.setdefault((rec["attribute"], rec["group"]), []).append(rec)
    groups = []
    for (attribute, group), rows in by_group.items():
        n_jurors = sum(r["n_jurors"] for r in rows)
        n_invalid = sum(r["n_invalid"] for r in rows)
        entry = {
            "attribute": attribute,
            "group": group,
            "n_questions": len(rows),
            "n_ordinal": sum(1 for r in rows if not r["nominal"]),
            **{key: _mean(rows, key) for key in METRIC_KEYS},
            "invalid_rate": M.invalid_rate(n_invalid, n_jurors),
            "R_se": _se(rows, "R"),
            "R_sampled_se": _se(rows, "R_sampled"),
        }
        entry["R_gain_over_ignore_persona"] = (
            None if entry["R"] is None or entry["R_ignore_persona"] is None else entry["R"] - entry["R_ignore_persona"]
        )
        groups.append(entry)

    attributes: dict[str, dict[str, Any]] = {}
    for entry in groups:
        attributes.setdefault(entry["attribute"], []).append(entry)  # type: ignore[arg-type]
    per_attribute = {}
    for attribute, entries in attributes.items():
        rows = [r for r in result.records if r["attribute"] == attribute]
        per_attribute[attribute] = {
            "n_groups": len(entries),
            **{key: _mean(entries, key) for key in METRIC_KEYS},
            "invalid_rate": M.invalid_rate(sum(r["n_invalid"] for r in rows), sum(r["n_jurors"] for r in rows)),
        }

    by_pair: dict[tuple[str, str, str], list[dict]] = {}
    for rec in result.pairs:
        by_pair.setdefault((rec["attribute"], rec["group_a"], rec["group_b"]), []).append(rec)
    steer = []
    for (attribute, a, b), rows in by_pair.items():
        sa, sb = _mean(rows, "steer_a"), _mean(rows, "steer_b")
        shift_sim = np.array([r["shift_sim"] for r in rows])
        shift_human = np.array([r["shift_human"] for r in rows])
        agree = [np.sign(s) == np.sign(h) for s, h in zip(shift_sim, shift_human) if abs(h) > 0.05]
        steer.append({
            "attribute": attribute,
            "group_a": a,
            "group_b": b,
            "n_questions": len(rows),
            "steer_a": sa,
            "steer_b": sb,
            "steerability": None if sa is None or sb is None else (sa + sb) / 2,
            "steerability_se": _se([{"s": (r["steer_a"] + r["steer_b"]) / 2} for r in rows], "s"),
            "R_between_sim": _mean(rows, "R_between_sim"),
            "R_between_human": _mean(rows, "R_between_human"),
            "mean_abs_shift_sim": float(np.mean(np.abs(shift_sim))),
            "mean_abs_shift_human": float(np.mean(np.abs(shift_human))),
            "shift_direction_agreement": float(np.mean(agree)) if agree else None,
        })

    overall = None
    if result.overall:
        overall = {
            "n_questions": len(result.overall),
            **{key: _mean(result.overall, key) for key in ("R_ignore_persona", "R_no_persona", "R_uniform",
                                                         "TV_ignore_persona", "TV_no_persona")},
        }

    cfg = result.config
    return {
        "schema": "assembly.eval.survey/1",
        "file": result.file,
        "model": result.model,
        "mode": cfg.mode,
        "seed": cfg.seed,
        "jurors_per_group": cfg.jurors_per_group,
        "population": cfg.population,
        "n_questions": len(result.questions),
        "question_ids": result.questions,
        "attributes": per_attribute,
        "groups": groups,
        "steerability": steer,
        "overall": overall,
        "skipped_groups": result.skipped,
        "option_orders": cfg.option_orders,
        "calibration": cfg.calibration,
        "vote": cfg.vote,
        "calls": result.calls,
        "ballots": result.ballots,
        "calls_per_ballot": round(result.calls / result.ballots, 3) if result.ballots else None,
        "position_bias": result.position_bias,
        "invalid_rate": M.invalid_rate(result.invalid, result.ballots),
        "wall_s": round(result.wall_s, 3),
        "ballots_per_s": round(result.ballots / result.wall_s, 3) if result.wall_s > 0 else None,
    }


def simulated_survey(result: EvalResult, survey: Survey) -> list[SurveyQuestion]:
    """The simulated distributions as FORMAT 1 questions (counts = probability x jurors), for write_survey().

    Panels become their (attribute, group); the baselines become attribute `population` / `no-persona`, group `all`.
    """
    out = []
    n = result.config.jurors_per_group
    for qid in result.questions:
        src = survey.questions[qid]
        q = SurveyQuestion(qid, src.question, list(src.options), nominal=src.nominal)
        for (attribute, group), probs in result.simulated.get(qid, {}).items():
            if probs is None or not math.isfinite(float(np.sum(probs))):
                continue
            q.distributions[(attribute, group)] = Distribution(attribute, group, np.asarray(probs) * n)
        out.append(q)
    return out


# --- choosing what to evaluate ---------------------------------------------------------------------------------


def select_questions(
    survey: Survey,
    *,
    questions: str | None = None,
    split_ids: list[str] | None = None,
    seed: int = 0,
) -> Survey:
    """Restrict a survey to a split (ids not in the file are ignored: a split may cover several files), then to
    `questions`: a number N (a seeded sample of N, kept in file order) or comma-separated ids (an unknown id is an
    error naming it)."""
    from assembly.evaluation.survey import SurveyFormatError

    chosen = survey
    if split_ids is not None:
        wanted = set(split_ids)
        kept = [qid for qid in survey.questions if qid in wanted]
        if not kept:
            raise SurveyFormatError(f"{survey.path}: no question of the split is in this file")
        chosen = survey.select(kept)
    if questions:
        text = questions.strip()
        if text.isdigit():
            n = int(text)
            if n < 1:
                raise SurveyFormatError(f"--questions {text}: must be at least 1")
            ids = list(chosen.questions)
            if n < len(ids):
                picked = set(np.random.default_rng(seed).choice(len(ids), size=n, replace=False).tolist())
                ids = [qid for i, qid in enumerate(ids) if i in picked]
            chosen = chosen.select(ids)
        else:
            ids = [t.strip() for t in text.split(",") if t.strip()]
            outside = [i for i in ids if i not in chosen.questions]
            if outside:
                where = "the split" if split_ids is not None else "the file"
                raise SurveyFormatError(f"--questions: not in {where}: {', '.join(outside[:5])}")
            chosen = chosen.select(ids)
    return chosen


def check_attributes(survey: Survey, attributes: list[str] | None) -> list[str] | None:
    from assembly.evaluation.survey import SurveyFormatError

    if attributes is None:
        return None
    present = survey.attributes()
    unknown = [a for a in attributes if a not in present]
    if unknown:
        raise SurveyFormatError(
            f"--attributes: {', '.join(unknown)} not in {survey.path} (attributes there: {', '.join(present)})"
        )
    return attributes
