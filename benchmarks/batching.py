"""Batching benchmark for the local backend on the embedded model (SmolLM2-135M-Instruct).

Measures, with medians over --reps repetitions:
  * generation: 12 juror-like prompts (persona system prompt + a deliberation question, ~60-word answers,
    max_tokens 80) answered one at a time vs all at once through concurrent `generate` calls (the micro-batcher);
  * option scoring: 12 juror ballots scored one at a time vs concurrently.
and prints the ratio, the machine (nproc, CPU model, torch threads, load average) and the model load time.

    python benchmarks/batching.py                 # full run (~15 min on 2 busy cores)
    python benchmarks/batching.py --reps 1 --max-tokens 32 --jurors 6   # quick look
    python benchmarks/batching.py --time-conversion   # also time a fresh GGUF -> bf16 conversion (temp cache)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assembly.providers import GenerateRequest, Message  # noqa: E402
from assembly.providers.local import EmbeddedModel  # noqa: E402
from host import machine  # noqa: E402

PERSONAS = [
    "Maria, 45, a nurse in Columbus, Ohio; Democrat; worries about hospital staffing.",
    "Dave, 62, a retired machinist in rural Pennsylvania; Republican; drives everywhere.",
    "Aisha, 29, a software tester in Atlanta; independent; commutes by bus.",
    "Tom, 51, owns a hardware store in Boise; Republican; cares about local business.",
    "Lin, 38, a middle-school teacher in Sacramento; Democrat; two young kids.",
    "Jorge, 33, an electrician in San Antonio; independent; rents an apartment.",
    "Ruth, 70, a retired librarian in Vermont; Democrat; volunteers at a food bank.",
    "Kevin, 24, a delivery driver in Phoenix; no party; saving to buy a car.",
    "Grace, 57, a farmer in Iowa; Republican; depends on diesel and rural roads.",
    "Sam, 41, a paramedic in Detroit; Democrat; sees traffic injuries at work.",
    "Priya, 35, an accountant in New Jersey; independent; worries about taxes.",
    "Bill, 66, a retired police officer in Tulsa; Republican; values public safety.",
]
QUESTION = "Should the city replace one lane of downtown traffic on Main Street with a protected bike lane?"


def persona_system(persona: str) -> str:
    return (f"You are {persona}\n\nYou are a member of a citizens' jury. Speak in your own voice, as this person: "
            "plain words, first person, your own experience and values.")


def speech_requests(n: int, max_tokens: int) -> list[GenerateRequest]:
    return [
        GenerateRequest(
            messages=[
                Message(role="system", content=persona_system(PERSONAS[i % len(PERSONAS)])),
                Message(role="user", content=f"The question before the jury: {QUESTION}\n\nThe moderator asks "
                        "for your view. Reply in about 60 words."),
            ],
            max_tokens=max_tokens, temperature=0.7, top_p=0.95, seed=i,
        )
        for i in range(n)
    ]


def ballot_requests(n: int) -> list[GenerateRequest]:
    options = ["Support the bike lane", "Oppose the bike lane", "Undecided"]
    return [
        GenerateRequest(
            messages=[
                Message(role="system", content=persona_system(PERSONAS[i % len(PERSONAS)])),
                Message(role="user", content=f"The question before the jury:\n{QUESTION}\n\nThis is a private, "
                        "secret ballot. Choose exactly one option:\n" + "\n".join(f"- {o}" for o in options)
                        + "\n\nYour answer:"),
            ],
            choices=options,
        )
        for i in range(n)
    ]


async def one_at_a_time(model, requests):
    return [await model.generate(r) for r in requests]


async def concurrently(model, requests):
    return await asyncio.gather(*(model.generate(r) for r in requests))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--jurors", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=80)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared 2-core box, 2 OpenMP threads stall whenever the "
                         "other core is busy)")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--time-conversion", action="store_true", help="time a fresh conversion into a temp cache")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)

    result: dict = {}
    if args.time_conversion:
        from assembly.providers.embedded import embedded_model_path

        with tempfile.TemporaryDirectory() as tmp:
            old = os.environ.get("ASSEMBLY_CACHE")
            os.environ["ASSEMBLY_CACHE"] = tmp
            start = time.perf_counter()
            embedded_model_path()
            result["conversion_s"] = round(time.perf_counter() - start, 2)
            if old is None:
                del os.environ["ASSEMBLY_CACHE"]
            else:
                os.environ["ASSEMBLY_CACHE"] = old

    model = EmbeddedModel(threads=args.threads, dtype=args.dtype, max_batch=max(16, args.jurors))
    start = time.perf_counter()
    model.load()
    result["load_s"] = round(time.perf_counter() - start, 2)
    result["dtype"] = str(model._dtype).removeprefix("torch.")
    result["machine"] = machine()

    speeches = speech_requests(args.jurors, args.max_tokens)
    ballots = ballot_requests(args.jurors)

    async def warmup():
        await model.generate(speech_requests(1, 4)[0])
        await model.generate(ballots[0])

    asyncio.run(warmup())

    def timed(fn, requests):
        start = time.perf_counter()
        responses = asyncio.run(fn(model, requests))
        return time.perf_counter() - start, responses

    rows = {"single_tok_s": [], "batched_tok_s": [], "single_jurors_s": [], "batched_jurors_s": []}
    example = None
    for rep in range(args.reps):
        for mode, fn in (("single", one_at_a_time), ("batched", concurrently)):
            before = model.stats["batches"]
            seconds, responses = timed(fn, speeches)
            tokens = sum(r.usage.output_tokens for r in responses)
            rows[f"{mode}_tok_s"].append(tokens / seconds)
            print(f"rep {rep + 1} generation {mode:8s}: {tokens} tokens in {seconds:6.1f} s = "
                  f"{tokens / seconds:6.1f} tok/s ({model.stats['batches'] - before} batches)", file=sys.stderr,
                  flush=True)
            example = example or responses[0].text
            before = model.stats["batches"]
            seconds, responses = timed(fn, ballots)
            rows[f"{mode}_jurors_s"].append(len(ballots) / seconds)
            print(f"rep {rep + 1} scoring    {mode:8s}: {len(ballots)} ballots in {seconds:6.1f} s = "
                  f"{len(ballots) / seconds:6.2f} jurors/s ({model.stats['batches'] - before} batches); "
                  f"choices {dict((c, [r.choice for r in responses].count(c)) for c in ballots[0].choices)}",
                  file=sys.stderr, flush=True)

    med = {k: round(statistics.median(v), 2) for k, v in rows.items()}
    result.update(
        jurors=args.jurors, max_tokens=args.max_tokens, reps=args.reps, medians=med,
        generation_speedup=round(med["batched_tok_s"] / med["single_tok_s"], 2),
        scoring_speedup=round(med["batched_jurors_s"] / med["single_jurors_s"], 2),
        runs=rows, example_answer=example,
    )
    result["machine"]["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        m = result["machine"]
        print(f"machine: {m['nproc']} cores, {m['cpu']} ({m['cpu_capability']}), torch {m['torch']}, "
              f"{m['torch_threads']} thread(s), load average {m['loadavg_1m']} -> {m['loadavg_1m_end']}")
        if "conversion_s" in result:
            print(f"conversion (GGUF -> bf16 safetensors): {result['conversion_s']} s")
        print(f"load from cache: {result['load_s']} s, dtype {result['dtype']}")
        print(f"generation, {args.jurors} jurors x <= {args.max_tokens} tokens, median of {args.reps}: "
              f"one at a time {med['single_tok_s']} tok/s, batched {med['batched_tok_s']} tok/s, "
              f"x{result['generation_speedup']}")
        print(f"option scoring, {args.jurors} ballots x 3 options: one at a time {med['single_jurors_s']} jurors/s, "
              f"batched {med['batched_jurors_s']} jurors/s, x{result['scoring_speedup']}")
        print(f"example answer: {example!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
