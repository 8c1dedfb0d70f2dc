"""The fidelity runner: do simulated sub-groups answer like the real ones?

For each question and each (attribute, group) of a FORMAT 1 file:
  1. seat N jurors conditioned on the group (`Population.sample(where={attribute: group})`, so the other attributes
     follow the population frame given the group), render each persona with its own seed, and ask each the question
     as a private ballot over the file's options — with `assembly.casting.cast_ballot`, the same prompt and
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

This module runs it; the parts live beside it: `config` (EvalConfig), `panels` (seating), `scoring` (one question's
records), `summary` (the JSON document), `selection` (which questions and attributes), `store` (--db).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from assembly.ballot import Ballot
from assembly.casting import NeutralPriors, cast_ballot, position_bias
from assembly.evaluation.config import EvalConfig
from assembly.evaluation.panels import Juror, panel_key, seat_panels
from assembly.evaluation.scoring import Cast, overall_records, pair_records, question_records, reduce_ballots
from assembly.evaluation.survey import Survey, SurveyQuestion
from assembly.providers.base import Model
from assembly.seeds import seed_for

BallotFn = Callable[..., Awaitable[Ballot]]
ProgressFn = Callable[[int, int, str], None]


def _default_population(name: str):
    from juries import load_population

    return load_population(name)


def _default_persona(attributes: dict[str, str], seed: int) -> str:
    from juries import render_persona

    return render_persona(attributes, seed).text


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
    position_bias: dict[str, float] | None = None  # assembly.casting.position_bias over every ballot of the run


class EvalHooks:
    """Callbacks around the run; the defaults do nothing. The --db recorder (evaluation/store.py) overrides them."""

    @asynccontextmanager
    async def question(self, question: SurveyQuestion, seated: dict[str, list[Juror]], model) -> AsyncIterator[Any]:
        """Around one question's ballots, scoring included: yields the model to use for it (e.g. a recording
        wrapper). The --db recorder records the question's run here, with the lifecycle every mode shares."""
        yield model

    def on_ballot(self, question: SurveyQuestion, panel: str, juror: Juror | None, ballot: Ballot) -> None:
        """Every ballot as it arrives (juror is None for a mini-assembly's post ballots)."""

    async def end_question(self, question: SurveyQuestion, records: list[dict[str, Any]]) -> None:
        """After a question's ballots are scored, inside `question`."""

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
    """Run the evaluation of `model` on `survey`. Returns per-question records; `summary.summarise()` aggregates
    them.

    population / persona_fn / ballot_fn default to juries.load_population(config.population), juries.render_persona
    and assembly.casting.cast_ballot; tests pass fakes. `hooks` (EvalHooks) wraps each question and sees every
    ballot and each question's records, and may wrap the model per question (the --db recorder does).
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
    panels, skipped = seat_panels(survey, population, config, persona_fn)

    counter = _Counter()
    semaphore = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency > 0 else None
    procedure = config.procedure()
    order_seed = seed_for(config.seed, "orders")  # the orders beyond the cyclic shifts: one set per run

    async def ballot(q: SurveyQuestion, qmodel, panel: str, juror: Juror, priors: NeutralPriors) -> Ballot:
        seed = seed_for(config.seed, q.question_id, juror.id)
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

        pre, post, calls = await run_mini_assembly(q, panel_key(panel), qmodel, config, deliberate_fn=deliberate_fn,
                                                   db=hooks.assembly_db())
        counter.calls += calls
        pre_casts[panel] = reduce_ballots(pre, q.options)
        for b in post:
            hooks.on_ballot(q, panel, None, b)
        return post

    records: list[dict[str, Any]] = []
    overall: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    simulated: dict[str, dict[tuple[str, str], np.ndarray]] = {}
    total_invalid = 0
    total_ballots = 0
    every_ballot: list[Ballot] = []
    scores = bool(getattr(model, "scores_options", False))

    no_persona = [Juror(f"no-persona#{i + 1}", {}, "", 0) for i in range(1 if scores else n)]
    for index, q in enumerate(survey, 1):
        jobs: dict[str, Awaitable[list[Ballot]]] = {}
        present = [label for label in panels if label == "population" or panel_key(label) in q.distributions]
        seated = {label: panels[label] for label in present}
        if config.no_persona:
            seated["no-persona"] = no_persona
        async with hooks.question(q, seated, model) as question_model:
            qmodel = _MeteredModel(question_model, counter, semaphore)
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
            simulated[q.question_id] = {panel_key(label): c.probs for label, c in casts.items() if c.probs is not None}
            new_records = question_records(q, casts, config, pre_casts)
            records.extend(new_records)
            await hooks.end_question(q, new_records)
        overall.extend(overall_records(q, casts, config))
        pairs.extend(pair_records(q, casts, config))
        if progress is not None:
            progress(index, len(survey), q.question_id)

    return EvalResult(
        config=config,
        model=getattr(model, "name", str(model)),
        file=survey.path,
        questions=list(survey.questions),
        records=records,
        overall=overall,
        pairs=pairs,
        skipped=skipped,
        panels={k: v for k, v in panels.items()},
        simulated=simulated,
        calls=counter.calls,
        wall_s=time.perf_counter() - started,
        invalid=total_invalid,
        ballots=total_ballots,
        position_bias=position_bias(every_ballot),
    )
