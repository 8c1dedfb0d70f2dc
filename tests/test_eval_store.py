"""--db recording (provenance "eval") and --mode assembly, with scripted models."""

import asyncio

import pytest

from assembly.errors import AssemblyError
from assembly.evaluation.config import EvalConfig
from assembly.evaluation.fidelity import evaluate_survey
from assembly.evaluation.store import EvalRecorder
from assembly.evaluation.summary import summarise
from assembly.evaluation.survey import read_survey
from assembly.providers.scripted import ScriptedModel
from assembly.providers.types import ModelError
from tests.test_eval_fidelity import HUMAN, PersonaModel, persona, population, write_fixture  # noqa: F401

pytest.importorskip("duckdb")


def test_db_records_every_ballot_and_call(tmp_path, population):  # noqa: F811
    from transcripts import Store

    survey = read_survey(write_fixture(tmp_path / "s.csv"))
    config = EvalConfig(jurors_per_group=2, seed=0, attributes=["party"], option_orders=3, calibration="none")
    model = PersonaModel()
    db = tmp_path / "eval.duckdb"
    recorder = EvalRecorder.open(db, survey=survey, config=config, model=model)
    result = asyncio.run(evaluate_survey(survey, model, config, population=population, persona_fn=persona,
                                         hooks=recorder))
    summary = summarise(result)
    run_ids = recorder.finish(result, summary)
    assert len(run_ids) == 2
    store = Store(db, read_only=True)
    runs = store.sql("SELECT id, provenance, status, external_id FROM runs ORDER BY external_id")
    assert runs["provenance"].to_list() == ["eval", "eval"]
    assert runs["status"].to_list() == ["completed", "completed"]
    assert runs["external_id"].to_list() == ["Q1", "Q2"]
    ballots = store.sql("SELECT count(*) AS n FROM ballots")["n"][0]
    calls = store.sql("SELECT count(*) AS n FROM llm_calls")["n"][0]
    # every ballot and every model call is stored; a scored ballot makes one call per option order (the default 3:
    # 2 exist for Q1's two options, 3 for Q2's). Ballots: Q1 3 groups x 2 + 2 population + 1 no-persona; Q2 2 x 2 + 3
    assert ballots == summary["ballots"] == 9 + 7
    assert calls == summary["calls"] == 9 * 2 + 7 * 3
    # participants carry their persona, their attributes and the panel they sat on
    row = store.sql("SELECT persona, attributes, extra FROM participants WHERE id = 'party=Democrat#1' LIMIT 1")
    assert "Democrat" in row["persona"][0] and '"party": "Democrat"' in row["attributes"][0]
    assert '"panel": "party=Democrat"' in row["extra"][0]
    probs = store.sql("SELECT probabilities FROM ballots WHERE participant_id = 'party=Democrat#1' LIMIT 1")
    assert probs["probabilities"][0] is not None
    store.close()


def test_assembly_mode_runs_mini_assemblies(tmp_path):
    """Every juror of a group's mini-assembly belongs to the group; pre and post ballots are both scored."""
    survey = read_survey(write_fixture(tmp_path / "s.csv", {"Q1": HUMAN["Q1"]}))
    seen_specs = []

    model = ScriptedModel(choose=lambda r: "Yes" if "Democrat" in r.messages[1].content else "No")

    from assembly.deliberation import adeliberate

    async def deliberate(spec, **kwargs):
        seen_specs.append(spec)
        return await adeliberate(spec, **kwargs)

    config = EvalConfig(jurors_per_group=2, seed=0, attributes=["party"], groups=["Democrat", "Republican"],
                        option_orders=3, calibration="none", mode="assembly", assembly_rounds=1)
    result = asyncio.run(evaluate_survey(survey, model, config, deliberate_fn=deliberate))
    summary = summarise(result)
    assert {s["jury"]["quotas"]["party"].popitem()[0] for s in seen_specs} == {"Democrat", "Republican"}
    groups = {g["group"]: g for g in summary["groups"]}
    p = 1 / (1 + 2.718281828459045 ** -5)
    assert groups["Democrat"]["R"] == pytest.approx(1 - abs(p - 0.8), abs=1e-6)
    assert groups["Democrat"]["R_pre"] == pytest.approx(1 - abs(p - 0.8), abs=1e-6)
    assert groups["Republican"]["R"] == pytest.approx(1 - abs((1 - p) - 0.3), abs=1e-6)
    assert summary["mode"] == "assembly"


