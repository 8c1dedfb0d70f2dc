"""Load test for `assembly serve` on loopback: many concurrent clients against a server with a bounded queue.

Starts `python -m assembly serve` as a subprocess on 127.0.0.1 (a free port; the embedded SmolLM2-135M by default,
`--tiny` for a tiny random Llama built in a temporary folder), warms it up with one request, then fires --clients
concurrent clients in one wave, in turn:
  * plain chat completions,
  * streaming ones (each times its first content delta),
  * clients that hang up early: a plain one after --hangup-s, a streaming one after its first delta.
Every request has a timeout (--timeout); the whole run is bounded (--max-seconds); nothing leaves 127.0.0.1.

Checks (exit status 1 when one fails):
  * every client that did not hang up got an answer (200) or a 429 (queue full) — none hung or got anything else;
  * the server's /health `in_flight` never exceeded --queue, and fell to 0 after the wave: the clients that hung
    up gave their places back;
  * once the clients that hung up are gone, as many new requests as were admitted among them are all accepted
    while the rest of the wave is still being answered, and after the wave --queue concurrent requests are all
    accepted (no 429): the hung-up clients' places are free;
  * the server's resident memory stayed bounded: peak RSS (VmHWM) no more than --rss-growth-mb above its RSS
    after warm-up (RSS also sampled every 0.1 s during the wave).
Results print as JSON and are written to benchmarks/results/serve_load.json (git-ignored).

    python benchmarks/serve_load.py             # embedded model, 32 clients, queue 16 (about a minute here)
    python benchmarks/serve_load.py --tiny      # a tiny random model: seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from host import machine

REPO = Path(__file__).resolve().parents[1]
QUESTION = "Should the city replace one lane of downtown traffic on Main Street with a protected bike lane?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_kb(pid: int, field: str) -> int | None:
    """A field of /proc/<pid>/status in kB (VmRSS: resident now, VmHWM: the peak so far)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples = pid, every, []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            kb = proc_kb(self.pid, "VmRSS")
            if kb is not None:
                self.samples.append(kb)


def messages(i: int) -> list[dict]:
    return [{"role": "system", "content": "You are a member of a citizens' jury. Answer in one or two sentences."},
            {"role": "user", "content": f"Juror {i}: {QUESTION} What do you think?"}]


async def plain(client: httpx.AsyncClient, url: str, i: int, max_tokens: int) -> dict:
    start = time.perf_counter()
    reply = await client.post(url, json={"messages": messages(i), "max_tokens": max_tokens, "seed": i})
    out = {"kind": "plain", "status": reply.status_code, "latency_s": time.perf_counter() - start}
    if reply.status_code == 429:
        out["retry_after"] = reply.headers.get("retry-after")
    return out


async def streaming(client: httpx.AsyncClient, url: str, i: int, max_tokens: int, hang_up: bool = False) -> dict:
    start = time.perf_counter()
    body = {"messages": messages(i), "max_tokens": max_tokens, "seed": i, "stream": True,
            "stream_options": {"include_usage": True}}
    out: dict = {"kind": "stream_hangup" if hang_up else "stream"}
    async with client.stream("POST", url, json=body) as reply:
        out["status"] = reply.status_code
        if reply.status_code != 200:
            await reply.aread()
            out["latency_s"] = time.perf_counter() - start
            return out
        deltas = 0
        async for line in reply.aiter_lines():
            if not line.startswith("data: {"):
                continue
            data = json.loads(line[6:])
            if data.get("choices") and data["choices"][0]["delta"].get("content"):
                deltas += 1
                out.setdefault("first_delta_s", time.perf_counter() - start)
                if hang_up:
                    break  # leaving the `async with` closes the connection mid-stream
            if data.get("usage"):
                out["completion_tokens"] = data["usage"]["completion_tokens"]
        out["deltas"] = deltas
    out["latency_s"] = time.perf_counter() - start
    return out


async def hang_up_plain(own: httpx.AsyncClient, url: str, i: int, max_tokens: int, after: float) -> dict:
    """A plain request given up after `after` seconds; `own` is its own client, closed then (the server sees the
    connection go)."""
    try:
        reply = await asyncio.wait_for(own.post(url, json={"messages": messages(i), "max_tokens": max_tokens,
                                                           "seed": i}), after)
        return {"kind": "plain_hangup", "status": reply.status_code, "answered_before_hangup": True}
    except asyncio.TimeoutError:
        return {"kind": "plain_hangup", "status": None}
    finally:
        await own.aclose()


