"""The migrations ledger: applied once, in order, on open; a store from the future is refused and left untouched."""

from __future__ import annotations

import hashlib

import duckdb
import pytest

from transcripts import Store, StoreError, migrations


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ledger(path) -> list[tuple[int, str]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("select number, name from schema_migrations order by number").fetchall()
    finally:
        con.close()


def test_a_new_store_has_every_migration_in_its_ledger(tmp_path):
    path = tmp_path / "s.duckdb"
    Store(path)
    known = migrations.known()
    assert [n for n, _ in ledger(path)] == list(range(1, len(known) + 1))
    assert ledger(path)[0] == (1, "tables")
    Store(path)  # reopening applies nothing twice
    assert len(ledger(path)) == len(known)


def test_only_missing_migrations_are_applied(tmp_path, monkeypatch):
    path = tmp_path / "s.duckdb"
    everything = migrations.known()
    monkeypatch.setattr(migrations, "known", lambda: everything[:1])
    Store(path)
    assert [n for n, _ in ledger(path)] == [1]
    monkeypatch.setattr(migrations, "known", lambda: everything)
    store = Store(path)
    assert [n for n, _ in ledger(path)] == [m.number for m in everything]
    assert store.sql("select count(*) n from transcript")["n"][0] == 0  # views came with migration 2


@pytest.mark.parametrize("read_only", [False, True])
def test_a_store_from_a_newer_version_is_refused_and_untouched(tmp_path, read_only):
    path = tmp_path / "s.duckdb"
    Store(path).begin_run(question="Q?", spec={})
    con = duckdb.connect(str(path))
    con.execute("insert into schema_migrations values (999, 'from_the_future', now()::timestamp)")
    con.close()
    before = digest(path)
    with pytest.raises(StoreError) as err:
        Store(path, read_only=read_only)
    message = str(err.value)
    assert "999" in message and "upgrade" in message and "\n" not in message
    assert digest(path) == before
    assert not (tmp_path / "s.duckdb.wal").exists()


def test_a_file_that_is_not_a_store_gives_a_clear_error(tmp_path):
    path = tmp_path / "notes.duckdb"
    path.write_text("these are not the tables you are looking for\n" * 100)
    before = digest(path)
    with pytest.raises(StoreError, match="cannot open store"):
        Store(path)
    assert digest(path) == before


def test_read_only_store_needs_an_existing_file(tmp_path):
    with pytest.raises(StoreError, match="no store at"):
        Store(tmp_path / "missing.duckdb", read_only=True)
    assert not (tmp_path / "missing.duckdb").exists()


def test_migration_files_are_numbered_without_gaps():
    numbers = [m.number for m in migrations.known()]
    assert numbers == list(range(1, len(numbers) + 1))


def test_a_store_from_before_prompt_cache_counts_upgrades(tmp_path, monkeypatch):
    path = tmp_path / "s.duckdb"
    everything = migrations.known()
    before = [m for m in everything if m.number < 5]
    monkeypatch.setattr(migrations, "known", lambda: before)
    old = Store(path)
    run_id = old.begin_run(question="Q?", spec={})
    con = duckdb.connect(str(path))  # a row as the old version wrote it: every column, by position
    con.execute("insert into llm_calls values ('c1', ?, 1, 'm', 'juror', null, null, 'h', '[]', null, null, null, "
                "'hi', null, null, 100, 5, 0.1, 1, null, null, 0.01, now()::timestamp)", [run_id])
    con.close()
    monkeypatch.setattr(migrations, "known", lambda: everything)
    store = Store(path)
    assert [n for n, _ in ledger(path)] == [m.number for m in everything]
    store.add_llm_call(run_id, model="m", role="juror", request_hash="h2", messages=[], input_tokens=300,
                       output_tokens=5, cached_input_tokens=200, cache_write_tokens=50, cost_usd=0.02)
    rows = store.sql("select id, input_tokens, cached_input_tokens, cache_write_tokens from llm_calls order by seq")
    assert rows.rows()[0] == ("c1", 100, 0, 0)  # old rows: nothing cached
    assert rows.rows()[1][1:] == (300, 200, 50)
    assert store.sql("select input_tokens, cached_input_tokens, cache_write_tokens, cost_usd from call_costs").rows() \
        == [(400, 200, 50, pytest.approx(0.03))]
    assert [c["cached_input_tokens"] for c in store.recorded_calls(run_id)] == [0, 200]
