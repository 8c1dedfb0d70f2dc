"""`finetune prepare`: every example type from simulated, real and survey runs; the split leaks nothing; the mix.

Fixtures are made here: scripted assemblies through the real engine, a FORMAT 2 file and a FORMAT 1 file written
by the test. No model, no data files, no network.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from tests.conftest import MINIMAL

QUESTIONS = [
    "Should the town council ban cars from the market square on Saturdays?",
    "Should the library open on Sundays?",
    "Should the city plant more street trees?",
]
SURVEY_QUESTIONS = {
    "Q1": ("How worried are you about crime?", ["Very", "Somewhat", "Not at all"]),
    "Q2": ("Should taxes on the rich go up?", ["Yes", "No"]),
    "Q3": ("How much do you trust the news?", ["A lot", "Some", "Not much", "None"]),
    "Q4": ("Should the town council ban cars from the market square on Saturdays?", ["Yes", "No"]),  # = QUESTIONS[0]
}
GROUPS = {"party": ["Democrat", "Republican"], "ideology": ["Liberal", "Conservative"]}


def write_survey_csv(path: Path, questions=SURVEY_QUESTIONS) -> Path:
    lines = ["question_id,question,options,attribute,group,option,count"]
    for qid, (question, options) in questions.items():
        opts = json.dumps(options).replace('"', '""')
        groups = [("overall", "all")] + [(a, g) for a, gs in GROUPS.items() for g in gs]
        for gi, (attribute, group) in enumerate(groups):
            for oi, option in enumerate(options):
                count = 10 + 7 * ((gi + oi) % len(options)) if group != "Republican" else 30 - 9 * oi
                lines.append(f'{qid},"{question}","{opts}",{attribute},{group},{option},{max(count, 1)}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def deliberation_record(rid: str, question: str) -> dict:
    people = [{"id": "mod", "role": "moderator", "attributes": {}}]
    turns = [{"speaker": "mod", "text": "Tell us what you think.", "phase": "prompt", "index": 0}]
    votes = []
    for i in range(4):
        pid = f"p{i}"
        people.append({"id": pid, "role": "participant",
                       "attributes": {"party": ["Democrat", "Republican"][i % 2], "age": "30-49"}})
    for i in range(6):
        turns.append({"speaker": f"p{i % 4}", "text": f"I believe option {'AB'[i % 2]} is right because of reason {i}.",
                      "phase": "discussion", "index": i + 1})
    for i in range(4):
        votes.append({"participant": f"p{i}", "option": "A" if i % 2 else "B", "phase": "pre"})
        votes.append({"participant": f"p{i}", "option": "A", "phase": "post"})
        votes.append({"participant": f"p{(i + 1) % 4}", "option": "Agree" if i % 3 else "Disagree", "phase": "post",
                      "target": i + 1})
    return {"id": rid, "source": "testchat", "license": "CC-BY-4.0", "question": question, "options": ["A", "B"],
            "participants": people, "turns": turns, "votes": votes}


def simulate(db: Path, question: str, seed: int) -> str:
    import assembly
    from assembly.providers.scripted import ScriptedModel

    spec = yaml.safe_load(MINIMAL)
    spec["question"] = question
    spec["jury"]["size"] = 4
    spec["procedure"].update(rounds=1, questioners=1)

    def reply(request):
        phase = request.tags.get("phase")
        who = request.tags.get("participant")
        return f"In the {phase} I, {who}, think we should weigh the costs and the benefits."

    model = ScriptedModel(reply, choose=lambda r: r.choices[hash(r.messages[-1].content) % len(r.choices)])
    return assembly.deliberate(spec, models=model, db=str(db), seed=seed).run_id


def build_store(tmp_path: Path):
    from transcripts import Store, import_jsonl
    from transcripts.surveys import import_survey

    db = tmp_path / "store.duckdb"
    simulate(db, QUESTIONS[0], 1)
    simulate(db, QUESTIONS[0], 2)
    simulate(db, QUESTIONS[1], 3)
    store = Store(db)
    records = [deliberation_record("chat/1", QUESTIONS[2]), deliberation_record("chat/2", QUESTIONS[2]),
               deliberation_record("chat/3", "Which card must be turned over?")]
    jsonl = tmp_path / "real.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    import_jsonl(store, jsonl)
    import_survey(store, write_survey_csv(tmp_path / "survey.csv"), source="testsurvey", license="internal use only")
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("prepare"))


def rows(folder: Path) -> list[dict]:
    out = []
    for split in ("train", "validation", "test"):
        path = folder / f"{split}.jsonl"
        if path.exists():
            out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def test_every_type_and_source_with_exact_prompts(store, tmp_path):
    from finetune.dataset import PrepareOptions, prepare_dataset

    manifest = prepare_dataset(store, tmp_path / "sft", PrepareOptions(validation=0.0))
    examples = rows(tmp_path / "sft")
    types = {e["type"] for e in examples}
    assert types == {"juror_turn", "ballot", "moderator_turn", "witness_turn", "distilled_ballot"}
    assert set(manifest["sources"]) == {"assembly-sim", "testchat", "testsurvey"}
    assert manifest["restricted_sources"] == ["testsurvey"]  # "internal use only"
    for e in examples:
        assert e["messages"][-1]["role"] == "assistant" and e["messages"][-1]["content"]
        assert e["split"] == "train" and e["provenance"] in ("simulated", "imported-real")
        assert e["deliberation_id"] and e["question_id"] and e["run_id"]

    # simulated examples use the prompt exactly as the juror saw it (the recorded call)
    calls = store.sql("SELECT messages, choice FROM llm_calls WHERE phase = 'ballot-pre'")
    recorded = {json.dumps(json.loads(m)[-1]["content"]) for m in calls["messages"]}
    sim_ballots = [e for e in examples if e["type"] == "ballot" and e["provenance"] == "simulated"]
    assert sim_ballots and all(json.dumps(e["messages"][1]["content"]) in recorded for e in sim_ballots
                               if "have not heard anyone" in e["messages"][1]["content"])
    # scored ballots train on the juror's recorded distribution (soft), not on a one-hot of the top option; the
    # reply is one option drawn from it (test_simulated_ballots_train_on_the_recorded_distribution checks the values)
    for e in sim_ballots:
        dist = e["target"]["distribution"]
        assert e["messages"][-1]["content"] in e["target"]["choices"]
        assert sum(dist) == pytest.approx(1.0) and max(dist) < 1.0

    # survey ballots: soft targets that follow the group's distribution; groups of one question contrast
    survey = [e for e in examples if e["source"] == "testsurvey"]
    rep = next(e for e in survey if e["target"]["group"] == "Republican" and e["question_id"] == "Q3")
    # the options listed in a seeded order of this example's own; target.order maps them back to the survey's order
    in_order = dict(zip(rep["target"]["order"], rep["target"]["distribution"]))
    assert [in_order[i] for i in range(4)] == pytest.approx([30 / 66, 21 / 66, 12 / 66, 3 / 66])
    assert rep["messages"][-1]["content"] in rep["target"]["choices"]
    assert "usually vote for Republicans" in rep["messages"][1]["content"]  # a juror seated from the group
    contrast = defaultdict(set)
    for e in survey:
        if e["contrast"]:
            contrast[e["contrast"]].add(e["target"]["group"])
    assert {frozenset(g) for g in contrast.values()} == {frozenset(GROUPS["party"]), frozenset(GROUPS["ideology"])}
    assert any(e["contrast"] is None and e["target"]["attribute"] == "overall" for e in survey)

    # real deliberations: the engine's juror templates, recent turns in a chat, statement votes as ballots
    turn = next(e for e in examples if e["type"] == "juror_turn" and e["source"] == "testchat" and
                "What you heard just now" in e["messages"][2]["content"])
    assert "You are a member of a citizens' jury" in turn["messages"][0]["content"]
    assert "as yourself in at most 60 words" in turn["messages"][2]["content"]
    assert turn["messages"][1]["content"].startswith("Who you are:")
    assert any("Do you agree with this statement?" in e["messages"][0]["content"] for e in examples
               if e["source"] == "testchat")

    distilled = [e for e in examples if e["type"] == "distilled_ballot"]
    assert {e["provenance"] for e in distilled} == {"simulated", "imported-real"}  # both record post-ballots
    assert all("after the deliberation" in e["messages"][-2]["content"] and e["target"]["order"] for e in distilled)


def test_simulated_ballots_train_on_the_recorded_distribution(store):
    """Every scored ballot call (one per option order) -> the juror's recorded probabilities, in that call's order."""
    from finetune.dataset import PrepareOptions, build_examples

    examples = build_examples(store, PrepareOptions(validation=0, types=("ballot",), max_per_run=1000))
    recorded = store.sql(
        "SELECT c.run_id, c.messages, c.params, c.choice, b.probabilities FROM llm_calls c JOIN ballots b "
        "ON b.run_id = c.run_id AND b.participant_id = c.participant_id AND c.phase = 'ballot-' || b.phase "
        "WHERE b.target IS NULL AND c.error IS NULL")
    by_prompt = {}
    for row in recorded.iter_rows(named=True):
        prompt = tuple((m["role"], m["content"]) for m in json.loads(row["messages"]))
        by_prompt[(row["run_id"], prompt)] = row
    sim = [e for e in examples if e["provenance"] == "simulated"]
    assert len(sim) == len(by_prompt) > 0
    orders = set()
    for e in sim:
        row = by_prompt[(e["run_id"], tuple((m["role"], m["content"]) for m in e["messages"][:-1]))]
        choices = json.loads(row["params"])["choices"]
        probabilities = json.loads(row["probabilities"])
        assert e["target"]["choices"] == choices
        assert e["target"]["distribution"] == pytest.approx([probabilities[o] for o in choices])
        assert e["target"]["distribution"] != [1.0 if o == row["choice"] else 0.0 for o in choices]  # not one-hot
        orders.add(tuple(choices))
    assert len(orders) > 1  # the ballots were scored under several option orders, each an example


def test_ballots_without_a_distribution_and_approval(tmp_path):
    """A scored call whose ballot has no distribution keeps its one-hot; approval calls and the calibration prior's
    calls give no example (no single-choice distribution; nobody's vote)."""
    from finetune.dataset import PrepareOptions, build_examples
    from transcripts import Store

    store = Store(tmp_path / "s.duckdb")
    options = ["A", "B"]
    rid = store.begin_run(question="Which?", options=options)
    store.add_participants(rid, [{"id": p, "role": "juror", "persona": f"You are {p}."} for p in ("j1", "j2")])

    def call(pid, phase, shown, choice):
        messages = [{"role": "system", "content": f"You are {pid}."}, {"role": "user", "content": f"{phase} {shown}"}]
        store.add_llm_call(rid, "scripted:test", role="juror", participant_id=pid, phase=phase, messages=messages,
                           params={"choices": shown}, response=choice, choice=choice)

    call("j1", "ballot-pre", ["B", "A"], "B")
    store.add_ballot(rid, "j1", "pre", "single", choice="B")  # recorded without probabilities
    call("j2", "ballot-pre", ["Yes", "No"], "Yes")
    store.add_ballot(rid, "j2", "pre", "approval", approvals=["A"], probabilities={"A": 0.9, "B": 0.2})
    call("neutral-prior", "ballot-prior", ["A", "B"], "A")
    store.finish_run(rid, "completed")
    (example,) = build_examples(store, PrepareOptions(validation=0, types=("ballot",)))
    assert example["target"] == {"choices": ["B", "A"], "distribution": [1.0, 0.0]}
    assert example["messages"][-1]["content"] == "B"


def test_split_by_question_and_deliberation_never_leaks(store, tmp_path):
    from finetune.dataset import PrepareOptions, prepare_dataset

    prepare_dataset(store, tmp_path / "sft", PrepareOptions(validation=0.35, test=0.35, seed=3))
    examples = rows(tmp_path / "sft")
    by_question, by_run, by_deliberation = defaultdict(set), defaultdict(set), defaultdict(set)
    for e in examples:
        by_question[e["question_key"]].add(e["split"])
        by_run[e["run_id"]].add(e["split"])
        by_deliberation[e["deliberation_id"]].add(e["split"])
    assert all(len(s) == 1 for s in by_question.values())
    assert all(len(s) == 1 for s in by_run.values())
    assert all(len(s) == 1 for s in by_deliberation.values())
    assert len({next(iter(s)) for s in by_question.values()}) >= 2  # the seed spread questions over splits
    # a simulated run and a survey question with the same text share one split
    q0 = [e for e in examples if e["question_key"].startswith("should the town council ban cars")]
    assert {e["source"] for e in q0} == {"assembly-sim", "testsurvey"} and len({e["split"] for e in q0}) == 1
    saved = json.loads((tmp_path / "sft" / "split.json").read_text())
    assert saved["by"] == ["question", "deliberation"]
    for e in examples:
        assert saved["questions"][e["question_key"]] == e["split"] == saved["runs"][e["run_id"]]
    for split in ("train", "validation", "test"):
        path = tmp_path / "sft" / f"{split}.jsonl"
        if path.exists():
            assert all(json.loads(line)["split"] == split for line in path.read_text().splitlines())


def test_real_share_weights_and_exclusions(store, tmp_path):
    from finetune.dataset import PrepareOptions, build_examples

    def share(examples):
        train = [e for e in examples if e["split"] == "train"]
        return sum(e["provenance"] == "imported-real" for e in train) / len(train)

    assert share(build_examples(store, PrepareOptions(validation=0, real=0.5))) == pytest.approx(0.5, abs=0.02)
    assert share(build_examples(store, PrepareOptions(validation=0, real=1.0))) == 1.0
    assert share(build_examples(store, PrepareOptions(validation=0, real=0.0))) == 0.0
    none = build_examples(store, PrepareOptions(validation=0, weights={"testchat": 0.0}))
    assert not [e for e in none if e["source"] == "testchat"]
    kept = build_examples(store, PrepareOptions(validation=0, exclude_questions=(QUESTIONS[0].upper() + "  ",)))
    assert not [e for e in kept if e["question_key"].startswith("should the town council")]
    typed = build_examples(store, PrepareOptions(validation=0, weights={"testchat:ballot": 0.0, "juror_turn": 0.0}))
    assert not [e for e in typed if e["type"] == "juror_turn" or (e["source"], e["type"]) == ("testchat", "ballot")]
    assert [e for e in typed if e["source"] == "testchat" and e["type"] == "distilled_ballot"]
    pairs = build_examples(store, PrepareOptions(validation=0, types=("ballot",), survey_overall=False,
                                                 survey_groups=("party=Democrat", "party=Republican")))
    survey = [e for e in pairs if e["source"] == "testsurvey"]
    assert {e["target"]["group"] for e in survey} == {"Democrat", "Republican"} and len(survey) == 2 * 4
    only = build_examples(store, PrepareOptions(validation=0, types=("distilled_ballot",)))
    assert {e["type"] for e in only} == {"distilled_ballot"}


def test_question_list_reads_holdout_splits(tmp_path):
    from finetune.dataset import read_question_list

    path = tmp_path / "bank.jsonl"
    path.write_text('{"question": "A?", "split": "train"}\n{"question": "B?", "split": "iid_test"}\n'
                    '{"question": "C?", "split": "ood_test"}\n')
    assert read_question_list(path) == ("B?", "C?")


def test_fixed_splits_put_named_questions_where_the_file_says(store, tmp_path):
    """A by-wave split file (question id or text -> split) overrides the seeded split for the runs it names."""
    from finetune.dataset import PrepareError, PrepareOptions, build_examples, read_split_file

    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": ["Q1", "Q2"], "validation": ["Q3", QUESTIONS[0]]}))
    splits = read_split_file(path)
    examples = build_examples(store, PrepareOptions(validation=0.0, splits=splits, types=("ballot",)))
    survey = {e["question_id"]: e["split"] for e in examples if e["source"] == "testsurvey"}
    assert survey["Q3"] == "validation" and survey["Q1"] == survey["Q2"] == "train"
    named = {e["split"] for e in examples if e["question_key"].startswith("should the town council")}
    assert named == {"validation"}  # a question text works too (normalised)
    path.write_text(json.dumps({"holdout": ["Q1"]}))
    with pytest.raises(PrepareError, match="unknown split 'holdout'"):
        read_split_file(path)
    with pytest.raises(PrepareError, match="file not found"):
        read_split_file(tmp_path / "missing.json")


def test_a_keep_predicate_filters_examples_before_the_manifest_counts_them(store, tmp_path):
    from finetune.dataset import PrepareOptions, prepare_dataset

    def only_ballots(example):
        return example["type"] == "ballot"

    manifest = prepare_dataset(store, tmp_path / "kept", PrepareOptions(validation=0.0, keep=only_ballots))
    assert set(manifest["examples"]["train"]) == {"ballot"}
    assert manifest["options"]["keep"].endswith("only_ballots")


def test_prepare_cli_json_and_errors(store, tmp_path):
    import typer
    from typer.testing import CliRunner

    from finetune import cli

    app = typer.Typer()
    app.command("prepare")(cli.prepare)
    app.command("train")(cli.train)
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", "--db", str(store.path), "--out", str(tmp_path / "d"), "--real", "0.5",
                                 "--types", "ballot,juror_turn", "--validation", "0", "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert set(manifest["examples"]["train"]) == {"ballot", "juror_turn"}
    bad = runner.invoke(app, ["prepare", "--db", str(store.path), "--out", str(tmp_path / "e"), "--weight", "oops"])
    assert isinstance(bad.exception, cli.FinetuneCliError) and "SOURCE=FRACTION" in str(bad.exception)
    bad = runner.invoke(app, ["prepare", "--db", str(store.path), "--out", str(tmp_path / "e"), "--types", "nope"])
    assert "unknown example type" in str(bad.exception) and "\n" not in str(bad.exception)


def test_building_examples_does_not_lock_out_writers(store, tmp_path, monkeypatch):
    """Prepare reads each run in a short attachment: while examples are being built, another process can write."""
    import shutil
    import subprocess
    import sys

    from finetune import dataset
    from transcripts import Store

    shutil.copy(store.path, tmp_path / "copy.duckdb")  # the module's store stays as the other tests expect it
    store = Store(tmp_path / "copy.duckdb")
    writes = []
    original = dataset.Builder.build

    def build_and_write(self, data):
        if not writes:  # a writer in another process, which gives up after 2 s of lock conflicts
            code = (f"from transcripts import Store; s = Store({str(store.path)!r}, lock_timeout=2); "
                    "s.finish_run(s.begin_run(question='written while preparing'), 'completed')")
            writes.append(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120))
        return original(self, data)

    monkeypatch.setattr(dataset.Builder, "build", build_and_write)
    dataset.build_examples(store, dataset.PrepareOptions(validation=0))
    assert writes and writes[0].returncode == 0, writes[0].stderr[-500:]
    assert store.sql("SELECT count(*) AS n FROM runs WHERE question = 'written while preparing'")["n"][0] == 1


def test_a_prepared_split_json_keeps_its_questions_in_their_splits(store, tmp_path):
    """`--split-file` takes a prepared dataset's split.json: a new prepare with another seed keeps the old split."""
    from finetune.dataset import PrepareError, PrepareOptions, build_examples, prepare_dataset, read_split_file

    prepare_dataset(store, tmp_path / "old", PrepareOptions(validation=0.5, seed=1, types=("ballot",)))
    old = json.loads((tmp_path / "old" / "split.json").read_text())["questions"]
    assert set(old.values()) == {"train", "validation"}
    splits = read_split_file(tmp_path / "old" / "split.json")
    again = build_examples(store, PrepareOptions(validation=0.5, seed=99, splits=splits, types=("ballot",)))
    assert {e["question_key"]: e["split"] for e in again} == old
    reseeded = build_examples(store, PrepareOptions(validation=0.5, seed=99, types=("ballot",)))
    assert {e["question_key"]: e["split"] for e in reseeded} != old  # what the split file protects against
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"schema": "assembly.finetune.split/1", "questions": {"q": "dev"}}))
    with pytest.raises(PrepareError, match="field 'questions': unknown split 'dev'"):
        read_split_file(broken)
