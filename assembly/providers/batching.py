"""The batcher of a LocalModel: an inbox and one batching thread.

`generate` puts the request in an inbox and awaits a future. A dedicated thread takes everything pending (up to
`max_batch`, waiting `batch_wait_ms` after the latest arrival for stragglers), runs ONE batched computation and hands
each result back to its caller's event loop (`call_soon_threadsafe`). The event loop never blocks; jurors fanned out
with LangGraph's `Send` arrive together and share one batch. Requests that arrive while a batch decodes do not wait
for it to end (continuous batching): between two decoding steps, text requests join the decoding batch while it has
room, and scored choices (no decoding) are computed at once; each row's result goes back to its caller as soon as
that row ends. Because the thread is not tied to an event loop, callers on different loops or threads (e.g. sync
nodes wrapping `asyncio.run`) batch together too, and one instance can be shared by every role. A lock serialises
compute (also for `load()` and direct use of `hf_model`). A caller that gives up (its task cancelled: `assembly
serve` does this when a client hangs up) is skipped if still queued, and dropped from the decoding loop at the next
token.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from assembly.errors import MissingExtraError
from assembly.providers.types import GenerateRequest, GenerateResponse, ModelError, Usage

log = logging.getLogger("assembly.providers.local")  # LocalModel's logger, as before the split


@dataclass
class Pending:
    """A request in the inbox: its caller's future and event loop, and what the batcher knows of it."""

    request: GenerateRequest
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.perf_counter)
    cancelled: bool = False  # set on the caller's loop when it gives up; the batcher skips it or drops its row
    deltas: asyncio.Queue | None = None  # `stream`: the decoding loop puts each stable text delta here
    sent: str = ""  # the text put on `deltas` so far (decoding thread only)
    settled: bool = False  # its result or error was handed back (batching thread only)


@dataclass
class Result:
    """What a batch computed for one request; the batcher makes it the caller's GenerateResponse."""

    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str
    choice: str | None = None
    choice_logprobs: dict[str, float] | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    cached_input_tokens: int = 0  # prompt tokens this row did not compute (a shared or stored prefix)


def deliver(pending: Pending, result: Result | None, error: BaseException | None) -> None:
    """Hand a result to the caller's event loop from the batching thread (its loop may be gone: then drop it).
    A request is settled once: a row delivered when it ended is not delivered again with its batch."""
    if pending.settled:
        return
    pending.settled = True

    def settle() -> None:
        if pending.future.done():
            return
        if error is not None:
            pending.future.set_exception(error)
        else:
            pending.future.set_result(result)

    try:
        pending.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the caller's loop is closed
        pass


