"""Study throughput on the embedded model: N draws of one question run side by side (`assembly study`, cross-jury
batching through one loaded model) against the same N draws run one after another, in one benchmark run.

Both modes run the same draws (same seeds, hence the same juries) of a 6-juror, 1-round question
(examples/ai_assistant.yaml with --jurors 6 --rounds 1 by default), each on a freshly loaded embedded model (so
neither inherits the other's prompt-prefix cache), each into its own store. Model loading and a warm-up call are
outside the timings. Prints assemblies per hour for both, the ratio (target: >= 3x on 2 cores), the local
backend's batch counts, and the machine.

    python benchmarks/study_throughput.py                       # the full benchmark: 20 draws (an idle machine)
    python benchmarks/study_throughput.py --draws 2 --rounds 0   # a quick check that it runs
    python benchmarks/study_throughput.py --json > result.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assembly.providers import GenerateRequest, Message  # noqa: E402
from assembly.providers.local import EmbeddedModel  # noqa: E402
from assembly.study.runner import arun_study  # noqa: E402
from host import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


async def one_mode(args, concurrency: int, folder: Path, after_warm_up: Callable[[], None] | None = None) -> dict:
    """The study on a freshly loaded model; `after_warm_up` is called between the warm-up call and the study."""
    model = EmbeddedModel(threads=args.threads, max_batch=args.max_batch,
                          continuous_batching=not args.no_continuous_batching, cache_reserve=args.cache_reserve)
    try:
        await model.generate(GenerateRequest(messages=[Message(role="user", content="Hello")], max_tokens=2))
        model.stats.clear()  # count the study only, not the warm-up
        if after_warm_up is not None:
            after_warm_up()
        started = time.perf_counter()
        result = await arun_study([args.question], db=folder / f"c{concurrency}.duckdb", concurrency=concurrency,
                                  models=model, settings={"draws": args.draws, "jurors": args.jurors,
                                                          "rounds": args.rounds})
        wall = time.perf_counter() - started
    finally:
        await model.aclose()
    q = result.summary.questions[0]
    return {"concurrency": concurrency, "wall_s": round(wall, 1), "completed": result.summary.completed,
            "assemblies_per_hour": round(3600 * result.summary.completed / wall, 1),
            "modal_winner": q.modal_winner, "model_stats": dict(model.stats), "study_id": result.study_id}


async def main_async(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="study-throughput-") as tmp:
        folder = Path(tmp)
        result = {"question": str(args.question), "draws": args.draws, "jurors": args.jurors, "rounds": args.rounds,
                  "continuous_batching": not args.no_continuous_batching, "cache_reserve": args.cache_reserve,
                  "side_by_side": await one_mode(args, args.concurrency, folder)}
        if not args.side_by_side_only:
            result["one_after_another"] = o = await one_mode(args, 1, folder)
            ratio = result["side_by_side"]["assemblies_per_hour"] / max(o["assemblies_per_hour"], 1e-9)
            result["speedup"] = round(ratio, 2)
    return {**result, "machine": machine()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", type=Path, default=ROOT / "examples" / "ai_assistant.yaml")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--jurors", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8, help="draws side by side (the study default: 8)")
    parser.add_argument("--max-batch", type=int, default=64, help="the local backend's batch limit")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-continuous-batching", action="store_true",
                        help="later requests wait for the next batch instead of joining a decoding one (ablation)")
    parser.add_argument("--cache-reserve", type=int, default=64,
                        help="in-place decoding cache reserve in positions (0: concatenate per token, the ablation)")
    parser.add_argument("--side-by-side-only", action="store_true", help="skip the one-after-another run")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    s, o, m = result["side_by_side"], result.get("one_after_another"), result["machine"]
    print(f"{args.draws} draws of {args.question.name} ({args.jurors} jurors, {args.rounds} round(s)) on the embedded "
          "model")
    print(f"  side by side ({s['concurrency']} at once): {s['wall_s']} s, {s['assemblies_per_hour']} assemblies/h, "
          f"{s['model_stats'].get('batches')} batches, largest {s['model_stats'].get('max_batch_seen')}, "
          f"{s['model_stats'].get('joined_requests', 0)} requests joined a decoding batch")
    if o is not None:
        print(f"  one after another:       {o['wall_s']} s, {o['assemblies_per_hour']} assemblies/h, "
              f"{o['model_stats'].get('batches')} batches, largest {o['model_stats'].get('max_batch_seen')}")
        print(f"  speedup: {result['speedup']}x (target >= 3x on 2 cores)")
    print(f"machine: {m['cores']} cores, {m['cpu']}, torch {m['torch']} ({m['torch_threads']} threads), load "
          f"average {m['load_average_1m']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
