"""FORMAT 2 JSONL: validated imports of real deliberations, exports of runs, and the round trip between them."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from transcripts import Store, StoreError, export_jsonl, export_run, import_jsonl, run_record
from transcripts.samples import write_run


def record(rid="chat/1", **changes):
    base = {
        "id": rid, "source": "testchat", "license": "CC-BY-4.0", "question": "Pick a card set.",
        "options": ["none", "A", "7,A"],
        "participants": [
            {"id": "mod", "role": "moderator", "attributes": {}},
            {"id": "Kiwi", "role": "participant", "attributes": {"party": "Democrat", "joined_chat": True}},
            {"id": "Cat", "role": "participant", "attributes": {"age": "18-29"}},
        ],
        "turns": [
            {"speaker": "mod", "text": "What do you think?", "phase": "prompt", "index": 0},
            {"speaker": "Kiwi", "text": "A, obviously", "phase": "discussion", "index": 1},
            {"speaker": "Cat", "text": "And 7 too", "phase": "discussion", "index": 2},
        ],
        "votes": [
            {"participant": "Kiwi", "option": "A", "phase": "pre"},
            {"participant": "Cat", "option": "none", "phase": "pre"},
            {"participant": "Kiwi", "option": "7,A", "phase": "post"},
            {"participant": "Cat", "option": "7,A", "phase": "post"},
            {"participant": "Kiwi", "option": "agree", "phase": "post", "target": 2},
        ],
    }
    base.update(changes)
    return base


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "s.duckdb")


def test_import_keeps_source_license_and_marks_it_real(store, tmp_path):
    ids = import_jsonl(store, write_jsonl(tmp_path / "d.jsonl", [record("chat/1"), record("chat/2")]))
    assert len(ids) == 2
    runs = store.sql("select provenance, source, license, external_id, status, options from runs order by external_id")
    assert runs.rows() == [("imported-real", "testchat", "CC-BY-4.0", "chat/1", "completed", ["none", "A", "7,A"]),
                           ("imported-real", "testchat", "CC-BY-4.0", "chat/2", "completed", ["none", "A", "7,A"])]
    run_id = store.resolve_run("chat/1")
    assert store.sql("select seq, speaker_id, content from transcript where run_id = ?", [run_id]).rows() == [
        (0, "mod", "What do you think?"), (1, "Kiwi", "A, obviously"), (2, "Cat", "And 7 too")]
    shift = store.sql("select option, pre_share, post_share from opinion_shift where run_id = ? order by option",
                      [run_id]).rows()
    assert shift == [("7,A", 0.0, 1.0), ("A", 0.5, 0.0), ("none", 0.5, 0.0)]  # the targeted vote is not counted
    assert store.sql("select target from ballots where target is not null")["target"].to_list() == ["2", "2"]
    attrs = store.sql("select participant_id, attribute, value from participant_attributes where run_id = ? "
                      "order by 1, 2", [run_id]).rows()
    assert attrs == [("Cat", "age", "18-29"), ("Kiwi", "joined_chat", "true"), ("Kiwi", "party", "Democrat")]


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r.pop("license"), "field license: missing"),
        (lambda r: r.update(options="A"), "field options"),
        (lambda r: r["participants"][1].update(role="king"), "field participants[1].role"),
        (lambda r: r["participants"].append({"id": "Cat", "role": "participant"}), "participants[3].id"),
        (lambda r: r["turns"][2].update(speaker="Ghost"), "field turns[2].speaker: 'Ghost' is not a participant"),
        (lambda r: r["turns"][1].update(index=5), "field turns[1].index"),
        (lambda r: r["turns"][1].pop("text"), "field turns[1].text: missing"),
        (lambda r: r["votes"][0].update(option="B"), "field votes[0].option: 'B' is not one of"),
        (lambda r: r["votes"][1].update(phase="during"), "field votes[1].phase"),
        (lambda r: r["votes"][4].update(target=99), "field votes[4].target: turn index 99 out of range"),
        (lambda r: r["votes"][4].update(target=True), "field votes[4].target"),
    ],
)
def test_a_bad_record_names_file_line_and_field_and_nothing_is_imported(store, tmp_path, mutate, field):
    bad = record("chat/bad")
    mutate(bad)
    path = write_jsonl(tmp_path / "d.jsonl", [record("chat/ok"), bad, record("chat/after")])
    with pytest.raises(StoreError) as err:
        import_jsonl(store, path)
    message = str(err.value)
    assert f"{path}:2 (record 'chat/bad'): " in message and field in message and "\n" not in message
    assert store.sql("select count(*) n from runs")["n"][0] == 0  # not even the good first line


def test_broken_json_names_the_line(store, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(record()) + "\n\n{not json\n")
    with pytest.raises(StoreError, match=r"d\.jsonl:3: not valid JSON"):
        import_jsonl(store, path)
    assert store.sql("select count(*) n from runs")["n"][0] == 0


def test_a_missing_file_is_a_store_error(store, tmp_path):
    with pytest.raises(StoreError, match="cannot read"):
        import_jsonl(store, tmp_path / "nope.jsonl")


def test_a_failure_while_writing_rolls_back_the_whole_file(store, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "d.jsonl", [record("chat/1"), record("chat/2")])
    original = store.insert_rows

    def failing(table, rows):
        if table == "ballots":
            raise StoreError("disk on fire")
        return original(table, rows)

    monkeypatch.setattr(store, "insert_rows", failing)
    with pytest.raises(StoreError, match="disk on fire"):
        import_jsonl(store, path)
    monkeypatch.undo()
    assert store.sql("select (select count(*) from runs) + (select count(*) from turns) n")["n"][0] == 0


def test_reimporting_skips_or_refuses_duplicates(store, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [record("chat/1")])
    assert len(import_jsonl(store, path)) == 1
    assert import_jsonl(store, path) == []
    with pytest.raises(StoreError, match="already in the store"):
        import_jsonl(store, path, on_duplicate="error")
    twice = write_jsonl(tmp_path / "twice.jsonl", [record("chat/9"), record("chat/9")])
    with pytest.raises(StoreError, match="appears twice"):
        import_jsonl(store, twice)
    assert store.sql("select count(*) n from runs")["n"][0] == 1


def test_open_questions_accept_any_option(store, tmp_path):
    import_jsonl(store, write_jsonl(tmp_path / "d.jsonl", [record(options=None)]))
    assert store.sql("select options from runs")["options"][0] is None


def test_export_of_an_imported_record_gives_it_back(store, tmp_path):
    original = record("chat/1")
    import_jsonl(store, write_jsonl(tmp_path / "d.jsonl", [original]))
    out = export_run(store, store.resolve_run("chat/1"), "jsonl", tmp_path / "out.jsonl")
    back = json.loads(out.read_text())
    assert back.pop("provenance") == "imported-real"
    assert back == original


def test_a_simulated_run_round_trips_and_stays_simulated(tmp_path):
    first = Store(tmp_path / "a.duckdb")
    run_id = write_run(first, seed=4)
    first.add_ballot(run_id, participant_id="juror-01", phase="final", ballot_type="approval", approvals=["Yes", "No"])
    path = export_jsonl(first, tmp_path / "runs.jsonl")
    exported = json.loads(path.read_text())
    assert exported["id"] == run_id and exported["provenance"] == "simulated"
    assert {p["role"] for p in exported["participants"]} == {"juror", "moderator", "expert"}  # witness -> expert
    second = Store(tmp_path / "b.duckdb")
    (new_id,) = import_jsonl(second, path)
    assert second.run(new_id)["provenance"] == "simulated"

    def view(store, rid, query):
        return store.sql(query, [rid]).rows()

    for query in [
        "select seq, phase, round, speaker, speaker_role, content from transcript where run_id = ? order by seq",
        "select participant_id, ballot_type, pre_choice, post_choice, changed from ballot_changes where run_id = ? order by 1",
        "select ballot_type, option, pre_share, post_share from opinion_shift where run_id = ? order by 1, 2",
        "select attribute, value, option, delta from opinion_shift_by_group where run_id = ? order by 1, 2, 3",
        "select participant_id, phase, approvals from ballots where run_id = ? and ballot_type = 'approval'",
    ]:
        assert view(first, run_id, query) == view(second, new_id, query), query
    assert run_record(second, new_id) | {"id": run_id} == run_record(first, run_id)


def test_export_jsonl_of_selected_runs(store, tmp_path):
    import_jsonl(store, write_jsonl(tmp_path / "d.jsonl", [record("chat/1"), record("chat/2")]))
    path = export_jsonl(store, tmp_path / "one.jsonl", [store.resolve_run("chat/2")])
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["chat/2"]


def test_import_does_not_modify_its_input(store, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [record()])
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    records = copy.deepcopy(record())
    import_jsonl(store, path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before and records == record()
