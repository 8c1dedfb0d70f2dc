"""The assembly store: one DuckDB file holding every run, turn, ballot, tally, verdict and model call.

Writes are one short transaction each (see `transcripts.connection` for why and what it costs): durable when the
call returns, and never locking other processes out for longer than that transaction. Opening a store applies the
missing migrations and marks runs whose writer process died as 'interrupted'.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
from ulid import ULID

from transcripts import migrations
from transcripts.clock import utcnow
from transcripts.connection import attached, checkpointed, one_line
from transcripts.errors import StoreError
from transcripts.paths import default_store_path
from transcripts.processes import host_name, is_alive, process_start_ticks

PROVENANCES = ("simulated", "imported-real", "replay", "eval")
RUN_STATUSES = ("running", "completed", "failed", "interrupted")
FINISH_STATUSES = ("completed", "failed", "interrupted")
ROLES = ("juror", "witness", "moderator", "expert", "participant")
BALLOT_PHASES = ("pre", "post", "final")
BALLOT_STATUSES = ("valid", "abstain")
TABLES = ("runs", "participants", "participant_attributes", "turns", "ballots", "tallies", "verdicts", "llm_calls")

# Statement types `Store.sql` runs without write=True. The store is also attached READ_ONLY for them, so a
# write hidden where the type check cannot see (a table function, an extension) still fails.
_READ_TYPES = {"SELECT", "EXPLAIN", "PRAGMA", "CALL"}
# Never from user SQL: they would break the attachment and transaction the store manages.
_MANAGED_TYPES = {"ATTACH", "DETACH", "TRANSACTION"}


def new_id() -> str:
    return str(ULID())


def to_json(value: Any, what: str) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} is not JSON-serialisable: {exc}") from exc


def _json_default(value: Any) -> Any:
    if isinstance(value, (Path, datetime, date)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "model_dump"):  # pydantic models, without importing pydantic
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _one_of(value: Any, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise StoreError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")


def _target(value: Any) -> str | None:
    return None if value is None else str(value)


def _str_list(value: Iterable[Any] | None, what: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise StoreError(f"{what} must be a list of strings, not a string")
    return [str(v) for v in value]


def attribute_text(value: Any) -> str | None:
    """Attribute values as text for the long table: strings as they are, anything else as JSON (true, 3)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _insert_once(con: duckdb.DuckDBPyConnection, table: str, key: Mapping[str, Any], insert: str,
                 values: list[Any]) -> str:
    """Run `insert` (whose first value is the new row's id) unless a row with this natural key is already there;
    return the id of the row that holds the key.

    A resumed run re-runs the nodes its interruption cut short, and they write again what they wrote before: the
    first write of a key wins. A lookup in the write transaction rather than INSERT OR IGNORE, so a key with a NULL
    part (a ballot's target) matches too; the UNIQUE constraints of migration 0006 hold the keys for other writers."""
    where = " AND ".join(f"{column} IS NULL" if value is None else f"{column} = ?" for column, value in key.items())
    found = con.execute(f"SELECT id FROM {table} WHERE {where} LIMIT 1",
                        [v for v in key.values() if v is not None]).fetchall()
    if found:
        return found[0][0]
    con.execute(insert, values)
    return values[0]


