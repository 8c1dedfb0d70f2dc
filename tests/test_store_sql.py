"""store.sql: read-only unless asked, classified by DuckDB's parser, errors in one line."""

from __future__ import annotations

import pytest

from transcripts import Store, StoreError
from transcripts.samples import write_run


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("sql") / "s.duckdb")
    write_run(store, seed=1)
    return store


def test_select_with_parameters_returns_a_polars_frame(store):
    run_id = store.sql("select id from runs")["id"][0]
    df = store.sql("select seq, speaker, content from transcript where run_id = ? and seq < ?", [run_id, 3])
    assert df.columns == ["seq", "speaker", "content"]
    assert df["seq"].to_list() == [0, 1, 2] and df["speaker"][0] == "Moderator"
    named = store.sql("select count(*) n from turns where run_id = $run", {"run": run_id})
    assert named["n"][0] == 17


@pytest.mark.parametrize(
    "query",
    ["show tables", "describe turns", "pragma table_info('turns')", "explain select 1",
     "with x as (select 1 a) select * from x", "summarize turns", "select 1; select 2 as two"],
)
def test_reading_statements_are_allowed(store, query):
    assert store.sql(query) is not None


@pytest.mark.parametrize(
    "query, kind",
    [
        ("insert into runs (id) values ('x')", "INSERT"),
        ("update runs set status = 'failed'", "UPDATE"),
        ("delete from turns", "DELETE"),
        ("drop table turns", "DROP"),
        ("create table t (a int)", "CREATE"),
        ("select 1; delete from turns", "DELETE"),
        ("copy turns to '/tmp/never-written.csv'", "COPY"),
        ("alter table runs add column x int", "ALTER"),
    ],
)
def test_writing_statements_are_refused_without_write(store, query, kind):
    before = store.sql("select (select count(*) from turns) t, (select count(*) from runs) r").row(0)
    with pytest.raises(StoreError) as err:
        store.sql(query)
    assert f"refusing a {kind} statement" in str(err.value) and "write=True" in str(err.value)
    assert store.sql("select (select count(*) from turns) t, (select count(*) from runs) r").row(0) == before


def test_writes_run_with_write_true(store):
    store.sql("update runs set reason = 'annotated'", write=True)
    assert store.sql("select reason from runs")["reason"][0] == "annotated"


def test_reads_run_on_a_read_only_attachment(store):
    # the second line of defence behind the statement-type check: a write that slipped through still fails
    with pytest.raises(StoreError, match="read-only"):
        with store._session() as con:
            con.execute("insert into runs (id) values ('sneaky')")
    assert store.sql("select count(*) n from runs where id = 'sneaky'")["n"][0] == 0


@pytest.mark.parametrize("query", ["attach ':memory:' as x", "detach store1", "begin", "commit"])
def test_statements_that_would_break_the_session_are_refused_even_with_write(store, query):
    with pytest.raises(StoreError, match="managed by the store"):
        store.sql(query, write=True)


@pytest.mark.parametrize("query, fragment", [
    ("selec * from runs", "SQL error"),
    ("select * from no_such_table", "no_such_table"),
    ("select 'unterminated", "SQL error"),
    ("", "no SQL statement"),
])
def test_bad_sql_is_one_line(store, query, fragment):
    with pytest.raises(StoreError) as err:
        store.sql(query)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_parameters_need_a_single_statement(store):
    with pytest.raises(StoreError, match="single statement"):
        store.sql("select ?; select 2", [1])


def test_resolve_run_by_prefix_and_latest(store):
    run_id = store.sql("select id from runs")["id"][0]
    assert store.resolve_run(run_id[:10].lower()) == run_id
    assert store.resolve_run("latest") == run_id
    with pytest.raises(StoreError, match="no run"):
        store.resolve_run("ZZZZ")


def test_interval_results_come_back_as_text(tmp_path):
    from transcripts import Store

    store = Store(tmp_path / "i.duckdb")
    frame = store.sql("select interval 3 minute + interval 12 second as wall, 1 as n")
    assert frame["wall"].to_list() == ["00:03:12"] and frame["n"].to_list() == [1]
