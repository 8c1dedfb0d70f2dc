"""Numbered, additive schema migrations, recorded in a ledger table and applied when a store is opened.

A migration is a file `NNNN_name.sql` in this folder. Never edit one that has shipped: add the next number.
Each migration and its ledger row commit together, so a crash leaves the store at a whole number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import duckdb

from transcripts.clock import utcnow
from transcripts.errors import StoreError

LEDGER = "schema_migrations"


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    sql: str


def known() -> list[Migration]:
    found = []
    for entry in resources.files(__package__).iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.number)
    if [m.number for m in found] != list(range(1, len(found) + 1)):
        raise StoreError(f"migrations are not numbered 1..n: {[m.number for m in found]}")
    return found


def applied(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Migration numbers recorded in the selected store's ledger ([] for a new file)."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND table_name = ?", [LEDGER]
    ).fetchall()[0][0]
    if not exists:
        return []
    return [row[0] for row in con.execute(f"SELECT number FROM {LEDGER} ORDER BY number").fetchall()]


def check_not_newer(numbers: list[int], path: object) -> None:
    newest = len(known())
    if numbers and max(numbers) > newest:
        raise StoreError(
            f"store {path} has schema migration {max(numbers)} but this version of transcripts knows only up to "
            f"{newest}; upgrade assembly-sim to open it"
        )


def migrate(con: duckdb.DuckDBPyConnection, path: object) -> list[int]:
    """Apply the missing migrations inside the caller's transaction; return the numbers applied."""
    done = applied(con)
    check_not_newer(done, path)
    if not done:
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {LEDGER} (number INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
            "applied_at TIMESTAMP NOT NULL)"
        )
    new = []
    for migration in known():
        if migration.number in done:
            continue
        try:
            con.execute(migration.sql)
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            raise StoreError(f"migration {migration.number:04d}_{migration.name} failed on {path}: {first}") from exc
        con.execute(f"INSERT INTO {LEDGER} VALUES (?, ?, ?)", [migration.number, migration.name, utcnow()])
        new.append(migration.number)
    return new
