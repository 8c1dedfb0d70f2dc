"""Durable graph checkpoints, so that an interrupted run can be resumed (`assembly run --resume RUN`).

LangGraph's SQLite checkpointer (langgraph-checkpoint-sqlite) in one file beside the store,
`<store>.checkpoints.sqlite`, one thread per run (thread_id = the run id). Not inside the DuckDB store: LangGraph
dropped its DuckDB checkpointer as too buggy, and a checkpoint there would take the store's write lock at every
super-step, with blobs of the whole graph state, where the store keeps each write small so readers are never locked
out for long. SQLite in WAL mode lets several runs, in one process or several, write their threads at once.

A checkpoint is on disk before the next super-step starts (durability "sync"); a task that finished inside a
super-step that did not has its writes saved too, so a resume re-runs only the tasks that had not finished. A
completed run's thread is deleted: only an unfinished run has anything to resume.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from assembly.errors import AssemblyError

DURABILITY = "sync"


def checkpoint_path(store_path: str | Path) -> Path:
    return Path(f"{store_path}.checkpoints.sqlite")


def thread(run_id: str) -> dict[str, Any]:
    """The graph config that names a run's thread of checkpoints."""
    return {"configurable": {"thread_id": run_id}}


# (event loop, checkpoint file) -> [saver, users, its exit stack]: runs in one loop share one connection
_shared: dict[tuple[int, str], list[Any]] = {}
_opening: dict[tuple[int, str], asyncio.Lock] = {}


@asynccontextmanager
async def checkpointer(store_path: str | Path) -> AsyncIterator[Any]:
    """An AsyncSqliteSaver on the store's checkpoint file, closed when its last user in this event loop exits.

    Runs in one event loop (a study's concurrent draws) share one connection, whose lock orders their writes:
    separate connections of one process race for the file's write lock, and one that loses can fail at once with
    "database is locked" (a WAL switch, a stale read snapshot) instead of waiting."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = checkpoint_path(store_path)
    key = (id(asyncio.get_running_loop()), str(path.resolve()))
    try:
        async with _opening.setdefault(key, asyncio.Lock()):
            entry = _shared.get(key)
            if entry is None:
                stack = AsyncExitStack()
                saver = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(path)))
                try:
                    await saver.setup()
                except BaseException:
                    await stack.aclose()
                    raise
                entry = _shared[key] = [saver, 0, stack]
            entry[1] += 1
        try:
            yield entry[0]
        finally:
            entry[1] -= 1
            if entry[1] == 0 and _shared.get(key) is entry:
                del _shared[key]
                _opening.pop(key, None)
                await entry[2].aclose()
    except sqlite3.Error as exc:  # aiosqlite raises sqlite3's errors
        raise AssemblyError(f"checkpoints {path}: {exc}") from None


async def has_checkpoint(saver: Any, run_id: str) -> bool:
    return await saver.aget_tuple(thread(run_id)) is not None
