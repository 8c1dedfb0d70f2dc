"""`--executor ray`: a study's draws as calls on Ray actors, for more machines than one.

* Workers are actors (`StudyWorker`), `workers` of them, each holding its models loaded once (a ModelPool: a local
  model's weights, or a client of a shared OpenAI-compatible server such as vLLM or `assembly serve`) and running up
  to `concurrency` draws at once in its own event loop — so draws batch together inside a worker as they do locally.
* A DuckDB file belongs to one machine, so each draw records into a temporary store of its worker's own; the worker
  hands the run's rows back (every table, as Arrow: transcripts.transfer — FORMAT 2 JSONL would drop tallies,
  verdicts, model calls and ballot distributions) and deletes its files. The driver writes them into the one store,
  links superseded runs and reports progress. A draw still in a worker when the driver stops never reaches the
  store; a resume runs it again from the start.
* The workers get the driver's backend registry (`assembly.providers.registry.BACKENDS`), so a backend registered
  in the driver (a test suite's double, a plugin) is there too, provided its module imports on the workers.
* `ray.init()` joins the cluster in RAY_ADDRESS (or one `ray start --head` left on this machine), else starts a
  local one; a cluster this call started is shut down at the end. Question files, witness documents and local model
  folders must be readable at the same paths on every machine.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from assembly.errors import MissingExtraError
from assembly.study.plan import StudyRun
from assembly.study.runner import ROLES, Job, JobDone


class StudyWorker:
    """A Ray actor: models loaded once, draws run concurrently, each into a temporary store, rows returned."""

    def __init__(self, backends: dict[str, tuple[str, str | None]], model_options: dict[str, Any]):
        from assembly.providers import registry

        registry.BACKENDS.update(backends)
        self.pool = registry.ModelPool(**model_options)
        self.folder = Path(tempfile.mkdtemp(prefix="assembly-ray-"))

    async def run(self, spec: dict[str, Any], seed: int, link: dict[str, Any], mode: str = "full") -> dict[str, Any]:
        from assembly.config import parse_spec
        from assembly.deliberation import adeliberate
        from assembly.distilled import adistill
        from assembly.errors import AssemblyError
        from transcripts import Store, StoreError
        from transcripts.transfer import run_tables

        run = StudyRun(**link)
        db = self.folder / f"{run.run_id}.duckdb"
        error = winner = tables = None
        try:
            parsed = parse_spec(spec, f"study question {run.question}")
            models = {role: self.pool.get(parsed.models.for_role(role)) for role in ROLES}
            conduct = adistill if mode == "distilled" else adeliberate
            result = await conduct(parsed, seed=seed, db=db, models=models, study=run)
            winner = result.verdict.winner
        except AssemblyError as exc:
            error = str(exc)
        if db.exists():
            try:
                tables = run_tables(Store(db), run.run_id)
            except StoreError:
                tables = None  # it failed before the run began
        for path in self.folder.glob(f"{run.run_id}.duckdb*"):
            path.unlink(missing_ok=True)
        return {"tables": tables, "error": error, "winner": winner}


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise MissingExtraError(f"--executor ray needs Ray ({exc.name} is not installed): "
                                "pip install 'assembly-sim[ray]'") from None
    return ray


async def run_ray(jobs: Sequence[Job], store, *, concurrency: int, workers: int, model_options: dict[str, Any],
                  on_done: Callable[[JobDone], None], mode: str = "full") -> None:
    """Run the jobs on `workers` actors and write each finished run into `store` as it comes back."""
    from assembly.providers.registry import BACKENDS
    from transcripts.transfer import add_run_tables

    ray = _ray()
    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False)
    actor = ray.remote(num_cpus=1)(StudyWorker)
    actors = [actor.options(max_concurrency=concurrency).remote(dict(BACKENDS), model_options)
              for _ in range(min(workers, max(len(jobs), 1)))]

    async def one(i: int, job: Job) -> tuple[Job, dict[str, Any]]:
        # an interrupted run cannot be continued on a worker (its checkpoints are here): it runs again
        job = Job(job.slot, job.run, replaces=job.replaces or job.resume)
        ref = actors[i % len(actors)].run.remote(job.slot.question.spec.model_dump(mode="json"), job.slot.seed,
                                                 asdict(job.run), mode)
        try:
            return job, await ref
        except ray.exceptions.RayError as exc:  # a worker that died, or a bug in it
            return job, {"tables": None, "winner": None,
                         "error": f"ray worker: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"}

    try:
        for finished in asyncio.as_completed([one(i, job) for i, job in enumerate(jobs)]):
            job, reply = await finished
            if reply["tables"] is not None:
                add_run_tables(store, reply["tables"])
            status = "failed" if reply["error"] else "completed"
            on_done(JobDone(job, job.run.run_id, status, reply["winner"], reply["error"]))
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()
