"""One recorder per run: every turn, ballot, tally, verdict and model call of a run reaches the store through it.

Events (assembly.events) are buffered in the order they happen and written by `flush()`: one transaction per flush,
in a worker thread, so a write waiting on a store another process holds waits off the event loop (a store call on
the loop itself — the run's start and finish — still waits behind it). The modes flush at the end of every phase —
the full graph after every node, before LangGraph checkpoints the step, so a checkpointed step's records are always
on disk — and `aclose()` writes what is left however the run ends (assembly.run_lifecycle). A kill -9 loses only the unflushed events of the phase in progress, which a resume
(assembly.resuming) re-runs from its checkpoint.

`RecordingModel` wraps any Model for one run: each call becomes a `ModelCall` event whose id (made here, before the
write) turns and ballots point at. A resumed run passes the run's recorded calls as `reuse`: a request that was
already answered before the interruption gets its recorded answer back (matched like a replay: request hash plus
occurrence, see assembly.providers.replay_backend) and is not recorded twice; only requests the recording never
answered reach the model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from langgraph.config import get_stream_writer

from assembly.events import BallotCast, Event, ModelCall, Tallied, Turn, VerdictReached
from assembly.providers.base import Model
from assembly.providers.replay_backend import ReplayBook, ReplayMissError, ReplayModel
from assembly.providers.types import GenerateRequest, GenerateResponse, ModelError
from assembly.result import Usage

log = logging.getLogger(__name__)


def to_graph_stream(event: Event) -> None:
    """A recorder's `publish` for graph runs: the event goes out on the custom stream of the graph step that emits
    it (`stream_mode="custom"`), where the live view and any parent graph read it."""
    get_stream_writer()(event)


class Recorder(Protocol):
    def record(self, event: Event) -> None: ...


class RunRecorder:
    """Buffers one run's events and writes them to `store` at each flush; passes every event (recorded or live
    only) to `publish`, the live view's subscription."""

    def __init__(self, store, run_id: str, *, publish: Callable[[Event], None] | None = None):
        self.store = store
        self.run_id = run_id
        self.publish = publish
        self.written = 0  # events written so far
        self._pending: list[Event] = []
        self._lock = asyncio.Lock()

    def record(self, event: Event) -> None:
        if event.recorded:
            self._pending.append(event)
        if self.publish is not None:
            self.publish(event)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Write everything recorded so far, in a worker thread. Flushes that overlap share one write: whoever
        takes the lock next writes all that is pending. A cancelled flush still waits for its write to end before
        it lets go of the lock (the write cannot be stopped midway), so a batch is never half taken."""
        async with self._lock:
            if not self._pending:
                return
            write = asyncio.ensure_future(asyncio.to_thread(self.write_pending))
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                while not write.done():
                    try:
                        await asyncio.wait({write})
                    except asyncio.CancelledError:
                        pass
                write.exception()  # a failed write put its batch back; aclose() retries it
                raise

    async def aclose(self) -> list[str]:
        """The last flush of a run, however it ends: the buffered events in one transaction or, when that fails,
        one at a time, so one bad record cannot take the others with it. Returns what could not be written (each
        also logged), for the run's status to say so; it never raises over the run's own exception."""
        try:
            await self.flush()
            return []
        except asyncio.CancelledError:  # the run is being torn down: write on this thread rather than lose it
            self.write_each()
            raise
        except Exception:
            return self.write_each()

    def write_each(self) -> list[str]:
        """Write the buffered events one transaction each; return the errors of those that failed."""
        batch, self._pending = self._pending, []
        errors = []
        for event in batch:
            try:
                with self.store.transaction():
                    self._write(event)
                self.written += 1
            except Exception as exc:
                errors.append(f"{event.kind}: {exc}")
                log.error("run %s: a %s record could not be written: %s", self.run_id, event.kind, exc)
        return errors

    def write_pending(self) -> None:
        """Write the buffered events in one transaction (on the calling thread). On a failed write nothing was
        committed and the events stay buffered for the next attempt."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            with self.store.transaction():
                for event in batch:
                    self._write(event)
        except BaseException:
            self._pending[:0] = batch
            raise
        self.written += len(batch)

    def _write(self, event: Event) -> None:
        store, run_id = self.store, self.run_id
        if isinstance(event, ModelCall):
            store.add_llm_call(run_id, call_id=event.call_id, **event.fields)
        elif isinstance(event, Turn):
            store.add_turn(run_id, seq=event.seq, phase=event.phase, round=event.round, speaker_id=event.speaker_id,
                           content=event.content, call_id=event.call_id)
        elif isinstance(event, BallotCast):
            b = event.ballot
            store.add_ballot(run_id, participant_id=b.participant_id, phase=b.phase, ballot_type=b.type,
                             status=b.status, choice=b.choice, ranking=b.ranking, approvals=b.approvals,
                             probabilities=b.probabilities, rationale=b.rationale, reason=b.reason,
                             attempts=b.attempts, method=b.method, detail=b.detail)
        elif isinstance(event, Tallied):
            for t in event.tallies:
                store.add_tally(run_id, phase=event.phase, rule=t["rule"], winner=t["winner"], winners=t["winners"],
                                scores=t["scores"], rounds=t.get("rounds"), tie_break=t.get("tie_break"),
                                valid=t["valid"], abstained=t["abstained"], explain=t["explain"],
                                expected=t.get("expected"), win_probability=t.get("win_probability"),
                                stability=t.get("stability"), redraws=t.get("redraws"))
        elif isinstance(event, VerdictReached):
            store.add_verdict(run_id, text=event.text, minority_report=event.minority_report, winner=event.winner,
                              rule=event.rule)
        else:
            raise TypeError(f"no store write for event {type(event).__name__}")