async def one(kind: str, client: httpx.AsyncClient, url: str, i: int, args) -> dict:
    """One client's request (`client`: the shared one, or for plain_hangup its own)."""
    try:
        work = {"plain": lambda: plain(client, url, i, args.max_tokens),
                "stream": lambda: streaming(client, url, i, args.max_tokens),
                "stream_hangup": lambda: streaming(client, url, i, args.max_tokens, hang_up=True),
                "plain_hangup": lambda: hang_up_plain(client, url, i, args.max_tokens, args.hangup_s)}[kind]
        return await asyncio.wait_for(work(), args.timeout)
    except asyncio.TimeoutError:
        return {"kind": kind, "status": "timeout"}
    except httpx.HTTPError as exc:
        return {"kind": kind, "status": f"error: {type(exc).__name__}: {exc}"}


async def health(client: httpx.AsyncClient, base: str) -> dict:
    return (await client.get(base + "/health")).json()


async def wave(base: str, args) -> dict:
    url = base + "/v1/chat/completions"
    kinds = ["plain_hangup", "plain", "stream", "plain", "stream_hangup", "plain", "stream", "plain"]
    plan = [kinds[i % len(kinds)] for i in range(args.clients)]
    limits = httpx.Limits(max_connections=args.clients + 8, max_keepalive_connections=args.clients + 8)
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as client:
        in_flight: list[int] = []
        stop = asyncio.Event()

        async def poll() -> None:
            while not stop.is_set():
                in_flight.append((await health(client, base))["in_flight"])
                await asyncio.sleep(0.1)

        poller = asyncio.create_task(poll())
        own = {i: httpx.AsyncClient(timeout=args.timeout) for i, kind in enumerate(plan) if kind == "plain_hangup"}
        await asyncio.gather(*(c.get(base + "/health") for c in own.values()))  # connected: they start on time
        start = time.perf_counter()
        tasks = [asyncio.create_task(one(kind, own.get(i, client), url, i, args)) for i, kind in enumerate(plan)]
        # once the clients that hang up are gone, as many new requests as were admitted among them must get in,
        # while the others are still being answered
        gone = await asyncio.gather(*(t for t, kind in zip(tasks, plan) if kind.endswith("hangup")))
        admitted = sum(r["status"] in (None, 200) for r in gone)
        await asyncio.sleep(0.1)
        late_at = time.perf_counter() - start
        still = (await health(client, base))["in_flight"]
        late = await asyncio.gather(*(one("plain", client, url, 500 + i, args) for i in range(admitted)))
        results = await asyncio.gather(*tasks)
        wave_s = time.perf_counter() - start
        # every client is done (answered, refused or gone): the server must hold nothing any more
        freed_at = None
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline:
            if (await health(client, base))["in_flight"] == 0:
                freed_at = time.perf_counter() - start
                break
            await asyncio.sleep(0.05)
        stop.set()
        await poller
        # the places of clients that hung up are free: a full queue's worth is accepted at once
        start = time.perf_counter()
        follow = await asyncio.gather(*(one("plain", client, url, 1000 + i, args) for i in range(args.queue)))
        follow_s = time.perf_counter() - start
    return {"plan": plan, "results": results, "wave_s": wave_s, "in_flight_samples": in_flight,
            "all_freed_s": freed_at, "follow_up": follow, "follow_up_s": follow_s,
            "late": {"admitted_hangups": admitted, "sent_at_s": late_at, "in_flight_when_sent": still,
                     "statuses": [r["status"] for r in late]}}


def summarise(run: dict, args) -> tuple[dict, list[str]]:
    results, failures = run["results"], []
    by_status: dict[str, int] = {}
    for r in results:
        key = f"{r['kind']}:{r['status']}"
        by_status[key] = by_status.get(key, 0) + 1
    for r in results:
        if r["kind"].endswith("hangup"):
            if r["status"] not in (None, 200, 429):
                failures.append(f"a client that hung up got {r['status']}")
        elif r["status"] not in (200, 429):
            failures.append(f"a {r['kind']} client got {r['status']}")
        elif r["kind"] == "stream" and r["status"] == 200 and not r.get("deltas"):
            failures.append("a stream answered 200 without content")
    peak = max(run["in_flight_samples"], default=0)
    if peak > args.queue:
        failures.append(f"in_flight reached {peak}, above the queue limit {args.queue}")
    if run["all_freed_s"] is None:
        failures.append("in_flight did not fall to 0 within 30 s of the wave's end")
    late = run["late"]
    if any(status != 200 for status in late["statuses"]):
        failures.append(f"{late['admitted_hangups']} clients hung up, but of as many new requests sent "
                        f"{late['sent_at_s']:.2f} s into the wave only {late['statuses'].count(200)} got in")
    refused = [r["status"] for r in run["follow_up"] if r["status"] != 200]
    if refused:
        failures.append(f"after the wave, {len(refused)} of {args.queue} requests were not accepted: {refused}")
    ok = [r for r in results if r["status"] == 200 and r["kind"] in ("plain", "stream")]
    latencies = sorted(r["latency_s"] for r in ok)
    first = sorted(r["first_delta_s"] for r in ok if "first_delta_s" in r)
    summary = {
        "answered_200": len(ok),
        "refused_429": sum(r["status"] == 429 for r in results),
        "hung_up": sum(r["kind"].endswith("hangup") for r in results),
        "timed_out": sum(r["status"] == "timeout" for r in results),
        "by_kind_and_status": by_status,
        "wave_s": round(run["wave_s"], 2),
        "latency_s": {"median": round(statistics.median(latencies), 2), "max": round(latencies[-1], 2)}
        if latencies else None,
        "stream_first_delta_s": {"median": round(statistics.median(first), 2), "max": round(first[-1], 2)}
        if first else None,
        "stream_total_s": [round(r["latency_s"], 2) for r in ok if r["kind"] == "stream"],
        "peak_in_flight": peak,
        "all_freed_after_s": None if run["all_freed_s"] is None else round(run["all_freed_s"], 2),
        "after_hangups": {**late, "sent_at_s": round(late["sent_at_s"], 2)},
        "follow_up_accepted": f"{args.queue - len(refused)}/{args.queue} in {run['follow_up_s']:.2f} s",
    }
    return summary, failures


