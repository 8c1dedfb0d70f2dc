"""What a study asks: question files, lists of them, and Habermas-format banks (a small synthetic bank here)."""

from __future__ import annotations

import json

import pytest

from assembly.errors import SpecError
from assembly.study.plan import digest, draw_seed, slots
from assembly.study.sources import load_questions

LINES = [
    {"id": "S1", "question": "Should towns plant more trees?", "split": "train",
     "affirming_statement": "Towns should plant more trees.",
     "negating_statement": "Towns should NOT plant more trees.", "topic": 1},
    {"id": "S2", "question": "Should buses be free?", "split": "iid_test",
     "affirming_statement": "Buses should be free.", "negating_statement": "Buses should NOT be free.", "topic": 2},
    {"id": "S3", "question": "Should libraries open on Sundays?", "split": "train", "topic": 3},
]


def write_bank(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_a_bank_line_becomes_a_yes_no_ballot_of_its_statements(tmp_path):
    bank = write_bank(tmp_path / "bank.jsonl", LINES)
    template = tmp_path / "settings.yaml"
    template.write_text("jury: {size: 4, stratify: [party], seed: 9}\nprocedure: {rounds: 1}\n"
                        "question: ignored\nballot: {type: ranked, options: [x, y]}\n")
    questions = load_questions([bank], template=template, overrides={"jurors": 5})
    assert [q.key for q in questions] == ["S1", "S2", "S3"]
    first = questions[0].spec
    assert first.question == "Should towns plant more trees?" and first.ballot.type == "yes_no"
    assert first.ballot.options == ["Towns should plant more trees.", "Towns should NOT plant more trees."]
    assert first.jury.size == 5 and first.jury.seed == 9 and first.procedure.rounds == 1  # template, then overrides
    assert questions[2].spec.ballot.options == ["Yes", "No"]  # no statements on the line
    assert questions[0].source == f"{bank}:1"
    assert [q.key for q in load_questions([bank], split="train")] == ["S1", "S3"]
    assert [q.key for q in load_questions([bank], limit=2)] == ["S1", "S2"]


def test_a_bank_line_without_a_question_names_file_and_line(tmp_path):
    bank = write_bank(tmp_path / "bank.jsonl", [LINES[0], "", {"id": "S9", "question": "  "}])
    with pytest.raises(SpecError) as err:
        load_questions([bank])
    assert str(err.value) == f'{bank}:3: no question (the line needs a non-empty "question")'
    bad = write_bank(tmp_path / "bad.jsonl", [LINES[0], "{not json"])
    with pytest.raises(SpecError, match=rf"{bad}:2: not valid JSON"):
        load_questions([bad])


def test_a_list_of_question_files_and_several_paths(tmp_path, question_file):
    other = tmp_path / "sub" / "other.yaml"
    other.parent.mkdir()
    other.write_text(question_file.read_text().replace("market square", "harbour front"))
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two questions\n{question_file.name}\n\nsub/other.yaml\n")
    from_list = load_questions([listing])
    assert [q.key for q in from_list] == [str(question_file.resolve()), str(other.resolve())]
    assert [q.key for q in load_questions([question_file, other])] == [q.key for q in from_list]
    with pytest.raises(SpecError, match="already in the study"):
        load_questions([question_file, listing])
    (tmp_path / "missing.txt").write_text("nowhere.yaml\n")
    with pytest.raises(SpecError, match=r"missing.txt:1: file not found: nowhere.yaml"):
        load_questions([tmp_path / "missing.txt"])
    with pytest.raises(SpecError, match="unknown question source '.csv'"):
        load_questions([tmp_path / "q.csv"])
    with pytest.raises(SpecError, match="--split 'train' applies to question banks"):
        load_questions([question_file], split="train")


def test_draws_get_distinct_reproducible_seeds_and_the_digest_follows_the_plan(question_file):
    questions = load_questions([question_file])
    planned = slots(questions, 3)
    assert [s.draw for s in planned] == [1, 2, 3]
    assert len({s.seed for s in planned}) == 3 and planned[0].seed == draw_seed(5, 1)
    assert digest(questions, 3) == digest(load_questions([question_file]), 3)
    assert digest(questions, 3) != digest(questions, 4)
    assert digest(questions, 3) != digest(load_questions([question_file], overrides={"rounds": 1}), 3)
