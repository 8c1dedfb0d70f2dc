"""One run's lifecycle, the same for every mode that records a run (the full graph, the distilled mode): a run
begun in the store ends `completed` with its summary, `interrupted` (Ctrl-C, a cancelled task), or `failed` with the
reason — never left `running` by an exception. A model error surfaces as a one-line AssemblyError naming the run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from assembly.errors import AssemblyError
from assembly.providers.types import ModelError

INTERRUPTED = "interrupted by the user"


class RunLifecycle:
    def __init__(self, store, run_id: str):
        self.store, self.run_id = store, run_id
        self.completed = False

    def complete(self, summary: dict[str, Any]) -> None:
        """Record the run as completed now; anything that fails after this leaves it completed."""
        self.store.finish_run(self.run_id, status="completed", summary=summary)
        self.completed = True

    def complete_with(self, result, population, attributes) -> None:
        """Complete with an AssemblyResult as the summary (its jurors are in the store already) and the population
        frame's marginals for the stratified attributes."""
        self.complete({**result.model_dump(mode="json", exclude={"jurors"}),
                       "population": {a: population.marginal(a) for a in attributes}})


@asynccontextmanager
async def run_lifecycle(store, run_id: str, *, pool=None, close_store: bool = True) -> AsyncIterator[RunLifecycle]:
    """Wrap the body of a run: on leaving, an uncompleted run is finished as interrupted or failed, then the store
    (unless `close_store` is false) and the model pool are closed."""
    lifecycle = RunLifecycle(store, run_id)
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
        if not lifecycle.completed:
            store.finish_run(run_id, status=status, reason=reason)
        if close_store:
            store.close()
        if pool is not None:
            await pool.aclose()
