"""FORMAT 1 reader/writer: typed objects from a valid file, one-line errors naming file, line, field and value."""

import gzip
import json

import numpy as np
import pytest

from assembly.evaluation.survey import (
    COLUMNS,
    SurveyFormatError,
    load_split,
    read_questions_meta,
    read_survey,
    write_survey,
)

OPTS = ["Agree", "Neutral", "Disagree"]


def rows_for(qid="Q1", question="Is it good?", options=OPTS, groups=None):
    groups = groups or {("overall", "all"): [5, 3, 2], ("party", "Democrat"): [4, 1, 0], ("party", "Republican"): [1, 2, 2]}
    out = []
    for (attribute, group), counts in groups.items():
        for option, count in zip(options, counts):
            out.append([qid, question, json.dumps(options), attribute, group, option, str(count)])
    return out


def write_csv(path, rows, header=COLUMNS):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_reads_typed_questions(tmp_path):
    path = write_csv(tmp_path / "s.csv", rows_for() + rows_for("Q2", "Other?", ["Yes", "No"],
                                                                 {("party", "Democrat"): [3, 1]}))
    survey = read_survey(path, nominal_ids={"Q2"})
    assert list(survey.questions) == ["Q1", "Q2"]
    q1 = survey.questions["Q1"]
    assert q1.options == OPTS and q1.question == "Is it good?" and not q1.nominal
    dem = q1.distributions[("party", "Democrat")]
    assert dem.n == 5
    np.testing.assert_allclose(dem.probs, [0.8, 0.2, 0.0])
    assert q1.overall().n == 10
    assert survey.questions["Q2"].nominal
    assert survey.attributes() == ["overall", "party"]


def test_gzip_and_round_trip(tmp_path):
    path = write_csv(tmp_path / "s.csv", rows_for())
    survey = read_survey(path)
    out = write_survey(tmp_path / "out.csv.gz", survey)
    with gzip.open(out, "rt") as fh:
        assert fh.readline().strip() == ",".join(COLUMNS)
    again = read_survey(out)
    for key, dist in survey.questions["Q1"].distributions.items():
        np.testing.assert_allclose(again.questions["Q1"].distributions[key].counts, dist.counts)


def test_fractional_counts_written(tmp_path):
    survey = read_survey(write_csv(tmp_path / "s.csv", rows_for()))
    survey.questions["Q1"].distributions[("party", "Democrat")].counts = np.array([2.5, 1.25, 0.0])
    again = read_survey(write_survey(tmp_path / "o.csv", survey))
    np.testing.assert_allclose(again.questions["Q1"].distributions[("party", "Democrat")].counts, [2.5, 1.25, 0])


def test_extra_column_is_ignored(tmp_path):
    rows = [r + ["x"] for r in rows_for()]
    survey = read_survey(write_csv(tmp_path / "s.csv", rows, header=(*COLUMNS, "note")))
    assert survey.questions["Q1"].k == 3


def expect_error(tmp_path, rows, *needles, header=COLUMNS):
    path = write_csv(tmp_path / "bad.csv", rows, header=header)
    with pytest.raises(SurveyFormatError) as info:
        read_survey(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    for needle in needles:
        assert needle in message, message
    return message


def test_missing_column(tmp_path):
    header = [c for c in COLUMNS if c != "count"]
    rows = [r[:-1] for r in rows_for()]
    expect_error(tmp_path, rows, ":1:", "missing column(s) count", header=header)


def test_option_not_in_list(tmp_path):
    rows = rows_for()
    rows[4][5] = "Strongly agree"
    expect_error(tmp_path, rows, "bad.csv:6:", "field 'option'", "'Strongly agree'", "is not one of")


def test_unparseable_options(tmp_path):
    rows = rows_for()
    for r in rows:
        r[2] = "[Agree, Neutral"
    expect_error(tmp_path, rows, "bad.csv:2:", "field 'options'", "not valid JSON")


def test_options_not_strings(tmp_path):
    rows = rows_for()
    for r in rows:
        r[2] = "[1, 2]"
    expect_error(tmp_path, rows, "field 'options'", "not a JSON array of strings")


def test_negative_count(tmp_path):
    rows = rows_for()
    rows[2][6] = "-3"
    expect_error(tmp_path, rows, "bad.csv:4:", "field 'count'", "-3", "negative")


def test_non_numeric_count(tmp_path):
    rows = rows_for()
    rows[0][6] = "many"
    expect_error(tmp_path, rows, "bad.csv:2:", "field 'count'", "'many'", "not a number")


def test_zero_total_group(tmp_path):
    rows = rows_for(groups={("party", "Democrat"): [0, 0, 0], ("party", "Republican"): [1, 2, 2]})
    expect_error(tmp_path, rows, "bad.csv:2:", "attribute='party'", "group='Democrat'", "sum to 0")


def test_inconsistent_options(tmp_path):
    rows = rows_for() + rows_for(options=["Agree", "Disagree", "Neutral"], groups={("sex", "Male"): [1, 1, 1]})
    expect_error(tmp_path, rows, "bad.csv:11:", "field 'options'", "differs from the options given earlier", "'Q1'")


def test_duplicate_row(tmp_path):
    rows = rows_for()
    rows.append(list(rows[3]))
    expect_error(tmp_path, rows, "bad.csv:11:", "duplicate row", "group='Democrat'", "option='Agree'", "line 5")


def test_wrong_number_of_fields(tmp_path):
    rows = rows_for()
    rows[1] = rows[1][:5]
    expect_error(tmp_path, rows, "bad.csv:3:", "expected 7 fields, found 5")


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SurveyFormatError, match="empty file"):
        read_survey(tmp_path / "empty.csv")
    with pytest.raises(SurveyFormatError, match="file not found"):
        read_survey(tmp_path / "nope.csv")
    write_csv(tmp_path / "header.csv", [])
    with pytest.raises(SurveyFormatError, match="no data rows"):
        read_survey(tmp_path / "header.csv")


def test_split_and_meta(tmp_path):
    (tmp_path / "split.json").write_text(json.dumps({"seed": 0, "train": ["Q1"], "validation": ["Q2"]}))
    assert load_split(tmp_path / "split.json", "validation") == ["Q2"]
    with pytest.raises(SurveyFormatError, match="no such split.*train, validation"):
        load_split(tmp_path / "split.json", "test")
    (tmp_path / "meta.csv").write_text(
        'question_id,nominal,opinionqa_ordinal\nQ1,False,"[1.0, 2.0, 2.5]"\nQ2,True,"[1.0, 1.0]"\n')
    meta = read_questions_meta(tmp_path / "meta.csv")
    assert meta.nominal == {"Q2"} and meta.positions["Q1"] == [1.0, 2.0, 2.5]
    survey = read_survey(write_csv(tmp_path / "s.csv", rows_for()), nominal_ids=meta.nominal, positions=meta.positions)
    assert survey.questions["Q1"].positions == [1.0, 2.0, 2.5]


def test_columns_are_the_store_readers():
    from transcripts.surveys import COLUMNS as STORE_COLUMNS

    assert COLUMNS == STORE_COLUMNS  # restated in evaluation only to keep DuckDB out of its import
