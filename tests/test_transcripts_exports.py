"""Exports (parquet folder, markdown), polars frames and the show text."""

from __future__ import annotations

import hashlib
import os

import polars as pl
import pytest

from transcripts import Store, StoreError, export_run, frames, render_show
from transcripts.samples import write_run


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "s.duckdb"
    store = Store(path)
    runs = [write_run(store, seed=s) for s in (1, 2)]
    return store, runs


def digest(store: Store) -> str:
    return hashlib.sha256(store.path.read_bytes()).hexdigest()


def test_parquet_export_has_one_file_per_table_filtered_to_the_run(filled, tmp_path):
    store, (run_id, other) = filled
    folder = export_run(store, run_id, "parquet", tmp_path / "out")
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(f"{t}.parquet" for t in ["runs", "participants", "participant_attributes", "turns",
                                                    "ballots", "tallies", "verdicts", "llm_calls"])
    turns = pl.read_parquet(folder / "turns.parquet")
    assert turns.height == 17 and set(turns["run_id"]) == {run_id}
    assert pl.read_parquet(folder / "runs.parquet")["id"].to_list() == [run_id]
    assert pl.read_parquet(folder / "llm_calls.parquet").height == 17


def test_markdown_export_is_the_readable_transcript(filled, tmp_path):
    store, (run_id, _) = filled
    path = export_run(store, run_id, "md", tmp_path)  # a folder: the file is named after the run
    assert path == tmp_path / f"{run_id}.md"
    text = path.read_text()
    assert text == render_show(store, run_id)
    assert text.startswith("# Should the city introduce a congestion charge?")
    for heading in ["## Participants", "## Transcript", "### deliberation, round 3", "## Ballots before and after",
                    "## Opinion shift", "## Tallies", "## Verdict", "### Minority report", "## Model calls"]:
        assert heading in text
    assert "**Dr. Rivera** (witness):" in text
    assert text.index("### opening") < text.index("### testimony") < text.index("### deliberation, round 1")


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "markdown"])
def test_unknown_run_is_refused_and_nothing_is_written(filled, tmp_path, fmt):
    store, _ = filled
    before = digest(store)
    with pytest.raises(StoreError, match="no run"):
        export_run(store, "01NOSUCHRUN", fmt, tmp_path / "x")
    assert not (tmp_path / "x").exists() and digest(store) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "markdown"])
def test_unwritable_destination_is_a_store_error(filled, tmp_path, fmt):
    store, (run_id, _) = filled
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="cannot"):
            export_run(store, run_id, fmt, locked / "sub" / "x")
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "markdown"])
def test_destination_that_cannot_exist_is_a_store_error(filled, tmp_path, fmt):
    store, (run_id, _) = filled
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    before = digest(store)
    with pytest.raises(StoreError, match="cannot"):
        export_run(store, run_id, fmt, blocker / "inside" / "x")
    assert blocker.read_text() == "not a folder" and digest(store) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_unknown_format(filled, tmp_path):
    store, (run_id, _) = filled
    with pytest.raises(StoreError, match="unknown export format"):
        export_run(store, run_id, "docx", tmp_path / "x")


def test_frames_are_polars_and_filter_by_run(filled):
    store, (run_id, other) = filled
    assert frames.runs(store).height == 2
    assert frames.runs(store.path, status="completed").height == 2  # a path opens read-only
    turns = frames.turns(store, run_id)
    assert isinstance(turns, pl.DataFrame) and turns["seq"].to_list() == list(range(17))
    assert set(turns["run_id"]) == {run_id} and "speaker" in turns.columns
    assert frames.turns(store).height == 34
    assert frames.ballots(store, run_id, phase="pre").height == 12
    assert frames.calls(store, other)["seq"].to_list() == list(range(1, 18))
    assert frames.participants(store, run_id, role="juror").height == 12
    assert frames.attributes(store, run_id).height == 36
    assert frames.tallies(store, run_id)["rule"].to_list() == ["plurality"]
    assert frames.verdicts(store, run_id).height == 1
    assert frames.opinion_shift(store, run_id)["option"].to_list() == ["No", "Unsure", "Yes"]
    assert frames.overview(store).height == 2


def test_show_of_a_run_in_progress(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    run_id = store.begin_run(question="Half done?", spec={})
    store.add_turn(run_id, seq=0, phase="opening", round=None, speaker_id="moderator", content="Hello")
    text = render_show(store, run_id)
    assert "**status**: running" in text and "**moderator**:" in text and "## Verdict" not in text
