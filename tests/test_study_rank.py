"""`assembly study BANK --rank uncertainty`: a bank's questions ranked by how unsettled the simulated verdict is, over
draws (entropy) and between studies of it under other models (disagreement) — for a fresh study and for recorded
ones, as a table, --json and -o ranked.csv|json; bad input as one-line errors before any draw runs."""

from __future__ import annotations

import csv
import json

import pytest

from assembly.providers.registry import register_backend
from assembly.providers.scripted import ScriptedModel
from assembly.study.ranking import normalised_entropy, total_variation
from assembly.study.runner import run_study
from tests.test_clauses import one_line_error
from tests.test_cli import call

# Each question's statements, and how strongly model "a" and model "b" back the first: one question every jury
# settles alike, one that splits every jury, and one each model settles its own way.
BANK = {
    "park": ("Should the park open at dawn?", "The park should open at dawn", "The park should stay shut", 0.97, 0.97),
    "bus": ("Should buses be free?", "Buses should be free", "Buses should charge fares", 0.5, 0.5),
    "pool": ("Should the pool close on Mondays?", "The pool should close", "The pool should stay open", 0.97, 0.03),
}
TEMPLATE = """\
jury: {size: 3, seed: 1}
procedure: {rounds: 1, questioners: 1, words_per_turn: 20, testimony_words: 20, option_orders: 1, calibration: none}
"""
DRAWS = "6"


class Leaning:
    """The `ranked:a` / `ranked:b` backends: each juror backs a question's first statement with that model's
    probability (the vote is drawn from it), whoever the juror is."""

    @staticmethod
    def from_spec(spec, **options):
        which = {"a": 0, "b": 1}[spec.model]

        def scores(request):
            text = "\n".join(m.content for m in request.messages)
            for question, first, second, *lean in BANK.values():
                if question in text:
                    return {first: lean[which], second: 1 - lean[which]}
            return {c: 1.0 for c in request.choices}

        return ScriptedModel(scores=scores, name=str(spec))


register_backend("ranked", f"{__name__}:Leaning")


def write_bank(folder):
    path = folder / "bank.jsonl"
    path.write_text("".join(json.dumps({"id": key, "question": q, "split": "train", "affirming_statement": a,
                                        "negating_statement": n}) + "\n" for key, (q, a, n, *_) in BANK.items()))
    template = folder / "template.yaml"
    template.write_text(TEMPLATE)
    return path, template


