"""How the store behaves at scale: fill it with N assemblies of realistic size, then time exploration queries.

    python benchmarks/store_scale.py                 # 1,000 assemblies (a few minutes on 2 cores)
    python benchmarks/store_scale.py --runs 50 --reps 3

Each assembly: 12 jurors + moderator + witness, 3 rounds, ~50 turns, 24 ballots (pre/post), ~60 model calls with
multi-kB prompts, 4 tallies and a verdict. Rows go in through bulk inserts (Store.insert_rows inside one
transaction per batch), not the per-call write API. Also measured: the per-write cost of the engine's write API on
the filled store against the alternatives (a fresh duckdb.connect per write; one connection kept open, which
locks every other process out). Prints a table and writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa

from transcripts import Store, frames, render_show
from transcripts.store import new_id

WORDS = ("the charge would cut traffic but hurt people who must drive to work; I worry about fairness for "
         "shift workers and small shops, yet cleaner air matters to my children and the buses could run on time "
         "if the money went to transit rather than general funds, which is what the witness suggested").split()
OPTIONS = ["Yes", "No", "Unsure"]
ATTRS = {"party": ["Democrat", "Republican", "Independent"], "age": ["18-29", "30-49", "50-64", "65+"],
         "sex": ["Male", "Female"]}
RULES = ["plurality", "borda", "approval", "irv"]


def text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, k=n)).capitalize() + "."


def assembly_rows(rng: random.Random, t0: datetime) -> dict[str, list[dict]]:
    run_id = new_id()
    rows: dict[str, list[dict]] = {k: [] for k in ("runs", "participants", "participant_attributes", "turns",
                                                   "ballots", "tallies", "verdicts", "llm_calls")}
    rows["runs"].append({"id": run_id, "question": "Should the city introduce a congestion charge?",
                         "options": OPTIONS, "spec": json.dumps({"options": OPTIONS, "jurors": 12, "rounds": 3}),
                         "seed": rng.randrange(10**6), "versions": json.dumps({"assembly": "0.1.0"}),
                         "status": "completed", "provenance": "simulated", "started_at": t0,
                         "finished_at": t0 + timedelta(minutes=12), "pid": 1, "host": "bench"})
    jurors = [f"juror-{i:02d}" for i in range(1, 13)]
    people = [("moderator", "moderator"), ("witness-1", "witness")] + [(j, "juror") for j in jurors]
    for pid, role in people:
        attrs = {k: rng.choice(v) for k, v in ATTRS.items()} if role == "juror" else {}
        rows["participants"].append({"run_id": run_id, "id": pid, "role": role, "name": pid.title(),
                                     "persona": text(rng, 40) if role == "juror" else None,
                                     "attributes": json.dumps(attrs)})
        rows["participant_attributes"] += [{"run_id": run_id, "participant_id": pid, "attribute": k, "value": v}
                                           for k, v in attrs.items()]
    clock = t0
    history: list[str] = []

    def call(role: str, who: str, phase: str, response: str) -> str:
        nonlocal clock
        clock += timedelta(seconds=rng.uniform(1, 6))
        prompt = " ".join(history[-6:])[-2500:] + " " + text(rng, 30)  # recent transcript as context
        cid = new_id()
        rows["llm_calls"].append({
            "id": cid, "run_id": run_id, "seq": len(rows["llm_calls"]) + 1, "model": "openai:gpt-4o-mini",
            "role": role, "participant_id": who, "phase": phase, "request_hash": f"{rng.getrandbits(64):016x}",
            "messages": json.dumps([{"role": "system", "content": text(rng, 60)}, {"role": "user", "content": prompt}]),
            "system": text(rng, 60), "prompt": prompt, "params": '{"temperature": 0.7}', "response": response,
            "input_tokens": len(prompt) // 4, "output_tokens": len(response) // 4,
            "duration_s": rng.lognormvariate(0.5, 0.5), "attempts": 1, "seed": 1,
            "cost_usd": 1e-6 * len(prompt), "created_at": clock})
        return cid

    def say(who: str, role: str, phase: str, rnd: int | None) -> None:
        content = text(rng, rng.randint(40, 120))
        cid = call(role, who, phase, content)
        rows["turns"].append({"id": new_id(), "run_id": run_id, "seq": len(rows["turns"]), "phase": phase,
                              "round": rnd, "speaker_id": who, "content": content, "call_id": cid,
                              "created_at": clock})
        history.append(content)

    def ballots(phase: str, prior: dict[str, str] | None) -> dict[str, str]:
        chosen = {}
        for j in jurors:
            choice = prior[j] if prior and rng.random() < 0.7 else rng.choice(OPTIONS)
            chosen[j] = choice
            call("juror", j, phase, choice)
            rows["ballots"].append({"id": new_id(), "run_id": run_id, "participant_id": j, "phase": phase,
                                    "ballot_type": "single", "status": "valid", "choice": choice,
                                    "rationale": text(rng, 25), "attempts": 1, "created_at": clock})
        return chosen

    pre = ballots("pre", None)
    say("moderator", "moderator", "opening", None)
    for _ in range(3):
        say("witness-1", "witness", "testimony", None)
    for _ in range(4):
        say(rng.choice(jurors), "juror", "questions", None)
        say("witness-1", "witness", "answers", None)
    for rnd in range(1, 4):
        say("moderator", "moderator", "deliberation", rnd)
        for j in rng.sample(jurors, 12):
            say(j, "juror", "deliberation", rnd)
    post = ballots("post", pre)
    counts = {o: list(post.values()).count(o) for o in OPTIONS}
    winner = max(OPTIONS, key=lambda o: counts[o])
    for rule in RULES:
        rows["tallies"].append({"id": new_id(), "run_id": run_id, "phase": "post", "rule": rule, "winner": winner,
                                "winners": [winner], "scores": json.dumps(counts), "valid": 12, "abstained": 0,
                                "explain": f"{winner} wins under {rule}.", "created_at": clock})
    rows["verdicts"].append({"id": new_id(), "run_id": run_id, "text": text(rng, 120),
                             "minority_report": text(rng, 60), "winner": winner, "rule": "plurality",
                             "created_at": clock})
    return rows


def fill(store: Store, runs: int, batch: int, seed: int) -> float:
    rng = random.Random(seed)
    t0 = datetime(2026, 1, 1)
    started = time.perf_counter()
    for start in range(0, runs, batch):
        merged: dict[str, list[dict]] = {}
        for i in range(start, min(runs, start + batch)):
            for table, rows in assembly_rows(rng, t0 + timedelta(hours=i)).items():
                merged.setdefault(table, []).extend(rows)
        with store.transaction():
            for table, rows in merged.items():
                store.insert_rows(table, pa.Table.from_pylist(rows))
        print(f"  filled {min(runs, start + batch)}/{runs} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return time.perf_counter() - started


def timed(fn, reps: int) -> dict[str, float]:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_ms": round(1000 * statistics.median(times), 2), "min_ms": round(1000 * min(times), 2)}


def queries(store: Store, run_id: str) -> dict[str, callable]:
    sql = store.sql
    return {
        "turns by phase and role": lambda: sql(
            "SELECT phase, speaker_role, count(*) n, avg(length(content)) chars FROM transcript GROUP BY ALL"),
        "ballots by phase and choice": lambda: sql(
            "SELECT phase, choice, count(*) n FROM ballots GROUP BY ALL"),
        "opinion_shift, all runs": lambda: sql("SELECT * FROM opinion_shift"),
        "opinion_shift, mean delta per option": lambda: sql(
            "SELECT option, avg(delta) mean_delta, stddev(delta) sd FROM opinion_shift GROUP BY ALL"),
        "opinion_shift, one run": lambda: sql("SELECT * FROM opinion_shift WHERE run_id = ?", [run_id]),
        "opinion_shift_by_group, mean per party": lambda: sql(
            "SELECT value, option, avg(delta) FROM opinion_shift_by_group WHERE attribute = 'party' GROUP BY ALL"),
        "ballot_changes, change rate by party": lambda: sql(
            "SELECT a.value, avg(c.changed::INT) rate FROM ballot_changes c JOIN participant_attributes a "
            "ON a.run_id = c.run_id AND a.participant_id = c.participant_id WHERE a.attribute = 'party' GROUP BY ALL"),
        "call_costs by model and role": lambda: sql(
            "SELECT model, role, sum(calls), sum(cost_usd), median(median_s) FROM call_costs GROUP BY ALL"),
        "full-text ILIKE over turns": lambda: sql("SELECT count(*) FROM turns WHERE content ILIKE '%shift workers%'"),
        "run_overview": lambda: sql("SELECT * FROM run_overview"),
        "frames.turns(one run)": lambda: frames.turns(store, run_id),
        "render_show(one run)": lambda: render_show(store, run_id),
        "open read-only + select 1": lambda: Store(store.path, read_only=True).sql("SELECT 1"),
    }


def write_costs(store: Store, n: int) -> dict[str, dict[str, float]]:
    """Per-write latency of one turn: the store's design against the two obvious alternatives."""
    run_id = store.begin_run(question="Latency probe", spec={})
    api = []
    for i in range(n):
        t = time.perf_counter()
        store.add_turn(run_id, seq=i, phase="probe", round=None, speaker_id="j", content="x " * 100)
        api.append(time.perf_counter() - t)
    connect = []
    for i in range(n):
        t = time.perf_counter()
        con = duckdb.connect(str(store.path))
        con.execute("INSERT INTO turns VALUES (?, ?, ?, 'probe', NULL, 'j', ?, NULL, NULL, now()::TIMESTAMP)",
                    [new_id(), run_id, n + i, "x " * 100])
        con.close()
        connect.append(time.perf_counter() - t)
    con = duckdb.connect(str(store.path))
    kept = []
    for i in range(n):
        t = time.perf_counter()
        con.execute("INSERT INTO turns VALUES (?, ?, ?, 'probe', NULL, 'j', ?, NULL, NULL, now()::TIMESTAMP)",
                    [new_id(), run_id, 2 * n + i, "x " * 100])
        kept.append(time.perf_counter() - t)
    con.close()

    def summary(xs):
        return {"median_ms": round(1000 * statistics.median(xs), 2), "mean_ms": round(1000 * statistics.mean(xs), 2),
                "p95_ms": round(1000 * sorted(xs)[int(0.95 * (len(xs) - 1))], 2)}

    return {"Store.add_turn (attach, commit, detach)": summary(api),
            "duckdb.connect per write": summary(connect),
            "one connection kept open (locks out others)": summary(kept)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--writes", type=int, default=100, help="writes per method in the latency probe")
    parser.add_argument("--path", type=Path, help="store file (default: a temporary one, deleted afterwards)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.path or Path(tmp) / "bench.duckdb"
        store = Store(path)
        fill_s = fill(store, args.runs, args.batch, args.seed)
        size_mb = (path.stat().st_size + (os.path.getsize(f"{path}.wal") if os.path.exists(f"{path}.wal") else 0)) / 1e6
        counts = store.sql("SELECT (SELECT count(*) FROM turns) turns, (SELECT count(*) FROM ballots) ballots, "
                           "(SELECT count(*) FROM llm_calls) calls").row(0, named=True)
        run_id = store.sql("SELECT id FROM runs ORDER BY id LIMIT 1 OFFSET ?", [args.runs // 2])["id"][0]
        results = {name: timed(fn, args.reps) for name, fn in queries(store, run_id).items()}
        writes = write_costs(store, args.writes)

    report = {"runs": args.runs, "rows": counts, "fill_s": round(fill_s, 1), "store_mb": round(size_mb, 1),
              "reps": args.reps, "queries": results, "writes": writes, "python": platform.python_version(),
              "duckdb": duckdb.__version__, "cpus": os.cpu_count(), "at": datetime.now().isoformat(timespec="seconds")}
    print(f"{args.runs} assemblies: {counts['turns']:,} turns, {counts['ballots']:,} ballots, {counts['calls']:,} "
          f"calls; filled in {fill_s:.1f} s; store {size_mb:.1f} MB")
    print(f"\n{'query':45} {'median ms':>10} {'min ms':>8}")
    for name, r in results.items():
        print(f"{name:45} {r['median_ms']:>10.1f} {r['min_ms']:>8.1f}")
    print(f"\n{'one write (a turn)':45} {'median ms':>10} {'mean ms':>8} {'p95 ms':>8}")
    for name, r in writes.items():
        print(f"{name:45} {r['median_ms']:>10.1f} {r['mean_ms']:>8.1f} {r['p95_ms']:>8.1f}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    target = out / f"store_scale_{args.runs}.json"
    target.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {target}")


if __name__ == "__main__":
    main()
