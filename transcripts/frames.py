"""The store as polars DataFrames, for notebooks and scripts: `frames.turns(path, run_id)` and friends.

Each function takes a Store or a path (opened read-only) and an optional run id."""

from __future__ import annotations

import os
from typing import Any

import polars as pl

from transcripts.store import Store

StoreLike = Store | str | os.PathLike[str]


def open_store(store: StoreLike) -> Store:
    return store if isinstance(store, Store) else Store(store, read_only=True)


def _select(store: StoreLike, relation: str, run_id: str | None, order: str, **filters: Any) -> pl.DataFrame:
    where, params = [], []
    if run_id is not None:
        where.append("run_id = ?")
        params.append(run_id)
    for column, value in filters.items():
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return open_store(store).sql(f"SELECT * FROM {relation}{clause} ORDER BY {order}", params or None)


def runs(store: StoreLike, *, status: str | None = None, provenance: str | None = None) -> pl.DataFrame:
    """One row per run (the runs table), newest first."""
    return _select(store, "runs", None, "started_at DESC, id DESC", status=status, provenance=provenance)


def overview(store: StoreLike) -> pl.DataFrame:
    """One line per run with counts, cost and winner (the run_overview view)."""
    return open_store(store).sql("SELECT * FROM run_overview")


def participants(store: StoreLike, run_id: str | None = None, *, role: str | None = None) -> pl.DataFrame:
    return _select(store, "participants", run_id, "run_id, id", role=role)


def attributes(store: StoreLike, run_id: str | None = None) -> pl.DataFrame:
    return _select(store, "participant_attributes", run_id, "run_id, participant_id, attribute")


def turns(store: StoreLike, run_id: str | None = None, *, phase: str | None = None) -> pl.DataFrame:
    """Turns in reading order with speaker names and roles (the transcript view)."""
    return _select(store, "transcript", run_id, "run_id, seq", phase=phase)


def ballots(store: StoreLike, run_id: str | None = None, *, phase: str | None = None) -> pl.DataFrame:
    return _select(store, "ballots", run_id, "run_id, phase, participant_id, created_at", phase=phase)


def tallies(store: StoreLike, run_id: str | None = None) -> pl.DataFrame:
    return _select(store, "tallies", run_id, "run_id, created_at")


def verdicts(store: StoreLike, run_id: str | None = None) -> pl.DataFrame:
    return _select(store, "verdicts", run_id, "run_id, created_at")


def calls(store: StoreLike, run_id: str | None = None, *, role: str | None = None) -> pl.DataFrame:
    """Model calls in call order."""
    return _select(store, "llm_calls", run_id, "run_id, seq", role=role)


def opinion_shift(store: StoreLike, run_id: str | None = None) -> pl.DataFrame:
    return _select(store, "opinion_shift", run_id, "run_id, ballot_type, option")