def test_cli_db(tmp_path, monkeypatch, population):  # noqa: F811
    import json

    import typer
    from typer.testing import CliRunner

    from assembly.cli.eval import survey as survey_command
    from assembly.evaluation import fidelity
    from assembly.providers.registry import ModelPool

    monkeypatch.setattr(ModelPool, "get", lambda self, spec: PersonaModel())
    monkeypatch.setattr(fidelity, "_default_population", lambda name: population)
    monkeypatch.setattr(fidelity, "_default_persona", persona)
    app = typer.Typer()
    app.command()(survey_command)
    db = tmp_path / "e.duckdb"
    out = CliRunner().invoke(app, [str(write_fixture(tmp_path / "s.csv")), "-n", "2", "--json", "--db", str(db)])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert len(data["run_ids"]) == 2
    from transcripts import Store

    store = Store(db, read_only=True)
    summary = store.sql("SELECT summary FROM runs WHERE id = ?", [data["run_ids"][0]])["summary"][0]
    assert '"fidelity"' in summary and '"evaluation"' in summary
    store.close()


def test_backend_options_only_for_local_models():
    from assembly.cli.eval import pool_options
    from assembly.errors import AssemblyError

    assert pool_options("embedded", {"dtype": "float32"}) == {"dtype": "float32"}
    assert pool_options("openai:gpt-4.1-mini", {}) == {}
    with pytest.raises(AssemblyError, match="--dtype"):
        pool_options("openai:gpt-4.1-mini", {"dtype": "float32"})


class Failing(PersonaModel):
    """Fails every call with `error`, or as Ctrl-C does (SIGINT, once: asyncio.run cancels the main task)."""

    def __init__(self, error: BaseException | None):
        super().__init__()
        self.error = error
        self.interrupted = False

    async def generate(self, request):
        if self.error is None:
            if not self.interrupted:
                import os
                import signal

                self.interrupted = True
                os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(5)
        raise self.error


@pytest.mark.parametrize("mode, error, raised, reason", [
    # a ballot's model error is an abstention, as in the other modes; what escapes the ballots fails the run
    ("ballot", RuntimeError("out of memory"), RuntimeError, "RuntimeError: out of memory"),
    # a mini-assembly's model error fails its own run (one-line AssemblyError), then the question's
    ("assembly", ModelError("out of memory"), AssemblyError, "model error: out of memory"),
])
def test_an_evaluation_records_failure_and_interruption_like_the_other_modes(tmp_path, monkeypatch, population,  # noqa: F811
                                                                              mode, error, raised, reason, ctrl_c):
    """`assembly eval survey --db` finishes the question in progress with the run lifecycle the full and distilled
    modes use (tests/test_distilled.py): `failed` with the reason, or `interrupted` by the user."""
    import io
    import json

    from rich.console import Console

    from assembly.cli.eval import run_survey_eval
    from assembly.evaluation import fidelity
    from transcripts import Store

    monkeypatch.setattr(fidelity, "_default_population", lambda name: population)
    monkeypatch.setattr(fidelity, "_default_persona", persona)
    db = tmp_path / "e.duckdb"

    def evaluate(model):
        run_survey_eval(file=write_fixture(tmp_path / "s.csv"), model="scripted", model_obj=model, attributes=["party"],
                        groups=["Democrat", "Republican"], questions=None, split=None, split_name="validation",
                        jurors_per_group=2, seed=0, mode=mode, population="us_adults", meta=None,
                        exact_ordinals=False, baselines=True, rounds=1, max_concurrency=0, write_sim=None, db=db,
                        details=False, err=Console(file=io.StringIO()), progress="none")

    with pytest.raises(raised, match="out of memory"):
        evaluate(Failing(error))
    with pytest.raises(KeyboardInterrupt):
        evaluate(Failing(None))
    rows = Store(db, read_only=True).sql("SELECT status, reason, spec FROM runs ORDER BY started_at").rows()
    questions = [(status, why) for status, why, spec in rows if json.loads(spec).get("eval") == "survey"]
    assert len(questions) == 2  # the first question of each evaluation, finished where it stopped
    assert questions[0][0] == "failed" and questions[0][1].endswith(reason)
    assert questions[1] == ("interrupted", "interrupted by the user")
    assert all(status != "running" for status, _, _ in rows)  # the mini-assemblies' own runs are finished too
