"""Whole runs moved between stores: every row of every table, as Arrow tables.

FORMAT 2 (interchange.py) carries what a deliberation is — turns, votes, participants — but not what the engine
recorded about it: tallies, verdicts, model calls, ballot distributions, specs and seeds. A worker that records
into a store of its own (a Ray worker: a DuckDB file belongs to one machine) hands its runs to the process that
holds the real store with these two functions, nothing lost. Arrow tables pickle, so they travel as task results.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

from transcripts.errors import StoreError
from transcripts.store import TABLES, Store


def run_tables(store: Store, run_id: str) -> dict[str, pa.Table]:
    """Every row of `run_id`, table by table (runs by id, the others by run_id)."""
    tables = {}
    with store.reading():
        for table in TABLES:
            column = "id" if table == "runs" else "run_id"
            tables[table] = store.sql(f"SELECT * FROM {table} WHERE {column} = ?", [run_id]).to_arrow()
    if not tables["runs"].num_rows:
        raise StoreError(f"no run {run_id!r} in {store.path}")
    return tables


def add_run_tables(store: Store, tables: Mapping[str, pa.Table]) -> str:
    """Write a run taken with `run_tables` into `store`, in one transaction; returns its id. A run already there
    (the same id) is left as it is."""
    runs = tables.get("runs")
    if runs is None or runs.num_rows != 1:
        raise StoreError("a run's tables need exactly one row in 'runs'")
    run_id = runs.column("id")[0].as_py()
    if store.sql("SELECT count(*) AS n FROM runs WHERE id = ?", [run_id])["n"][0]:
        return run_id
    with store.transaction():
        for table in TABLES:  # runs first, as the write API orders them
            if table in tables:
                store.insert_rows(table, tables[table])
    return run_id
