"""Where a study's time goes on the embedded model: one study (N draws side by side, or one after another with
--concurrency 1), with the local backend's own operations timed — prefill and scoring passes, decoding steps by
batch width, joining requests into a decoding batch, dropping rows that ended, growing the in-place cache, sampling.

The timers wrap the backend's methods for this process only (nothing in the package is changed). Decoding steps also
record the cache's width against the rows' own lengths (what padding costs). Model loading and a warm-up call are
outside the timings (the study is run by study_throughput.one_mode).

    python benchmarks/study_profile.py --draws 8                 # side by side, 8 at once (the study default)
    python benchmarks/study_profile.py --draws 2 --concurrency 1 # one after another
    python benchmarks/study_profile.py --draws 8 --json > profile.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers.cache_utils import DynamicCache  # noqa: E402

import assembly.providers.decoding as decoding  # noqa: E402
from assembly.providers.local import EmbeddedModel  # noqa: E402
from assembly.providers.reserved_cache import ReservedLayer  # noqa: E402
from host import machine  # noqa: E402
from study_throughput import one_mode  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = (("1 row", 1, 1), ("2-8 rows", 2, 8), ("9-24 rows", 9, 24), ("25+ rows", 25, 10_000))


class Timers:
    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self.steps: list[tuple[int, int, float, float]] = []  # rows, cache width, mean row length, seconds

    def clear(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.steps.clear()

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - start)
        return timed

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds
        self.calls[name] += 1

    def wrap_forward(self, fn):
        def timed(self_, **kwargs):
            start = time.perf_counter()
            try:
                return fn(self_, **kwargs)
            finally:
                seconds = time.perf_counter() - start
                ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
                if ids is not None and ids.shape[1] == 1:
                    rows = ids.shape[0]
                    label = next(label for label, low, high in WIDTHS if low <= rows <= high)
                    self.add(f"decoding steps, {label}", seconds)
                    self.steps.append((rows, mask.shape[1], float(mask.sum(1).float().mean()), seconds))
                else:
                    self.add("prefill and scoring passes", seconds)
        return timed


def install(timers: Timers) -> None:
    EmbeddedModel._forward = timers.wrap_forward(EmbeddedModel._forward)
    EmbeddedModel._generate_batch = timers.wrap("decoding batches (all of the above within)",
                                                EmbeddedModel._generate_batch)
    decoding.join_states = timers.wrap("joining requests into a decoding batch", decoding.join_states)
    decoding.sample_tokens = timers.wrap("sampling", decoding.sample_tokens)
    DynamicCache.batch_select_indices = timers.wrap("dropping rows that ended", DynamicCache.batch_select_indices)
    ReservedLayer._grown = staticmethod(timers.wrap("growing the in-place cache", ReservedLayer._grown))


async def profile(args) -> dict:
    timers = Timers()
    install(timers)
    with tempfile.TemporaryDirectory(prefix="study-profile-") as tmp:
        study = await one_mode(args, args.concurrency, Path(tmp), after_warm_up=timers.clear)
    steps = timers.steps
    step_s = sum(s[3] for s in steps) or 1.0
    return {
        "question": str(args.question), "draws": args.draws, "concurrency": args.concurrency, "jurors": args.jurors,
        "rounds": args.rounds, "completed": study["completed"], "wall_s": study["wall_s"],
        "seconds_per_assembly": round(study["wall_s"] / max(study["completed"], 1), 2),
        "operations": {name: {"seconds": round(s, 2), "calls": timers.calls[name]}
                       for name, s in sorted(timers.seconds.items(), key=lambda kv: -kv[1])},
        "decoding_cache_width": round(sum(s[1] * s[3] for s in steps) / step_s, 1),  # weighted by step time
        "decoding_row_length": round(sum(s[2] * s[3] for s in steps) / step_s, 1),
        "model_stats": study["model_stats"], "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--question", type=Path, default=ROOT / "examples" / "ai_assistant.yaml")
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--jurors", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-continuous-batching", action="store_true")
    parser.add_argument("--cache-reserve", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(profile(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['completed']} assemblies, {args.concurrency} at once: {result['wall_s']} s "
          f"({result['seconds_per_assembly']} s each)")
    for name, entry in result["operations"].items():
        print(f"  {name:<48} {entry['seconds']:>8.2f} s  {entry['calls']:>6} calls")
    print(f"decoding cache width {result['decoding_cache_width']} positions against rows of "
          f"{result['decoding_row_length']} on average (weighted by step time)")
    print(json.dumps(result["machine"]))


if __name__ == "__main__":
    main()
