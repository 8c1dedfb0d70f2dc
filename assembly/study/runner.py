"""Running a study: every (question, draw) as one ordinary assembly, many at once, recorded as a study.

Cross-jury batching: the draws run concurrently (up to `concurrency`) in one event loop and share ONE set of loaded
models (a ModelPool; the same Model objects go to every draw through `adeliberate(models=...)`). The local backend's
batching thread takes whatever requests are pending from all draws, so the jurors of several juries in the same
phase share forward passes, and the common prompt prefix of a batch (a phase's shared system block: the same question
for every draw) is computed once. API backends run up to their own concurrency limit across all draws.

A study is resumable: `resume=STUDY` plans the same study again (the sources given must be those it was made from,
and must plan the same questions, specs and draws), skips each draw whose current run completed, continues an
interrupted run from its checkpoints (assembly.resuming), and runs a failed one again from scratch, recording the
old run as superseded (`runs.superseded_by`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from assembly.errors import AssemblyError, SpecError
from assembly.providers.base import Model
from assembly.providers.registry import ModelPool
from assembly.study.limits import DEFAULT_CONCURRENCY, DEFAULT_DRAWS, EXECUTORS, MAX_CONCURRENCY, MAX_DRAWS
from assembly.study.outcomes import current_runs, load_outcomes
from assembly.study.plan import Slot, StudyRun, digest, slots
from assembly.study.sources import StudyQuestion, load_questions, source_paths
from assembly.study.summary import StudySummary, summarise

MAX_BATCH = 64  # the local backend's batch limit for a study (its default, 16, would cap cross-jury batching)
ROLES = ("juror", "witness", "moderator")


class StudySettings(BaseModel):
    """What plans a study. Recorded with it, so `--resume` plans the same study from the sources alone."""

    model_config = ConfigDict(extra="forbid")

    draws: int = DEFAULT_DRAWS
    seed: int | None = None
    model: str | None = None
    jurors: int | None = None
    rounds: int | None = None
    template: str | None = None
    split: str | None = None
    limit: int | None = None
    mode: Literal["full", "distilled"] = "full"  # distilled: one scoring pass per draw (assembly.distilled)


@dataclass(frozen=True)
class Job:
    slot: Slot
    run: StudyRun  # the new run's identity
    replaces: str | None = None  # a failed run this one runs again (superseded once this one is recorded)
    resume: str | None = None  # an interrupted run to continue instead (assembly.resuming)


@dataclass(frozen=True)
class JobDone:
    job: Job
    run_id: str  # the run that now holds the slot
    status: Literal["completed", "failed"]
    winner: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Progress:
    total: int  # planned runs
    skipped: int  # already completed (a resume)
    finished: int  # of the runs this call makes
    to_run: int
    last: JobDone | None = None


class StudyResult(BaseModel):
    study_id: str
    store: str
    status: str
    reason: str | None = None
    ran: int  # runs made by this call (new, re-run or resumed)
    skipped: int  # completed before this call
    failed: int
    failures: list[str]  # the first few errors, one line each
    summary: StudySummary


def check_limits(draws: int, concurrency: int, executor: str, workers: int) -> None:
    if not 1 <= draws <= MAX_DRAWS:
        raise SpecError(f"--draws {draws}: must be between 1 and {MAX_DRAWS}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise SpecError(f"--concurrency {concurrency}: must be between 1 and {MAX_CONCURRENCY}")
    if executor not in EXECUTORS:
        raise SpecError(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
    if workers < 1:
        raise SpecError(f"--workers {workers}: must be at least 1")


async def arun_study(
    sources: Sequence[str | Path],
    *,
    db: str | Path | None = None,
    resume: str | None = None,
    settings: dict[str, Any] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    executor: str = "local",
    workers: int = 2,
    models: Model | dict[str, Model] | None = None,
    model_options: dict[str, Any] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> StudyResult:
    """Run (or resume) a study and record it. `settings`: StudySettings fields given explicitly (on a resume, the
    others come from the study's record). `models`: injected models for every draw (local executor; tests).
    One-line AssemblyError / StoreError on bad input; a draw that fails is recorded and the study goes on."""
    from transcripts import Store, default_store_path

    store_path = str(db or default_store_path())
    store = Store(store_path)
    given = {k: v for k, v in (settings or {}).items() if v is not None}
    record = None
    if resume is not None:
        record = store.study(store.resolve_study(resume))
        chosen = StudySettings(**(record["spec"] or {}).get("settings", {})).model_copy(update=given)
    else:
        chosen = StudySettings(**given)
    check_limits(chosen.draws, concurrency, executor, workers)
    questions = load_questions(sources, template=chosen.template, split=chosen.split, limit=chosen.limit,
                               overrides={"model": chosen.model, "seed": chosen.seed, "jurors": chosen.jurors,
                                          "rounds": chosen.rounds})
    paths, plan_digest = source_paths(sources), digest(questions, chosen.draws)
    if record is not None:
        _check_same_study(record, paths, plan_digest)
    pool = ModelPool(**_model_options(model_options, concurrency, questions))
    try:
        # loaded before the study starts: a bad model spec is not a failed study
        by_question = {q.key: _models(q, pool, models) for q in questions} if executor == "local" else {}
        spec = {"settings": chosen.model_dump(), "concurrency": concurrency, "executor": executor,
                "workers": workers if executor == "ray" else None}
        if record is None:
            study_id = store.begin_study(question=questions[0].spec.question if len(questions) == 1 else None,
                                         questions=len(questions), config_paths=paths, digest=plan_digest,
                                         draws=chosen.draws, spec=spec)
        else:
            study_id = record["id"]
            store.restart_study(study_id)
        jobs, skipped = plan_jobs(study_id, slots(questions, chosen.draws), current_runs(store, study_id))
        done: list[JobDone] = []

        def finished(item: JobDone) -> None:
            if item.job.replaces:
                store.supersede_run(item.job.replaces, item.job.run.run_id)
            done.append(item)
            if on_progress is not None:
                on_progress(Progress(len(jobs) + skipped, skipped, len(done), len(jobs), item))

        if on_progress is not None:
            on_progress(Progress(len(jobs) + skipped, skipped, 0, len(jobs)))
        try:
            if executor == "ray":
                from assembly.study.ray_executor import run_ray

                await run_ray(jobs, store, concurrency=concurrency, workers=workers,
                              model_options=_model_options(model_options, concurrency, questions), on_done=finished,
                              mode=chosen.mode)
            else:
                await run_local(jobs, store_path, by_question, concurrency=concurrency, on_done=finished,
                                mode=chosen.mode)
        except (KeyboardInterrupt, asyncio.CancelledError):
            store.finish_study(study_id, "interrupted", "interrupted by the user", _summary(store, study_id,
                                                                                            questions, chosen.draws))
            raise
        except BaseException as exc:
            store.finish_study(study_id, "failed", f"{type(exc).__name__}: {exc}".splitlines()[0])
            raise
    finally:
        await pool.aclose()
    summary = summarise(questions, load_outcomes(store, study_id), chosen.draws)
    status, reason = "completed", None
    if summary.not_completed:
        status = "failed"
        reason = (f"{summary.not_completed} of {summary.runs} runs did not complete; resume the study "
                  f"({study_id}) to run them again")
    store.finish_study(study_id, status, reason, summary.model_dump(mode="json"))
    failures = [f"{d.job.slot.question.source} draw {d.job.slot.draw}: {d.error}" for d in done if d.error]
    return StudyResult(study_id=study_id, store=store_path, status=status, reason=reason, ran=len(done),
                       skipped=skipped, failed=len(failures), failures=failures[:5], summary=summary)


def run_study(sources: Sequence[str | Path], **kwargs) -> StudyResult:
    """Synchronous twin of `arun_study`."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun_study(sources, **kwargs))
    raise AssemblyError("run_study() was called inside a running event loop; await arun_study(...) instead")


def plan_jobs(study_id: str, planned: Sequence[Slot], current: dict[tuple[str, int], tuple[str, str]]
              ) -> tuple[list[Job], int]:
    """The jobs still to do and how many slots are already done: a completed current run is kept, an interrupted
    (or orphaned 'running') one is resumed, a failed one is run again."""
    from transcripts.store import new_id

    jobs, skipped = [], 0
    for slot in planned:
        run_id, status = current.get((slot.question.key, slot.draw), (None, None))
        if status == "completed":
            skipped += 1
            continue
        link = StudyRun(study_id, slot.question.key, slot.draw, new_id())
        if status in ("interrupted", "running"):
            jobs.append(Job(slot, link, resume=run_id))
        else:
            jobs.append(Job(slot, link, replaces=run_id))
    return jobs, skipped


async def run_local(jobs: Sequence[Job], store_path: str, models: dict[str, dict[str, Model]], *, concurrency: int,
                    on_done: Callable[[JobDone], None], mode: str = "full") -> None:
    """Every job in this event loop, `concurrency` at a time, in plan order (a question's draws side by side)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Job) -> None:
        async with gate:
            item = await run_job(job, store_path, models[job.slot.question.key], mode)
        on_done(item)

    async with asyncio.TaskGroup() as group:  # a bug in one draw (not a failed run) stops the others
        for job in jobs:
            group.create_task(one(job))


async def run_job(job: Job, store_path: str, models: dict[str, Model], mode: str = "full") -> JobDone:
    """One draw: resume its interrupted run (a fresh run superseding it when that cannot be done), or run it.
    A distilled draw has nothing to resume: it runs again."""
    from assembly.deliberation import adeliberate
    from assembly.distilled import adistill
    from assembly.resuming import aresume

    if job.resume is not None and mode == "distilled":
        job = Job(job.slot, job.run, replaces=job.resume)
    if job.resume is not None:
        try:
            result = await aresume(job.resume, db=store_path, models=models)
            return JobDone(job, job.resume, "completed", result.verdict.winner)
        except AssemblyError:
            job = Job(job.slot, job.run, replaces=job.resume)  # e.g. its checkpoints are gone: start it again
    try:
        conduct = adistill if mode == "distilled" else adeliberate
        result = await conduct(job.slot.question.spec, seed=job.slot.seed, db=store_path, models=models,
                               study=job.run)
    except AssemblyError as exc:
        return JobDone(job, job.run.run_id, "failed", error=str(exc))
    return JobDone(job, job.run.run_id, "completed", result.verdict.winner)


def _check_same_study(record: dict[str, Any], paths: list[str], plan_digest: str) -> None:
    study_id = record["id"]
    if list(record["config_paths"]) != paths:
        raise SpecError(f"study {study_id} was made from {', '.join(record['config_paths'])}, not "
                        f"{', '.join(paths)}; resume it with the same question files")
    if record["digest"] != plan_digest:
        raise SpecError(f"study {study_id}: {', '.join(paths)} no longer plans the same questions, specs and draws "
                        "(a file changed since the study began, or an option differs); start a new study")


def _models(question: StudyQuestion, pool: ModelPool, models: Model | dict[str, Model] | None) -> dict[str, Model]:
    if isinstance(models, Model):
        return {role: models for role in ROLES}
    given = models or {}
    return {role: given.get(role) or pool.get(question.spec.models.for_role(role)) for role in ROLES}


def _model_options(options: dict[str, Any] | None, concurrency: int, questions: Sequence[StudyQuestion]
                   ) -> dict[str, Any]:
    """Room in one local batch for a phase of every concurrent jury (other backends ignore max_batch)."""
    jurors = max(q.spec.jury.size for q in questions)
    return {"max_batch": min(MAX_BATCH, max(16, concurrency * jurors)), **(options or {})}


def _summary(store, study_id: str, questions: Sequence[StudyQuestion], draws: int) -> dict[str, Any] | None:
    """The summary so far, for a study stopped part-way (None when even that cannot be read)."""
    try:
        return summarise(questions, load_outcomes(store, study_id), draws).model_dump(mode="json")
    except Exception:  # noqa: BLE001 - stopping must not fail on a report
        return None