class Store:
    """A DuckDB store of assemblies. `Store(path)` creates or opens it (default: `default_store_path()`)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, read_only: bool = False, lock_timeout: float = 30.0):
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        self.read_only = read_only
        self.lock_timeout = lock_timeout
        self.interrupted_on_open: list[str] = []  # runs this open found orphaned and marked
        self._known_runs: set[str] = set()
        self._closed = False
        if read_only:
            if not self.path.exists():
                raise StoreError(f"no store at {self.path}")
            with self._session() as con:
                migrations.check_not_newer(migrations.applied(con), self.path)
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder for store {self.path}: {exc}") from exc
        self._open_for_writing()

    # -- sessions -----------------------------------------------------------------------------------------------

    @contextmanager
    def _session(self, write: bool = False, checkpoint: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        if write and self.read_only:
            raise StoreError(f"store {self.path} was opened read-only")
        try:
            with attached(self.path, write=write, timeout=self.lock_timeout, checkpoint=checkpoint) as con:
                yield con
        except StoreError:
            raise
        except duckdb.Error as exc:
            raise StoreError(one_line(exc)) from exc

    @contextmanager
    def transaction(self) -> Iterator["Store"]:
        """Hold one write transaction across many calls: all of them commit together, or none does.

        Other processes are locked out (they wait and retry) until the block ends, so keep it short."""
        with self._session(write=True):
            yield self

    @contextmanager
    def reading(self) -> Iterator["Store"]:
        """Hold one read-only attachment across many reads (a report, an export): one attach instead of many.

        Writers in other processes wait (and retry) until the block ends, so keep it short."""
        with self._session(write=False):
            yield self

    def _open_for_writing(self) -> None:
        # Check the ledger before touching anything: a store from a newer version must stay byte-for-byte as is.
        if self.path.exists():
            with self._session() as con:
                migrations.check_not_newer(migrations.applied(con), self.path)
        with self._session(write=True) as con:
            migrations.migrate(con, self.path)
            self.interrupted_on_open = self._mark_orphans(con)
            self._mark_orphan_studies(con)

    def _mark_orphans(self, con: duckdb.DuckDBPyConnection) -> list[str]:
        """Runs still 'running' whose writer process on this host is gone: mark them interrupted.

        A writer on another host cannot be checked from here; its runs stay 'running' until it finishes."""
        here = host_name()
        rows = con.execute(
            "SELECT id, pid, pid_started FROM runs WHERE status = 'running' AND host = ?", [here]
        ).fetchall()
        marked = []
        for run_id, pid, started in rows:
            if is_alive(pid, started):
                continue
            last = con.execute(
                "SELECT max(t) FROM (SELECT max(created_at) t FROM turns WHERE run_id = $1 "
                "UNION ALL SELECT max(created_at) FROM ballots WHERE run_id = $1 "
                "UNION ALL SELECT max(created_at) FROM llm_calls WHERE run_id = $1)",
                [run_id],
            ).fetchall()[0][0]
            con.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = coalesce(?, started_at), reason = ? WHERE id = ?",
                [last, f"writer process {pid} on {here} ended without finishing the run", run_id],
            )
            marked.append(run_id)
        return marked

    def _mark_orphan_studies(self, con: duckdb.DuckDBPyConnection) -> None:
        """Studies still 'running' whose process on this host is gone: interrupted, for `--resume` to pick up."""
        if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                           "AND table_name = 'studies'").fetchall()[0][0]:
            return  # a store opened with fewer migrations (tests of old versions)
        here = host_name()
        for study_id, pid, started in con.execute(
                "SELECT id, pid, pid_started FROM studies WHERE status = 'running' AND host = ?", [here]).fetchall():
            if not is_alive(pid, started):
                con.execute("UPDATE studies SET status = 'interrupted', reason = ? WHERE id = ?",
                            [f"writer process {pid} on {here} ended without finishing the study", study_id])

    def close(self) -> None:
        """Nothing stays open between calls; this only makes later use of this object an error."""
        self._closed = True

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- writes the engine calls ----------------------------------------------------------------------------------

    def begin_run(
        self,
        question: str,
        spec: Mapping[str, Any] | None = None,
        seed: int | None = None,
        provenance: str = "simulated",
        source: str | None = None,
        license: str | None = None,
        versions: Mapping[str, Any] | None = None,
        config_path: str | os.PathLike[str] | None = None,
        run_id: str | None = None,
        *,
        options: Sequence[str] | None = None,
        external_id: str | None = None,
        started_at: datetime | None = None,
        study_id: str | None = None,
        study_question: str | None = None,
        study_draw: int | None = None,
    ) -> str:
        """Record a new run as 'running' and return its id (a ULID unless given).

        `options` defaults to `spec["options"]` when that is a list. `study_id`, `study_question`, `study_draw`: the
        study, question and draw this run is one of (see `begin_study`)."""
        _one_of(provenance, PROVENANCES, "provenance")
        if not isinstance(question, str) or not question.strip():
            raise StoreError("question must be a non-empty string")
        if options is None and spec is not None and isinstance(spec.get("options"), list):
            options = spec["options"]
        run_id = run_id or new_id()
        pid = os.getpid()
        # the study columns only when given, so runs outside studies still write to stores of older schemas
        study = {"study_id": study_id, "study_question": study_question, "study_draw": study_draw} if study_id else {}
        extra_columns, extra_marks = "".join(f", {k}" for k in study), ", ?" * len(study)
        with self._session(write=True) as con:
            try:
                con.execute(
                    "INSERT INTO runs (id, question, options, spec, seed, versions, config_path, status, provenance, "
                    f"source, license, external_id, started_at, pid, host, pid_started{extra_columns}) "
                    f"VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?{extra_marks})",
                    [run_id, question, _str_list(options, "options"), to_json(spec, "spec"), seed,
                     to_json(versions, "versions"), None if config_path is None else str(config_path), provenance,
                     source, license, external_id, started_at or utcnow(), pid, host_name(),
                     process_start_ticks(pid), *study.values()],
                )
            except duckdb.ConstraintException as exc:
                raise StoreError(f"run {run_id} already exists in {self.path}") from exc
        self._known_runs.add(run_id)
        return run_id

    def _require_run(self, con: duckdb.DuckDBPyConnection, run_id: str) -> None:
        if run_id in self._known_runs:
            return
        if not con.execute("SELECT count(*) FROM runs WHERE id = ?", [run_id]).fetchall()[0][0]:
            raise StoreError(f"no run {run_id!r} in {self.path}")
        self._known_runs.add(run_id)

    def add_participants(self, run_id: str, participants: Iterable[Mapping[str, Any]]) -> None:
        """Record the people of a run: id, role, name, persona, attributes (strata), extra."""
        rows, attrs = [], []
        for i, p in enumerate(participants):
            pid = p.get("id")
            if not isinstance(pid, str) or not pid:
                raise StoreError(f"participant #{i} needs a string id")
            _one_of(p.get("role"), ROLES, f"participant {pid} role")
            attributes = dict(p.get("attributes") or {})
            rows.append([run_id, pid, p["role"], p.get("name"), p.get("persona"),
                         to_json(attributes, f"participant {pid} attributes"),
                         to_json(p.get("extra"), f"participant {pid} extra")])
            attrs.extend([run_id, pid, str(k), attribute_text(v)] for k, v in attributes.items())
        with self._session(write=True) as con:
            self._require_run(con, run_id)
            try:
                if rows:
                    con.executemany("INSERT INTO participants VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                if attrs:
                    con.executemany("INSERT INTO participant_attributes VALUES (?, ?, ?, ?)", attrs)
            except duckdb.ConstraintException as exc:
                raise StoreError(f"participants of run {run_id}: {one_line(exc)}") from exc

    def add_turn(
        self,
        run_id: str,
        seq: int,
        phase: str,
        round: int | None,
        speaker_id: str,
        content: str,
        call_id: str | None = None,
        target: Any = None,
        *,
        turn_id: str | None = None,
    ) -> str:
        """Record one utterance; `seq` orders the transcript. Returns the turn id.

        Once per (run, seq): writing a recorded position again writes nothing and returns the recorded turn's id."""
        if not isinstance(content, str):
            raise StoreError(f"turn {seq} content must be a string")
        with self._session(write=True) as con:
            self._require_run(con, run_id)
            return _insert_once(
                con, "turns", {"run_id": run_id, "seq": seq},
                "INSERT INTO turns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [turn_id or new_id(), run_id, seq, phase, round, speaker_id, content, call_id, _target(target),
                 utcnow()],
            )

    def add_ballot(
        self,
        run_id: str,
        participant_id: str,
        phase: str,
        ballot_type: str,
        status: str = "valid",
        choice: str | None = None,
        ranking: Sequence[str] | None = None,
        approvals: Sequence[str] | None = None,
        probabilities: Mapping[str, float] | None = None,
        rationale: str | None = None,
        reason: str | None = None,
        attempts: int = 1,
        target: Any = None,
        method: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> str:
        """Record one private ballot; an abstention must say why (`reason`). Returns the ballot id.

        Once per (run, participant, phase, ballot type, target): a second one writes nothing and returns the first's
        id. (Imports may hold re-votes, which question_ballots resolves to the latest, so this is no constraint.)

        `method`: what produced it ("scored:sum", "structured", ...); `detail`: how (orders, per-order distributions,
        calibration prior, vote draws), as JSON."""
        _one_of(phase, BALLOT_PHASES, "ballot phase")
        _one_of(status, BALLOT_STATUSES, "ballot status")
        if status == "abstain" and not reason:
            raise StoreError(f"abstention by {participant_id} ({phase}) needs a reason")
        with self._session(write=True) as con:
            self._require_run(con, run_id)
            return _insert_once(
                con, "ballots", {"run_id": run_id, "participant_id": participant_id, "phase": phase,
                                 "ballot_type": ballot_type, "target": _target(target)},
                "INSERT INTO ballots (id, run_id, participant_id, phase, ballot_type, status, choice, ranking, approvals, "
                "probabilities, rationale, reason, attempts, target, created_at, method, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [new_id(), run_id, participant_id, phase, ballot_type, status, choice,
                 _str_list(ranking, "ranking"), _str_list(approvals, "approvals"),
                 to_json(probabilities, "probabilities"), rationale, reason, attempts, _target(target), utcnow(),
                 method, to_json(detail, "detail")],
            )

    def add_tally(
        self,
        run_id: str,
        phase: str,
        rule: str,
        winner: str | None,
        winners: Sequence[str],
        scores: Mapping[str, Any],
        rounds: Sequence[Any] | None = None,
        tie_break: str | None = None,
        valid: int = 0,
        abstained: int = 0,
        explain: str = "",
        expected: Mapping[str, float] | None = None,
        win_probability: Mapping[str, float] | None = None,
        stability: float | None = None,
        redraws: int | None = None,
    ) -> str:
        """Record the result of one voting rule over one phase's ballots (once per run, phase and rule). Returns the
        tally id.

        `expected`, `win_probability`, `stability`: what the jurors' recorded distributions imply over `redraws`
        redraws of their votes (assembly.stability)."""
        with self._session(write=True) as con:
            self._require_run(con, run_id)
            return _insert_once(
                con, "tallies", {"run_id": run_id, "phase": phase, "rule": rule},
                "INSERT INTO tallies (id, run_id, phase, rule, winner, winners, scores, rounds, tie_break, valid, "
                "abstained, explain, created_at, expected, win_probability, stability, redraws) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [new_id(), run_id, phase, rule, winner, _str_list(winners, "winners") or [],
                 to_json(scores, "scores"), to_json(rounds, "rounds"), tie_break, valid, abstained, explain,
                 utcnow(), to_json(expected, "expected"), to_json(win_probability, "win_probability"), stability,
                 redraws],
            )

    def add_verdict(
        self, run_id: str, text: str, minority_report: str | None = None, winner: str | None = None,
        rule: str | None = None,
    ) -> str:
        """Record the run's verdict (once per run: a second one writes nothing). Returns the verdict id."""
        with self._session(write=True) as con:
            self._require_run(con, run_id)
            return _insert_once(
                con, "verdicts", {"run_id": run_id},
                "INSERT INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?)",
                [new_id(), run_id, text, minority_report, winner, rule, utcnow()],
            )

    def add_llm_call(
        self,
        run_id: str,
        model: str,
        role: str | None = None,
        participant_id: str | None = None,
        phase: str | None = None,
        request_hash: str = "",
        messages: Sequence[Mapping[str, Any]] = (),
        params: Mapping[str, Any] | None = None,
        response: str | None = None,
        choice: str | None = None,
        choice_logprobs: Mapping[str, float] | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        duration_s: float = 0.0,
        attempts: int = 1,
        error: str | None = None,
        seed: int | None = None,
        cost_usd: float | None = None,
        *,
        call_id: str | None = None,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> str:
        """Record one model call (in call order) and return its id, for turns and ballots to point at; once per
        `call_id` (writing a recorded id again writes nothing).
        `input_tokens` counts every prompt token sent; `cached_input_tokens` (read from a prompt cache) and
        `cache_write_tokens` (written to one) are among them."""
        messages = list(messages)
        system = next((_text(m) for m in messages if m.get("role") == "system"), None)
        prompt = next((_text(m) for m in reversed(messages) if m.get("role") == "user"), None)
        call_id = call_id or new_id()
        with self._session(write=True) as con:
            self._require_run(con, run_id)
            if con.execute("SELECT 1 FROM llm_calls WHERE id = ?", [call_id]).fetchall():
                return call_id  # written already (a retried batch): once per id
            # In the write transaction, which holds the file (other processes) and this process's store lock
            # (other threads) until it commits: no two calls of a run get one number, whoever else writes to it.
            seq = con.execute(
                "SELECT coalesce(max(seq), 0) + 1 FROM llm_calls WHERE run_id = ?", [run_id]
            ).fetchall()[0][0]
            con.execute(  # by name: columns added by later migrations come after created_at
                "INSERT INTO llm_calls (id, run_id, seq, model, role, participant_id, phase, request_hash, messages, "
                "system, prompt, params, response, choice, choice_logprobs, input_tokens, output_tokens, duration_s, "
                "attempts, error, seed, cost_usd, created_at, cached_input_tokens, cache_write_tokens) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [call_id, run_id, seq, model, role, participant_id, phase, request_hash,
                 to_json(messages, "messages"), system, prompt, to_json(params, "params"), response, choice,
                 to_json(choice_logprobs, "choice_logprobs"), input_tokens, output_tokens, float(duration_s),
                 attempts, error, seed, cost_usd, utcnow(), cached_input_tokens, cache_write_tokens],
            )
        return call_id

    def finish_run(
        self, run_id: str, status: str = "completed", reason: str | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> None:
        """Close a run: completed, failed or interrupted, with why and an optional summary (e.g. population marginals).

        Checkpoints the store (see `checkpoint`), so a copy of the .duckdb file alone holds the finished run."""
        _one_of(status, FINISH_STATUSES, "finish status")
        with self._session(write=True, checkpoint=True) as con:
            self._require_run(con, run_id)
            con.execute(
                "UPDATE runs SET status = ?, reason = ?, finished_at = ?, summary = coalesce(?, summary) WHERE id = ?",
                [status, reason, utcnow(), to_json(summary, "summary"), run_id],
            )

    def reopen_run(self, run_id: str) -> None:
        """Mark an unfinished run 'running' again, written by this process (a resume); `finish_run` closes it.

        Refused for a completed run and for one whose writer is still alive; a run left 'running' by a writer on
        another host cannot be checked from here, so it is refused too."""
        with self._session(write=True) as con:
            rows = con.execute("SELECT status, pid, host, pid_started FROM runs WHERE id = ?", [run_id]).fetchall()
            if not rows:
                raise StoreError(f"no run {run_id!r} in {self.path}")
            status, pid, host, started = rows[0]
            if status == "completed":
                raise StoreError(f"run {run_id} is already completed; there is nothing to resume")
            if status == "running" and host != host_name():
                raise StoreError(f"run {run_id} is 'running' in process {pid} on {host}; resume it there")
            if status == "running" and is_alive(pid, started):
                raise StoreError(f"run {run_id} is still running (process {pid})")
            pid = os.getpid()
            con.execute(
                "UPDATE runs SET status = 'running', reason = NULL, finished_at = NULL, pid = ?, host = ?, "
                "pid_started = ? WHERE id = ?",
                [pid, host_name(), process_start_ticks(pid), run_id],
            )
        self._known_runs.add(run_id)

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the .duckdb file, so that the file alone is the whole store (a copy of it
        misses nothing). `finish_run` does it at the end of every run; call it after other batches of writes."""
        with self._session(write=True, checkpoint=True):
            pass

    def backup(self, target: str | os.PathLike[str], *, overwrite: bool = False) -> dict[str, int]:
        """Copy the store to `target`, consistently: checkpoint, then copy the file while holding the write lock (no
        writer can change it meanwhile), to a side file renamed into place. Refuses an existing `target` unless
        `overwrite`. Returns the copy's row count per table, read back from the copy."""
        import shutil

        target = Path(target).expanduser()
        if target.resolve() == self.path.resolve():
            raise StoreError(f"backup target {target} is the store itself")
        if target.is_dir():
            raise StoreError(f"backup target {target} is a folder; give a file name")
        wal = Path(f"{target}.wal")  # a stale log beside the copy would be replayed into it
        existing = next((p for p in (target, wal) if p.exists()), None)
        if existing is not None and not overwrite:
            raise StoreError(f"{existing} exists; pass overwrite=True (assembly transcripts backup --force) to "
                             "replace it")
        if not target.parent.is_dir():
            raise StoreError(f"no folder {target.parent} for the backup")
        partial = target.with_name(f".{target.name}.partial")
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        with checkpointed(self.path, timeout=self.lock_timeout):
            try:
                shutil.copyfile(self.path, partial)
                wal.unlink(missing_ok=True)
                os.replace(partial, target)
            except OSError as exc:
                partial.unlink(missing_ok=True)
                raise StoreError(f"cannot write backup {target}: {exc.strerror or exc}") from exc
        copy = Store(target, read_only=True, lock_timeout=self.lock_timeout)
        with copy.reading():
            return {table: copy.sql(f"SELECT count(*) n FROM {table}").item() for table in TABLES}

    def update_summary(self, run_id: str, summary: Mapping[str, Any]) -> None:
        """Merge keys into a run's summary (e.g. population marginals for the report) without finishing it."""
        with self._session(write=True) as con:
            self._require_run(con, run_id)
            current = from_json(con.execute("SELECT summary FROM runs WHERE id = ?", [run_id]).fetchall()[0][0]) or {}
            current.update(summary)
            con.execute("UPDATE runs SET summary = ? WHERE id = ?", [to_json(current, "summary"), run_id])

    # -- studies: many runs of one or more questions (migration 0007) -----------------------------------------------

    def begin_study(
        self, *, question: str | None, questions: int, config_paths: Sequence[str], digest: str, draws: int,
        spec: Mapping[str, Any] | None = None, study_id: str | None = None,
    ) -> str:
        """Record a new study as 'running' and return its id. Its runs point at it (`begin_run(study_id=...)`).

        `question`: the question of a one-question study (None for a bank); `digest`: what a resume must match."""
        study_id = study_id or new_id()
        pid = os.getpid()
        with self._session(write=True) as con:
            try:
                con.execute(
                    "INSERT INTO studies (id, question, questions, config_paths, digest, spec, draws, status, "
                    "created_at, pid, host, pid_started) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)",
                    [study_id, question, questions, _str_list(config_paths, "config_paths"), digest,
                     to_json(spec, "study spec"), draws, utcnow(), pid, host_name(), process_start_ticks(pid)],
                )
            except duckdb.ConstraintException as exc:
                raise StoreError(f"study {study_id} already exists in {self.path}") from exc
        return study_id

    def restart_study(self, study_id: str) -> None:
        """A resumed study: 'running' again, written by this process."""
        pid = os.getpid()
        with self._session(write=True) as con:
            con.execute("UPDATE studies SET status = 'running', reason = NULL, finished_at = NULL, pid = ?, host = ?, "
                        "pid_started = ? WHERE id = ?", [pid, host_name(), process_start_ticks(pid), study_id])

    def finish_study(self, study_id: str, status: str = "completed", reason: str | None = None,
                     summary: Mapping[str, Any] | None = None) -> None:
        _one_of(status, FINISH_STATUSES, "finish status")
        with self._session(write=True) as con:
            con.execute("UPDATE studies SET status = ?, reason = ?, finished_at = ?, summary = coalesce(?, summary) "
                        "WHERE id = ?", [status, reason, utcnow(), to_json(summary, "study summary"), study_id])

    def study(self, study_id: str) -> dict[str, Any]:
        """One study's row, JSON columns parsed."""
        with self._session() as con:
            rel = con.execute("SELECT * FROM studies WHERE id = ?", [study_id])
            names = [d[0] for d in rel.description]
            rows = rel.fetchall()
        if not rows:
            raise StoreError(f"no study {study_id!r} in {self.path}")
        row = dict(zip(names, rows[0]))
        for key in ("spec", "summary"):
            row[key] = from_json(row[key])
        return row

    def resolve_study(self, prefix: str) -> str:
        """A full study id from a unique prefix or 'latest'."""
        with self._session() as con:
            if prefix == "latest":
                rows = con.execute("SELECT id FROM studies ORDER BY created_at DESC, id DESC LIMIT 1").fetchall()
            else:
                rows = con.execute("SELECT id FROM studies WHERE id = $1 OR starts_with(id, upper($1)) LIMIT 2",
                                   [prefix]).fetchall()
        if not rows:
            raise StoreError(f"no study matches {prefix!r} in {self.path}")
        if len(rows) > 1:
            raise StoreError(f"study id prefix {prefix!r} is ambiguous in {self.path}")
        return rows[0][0]

    def supersede_run(self, run_id: str, by: str) -> None:
        """Mark `run_id` as replaced by the re-run `by` (when `by` was recorded at all)."""
        with self._session(write=True) as con:
            con.execute("UPDATE runs SET superseded_by = $2 WHERE id = $1 "
                        "AND EXISTS (SELECT 1 FROM runs WHERE id = $2)", [run_id, by])

    # -- bulk writes (imports, benchmarks) --------------------------------------------------------------------------

    def insert_rows(self, table: str, rows: pa.Table | pl.DataFrame | Sequence[Mapping[str, Any]]) -> int:
        """Append many rows to one base table by column name (missing columns get NULL/defaults).

        For loaders that already validated their data; the table's CHECK constraints still apply."""
        if table not in TABLES:
            raise StoreError(f"unknown table {table!r}; one of {', '.join(TABLES)}")
        if isinstance(rows, pl.DataFrame):
            rows = rows.to_arrow()
        elif not isinstance(rows, pa.Table):
            rows = list(rows)
            if not rows:
                return 0
            rows = pa.Table.from_pylist(rows)
        if rows.num_rows == 0:
            return 0
        with self._session(write=True) as con:
            view = f"_incoming_{table}"
            con.register(view, rows)
            try:
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {view}")
            except duckdb.Error as exc:
                raise StoreError(f"bulk insert into {table}: {one_line(exc)}") from exc
            finally:
                con.unregister(view)
        return rows.num_rows

    # -- reads ------------------------------------------------------------------------------------------------------

    def recorded_calls(self, run_id: str) -> list[dict[str, Any]]:
        """The run's model calls in call order, for replay: request_hash, model, response, choice, tokens, ..."""
        with self._session() as con:
            self._require_run(con, run_id)
            rel = con.execute(
                "SELECT id, seq, request_hash, model, role, participant_id, phase, response, choice, choice_logprobs, "
                "input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, duration_s, attempts, error, "
                "seed, cost_usd FROM llm_calls WHERE run_id = ? ORDER BY seq, id",
                [run_id],
            )
            names = [d[0] for d in rel.description]
            rows = rel.fetchall()
        calls = [dict(zip(names, row)) for row in rows]
        for call in calls:
            call["choice_logprobs"] = from_json(call["choice_logprobs"])
        return calls

    def run(self, run_id: str) -> dict[str, Any]:
        """One run's row, JSON columns parsed."""
        with self._session() as con:
            rel = con.execute("SELECT * FROM runs WHERE id = ?", [run_id])
            names = [d[0] for d in rel.description]
            rows = rel.fetchall()
        if not rows:
            raise StoreError(f"no run {run_id!r} in {self.path}")
        row = dict(zip(names, rows[0]))
        for key in ("spec", "versions", "summary"):
            row[key] = from_json(row[key])
        return row

    def resolve_run(self, prefix: str) -> str:
        """A full run id from a unique prefix, an imported record id, or 'latest'."""
        with self._session() as con:
            if prefix == "latest":
                rows = con.execute("SELECT id FROM runs ORDER BY started_at DESC, id DESC LIMIT 1").fetchall()
            else:
                rows = con.execute(
                    "SELECT id FROM runs WHERE id = $1 OR external_id = $1 OR starts_with(id, upper($1)) LIMIT 2",
                    [prefix],
                ).fetchall()
        if not rows:
            raise StoreError(f"no run matches {prefix!r} in {self.path}")
        if len(rows) > 1:
            raise StoreError(f"run id prefix {prefix!r} is ambiguous in {self.path}")
        return rows[0][0]

    def sql(self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None, *, write: bool = False) -> pl.DataFrame:
        """Run SQL against the store and return the last statement's result as a polars DataFrame.

        Read-only unless `write=True`: statements are classified by DuckDB's own parser (statement types), and
        the store is attached READ_ONLY as well. Errors come back as a one-line StoreError."""
        try:
            statements = duckdb.extract_statements(query)
        except duckdb.Error as exc:
            raise StoreError(f"SQL error: {one_line(exc)}") from exc
        if not statements:
            raise StoreError("no SQL statement given")
        for statement in statements:
            kind = statement.type.name
            if kind in _MANAGED_TYPES:
                raise StoreError(f"{kind} statements are managed by the store and not allowed here")
            if not write and kind not in _READ_TYPES:
                raise StoreError(
                    f"refusing a {kind} statement: the store is queried read-only; pass write=True "
                    f"(assembly sql --write) to change it"
                )
        if params is not None and len(statements) > 1:
            raise StoreError("parameters need a single statement")
        with self._session(write=write) as con:
            try:
                result = None
                for statement in statements:
                    rel = con.sql(statement.query, params=params) if params is not None else con.sql(statement.query)
                    result = _frame(rel) if rel is not None else None
            except duckdb.Error as exc:
                raise StoreError(f"SQL error: {one_line(exc)}") from exc
        return result if result is not None else pl.DataFrame()


def _frame(rel: duckdb.DuckDBPyRelation) -> pl.DataFrame:
    """A relation as polars. Polars cannot hold DuckDB's INTERVAL (e.g. finished_at - started_at): such columns
    come back as text ('00:03:12.5') rather than failing the whole query."""
    intervals = [name for name, kind in zip(rel.columns, rel.dtypes) if str(kind).upper() == "INTERVAL"]
    if intervals:
        rel = rel.select(", ".join(
            f'CAST("{c}" AS VARCHAR) AS "{c}"' if c in intervals else f'"{c}"' for c in rel.columns))
    return rel.pl()


def _text(message: Mapping[str, Any]) -> str | None:
    """A message's content as plain text (joining text parts of multi-part content)."""
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") if isinstance(p, Mapping) else str(p) for p in content]
        return "\n".join(p for p in parts if p)
    return str(content)
