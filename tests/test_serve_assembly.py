"""End to end: the openai backend runs a whole small assembly against `assembly serve` serving a tiny local model on
127.0.0.1 (a real server, the real openai client), and the store never holds the API key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.test_serve import tiny_model_dir  # noqa: E402,F401  (module-scoped fixture: a tiny random Llama)

TOKEN = "sk-serve-e2e-SECRET-0123456789"


@pytest.fixture
def served_tiny(tiny_model_dir):  # noqa: F811
    from assembly.providers.registry import load_model
    from assembly.serving.app import create_app
    from assembly.serving.server import ServerThread

    local = load_model(f"local:{tiny_model_dir}", threads=1, dtype="float32")
    with ServerThread(create_app(local, model_id="tiny-juror", token=TOKEN)) as server:
        yield server
    asyncio.run(local.aclose())


def test_openai_backend_runs_an_assembly_against_assembly_serve(served_tiny, question_file, tmp_path, monkeypatch):
    import assembly
    from transcripts import Store

    monkeypatch.setenv("OPENAI_API_KEY", TOKEN)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    db = tmp_path / "e2e.duckdb"
    spec = f"openai:tiny-juror@{served_tiny.base_url}"
    result = assembly.deliberate(question_file, model=spec, jurors=3, rounds=1, seed=11, db=db,
                                 model_options={"initial_wait": 0.05})
    assert result.status == "completed"
    assert set(result.models.values()) == {spec}
    assert result.usage.calls > 0 and result.usage.output_tokens > 0
    # ballots came back scored through the server's `choices` extension: every juror cast a valid ballot
    assert sum(result.post_counts.values()) == 3 and not any(result.abstentions.values())

    store = Store(str(db), read_only=True)
    try:
        calls = store.sql("SELECT model, error, attempts FROM llm_calls WHERE run_id = ?", [result.run_id])
    finally:
        store.close()
    assert calls.height == result.usage.calls
    assert set(calls["model"].to_list()) == {spec} and calls["error"].null_count() == calls.height

    # no API key ever appears in the store: look at the bytes of every file it wrote
    for path in Path(tmp_path).glob("e2e.duckdb*"):
        data = path.read_bytes()
        assert TOKEN.encode() not in data and TOKEN[8:].encode() not in data, path

    # and the recorded run replays with no model at all, to the identical transcript and ballots
    from assembly.recorded_models import replay_arguments

    monkeypatch.delenv("OPENAI_API_KEY")
    again = assembly.deliberate(question_file, model=spec, jurors=3, rounds=1, seed=11, db=db,
                                **replay_arguments(result.run_id, db))
    assert again.status == "completed" and again.run_id != result.run_id

    def transcript(run_id):
        store = Store(str(db), read_only=True)
        try:
            turns = store.sql("SELECT phase, round, speaker_id, content FROM turns WHERE run_id = ? ORDER BY seq",
                              [run_id]).rows()
            ballots = store.sql("SELECT participant_id, phase, status, choice, ranking, approvals, probabilities, rationale FROM ballots WHERE run_id = ? "
                                "ORDER BY participant_id, phase", [run_id]).rows()
        finally:
            store.close()
        return turns, ballots

    assert transcript(again.run_id) == transcript(result.run_id)
    assert again.post_counts == result.post_counts and again.verdict == result.verdict
