"""An agent's batches in a pipeline: the next one starts (its Triton request goes out) while the
last one's outputs are sent and its detectors run; batches finish, and are acked, in order.

With one batch at a time Triton waits while the worker sends a batch's outputs and runs its
detectors, and the worker waits while Triton works (``BENCHMARKS.md``: one request in flight
per agent). Here :func:`run_pipelined` calls ``start(events)`` as soon as a batch is taken, so
up to ``depth`` batches are between their start and their acks; each ``finish`` waits for the
one before it to end, so outputs per key, detector state and acks keep the input order. A batch
is acked only when its ``finish`` returned; one whose finish did not end (a stop) is read again
from the last commit.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

__all__ = ["run_pipelined"]


async def run_pipelined(batches: AsyncIterator[list[Any]], *, start: Callable[[list[Any]], Any],
                        finish: Callable[[Any], Awaitable[None]],
                        ack: Callable[[list[Any]], Awaitable[None]], depth: int = 2) -> None:
    """For each batch of ``batches`` (``take_batches(..., ack=False)``): ``started =
    start(events)`` at once, then ``finish(started)`` once the batch before has finished, then
    ``ack(events)``. At most ``depth`` batches are started and not yet finished."""
    pending: deque[tuple[asyncio.Task, Any]] = deque()
    previous: asyncio.Task | None = None
    try:
        async for events in batches:
            while pending and (len(pending) >= depth or pending[0][0].done()):
                await pending.popleft()[0]  # raises what an unexpected failure raised
            started = start(events)
            previous = asyncio.ensure_future(_in_order(previous, started, events, finish, ack))
            pending.append((previous, started))
        while pending:  # no more batches: the last ones finish
            await pending[0][0]
            pending.popleft()
    finally:  # stopped (cancelled) or failed: nothing unfinished is acked
        for task, started in pending:
            task.cancel()
            cancel = getattr(started, "cancel", None)
            if cancel is not None:
                cancel()


async def _in_order(previous: asyncio.Task | None, started: Any, events: list[Any],
                    finish: Callable[[Any], Awaitable[None]],
                    ack: Callable[[list[Any]], Awaitable[None]]) -> None:
    if previous is not None:
        await previous
    await finish(started)
    await ack(events)
