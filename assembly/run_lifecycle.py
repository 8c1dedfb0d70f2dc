"""One run's lifecycle, the same for every mode that records a run (the full graph, the distilled mode, each
question of an evaluation): a run begun in the store records through one RunRecorder (assembly.recorder) and ends
`completed` with its summary, `interrupted` (Ctrl-C, a cancelled task), or `failed` with the reason — never left
`running` by an exception, and never before what it recorded is written. A model error surfaces as a one-line
AssemblyError naming the run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from collections.abc import Callable
from typing import Any

from assembly.errors import AssemblyError
from assembly.events import Event
from assembly.providers.types import ModelError
from assembly.recorder import RunRecorder

INTERRUPTED = "interrupted by the user"


class RunLifecycle:
    def __init__(self, store, run_id: str, recorder: RunRecorder):
        self.store, self.run_id, self.recorder = store, run_id, recorder
        self.completed = False

    async def complete(self, summary: dict[str, Any]) -> None:
        """Write what is recorded, then record the run as completed; anything that fails after this leaves it
        completed."""
        await self.recorder.flush()
        self.store.finish_run(self.run_id, status="completed", summary=summary)
        self.completed = True

    async def complete_with(self, result, population, attributes) -> None:
        """Complete with an AssemblyResult as the summary (its jurors are in the store already) and the population
        frame's marginals for the stratified attributes."""
        await self.complete({**result.model_dump(mode="json", exclude={"jurors"}),
                             "population": {a: population.marginal(a) for a in attributes}})


@asynccontextmanager
async def run_lifecycle(store, run_id: str, *, pool=None, close_store: bool = True,
                        publish: Callable[[Event], None] | None = None) -> AsyncIterator[RunLifecycle]:
    """Wrap the body of a run, which records through `lifecycle.recorder` (every event also goes to `publish`):
    on leaving, what is still buffered is written, an uncompleted run is finished as interrupted or failed, then
    the store (unless `close_store` is false) and the model pool are closed."""
    lifecycle = RunLifecycle(store, run_id, RunRecorder(store, run_id, publish=publish))
    status, reason = "failed", "the run ended without completing"
    try:
        yield lifecycle
    except (KeyboardInterrupt, asyncio.CancelledError):
        status, reason = "interrupted", INTERRUPTED
        raise
    except ModelError as exc:
        reason = f"model error: {exc}"
        raise AssemblyError(f"run {run_id} failed: {reason}") from None
    except AssemblyError as exc:
        reason = str(exc)
        raise
    except Exception as exc:  # recorded with its reason, then surfaced; nothing is lost
        reason = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        try:
            lost: list[str] = []
            try:
                lost = await lifecycle.recorder.aclose()
            finally:
                if lost:
                    reason = f"{reason}; {len(lost)} record(s) could not be written, the first: {lost[0]}"
                if not lifecycle.completed:
                    store.finish_run(run_id, status=status, reason=reason)
        finally:
            if close_store:
                store.close()
            if pool is not None:
                await pool.aclose()
