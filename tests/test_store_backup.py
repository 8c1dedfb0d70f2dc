"""A copied store is a whole store: every finished run is checkpointed into the .duckdb file, and
`assembly transcripts backup` writes a consistent copy."""

from __future__ import annotations

import shutil

import duckdb
import pytest

from assembly.cli.app import main
from transcripts import Store, StoreError
from transcripts.samples import write_run
from transcripts.store import TABLES


def read(path, sql):
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_the_duckdb_file_alone_holds_a_finished_run(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    run_id = store.begin_run(question="Q?", spec={})
    store.add_turn(run_id, seq=0, phase="opening", round=None, speaker_id="moderator", content="Welcome.")
    store.add_verdict(run_id, text="Yes.", winner="yes", rule="plurality")
    store.finish_run(run_id)  # small writes, far below the log's own checkpoint threshold
    assert not (tmp_path / "s.duckdb.wal").exists() or (tmp_path / "s.duckdb.wal").stat().st_size == 0
    copy = tmp_path / "elsewhere" / "copy.duckdb"
    copy.parent.mkdir()
    shutil.copyfile(store.path, copy)  # the .duckdb only, as people copy stores
    assert read(copy, "select status from runs") == [("completed",)]
    assert read(copy, "select text, winner from verdicts") == [("Yes.", "yes")]


def test_checkpoint_folds_the_log_in(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    run_id = store.begin_run(question="Q?", spec={})
    store.add_turn(run_id, seq=0, phase="opening", round=None, speaker_id="moderator", content="Welcome.")
    store.checkpoint()
    copy = tmp_path / "copy.duckdb"
    shutil.copyfile(store.path, copy)
    assert read(copy, "select content from turns") == [("Welcome.",)]


def test_backup_copies_every_row_and_refuses_to_overwrite(tmp_path, capsys):
    db = tmp_path / "s.duckdb"
    store = Store(db)
    write_run(store, n_jurors=4, rounds=1)
    write_run(store, seed=1, n_jurors=4, rounds=1, finish=False)  # a run still going: copied as it stands
    target = tmp_path / "backup.duckdb"
    code = run_cli(["transcripts", "backup", str(target), "--db", str(db)])
    out = capsys.readouterr().out
    assert code == 0 and str(target) in out
    for table in TABLES:
        query = f"select * from {table} order by all"
        assert read(target, query) == read(db, query), table
    assert f"{len(read(db, 'select * from turns'))} turns" in out

    code = run_cli(["transcripts", "backup", str(target), "--db", str(db)])
    err = capsys.readouterr().err
    assert code == 2 and "exists" in err and "--force" in err and len(err.strip().splitlines()) == 1
    write_run(store, seed=2, n_jurors=4, rounds=1)
    (tmp_path / "backup.duckdb.wal").write_bytes(b"a stale log from another store")
    assert run_cli(["transcripts", "backup", str(target), "--db", str(db), "--force"]) == 0
    assert read(target, "select count(*) from runs") == [(3,)]
    assert not (tmp_path / "backup.duckdb.wal").exists()
    with pytest.raises(StoreError, match="is the store itself"):
        store.backup(db, overwrite=True)
    with pytest.raises(StoreError, match="no folder"):
        store.backup(tmp_path / "missing" / "b.duckdb")


def run_cli(args) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return exc.code or 0
    return 0