@pytest.fixture
def bank(tmp_path):
    return write_bank(tmp_path)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The bank studied under model a, recorded: (bank, store, study id)."""
    folder = tmp_path_factory.mktemp("rank")
    path, template = write_bank(folder)
    db = folder / "s.duckdb"
    result = run_study([path], db=db, settings={"draws": int(DRAWS), "model": "ranked:a", "template": str(template)})
    assert result.status == "completed"
    return (path, template), db, result.study_id


def study(capsys, bank, db, model, *extra):
    path, template = bank
    return call(capsys, "study", str(path), "--template", str(template), "--draws", DRAWS, "--model", model,
                "--db", str(db), *extra)


def by_question(ranking: dict) -> dict:
    keys = {q: key for key, (q, *_) in BANK.items()}
    return {keys[q["question"]]: q for q in ranking["questions"]}


def test_one_study_ranks_the_split_question_first(recorded, capsys):
    _, db, study_id = recorded
    code, out, err = call(capsys, "study", "--rank", "uncertainty", "--study", study_id, "--db", str(db), "--json")
    assert code == 0, err
    ranking = json.loads(out)
    assert ranking["schema"] == "assembly.study-ranking/1" and ranking["by"] == "uncertainty"
    q = by_question(ranking)
    assert ranking["questions"][0]["question"] == BANK["bus"][0]
    assert [r["rank"] for r in ranking["questions"]] == [1, 2, 3]
    assert q["bus"]["within"] > 0.5 and q["bus"]["uncertainty"] == pytest.approx(q["bus"]["within"])
    for key in ("park", "pool"):  # model a settles both: every draw elects the first statement
        assert q[key]["uncertainty"] == 0 and q[key]["variants"][0]["winner"] == BANK[key][1]
    for r in ranking["questions"]:  # one study: no disagreement to measure
        assert r["between"] == 0 and r["total_variation"] is None and r["top_differs"] is None
        assert r["draws"] == int(DRAWS) and len(r["variants"]) == 1
        win = r["variants"][0]["win"]
        assert sum(win.values()) == pytest.approx(1.0)
        assert r["variants"][0]["entropy"] == pytest.approx(normalised_entropy(win, 2))


def test_a_second_model_exposes_the_question_they_disagree_on(recorded, tmp_path, capsys):
    bank, db, first = recorded
    table = tmp_path / "ranked.csv"
    # fresh: study b is run now and ranked with the recorded study a
    code, out, err = study(capsys, bank, db, "ranked:b", "--rank", "uncertainty", "--study", first[:10], "--json",
                           "-o", str(table))
    assert code == 0, err
    fresh = json.loads(out)
    second = fresh["studies"][0]
    assert fresh["studies"] == [second, first] and second != first
    q = by_question(fresh)
    assert [r["question"] for r in fresh["questions"]] == [BANK[k][0] for k in ("pool", "bus", "park")]
    pool, bus, park = q["pool"], q["bus"], q["park"]
    # each model settles the pool, the other way: no entropy within, all of it between
    assert pool["within"] == 0 and pool["between"] == pytest.approx(1.0) and pool["uncertainty"] == pytest.approx(1)
    assert pool["top_differs"] is True and pool["total_variation"] == pytest.approx(1.0)
    assert {v["winner"] for v in pool["variants"]} == {BANK["pool"][1], BANK["pool"][2]}
    assert [v["label"] for v in pool["variants"]] == ["models=ranked:b", "models=ranked:a"]
    # the bus splits juries under both models: entropy within, little between
    assert bus["within"] > 0.5 and bus["between"] < pool["between"]
    assert park["uncertainty"] == 0 and park["top_differs"] is False and park["total_variation"] == 0
    for r in fresh["questions"]:
        assert r["uncertainty"] == pytest.approx(r["within"] + r["between"])
        assert r["draws"] == 2 * int(DRAWS) and len(r["variants"]) == 2
        a, b = (v["win"] for v in r["variants"])
        assert r["total_variation"] == pytest.approx(total_variation(a, b))

    rows = list(csv.DictReader(table.open()))
    assert [row["question"] for row in rows] == [r["question"] for r in fresh["questions"]]
    assert rows[0]["rank"] == "1" and float(rows[0]["uncertainty"]) == pytest.approx(1.0)
    assert rows[0]["top_differs"] == "True" and " | " in rows[0]["winners"]

    # recorded: the same two studies, read back without running anything, rank the same way
    saved = tmp_path / "ranked.json"
    code, out, err = call(capsys, "study", "--rank", "uncertainty", "--study", second, "--study", first,
                          "--db", str(db), "-o", str(saved))
    assert code == 0, err
    assert json.loads(saved.read_text())["questions"] == fresh["questions"]
    assert "where a real assembly would teach the most" in out and "Should the pool close" in out
    assert out.index("Should the pool close") < out.index("Should buses be free") < out.index("Should the park")


def test_bad_rank_input_is_one_line_and_runs_nothing(bank, tmp_path, capsys):
    db = tmp_path / "s.duckdb"
    one_line_error(*study(capsys, bank, db, "ranked:a", "--rank", "popularity")[::2], "--rank 'popularity'",
                   "uncertainty")
    one_line_error(*study(capsys, bank, db, "ranked:a", "--rank", "uncertainty", "-o",
                          str(tmp_path / "r.txt"))[::2], "r.txt", ".csv")
    one_line_error(*study(capsys, bank, db, "ranked:a", "-o", str(tmp_path / "r.csv"))[::2], "go with --rank")
    assert not db.exists()  # nothing ran
    one_line_error(*call(capsys, "study", "--rank", "uncertainty", "--db", str(db))[::2], "--study STUDY")
    code, _, err = study(capsys, bank, db, "ranked:a", "--draws", "1")
    assert code == 0, err
    one_line_error(*call(capsys, "study", "--rank", "uncertainty", "--study", "nosuch", "--db", str(db))[::2],
                   "no study matches 'nosuch'")
    assert not (tmp_path / "r.csv").exists()
