"""Wall time of the README demo assembly on the embedded model, and batched vs one-at-a-time juror generation.

    .venv/bin/python benchmarks/assembly_demo.py [--question examples/ai_assistant.yaml] [--repeats 3]

1. Runs the demo assembly (12 jurors, 2 rounds, 2 witnesses) end to end and reports its wall time.
2. Takes that run's recorded round-1 juror statement requests (the exact prompts, seeds and limits, from the store)
   and generates them again on the same loaded model, batched (all at once, as the graph's Send fan-out does) and
   one at a time; reports tokens/s of each (medians over --repeats) and the ratio.
Numbers go to stdout as JSON, with the machine they came from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from assembly import adeliberate
from assembly.providers.registry import load_model
from assembly.providers.types import GenerateRequest, Message
from transcripts import Store


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average_1m": os.getloadavg()[0], "python": platform.python_version()}


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
    args = parser.parse_args()

    db = args.db or str(Path(tempfile.mkdtemp()) / "bench.duckdb")
    model = load_model("embedded", **({"threads": args.threads} if args.threads else {}))
    started = time.perf_counter()
    result = await adeliberate(args.question, models=model, db=db)
    wall = time.perf_counter() - started

    store = Store(db)
    requests = recorded_requests(store, result.run_id)
    store.close()
    first_round = requests[: len(result.jurors)]
    batched, single = [], []
    for _ in range(args.repeats):
        seconds, responses = await timed(model.generate_many(first_round))
        batched.append(sum(r.usage.output_tokens for r in responses) / seconds)
        seconds, responses = await timed(one_at_a_time(model, first_round))
        single.append(sum(r.usage.output_tokens for r in responses) / seconds)
    report = {
        "question": args.question,
        "jurors": len(result.jurors),
        "rounds": len(result.floor),
        "assembly_wall_seconds": round(wall, 1),
        "assembly_model_calls": result.usage.calls,
        "assembly_output_tokens": result.usage.output_tokens,
        "assembly_tokens_per_second": result.usage.tokens_per_second,
        "juror_statements_compared": len(first_round),
        "batched_tokens_per_second_median": round(statistics.median(batched), 2),
        "one_at_a_time_tokens_per_second_median": round(statistics.median(single), 2),
        "batched_over_one_at_a_time": round(statistics.median(batched) / statistics.median(single), 2),
        "repeats": args.repeats,
        "per_repeat": {"batched": [round(x, 2) for x in batched], "one_at_a_time": [round(x, 2) for x in single]},
        "threads": args.threads or "torch default",
        "machine": machine(),
        "load_average_1m_at_end": os.getloadavg()[0],
        "run_id": result.run_id,
        "store": db,
    }
    print(json.dumps(report, indent=2))
    await model.aclose()


if __name__ == "__main__":
    asyncio.run(main())
