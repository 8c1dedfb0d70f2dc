"""Wall time of the README demo assembly on the embedded model, and batched vs one-at-a-time juror generation.

    .venv/bin/python benchmarks/assembly_demo.py [--question examples/ai_assistant.yaml] [--repeats 3]

1. Runs the demo assembly (12 jurors, 2 rounds, 2 witnesses) end to end and reports its wall time.
2. From that run's records: prompt tokens sent and actually prefilled per phase (sent minus the tokens the local
   backend took from a shared or stored prefix), and per round the share of the juror statement prompts' length
   that all of them have in common (tokens, the model's own tokenizer).
3. Takes the run's recorded round-1 juror statement requests (the exact prompts, seeds and limits) and generates
   them again on the same loaded model, batched (all at once, as the graph's Send fan-out does) and one at a time,
   each from a cold prefix store; one at a time is measured with prefix reuse on (a later request reuses the first
   one's stored prefix: what the backend does) and off (every prompt prefilled whole). Reports tokens/s of each
   (medians over --repeats) and the ratios.
Numbers go to stdout as JSON, with the machine they came from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from assembly import adeliberate
from assembly.providers.chat import prompt_ids
from assembly.providers.prefixes import common_prefix_length
from assembly.providers.registry import load_model
from assembly.providers.types import GenerateRequest, Message
from transcripts import Store
from host import machine


def recorded_requests(store: Store, run_id: str) -> list[GenerateRequest]:
    rows = store.sql(
        "SELECT messages, params FROM llm_calls WHERE run_id = ? AND role = 'juror' AND phase = 'deliberation' "
        "ORDER BY seq", [run_id]).to_dicts()
    requests = []
    for row in rows:
        messages = json.loads(row["messages"]) if isinstance(row["messages"], str) else row["messages"]
        params = json.loads(row["params"]) if isinstance(row["params"], str) else row["params"]
        requests.append(GenerateRequest(messages=[Message(**m) for m in messages], **params))
    return requests


def prefill_by_phase(store: Store, run_id: str) -> dict[str, dict]:
    rows = store.sql(
        "SELECT phase, count(*) AS calls, sum(input_tokens) AS sent, sum(cached_input_tokens) AS cached "
        "FROM llm_calls WHERE run_id = ? GROUP BY phase ORDER BY min(seq)", [run_id]).to_dicts()
    out = {}
    for r in rows:
        sent, cached = int(r["sent"] or 0), int(r["cached"] or 0)  # DuckDB sums are DECIMAL
        out[r["phase"]] = {"calls": int(r["calls"]), "prompt_tokens_sent": sent, "prompt_tokens_prefilled": sent - cached,
                           "prefilled_share": round((sent - cached) / sent, 3) if sent else None}
    return out


def common_prefix_by_round(store: Store, run_id: str, model) -> dict[str, dict]:
    """Per round: the juror statement prompts' common token prefix as a share of their mean length."""
    rows = store.sql("SELECT t.round AS r, c.messages FROM llm_calls c JOIN turns t ON t.call_id = c.id "
                     "WHERE c.run_id = ? AND c.role = 'juror' AND c.phase = 'deliberation' ORDER BY c.seq",
                     [run_id]).to_dicts()
    rounds: dict[str, list[list[int]]] = {}
    for row in rows:
        messages = json.loads(row["messages"]) if isinstance(row["messages"], str) else row["messages"]
        rounds.setdefault(str(row["r"]), []).append(prompt_ids(model.tokenizer, messages))
    out = {}
    for r, prompts in rounds.items():
        mean = statistics.mean(len(p) for p in prompts)
        shared = common_prefix_length(prompts)
        out[r] = {"prompts": len(prompts), "mean_tokens": round(mean, 1), "common_prefix_tokens": shared,
                  "common_prefix_share": round(shared / mean, 3)}
    return out


async def timed(coro) -> tuple[float, list]:
    started = time.perf_counter()
    responses = await coro
    return time.perf_counter() - started, responses


async def one_at_a_time(model, requests):
    return [await model.generate(r) for r in requests]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--question", default="examples/ai_assistant.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 avoids OpenMP stalls when other jobs share the cores)")
    parser.add_argument("--db", default=None, help="store to record into (default: a temporary file)")
    parser.add_argument("--out", default="benchmarks/results/assembly_demo.json", help="also write the report here")
    args = parser.parse_args()

    db = args.db or str(Path(tempfile.mkdtemp()) / "bench.duckdb")
    model = load_model("embedded", **({"threads": args.threads} if args.threads else {}))
    started = time.perf_counter()
    result = await adeliberate(args.question, models=model, db=db)
    wall = time.perf_counter() - started

    store = Store(db)
    requests = recorded_requests(store, result.run_id)
    phases = prefill_by_phase(store, result.run_id)
    prefixes = common_prefix_by_round(store, result.run_id, model)
    store.close()
    first_round = requests[: len(result.jurors)]
    runs: dict[str, list[float]] = {"batched": [], "one_at_a_time": [], "one_at_a_time_no_prefix_reuse": []}
    for _ in range(args.repeats):
        for key, job, sharing in (("batched", model.generate_many, True), ("one_at_a_time", one_at_a_time, True),
                                  ("one_at_a_time_no_prefix_reuse", one_at_a_time, False)):
            model.prefixes.clear()
            model.prefix_sharing = sharing
            seconds, responses = await timed(job(model, first_round) if job is one_at_a_time else job(first_round))
            runs[key].append(sum(r.usage.output_tokens for r in responses) / seconds)
    model.prefix_sharing = True
    median = {k: statistics.median(v) for k, v in runs.items()}
    report = {
        "question": args.question,
        "jurors": len(result.jurors),
        "rounds": len(result.floor),
        "assembly_wall_seconds": round(wall, 1),
        "assembly_model_calls": result.usage.calls,
        "assembly_output_tokens": result.usage.output_tokens,
        "assembly_prompt_tokens_sent": result.usage.input_tokens,
        "assembly_prompt_tokens_cached": result.usage.cached_input_tokens,
        "assembly_tokens_per_second": result.usage.tokens_per_second,
        "prefill_by_phase": phases,
        "juror_statement_common_prefix_by_round": prefixes,
        "juror_statements_compared": len(first_round),
        **{f"{k}_tokens_per_second_median": round(v, 2) for k, v in median.items()},
        "batched_over_one_at_a_time": round(median["batched"] / median["one_at_a_time"], 2),
        "batched_over_one_at_a_time_no_prefix_reuse": round(
            median["batched"] / median["one_at_a_time_no_prefix_reuse"], 2),
        "repeats": args.repeats,
        "per_repeat": {k: [round(x, 2) for x in v] for k, v in runs.items()},
        "threads": args.threads or "torch default",
        "dtype": str(model._dtype).removeprefix("torch."),
        "machine": machine(),
        "load_average_1m_at_end": os.getloadavg()[0],
        "run_id": result.run_id,
        "store": db,
    }
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    await model.aclose()


if __name__ == "__main__":
    asyncio.run(main())
