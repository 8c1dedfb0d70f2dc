"""The local backend's prefill and decode against the raw transformers forward on the same prompts, same machine.

    .venv/bin/python benchmarks/backend_overhead.py [--rows 12] [--prompt-tokens 600] [--new-tokens 40] \
        [--repeats 3] [--threads 2] [--dtype auto]

Raw: `model(input_ids=[rows, n], logits_to_keep=1)` on the backend's own token ids (equal lengths, no padding),
then `new_tokens` greedy decode steps reusing the cache. Backend: `LocalModel.generate_many` on the same requests
with prefix sharing off (the same work as the raw path) and on (what the backend does by default; the rows share
a long system block, as an assembly phase's jurors do). Prefill time is a call with max_tokens=1; decode time is
the difference to a call with max_tokens=1+new_tokens (temperature 0, stop strings none; rows that end early leave
the batch). Reports tokens/s and the backend/raw ratios (medians over --repeats) as JSON with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

import torch

from assembly.providers.local import EmbeddedModel
from assembly.providers.prefixes import common_prefix_length
from assembly.providers.types import GenerateRequest, Message
from host import machine

SHARED = ("The question before the jury: should an AI assistant voice concerns about a risky decision before "
          "helping a user who has made up their mind? Testimony you heard: adults deserve respect for their own "
          "decisions, unsolicited warnings can be condescending, most new businesses struggle, and a short honest "
          "word about risk can be part of being helpful. ")


def requests_for(model: EmbeddedModel, rows: int, prompt_tokens: int, max_tokens: int) -> list[GenerateRequest]:
    """`rows` prompts of one length, at most `prompt_tokens` tokens: a shared system block (about 80%), then each
    row's own part."""
    tok = model.tokenizer
    shared_ids = tok(SHARED * 20)["input_ids"]
    out = []
    for i in range(rows):
        own = f"You are juror {chr(65 + i)}, and you have a view of your own. " * max(1, prompt_tokens // 60)
        lo, hi = 0, len(shared_ids)
        while lo < hi:  # the longest shared block that leaves room for this row's own part
            mid = (lo + hi + 1) // 2
            messages = [Message(role="system", content=tok.decode(shared_ids[:mid])), Message(role="user", content=own)]
            lo, hi = (mid, hi) if len(model._prompt_ids(messages)[0]) <= prompt_tokens else (lo, mid - 1)
        out.append(GenerateRequest(messages=[Message(role="system", content=tok.decode(shared_ids[:lo])),
                                             Message(role="user", content=own)],
                                   max_tokens=max_tokens, temperature=0.0, seed=i))
    lengths = {len(model._prompt_ids(r.messages)[0]) for r in out}
    if len(lengths) != 1:
        raise SystemExit(f"prompts came out at {sorted(lengths)} tokens, not one length: try another --prompt-tokens")
    return out


@torch.inference_mode()
def raw(model: EmbeddedModel, ids: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    hf = model.hf_model
    started = time.perf_counter()
    out = hf(input_ids=ids, use_cache=True, logits_to_keep=1)
    prefill = time.perf_counter() - started
    cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
    started = time.perf_counter()
    for _ in range(new_tokens):
        out = hf(input_ids=token, cache=cache, use_cache=True)
        cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
    return prefill, time.perf_counter() - started


async def backend(model: EmbeddedModel, requests: list[GenerateRequest], new_tokens: int) -> tuple[float, float, int]:
    model.prefixes.clear()  # each repeat starts cold: the prefix is computed once within the batch, not stored
    started = time.perf_counter()
    await model.generate_many([r.model_copy(update={"max_tokens": 1}) for r in requests])
    prefill = time.perf_counter() - started
    model.prefixes.clear()
    started = time.perf_counter()
    done = await model.generate_many([r.model_copy(update={"max_tokens": 1 + new_tokens}) for r in requests])
    whole = time.perf_counter() - started
    return prefill, whole - prefill, sum(r.usage.output_tokens for r in done) - len(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--prompt-tokens", type=int, default=600)
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = EmbeddedModel(threads=args.threads, dtype=args.dtype, max_batch=args.rows).load()
    requests = requests_for(model, args.rows, args.prompt_tokens, 1)
    ids = torch.tensor([model._prompt_ids(r.messages)[0] for r in requests])
    sent = int(ids.numel())
    shared = common_prefix_length(ids.tolist())
    raw(model, ids[:, :64], 2)  # warm up
    results: dict[str, list[tuple[float, float, int]]] = {"raw": [], "backend": [], "backend_shared_prefix": []}
    for _ in range(args.repeats):
        p, d = raw(model, ids, args.new_tokens)
        results["raw"].append((p, d, args.new_tokens * args.rows))
        for key, sharing in (("backend", False), ("backend_shared_prefix", True)):
            model.prefix_sharing = sharing
            results[key].append(asyncio.run(backend(model, requests, args.new_tokens)))

    def rates(key: str) -> dict:
        prefill = statistics.median(sent / p for p, _, _ in results[key])
        decode = statistics.median(n / d for _, d, n in results[key])
        return {"prefill_prompt_tokens_per_s": round(prefill, 1), "decode_tokens_per_s": round(decode, 1),
                "per_repeat": [[round(p, 3), round(d, 3), n] for p, d, n in results[key]]}

    report = {name: rates(name) for name in results}
    for name in ("backend", "backend_shared_prefix"):
        report[name]["prefill_over_raw"] = round(report[name]["prefill_prompt_tokens_per_s"]
                                                 / report["raw"]["prefill_prompt_tokens_per_s"], 3)
        report[name]["decode_over_raw"] = round(report[name]["decode_tokens_per_s"]
                                                / report["raw"]["decode_tokens_per_s"], 3)
    report.update(rows=args.rows, prompt_tokens=int(ids.shape[1]), shared_prefix_tokens=shared, new_tokens=args.new_tokens,
                  repeats=args.repeats, threads=args.threads, dtype=str(model._dtype).removeprefix("torch."),
                  machine=machine(), load_average_1m_at_end=os.getloadavg()[0])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
