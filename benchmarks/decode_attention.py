"""One decoding step of the embedded model at several batch sizes, with transformers' SDPA attention, with the
local backend's packed attention (assembly.providers.attention), and with packed attention over the backend's
in-place decoding cache (assembly.providers.reserved_cache), over a long cache, with and without padding.

    .venv/bin/python benchmarks/decode_attention.py [--cache-tokens 700] [--batches 1 6 12 48] [--steps 9] \
        [--threads 2] [--json]

Each case: one prompt of `cache-tokens` random token ids prefilled, its cache forked to the batch's rows, then
`steps` decoding steps; the median step time after the first. "padded" masks the first 5 positions of one row (what a
batch of prompts of different lengths looks like); "unpadded" is a single row, or rows of one length, where
transformers drops the all-ones mask. Prints milliseconds per step and tokens/s, and the speedups over SDPA.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from assembly.providers.local import EmbeddedModel  # noqa: E402
from assembly.providers.reserved_cache import reserve  # noqa: E402
from host import machine  # noqa: E402


def step_ms(model, rows: int, cache_tokens: int, padded: bool, steps: int, reserved: int = 0) -> float:
    ids = torch.randint(100, 20000, (1, cache_tokens), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        cache = model(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values
        cache.batch_repeat_interleave(rows)
        mask = torch.ones((rows, cache_tokens), dtype=torch.long)
        if padded:
            mask[0, :5] = 0
        positions = torch.full((rows, 1), cache_tokens)
        token = torch.full((rows, 1), 42)
        times = []
        for _ in range(steps):
            mask = torch.cat([mask, torch.ones((rows, 1), dtype=torch.long)], 1)
            start = time.perf_counter()
            reserve(cache, reserved)
            out = model(input_ids=token, attention_mask=mask, position_ids=positions, past_key_values=cache,
                        use_cache=True)
            times.append(time.perf_counter() - start)
            cache, positions = out.past_key_values, positions + 1
    return 1000 * statistics.median(times[1:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-tokens", type=int, default=700)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 6, 12, 48])
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    local = EmbeddedModel(threads=args.threads).load()
    model = local.hf_model
    rows = []
    for rows_n in args.batches:
        for padded in ((False,) if rows_n == 1 else (False, True)):
            case = {"rows": rows_n, "padded": padded}
            for attention, reserved, key in (("sdpa", 0, "sdpa"), ("assembly_packed_sdpa", 0, "packed"),
                                             ("assembly_packed_sdpa", 64, "packed_reserved")):
                model.set_attn_implementation(attention)
                case[key] = round(step_ms(model, rows_n, args.cache_tokens, padded, args.steps, reserved), 1)
            case["speedup"] = round(case["sdpa"] / case["packed"], 2)
            case["speedup_reserved"] = round(case["sdpa"] / case["packed_reserved"], 2)
            rows.append(case)
            if not args.json:
                print(f"rows {rows_n:3d} {'padded  ' if padded else 'unpadded'}  sdpa {case['sdpa']:7.1f} ms "
                      f"({rows_n / case['sdpa'] * 1000:6.1f} tok/s)  packed {case['packed']:7.1f} ms "
                      f"({rows_n / case['packed'] * 1000:6.1f} tok/s)  x{case['speedup']}  + in-place cache "
                      f"{case['packed_reserved']:7.1f} ms ({rows_n / case['packed_reserved'] * 1000:6.1f} tok/s)  "
                      f"x{case['speedup_reserved']}", flush=True)
    result = {"cache_tokens": args.cache_tokens, "cases": rows, "dtype": str(model.dtype), "machine": machine()}
    print(json.dumps(result, indent=2) if args.json else json.dumps(result["machine"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
