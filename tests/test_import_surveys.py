"""FORMAT 1 survey distributions into the store: one run per question, one distribution ballot per group."""

from __future__ import annotations

import gzip
import json

import pytest

from transcripts import Store, StoreError
from transcripts.surveys import import_survey

HEADER = "question_id,question,options,attribute,group,option,count"
OPTS = '"[""Yes"", ""No"", ""Unsure""]"'


def rows(*extra: str, base: bool = True) -> str:
    lines = [HEADER]
    if base:
        for attribute, group, counts in (("overall", "all", (50, 30, 20)), ("party", "Democrat", (30, 10, 0)),
                                         ("party", "Republican", (10, 25, 5.5))):
            for option, count in zip(("Yes", "No", "Unsure"), counts):
                lines.append(f'Q1,Should we?,{OPTS},{attribute},{group},{option},{count}')
        lines.append('Q2,And now?,"[""A"", ""B""]",party,Democrat,A,3')
        lines.append('Q2,And now?,"[""A"", ""B""]",party,Democrat,B,1')
    return "\n".join([*lines, *extra]) + "\n"


def test_questions_become_runs_with_distribution_ballots(tmp_path):
    path = tmp_path / "survey.csv.gz"
    path.write_bytes(gzip.compress(rows().encode()))
    store = Store(tmp_path / "s.duckdb")
    ids = import_survey(store, path, source="testsurvey", license="CC0")
    assert len(ids) == 2
    run = store.run(ids[0])
    assert run["provenance"] == "imported-real" and run["source"] == "testsurvey" and run["license"] == "CC0"
    assert run["external_id"] == "Q1" and run["options"] == ["Yes", "No", "Unsure"] and run["question"] == "Should we?"
    assert len(run["summary"]["sha256"]) == 64
    ballots = store.sql(f"SELECT participant_id, phase, ballot_type, choice, probabilities FROM ballots "
                        f"WHERE run_id = '{ids[0]}' ORDER BY participant_id")
    by = {r["participant_id"]: r for r in ballots.iter_rows(named=True)}
    assert set(by) == {"overall=all", "party=Democrat", "party=Republican"}
    rep = by["party=Republican"]
    assert rep["phase"] == "final" and rep["ballot_type"] == "distribution" and rep["choice"] == "No"
    assert json.loads(rep["probabilities"]) == pytest.approx({"Yes": 10 / 40.5, "No": 25 / 40.5, "Unsure": 5.5 / 40.5})
    attrs = store.sql(f"SELECT participant_id, attribute, value FROM participant_attributes WHERE run_id = '{ids[0]}' "
                      "ORDER BY participant_id")
    assert attrs.rows() == [("party=Democrat", "party", "Democrat"), ("party=Republican", "party", "Republican")]
    extra = store.sql(f"SELECT extra FROM participants WHERE run_id = '{ids[0]}' AND id = 'party=Republican'")
    assert json.loads(extra["extra"][0])["respondents"] == 40.5
    # the opinion-shift views (pre/post question ballots) do not see survey groups
    assert store.sql("SELECT count(*) n FROM opinion_shift")["n"][0] == 0
    assert import_survey(store, path, source="testsurvey") == []  # already imported
    with pytest.raises(StoreError, match="already in the store"):
        import_survey(store, path, source="testsurvey", on_duplicate="error")


def test_a_split_keeps_only_its_questions(tmp_path):
    path = tmp_path / "survey.csv"
    path.write_text(rows())
    store = Store(tmp_path / "s.duckdb")
    ids = import_survey(store, path, source="s", question_ids=["Q2"])
    assert len(ids) == 1 and store.run(ids[0])["external_id"] == "Q2"


@pytest.mark.parametrize("text, message", [
    (rows().replace("attribute,", "attr,", 1), r"survey.csv:1: missing column\(s\) attribute"),
    (rows("Q1,Should we?," + OPTS + ",party,Other,Maybe,3"), r"survey.csv:13: field 'option': 'Maybe' is not one of"),
    (rows("Q3,X?," + OPTS + ",party,Other,Yes,-2"), r"survey.csv:13: field 'count': '-2' must be a finite number"),
    (rows("Q3,X?," + OPTS + ",party,Other,Yes,lots"), r"survey.csv:13: field 'count': 'lots' is not a number"),
    (rows('Q3,X?,"[""Yes""]",party,Other,Yes,1'), r"survey.csv:13: field 'options'.*at least 2"),
    (rows('Q3,X?,not json,party,Other,Yes,1'), r"survey.csv:13: field 'options': 'not json' is not valid JSON"),
    (rows('Q1,Should we?,"[""Yes"", ""No""]",party,Other,Yes,1'), r"survey.csv:13: field 'options': differs"),
    (rows("Q1,Should we?," + OPTS + ",party,Democrat,Yes,1"), r"survey.csv:13: duplicate row"),
    (rows(*(f"Q3,X?,{OPTS},party,Other,{o},0" for o in ("Yes", "No", "Unsure"))), r"survey.csv:13: .* sum to 0"),
    (rows("Q3,X?," + OPTS + ",party"), r"survey.csv:13: expected 7 fields, found 4"),
    (HEADER + "\n", r"survey.csv: no data rows"),
    (rows().replace("count\n", "count,group\n", 1), r"survey.csv:1: column\(s\) group appear more than once"),
    (rows("Q3,," + OPTS + ",party,Other,Yes,1"), r"survey.csv:13: field 'question' is empty"),
    (rows("Q3,X?," + OPTS + ",party,Other,Yes,inf"), r"survey.csv:13: field 'count': 'inf' .* not finite"),
    (rows('Q3,X?,"[""A"", ""A""]",party,Other,A,1'), r"survey.csv:13: field 'options'.* repeats an option"),
])
def test_malformed_files_are_refused_whole(tmp_path, text, message):
    path = tmp_path / "survey.csv"
    path.write_text(text)
    store = Store(tmp_path / "s.duckdb")
    with pytest.raises(StoreError, match=message) as info:
        import_survey(store, path, source="s")
    assert "\n" not in str(info.value)
    assert store.sql("SELECT count(*) n FROM runs")["n"][0] == 0


def test_missing_file_and_source(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    with pytest.raises(StoreError, match="file not found"):
        import_survey(store, tmp_path / "nope.csv", source="s")
    (tmp_path / "ok.csv").write_text(rows())
    with pytest.raises(StoreError, match="needs a source"):
        import_survey(store, tmp_path / "ok.csv", source=" ")
