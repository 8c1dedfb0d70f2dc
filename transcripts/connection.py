"""How processes share one DuckDB file: short attachments, retried on lock conflicts.

DuckDB lets one process hold a read-write handle on a file, and while it does, no other process can open the file
at all, not even read-only. An `assembly run` that kept its connection open for a 20-minute assembly would lock
`assembly sql` (and a second `assembly run`) out for 20 minutes. So no process keeps the file open:

* Every write (one `add_turn`, one `add_ballot`, ...) attaches the file, runs one transaction, commits and detaches.
  A commit is in DuckDB's write-ahead log before the call returns, so a kill -9 right after it loses nothing;
  the log is folded into the file (CHECKPOINT) once it passes CHECKPOINT_WAL_BYTES, and at the end of every run
  (`attached(..., checkpoint=True)`), so that the .duckdb file alone is a whole store once a run is over.
* Reads attach the file READ_ONLY (a shared lock: many readers at once), fetch their result, detach.
* A lock conflict (someone else is inside their few milliseconds) is retried with jittered exponential backoff
  (tenacity) until `lock_timeout` seconds; only then does the caller see a StoreError. A side file
  `<store>.turnstile` (flock) queues new readers behind a waiting writer, so a polling reader cannot starve a run.

Measured (2 shared cores, see docs/store.md): a fresh `duckdb.connect()` per write costs 84-113 ms (a new
database instance each time); attaching into one long-lived in-memory DuckDB instance costs 7-16 ms a write,
median, on stores of 9-169 MB under heavy load (attach ~2, insert ~1, commit ~1, detach ~0.5 ms on a quiet 38 MB
store, plus a ~24 ms checkpoint every ~10 writes). A connection kept open is cheaper still (4 ms) but locks
everyone else out for the whole run. Rejected too: per-run files (readers are still locked out of the run being
written, the one people most want to watch) and a writer daemon (a process to start, supervise and find).
`Store.transaction()` / `Store.reading()` hold one attachment across many calls when locking others out for
that long is acceptable (imports, reports).

All attachments in a process go through one in-memory DuckDB connection guarded by one re-entrant lock, because
DuckDB refuses two attachments of the same file inside one instance, and two instances in one process would
share the process's file lock and could both write. After a fork the child starts a fresh instance.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; readers and writers then just retry
    fcntl = None

import duckdb
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from transcripts.errors import StoreError

_lock = threading.RLock()
_engine: duckdb.DuckDBPyConnection | None = None
_aliases = itertools.count(1)
CHECKPOINT_WAL_BYTES = 8 * 1024
# Attachments currently open in this process, by resolved path: (alias, writable).
_open: dict[str, tuple[str, bool]] = {}
_checkpoint_on_exit: set[str] = set()  # open attachments asked, from inside, to checkpoint when they end
_current = "memory"  # the catalog selected with USE on the engine


_inherited: list[duckdb.DuckDBPyConnection] = []


def _reset_after_fork() -> None:
    global _engine, _lock, _current
    if _engine is not None:
        # The parent's instance is not ours to use, and not ours to free either: its destructor would join
        # threads that do not exist in the child (a segfault). Keep it referenced, unused.
        _inherited.append(_engine)
    _engine = None
    _lock = threading.RLock()
    _open.clear()
    _checkpoint_on_exit.clear()
    _current = "memory"


os.register_at_fork(after_in_child=_reset_after_fork)


def engine() -> duckdb.DuckDBPyConnection:
    global _engine
    if _engine is None:
        _engine = duckdb.connect(":memory:")
        # We checkpoint ourselves (see _detach): checkpointing on every detach doubled the cost of a write.
        _engine.execute("SET checkpoint_on_detach = 'DISABLED'")
    return _engine


def _wal_size(path: Path) -> int:
    try:
        return os.path.getsize(f"{path}.wal")
    except OSError:
        return 0


def _detach(con: duckdb.DuckDBPyConnection, path: Path, alias: str, wrote: bool, force: bool = False) -> None:
    """Detach, first folding the write-ahead log into the file once it passes CHECKPOINT_WAL_BYTES (or always,
    with `force`: then a failed checkpoint is an error, where otherwise the next writer would retry it).

    Every attach replays the log, so a long log taxes every later call; a checkpoint per write costs ~2x a
    write. Folding it in every ~8 KiB measured cheapest (about half the cost of checkpointing each write)."""
    failed = None
    if force or (wrote and _wal_size(path) > CHECKPOINT_WAL_BYTES):
        try:
            con.execute(f"CHECKPOINT {alias}")
        except duckdb.Error as exc:
            failed = exc  # committed data is safe in the log
    con.execute(f"DETACH {alias}")
    if failed is not None and force:
        raise StoreError(f"checkpoint of {path} failed: {one_line(failed)}") from failed


def is_lock_conflict(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, duckdb.Error) and ("Could not set lock" in text or "Conflicting lock" in text)


def one_line(exc: BaseException) -> str:
    """DuckDB messages can span lines (LINE 1: ... ^); keep the first, which says what went wrong."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextmanager
