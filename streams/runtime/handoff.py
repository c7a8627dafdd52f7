"""Faust's hand-off of each fetched record to the streams, without four tasks per record
(applied by :func:`streams.runtime.faust_patches.apply`, item 10).

Faust's consumer loop (``Consumer._drain_messages``) hands every record on with
``await self.wait_first(callback(record), self.suspend_flow.wait())``: the callback (the
conductor's, which decodes the record and puts it on its streams' queues) races a rebalance
suspending the flow. ``wait_first`` makes a task of each of the two and of the service's
``stopped`` and ``crashed`` waits, then cancels the three losers: four tasks, an
``asyncio.wait`` and their cancellations per record, while the callback almost never waits for
anything (a full stream queue pauses the partition instead of blocking; it blocks only while
flow control is off, in a rebalance, or while the producer's buffer is over its limit).

Here the callback runs inline up to its first suspension. When it finishes without one (the
usual case) that is the result, with no task made. When it suspends, the rest of it, the very
coroutine already started (:class:`Started`), races the flow's suspension through Faust's own
``wait_first`` exactly as before. In one worker on the click path this took the per-record
hand-off from about 9% of the event loop's samples to none (``make bench``, clicks section).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

from faust.transport import consumer as faust_consumer
from mode.services import WaitResults

__all__ = ["PATCHED", "Started", "apply", "make_wait_first"]

# What :func:`apply` replaces, for faust_patches' check that it is still there.
PATCHED = ((faust_consumer.Consumer, "wait_first"), (faust_consumer.Consumer, "_drain_messages"))


def apply() -> None:
    """Patch Faust's consumer (once, from :func:`streams.runtime.faust_patches.apply`)."""
    faust_consumer.Consumer.wait_first = make_wait_first(faust_consumer.Consumer.wait_first)


class Started:
    """The rest of a coroutine that ran up to its first suspension, ``pending`` being what it
    yielded there (the future it waits for): awaiting this continues it exactly where it
    stopped, as ``yield from`` would, passing results, exceptions and cancellation through."""

    __slots__ = ("coro", "pending")

    def __init__(self, coro: Coroutine, pending: Any) -> None:
        self.coro, self.pending = coro, pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self.coro, self.pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation included: the coroutine sees it
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                pending = coro.send(sent)
            except StopIteration as stop:
                return stop.value


def make_wait_first(faust_wait_first):
    async def wait_first(self, *coros, timeout=None):
        callback = getattr(self, "callback", None)
        if (timeout is None and len(coros) == 2 and asyncio.iscoroutine(coros[0])
                and coros[0].cr_code is getattr(callback, "__code__", None)
                and not self._stopped.is_set() and not self._crashed.is_set()):
            handing_on, suspended = coros  # the drain loop's: the record's callback, the flow's wait
            try:
                pending = handing_on.send(None)
            except StopIteration as done:  # handed on without waiting for anything
                suspended.close()
                return WaitResults([handing_on], [done.value], False)
            except BaseException:
                suspended.close()
                raise
            return await faust_wait_first(self, Started(handing_on, pending), suspended)
        return await faust_wait_first(self, *coros, timeout=timeout)
    return wait_first