def build_tiny(folder: Path) -> str:
    sys.path.insert(0, str(REPO))
    from tests.fakes import build_tiny_llama

    words = ["the jury heard the witness and voted yes", "i think the city should build the new park",
             "no i do not support the new tax on cars", "we should listen to every juror before we vote",
             "you are a member of a citizens jury answer in one or two sentences what do think"]
    return str(build_tiny_llama(folder, words, max_positions=512, sharpen=8.0))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded", help="model spec to serve (default: embedded)")
    ap.add_argument("--tiny", action="store_true", help="serve a tiny random Llama instead (seconds, not minutes)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--queue", type=int, default=16, help="the server's --max-queue")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--hangup-s", type=float, default=1.0, help="when a plain client that hangs up gives up")
    ap.add_argument("--timeout", type=float, default=180.0, help="per request, seconds")
    ap.add_argument("--max-seconds", type=float, default=900.0, help="the whole wave and follow-up, seconds")
    ap.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    ap.add_argument("--rss-growth-mb", type=float, default=1024.0, help="allowed peak RSS above the warm RSS")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serve_load.json"))
    args = ap.parse_args(argv)

    tmp = tempfile.TemporaryDirectory()
    spec = f"local:{build_tiny(Path(tmp.name) / 'tiny')}" if args.tiny else args.model
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = Path(tmp.name) / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    command = [sys.executable, "-m", "assembly", "serve", "--model", spec, "--host", "127.0.0.1", "--port",
               str(port), "--max-queue", str(args.queue), "--threads", str(args.threads), "--log-level", "warning"]
    result: dict = {"model": "tiny" if args.tiny else spec, "clients": args.clients, "queue": args.queue,
                    "max_tokens": args.max_tokens, "machine": machine()}
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    failures: list[str] = []
    try:
        start = time.perf_counter()
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.perf_counter() - start > 300:
                raise SystemExit(f"server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        warm = httpx.post(base + "/v1/chat/completions", timeout=600,
                          json={"messages": messages(0), "max_tokens": 4})  # loads the weights
        warm.raise_for_status()
        result["startup_and_warmup_s"] = round(time.perf_counter() - start, 2)
        result["rss_warm_mb"] = round(proc_kb(server.pid, "VmRSS") / 1024, 1)
        sampler = RssSampler(server.pid)
        sampler.start()
        run = asyncio.run(asyncio.wait_for(wave(base, args), args.max_seconds))
        sampler.done.set()
        summary, failures = summarise(run, args)
        result.update(summary)
        result["rss_during_wave_max_mb"] = round(max(sampler.samples, default=0) / 1024, 1)
        result["rss_peak_mb"] = round(proc_kb(server.pid, "VmHWM") / 1024, 1)
        if result["rss_peak_mb"] - result["rss_warm_mb"] > args.rss_growth_mb:
            failures.append(f"peak RSS {result['rss_peak_mb']} MB is more than {args.rss_growth_mb} MB above the "
                            f"warm {result['rss_warm_mb']} MB")
        result["results"] = run["results"]
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        result["server_exit"] = server.returncode
        tail = log_path.read_text()[-2000:] if log_path.exists() else ""
        tmp.cleanup()
    result["machine"]["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    result["failures"] = failures
    result["server_log_tail"] = tail  # warnings and errors only (--log-level warning)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "results"}, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