class BatchingMixin:
    """LocalModel's async front: `generate`, `stream` and `generate_many` through the inbox, and the batching thread
    that runs `_score_batch` (requests with `choices`) or `_generate_batch` (the others) on each batch, under
    `_compute_lock` after `_load_locked`. Needs from the class: those four, `name`, `max_batch`, `batch_wait_s`,
    `continuous_batching` and `stats`."""

    _rows: list[Pending] | None = None  # the batch being decoded, in request order, joined rows appended
    _stop_after_batch = False  # the stop marker was taken from the inbox while a batch decoded

    def _init_batching(self) -> None:
        self._inbox: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        loop = asyncio.get_running_loop()
        pending = Pending(request, loop.create_future(), loop)
        self._submit(pending)
        try:
            result: Result = await pending.future
        except asyncio.CancelledError:
            pending.cancelled = True  # the batcher skips it if it has not started yet, else drops its row
            raise
        return self._response(pending, result)

    async def stream(self, request: GenerateRequest) -> AsyncIterator[str | GenerateResponse]:
        """Text deltas as the batching thread decodes them, then the GenerateResponse. A delta is text no later token
        can change (no half UTF-8 character, nothing that may begin a stop string, no trailing whitespace), so the
        deltas add up to the response's text. Closing the iterator early drops the row from its batch."""
        if request.choices or request.max_tokens <= 0:  # a scored choice is known all at once
            async for item in super().stream(request):
                yield item
            return
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[str | None] = asyncio.Queue()
        pending = Pending(request, loop.create_future(), loop, deltas=deltas)
        # settled via call_soon_threadsafe after every delta was queued the same way, so None comes last
        pending.future.add_done_callback(lambda _: deltas.put_nowait(None))
        self._submit(pending)
        sent = ""
        try:
            while (delta := await deltas.get()) is not None:
                sent += delta
                yield delta
            response = self._response(pending, pending.future.result())  # the model's error, if any, raises here
        finally:
            if not pending.future.done():
                pending.cancelled = True
        if response.text.startswith(sent) and len(response.text) > len(sent):
            yield response.text[len(sent):]
        elif not response.text.startswith(sent):
            log.debug("model %s: streamed text %r is not a prefix of the answer %r", self.name, sent, response.text)
        yield response

    async def generate_many(self, requests: list[GenerateRequest]) -> list[GenerateResponse]:
        """Same path as concurrent `generate` calls: all queued at once, so they share batches."""
        return list(await asyncio.gather(*(self.generate(r) for r in requests)))

    def _submit(self, pending: Pending) -> None:
        with self._thread_lock:
            if self._thread is None or not self._thread.is_alive():
                self._inbox = queue.SimpleQueue()  # each thread its own inbox: a stop marker reaches only its thread
                self._thread = threading.Thread(target=self._serve, args=(self._inbox,), name=f"{self.name} batcher",
                                                daemon=True)
                self._thread.start()
            self._inbox.put(pending)

    def _serve(self, inbox: queue.SimpleQueue) -> None:
        """The one batching thread: take what is pending, wait briefly for stragglers, compute, deliver, repeat."""
        self._serving_inbox = inbox
        self._stop_after_batch = False
        while True:
            first = inbox.get()
            if first is None:
                return
            if first.cancelled:  # its caller gave up while it waited: it takes no place in a batch
                continue
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = inbox.get(timeout=self.batch_wait_s)  # waits again after every arrival
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                if not item.cancelled:
                    batch.append(item)
            batch = [p for p in batch if not p.cancelled]
            choices = [p for p in batch if p.request.choices]
            texts = [p for p in batch if not p.request.choices]
            for group, fn in ((choices, self._score_batch), (texts, self._generate_batch)):
                if group:
                    self._run_group(fn, group)
            if stop or self._stop_after_batch:
                return

    def _admit(self, room: int) -> list[Pending]:
        """Between two decoding steps: what arrived since the batch began. Scored choices are computed now (they
        need no decoding); text requests, up to `room` of them, are returned to join the decoding batch (and added
        to `_rows`, so an error of the batch reaches them too). Called by the decoding loop, under the compute lock."""
        inbox = getattr(self, "_serving_inbox", None)
        if not self.continuous_batching or inbox is None or self._rows is None or room < 1 or inbox.empty():
            return []
        joined, choices = [], []
        while len(joined) < room:
            try:
                item = inbox.get_nowait()
            except queue.Empty:
                break
            if item is None:  # stop once this batch is done
                self._stop_after_batch = True
                break
            if not item.cancelled:
                (choices if item.request.choices else joined).append(item)
        if choices:
            self._run_group(self._score_batch, choices, locked=True)
        self._rows.extend(joined)
        self.stats["requests"] += len(joined)
        self.stats["joined_requests"] += len(joined)
        return joined

    def _run_group(self, fn, group: list[Pending], locked: bool = False) -> None:
        """Compute `fn` on a group and deliver each result (every caller gets the error, if one is raised).
        `locked`: the compute lock is already held (a group scored between two decoding steps)."""
        outer, self._rows = self._rows, group
        try:
            requests = [p.request for p in group]
            results = self._run_unlocked(fn, requests) if locked else self._run_locked(fn, requests)
        except Exception as exc:  # noqa: BLE001 - every caller in the batch gets the error
            pending = [p for p in group if not p.settled]
            if isinstance(exc, ModelError) and exc.status == 400 and len(pending) > 1:
                # one request is at fault (a prompt that cannot fit, a schema that cannot compile): run them one
                # by one, so its batch-mates do not fail with it
                for p in pending:
                    self._run_group(fn, [p], locked)
                return
            error = exc
            if not isinstance(exc, (ModelError, MissingExtraError)):
                error = ModelError(f"model {self.name} failed on a batch of {len(group)}: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
            for p in group:
                deliver(p, None, error)
            return
        finally:
            self._rows = outer
        for p, r in zip(group, results):
            deliver(p, r, None)

    def _run_locked(self, fn, requests: list[GenerateRequest]) -> list[Result]:
        with self._compute_lock:
            self._load_locked()
            return self._run_unlocked(fn, requests)

    def _run_unlocked(self, fn, requests: list[GenerateRequest]) -> list[Result]:
        self.stats["batches"] += 1  # counted first: rows that end early are handed back while `fn` still runs
        self.stats["requests"] += len(requests)
        self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(requests))
        start = time.perf_counter()
        results = fn(requests)
        elapsed = time.perf_counter() - start
        for r in results:  # the decoding loop sets these itself for the rows it delivered as they ended
            r.raw.setdefault("batch_size", len(requests))
            r.raw.setdefault("batch_s", round(elapsed, 4))
        return results

    def _response(self, pending: Pending, result: Result) -> GenerateResponse:
        return GenerateResponse(
            text=result.text,
            model=self.name,
            choice=result.choice,
            choice_logprobs=result.choice_logprobs,
            usage=Usage(input_tokens=result.input_tokens, output_tokens=result.output_tokens,
                        cached_input_tokens=result.cached_input_tokens),
            finish_reason=result.finish_reason,
            duration_s=time.perf_counter() - pending.enqueued,
            raw=result.raw,
        )

    async def _stop_batching(self) -> None:
        """Stop the batching thread once it has finished its batch (a later call starts a new one)."""
        with self._thread_lock:
            thread, self._thread = self._thread, None
            if thread is not None and thread.is_alive():
                self._inbox.put(None)
        if thread is not None:
            await asyncio.to_thread(thread.join)
