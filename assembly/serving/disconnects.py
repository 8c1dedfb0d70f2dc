"""A client that hangs up is dropped: its request's task is cancelled (Starlette alone would let it run), so a
LocalModel skips it if still queued or drops its row at the next token, and its place in the queue is free at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse

from assembly.serving.errors import APIError, api_error


class ClientGone(Exception):
    """The client hung up before its answer was ready."""


T = TypeVar("T")


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects. After the body is read, the ASGI `receive` has nothing else to say."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`await work`, cancelling it as soon as the client hangs up (then ClientGone). Starlette does not cancel a
    handler whose client is gone, so without this a queued or half-decoded request would keep its place in the
    queue and its row in the batch until the answer nobody reads was finished."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this handler was cancelled (shutdown): take the work with it
        task.cancel()
        gone.cancel()
        raise
    if task.done():
        gone.cancel()
        return task.result()
    task.cancel()  # a LocalModel marks the request cancelled: its row is skipped or dropped at the next step
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: nobody is waiting for it
    raise ClientGone()


class ClosingStream(StreamingResponse):
    """A StreamingResponse that runs `on_close` (release the queue slot, close the model's stream) however it ends:
    finished, cut short by a disconnect (Starlette cancels the body), or never started."""

    def __init__(self, content: AsyncIterator[bytes], on_close: list[Callable[[], Any]], **kwargs: Any):
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
            for close in self._on_close:
                result = close()
                if asyncio.iscoroutine(result):
                    await result


async def answer(request: Request, work: Awaitable[T]) -> T:
    """The model's answer, unless the client hangs up first; a model failure as an OpenAI-shaped error."""
    try:
        return await unless_disconnected(request, work)
    except (ClientGone, APIError):
        raise
    except Exception as exc:  # noqa: BLE001 - every model failure becomes an OpenAI-shaped error
        raise api_error(exc) from None