class RecordingModel(Model):
    """Records each call (messages, parameters, response, tokens, duration, error) and returns the call id in
    `response.raw["call_id"]` so turns and ballots can point at the call that produced them."""

    def __init__(self, inner: Model, recorder: Recorder, reuse: ReplayBook | None = None):
        self.inner = inner
        self.recorder = recorder
        self.name = inner.name
        # Named like the inner model, so its request hashes are the recorder's own (see _record).
        self.recorded = ReplayModel(reuse, name=inner.name) if reuse is not None else None
        self.calls = 0
        self.input_tokens = 0  # every prompt token sent, cached ones included
        self.cached_input_tokens = 0
        self.cache_write_tokens = 0
        self.output_tokens = 0
        self.model_seconds = 0.0
        self.cost_usd: float | None = None

    @property
    def scores_options(self) -> bool:  # type: ignore[override]
        """The inner model's, read live: a backend turns it off when it finds it cannot score after all."""
        return self.inner.scores_options

    def _record(self, request: GenerateRequest, response: GenerateResponse | None, error: str | None,
                duration: float) -> str:
        from transcripts.store import new_id

        params = request.payload()
        params.pop("messages")
        call_id = new_id()
        self.recorder.record(ModelCall(call_id=call_id, fields=dict(
            model=response.model if response else self.name,
            role=request.tags.get("role"),
            participant_id=request.tags.get("participant"),
            phase=request.tags.get("phase"),
            request_hash=request.hash(self.name),
            messages=[m.model_dump() for m in request.messages],
            params=params,
            response=response.text if response else None,
            choice=response.choice if response else None,
            choice_logprobs=response.choice_logprobs if response else None,
            input_tokens=response.usage.input_tokens if response else 0,
            output_tokens=response.usage.output_tokens if response else 0,
            cached_input_tokens=response.usage.cached_input_tokens if response else 0,
            cache_write_tokens=response.usage.cache_write_tokens if response else 0,
            duration_s=response.duration_s or duration if response else duration,
            attempts=response.attempts if response else 1,
            error=error,
            seed=request.seed,
            cost_usd=response.cost_usd if response else None,
        )))
        return call_id

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        started = time.perf_counter()
        response = await self._recorded_answer(request)
        if response is not None:
            call_id = response.raw.get("recorded_call_id")
        else:
            try:
                response = await self.inner.generate(request)
            except ModelError as exc:
                self._record(request, None, str(exc), time.perf_counter() - started)
                raise
            call_id = self._record(request, response, None, time.perf_counter() - started)
        elapsed = time.perf_counter() - started
        self.calls += 1
        self.input_tokens += response.usage.input_tokens
        self.cached_input_tokens += response.usage.cached_input_tokens
        self.cache_write_tokens += response.usage.cache_write_tokens
        self.output_tokens += response.usage.output_tokens
        self.model_seconds += response.duration_s or elapsed
        if response.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + response.cost_usd
        response.raw = {**response.raw, "call_id": call_id}
        return response

    async def _recorded_answer(self, request: GenerateRequest) -> GenerateResponse | None:
        """The answer recorded for this request before a resume, or None when there is none to reuse."""
        if self.recorded is None:
            return None
        try:
            return await self.recorded.generate(request)
        except ReplayMissError:
            return None

    async def aclose(self) -> None:
        """The inner model belongs to the pool that loaded it; nothing to release here."""


def usage_of(recorders: Iterable[RecordingModel], wall: float) -> Usage:
    """A run's usage summed over its recorders (one per distinct model, however many roles share it)."""
    distinct = list({id(r): r for r in recorders}.values())
    costs = [r.cost_usd for r in distinct if r.cost_usd is not None]
    output = sum(r.output_tokens for r in distinct)
    return Usage(
        calls=sum(r.calls for r in distinct),
        input_tokens=sum(r.input_tokens for r in distinct),
        cached_input_tokens=sum(r.cached_input_tokens for r in distinct),
        cache_write_tokens=sum(r.cache_write_tokens for r in distinct),
        output_tokens=output,
        model_seconds=round(sum(r.model_seconds for r in distinct), 3),
        wall_seconds=round(wall, 3),
        tokens_per_second=round(output / wall, 2) if wall > 0 else 0.0,
        cost_usd=sum(costs) if costs else None,
    )