def _turnstile(path: Path, deadline: float) -> Iterator[None]:
    """Hold `<store>.turnstile` (an flock) for the duration of the block.

    DuckDB's file lock is a try-lock with no queue, so a reader polling in a loop could starve a writer for as
    long as it polls. Writers hold the turnstile while they wait for the database lock; readers only pass
    through it. A waiting writer thus stops new readers at the turnstile, and gets in as soon as the readers
    already inside detach. Where the side file cannot be created (a read-only folder), we go without."""
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(f"{path}.turnstile", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield
        return
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(f"store {path} stayed locked by another process (a writer waiting at "
                                     f"{path.name}.turnstile)") from None
                time.sleep(random.uniform(0.0005, 0.003))
        yield
    finally:
        os.close(fd)  # releases the flock


def _attach(con: duckdb.DuckDBPyConnection, path: Path, alias: str, read_only: bool, timeout: float) -> None:
    literal = str(path).replace("'", "''")
    deadline = time.monotonic() + timeout
    retrying = Retrying(
        retry=retry_if_exception(is_lock_conflict),
        wait=wait_random_exponential(multiplier=0.002, max=0.1),
        stop=stop_after_delay(timeout),
        reraise=True,
    )
    try:
        # Readers pass through the turnstile (queueing behind a waiting writer); writers wait inside it.
        with _turnstile(path, deadline):
            if not read_only:
                for attempt in retrying:
                    with attempt:
                        con.execute(f"ATTACH '{literal}' AS {alias}")
        if read_only:
            for attempt in retrying:
                with attempt:
                    con.execute(f"ATTACH '{literal}' AS {alias} (READ_ONLY)")
    except duckdb.Error as exc:
        if is_lock_conflict(exc):
            raise StoreError(f"store {path} stayed locked by another process for {timeout:g} s: {one_line(exc)}") from exc
        raise StoreError(f"cannot open store {path}: {one_line(exc)}") from exc


@contextmanager
def attached(path: Path, *, write: bool, timeout: float, checkpoint: bool = False
             ) -> Iterator[duckdb.DuckDBPyConnection]:
    """The process-wide connection with `path` attached and selected (USE), inside one transaction when `write`.

    Re-entrant: a nested call for the same path reuses the open attachment (and its transaction), so
    `Store.transaction()` can wrap many writes. Commits on clean exit, rolls back on error. `checkpoint` (with
    `write`): fold the whole write-ahead log into the file before detaching, even when nothing was written; inside
    an outer attachment of the same path, the outer one checkpoints when it ends."""
    global _current
    key = str(path.resolve())
    with _lock:
        con = engine()
        previous = _current
        entry = _open.get(key)
        if entry is not None:
            alias, writable = entry
            if write and not writable:
                raise StoreError("cannot write inside a read-only store session")
            if checkpoint:
                _checkpoint_on_exit.add(key)
            _use(con, alias)
            try:
                yield con
            finally:
                _use(con, previous)
            return
        alias = f"store{next(_aliases)}"
        _attach(con, path, alias, read_only=not write, timeout=timeout)
        _open[key] = (alias, write)
        committed = False
        try:
            _use(con, alias)
            if write:
                con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                if write:
                    _rollback(con)
                raise
            if write:
                try:
                    con.execute("COMMIT")
                    committed = True
                except duckdb.Error as exc:
                    _rollback(con)
                    raise StoreError(f"commit to {path} failed: {one_line(exc)}") from exc
        finally:
            del _open[key]
            forced = checkpoint or key in _checkpoint_on_exit
            _checkpoint_on_exit.discard(key)
            _use(con, previous)
            _detach(con, path, alias, committed, force=committed and forced)  # never over a rollback


@contextmanager
def checkpointed(path: Path, *, timeout: float) -> Iterator[None]:
    """Hold `path` attached read-write, its write-ahead log folded into the file, for the duration of the block.

    No other process can write (or read) the file meanwhile, and this process's store calls wait on the lock: the
    .duckdb file alone holds every committed write until the block ends, so it can be copied as is."""
    key = str(path.resolve())
    with _lock:
        if key in _open:
            raise StoreError(f"store {path} is already open in this process (a transaction or a reading block)")
        con = engine()
        alias = f"store{next(_aliases)}"
        _attach(con, path, alias, read_only=False, timeout=timeout)
        try:
            try:
                con.execute(f"CHECKPOINT {alias}")
            except duckdb.Error as exc:
                raise StoreError(f"checkpoint of {path} failed: {one_line(exc)}") from exc
            yield
        finally:
            con.execute(f"DETACH {alias}")


def _use(con: duckdb.DuckDBPyConnection, catalog: str) -> None:
    global _current
    if catalog != _current:
        con.execute(f"USE {catalog}")
        _current = catalog


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass  # the failed statement may already have aborted it
