"""Every model call goes to the store: a wrapper around any Model, bound to one run.

A resumed run (assembly.resuming) passes the run's recorded calls as `reuse`: a request that was already answered
before the interruption gets its recorded answer back (matched like a replay: request hash plus occurrence, see
assembly.providers.replay_backend) and is not recorded twice; only requests the recording never answered reach the
model.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from assembly.providers.base import Model
from assembly.providers.replay_backend import ReplayBook, ReplayMissError, ReplayModel
from assembly.providers.types import GenerateRequest, GenerateResponse, ModelError
from assembly.result import Usage


class RecordingModel(Model):
    """Records each call (messages, parameters, response, tokens, duration, error) and returns the call id in
    `response.raw["call_id"]` so turns and ballots can point at the call that produced them."""

    def __init__(self, inner: Model, store, run_id: str, reuse: ReplayBook | None = None):
        self.inner = inner
        self.store = store
        self.run_id = run_id
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
        params = request.payload()
        params.pop("messages")
        return self.store.add_llm_call(
            self.run_id,
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
        )

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
