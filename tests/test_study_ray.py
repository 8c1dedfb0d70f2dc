"""`--executor ray` on a local Ray cluster started here (2 CPUs, no dashboard, loopback only): a 4-question bank on
the scripted model, each draw recorded in a worker's own store and copied whole into the driver's one store."""

from __future__ import annotations

import json
import os

import duckdb
import pytest

ray = pytest.importorskip("ray")

from assembly.study.runner import run_study  # noqa: E402

# ~12 s on 2 cores (Ray start-up included): not marked slow


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_bank_study_on_ray_workers(cluster, tmp_path):
    bank = tmp_path / "bank.jsonl"
    bank.write_text("".join(json.dumps({"id": f"S{i}", "question": f"Should the town do thing {i}?",
                                        "affirming_statement": f"The town should do thing {i}.",
                                        "negating_statement": f"The town should NOT do thing {i}."}) + "\n"
                            for i in range(4)))
    template = tmp_path / "settings.yaml"
    template.write_text("jury: {size: 3, stratify: [party]}\nprocedure: {rounds: 1, questioners: 1, "
                        "words_per_turn: 20, option_orders: 1, calibration: none}\n")
    db = tmp_path / "driver.duckdb"
    # `scripted` is registered in this process only (tests/conftest.py): the workers get it from the driver
    result = run_study([bank], db=db, executor="ray", workers=2, concurrency=2,
                       settings={"draws": 2, "template": str(template), "model": "scripted:demo"})
    assert result.status == "completed" and result.ran == 8, result.failures
    assert [q.completed for q in result.summary.questions] == [2, 2, 2, 2]
    con = duckdb.connect(str(db), read_only=True)
    try:
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        assert q("select count(*), count(distinct study_question) from runs where status = 'completed'") == [(8, 4)]
        per_run = q("select r.id, (select count(*) from turns t where t.run_id = r.id), "
                    "(select count(*) from ballots b where b.run_id = r.id), "
                    "(select count(*) from llm_calls c where c.run_id = r.id), "
                    "(select count(*) from tallies t where t.run_id = r.id), "
                    "(select count(*) from verdicts v where v.run_id = r.id), "
                    "(select count(*) from participant_attributes a where a.run_id = r.id) from runs r")
        for _, turns, ballots, calls, tallies, verdicts, attributes in per_run:
            assert turns > 0 and ballots == 6 and calls > 0 and tallies == 2 and verdicts == 1 and attributes >= 3
        # worker processes ran the assemblies; this process holds the one store
        assert os.getpid() not in {r[0] for r in q("select distinct pid from runs")}
        rule = result.summary.questions[0].rules[0]  # yes_no ballots: one rule by default, pre and post tallies
        assert q(f"select count(*), sum(wins) from study_win_rates where rule = '{rule}'") == [(8, 8)]
        assert q("select status from studies") == [("completed",)]
    finally:
        con.close()
