"""Flow control for calls to a server that may be slow or down: no I/O, only asyncio.

* :class:`AdaptiveLimiter` bounds the requests in flight and adapts the bound to observed
  latency (additive increase while latency stays near the best seen, multiplicative decrease
  when it climbs): throughput near the server's capacity without an unbounded queue.
* :class:`CircuitBreaker` stops hammering a server that keeps failing: after
  ``failure_threshold`` consecutive failures callers wait ``cooldown`` (doubling up to
  ``max_cooldown_s``) before one probe is let through.
* :class:`AdaptiveBatchSize` picks how many texts go in one request: it doubles while full
  requests come back well under the latency target (bigger batches use the server better)
  and halves when a request exceeds it (latency stays bounded).
* :func:`backoff_s` is exponential backoff with full jitter.

>>> import asyncio
>>> limiter = AdaptiveLimiter(initial=2, maximum=8)
>>> async def demo():
...     async with limiter.slot():
...         limiter.observe(0.010)
...     return limiter.limit, limiter.in_flight
>>> asyncio.run(demo())
(2, 0)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator

__all__ = ["AdaptiveBatchSize", "AdaptiveLimiter", "CircuitBreaker", "CommitGate", "StallDetector",
           "backoff_s", "cancelling"]


def cancelling() -> bool:
    """Whether the running task itself was asked to stop.

    A ``CancelledError`` can also come out of a library (grpc cancels the calls on a channel
    that closed under them); that one is a failure to handle, not a request to stop.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def backoff_s(attempt: int, *, base_s: float = 0.1, cap_s: float = 10.0,
              rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)].

    >>> 0 <= backoff_s(3, rng=random.Random(1)) <= 0.8
    True
    """
    return (rng or random).uniform(0, min(cap_s, base_s * 2 ** attempt))


class AdaptiveLimiter:
    def __init__(self, *, initial: int = 2, minimum: int = 1, maximum: int = 8,
                 tolerance: float = 2.0, decrease: float = 0.7) -> None:
        self.limit = initial
        self.minimum = minimum
        self.maximum = maximum
        self.tolerance = tolerance
        self.decrease = decrease
        self.in_flight = 0
        self._best: float | None = None
        self._successes = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
        try:
            yield
        finally:
            async with self._changed:
                self.in_flight -= 1
                self._changed.notify_all()

    def observe(self, latency_s: float) -> None:
        """Adapt the limit to one successful call's latency."""
        # The best latency decays slowly upwards, so one lucky call does not pin it forever.
        self._best = latency_s if self._best is None else min(latency_s, self._best * 1.01)
        if latency_s > self.tolerance * self._best:
            self.limit = max(self.minimum, int(self.limit * self.decrease))
            self._successes = 0
            return
        self._successes += 1
        if self._successes >= self.limit and self.limit < self.maximum:
            self.limit += 1
            self._successes = 0


class CircuitBreaker:
    def __init__(self, *, failure_threshold: int = 5, cooldown_s: float = 1.0,
                 max_cooldown_s: float = 30.0, clock=time.monotonic) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0
        self._cooldown = cooldown_s

    @property
    def state(self) -> str:
        if self._failures < self.failure_threshold:
            return "closed"
        return "open" if self._clock() < self._open_until else "half_open"

    async def wait_until_callable(self) -> None:
        while (delay := self._open_until - self._clock()) > 0 and self._failures >= self.failure_threshold:
            await asyncio.sleep(delay)

    def success(self) -> None:
        self._failures = 0
        self._cooldown = self.cooldown_s

    def failure(self) -> None:
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._open_until = self._clock() + self._cooldown
            self._cooldown = min(self.max_cooldown_s, self._cooldown * 2)


class AdaptiveBatchSize:
    """Texts per request, between ``minimum`` and ``maximum``, steered by a latency target.

    >>> size = AdaptiveBatchSize(initial=16, maximum=64, target_s=0.5)
    >>> size.observe(latency_s=0.1, items=16); size.value
    32
    >>> size.observe(latency_s=0.9, items=32); size.value
    16
    """

    def __init__(self, *, initial: int = 16, minimum: int = 1, maximum: int = 64,
                 target_s: float = 0.5) -> None:
        self.value = max(minimum, min(initial, maximum))
        self.minimum = minimum
        self.maximum = maximum
        self.target_s = target_s

    def observe(self, *, latency_s: float, items: int) -> None:
        if latency_s > self.target_s:
            self.value = max(self.minimum, self.value // 2)
        elif items >= self.value and latency_s < self.target_s / 2:
            self.value = min(self.maximum, self.value * 2)


class StallDetector:
    """Finds partitions that have records to process but make no progress. Two kinds seen with
    faust-streaming on our stack:

    * records read but never processed: records in flight when a rebalance or table recovery
      suspended the flow are dropped while the read offset stays advanced, so they are neither
      processed nor committed until the worker restarts (a worker restarted while its input grew
      stopped at offset 292 of 480 of one partition): read offset > committed offset;
    * records never read: a partition assigned after a restart on a broker holding older state
      was never fetched (read offset == committed offset, the log end beyond both);
    * a hole: records dropped unprocessed while later ones are processed. Faust commits a
      partition only up to the first hole in what was acknowledged, so its committed offset
      stands still while the read offset moves on (``commit_checks`` checks in a row).

    A partition is stalled when, at ``checks`` consecutive checks with no batch in progress, it
    is behind in either way and neither its read nor its committed offset has moved. The log
    end may move meanwhile (producers go on writing). ``min_gap``: how far the log end must be
    beyond the read position; 2 under exactly-once, where a transaction marker follows the last
    record of each transaction and is never delivered. The cure is a seek back to the committed
    offsets, or a restart of the worker (at once under exactly-once, see ``streams.app``).

    Offsets as Faust keeps them: ``read`` and ``committed`` are offsets of the last record read
    and processed (None before the first), ``end`` the offset the next record will get.

    After a check, ``stuck`` lists the stalled partitions that were reported before at the same
    offsets: the seek did not help (seen under exactly-once, a partition never fetched after a
    rebalance), and the worker restarts itself to get a fresh Kafka client.

    >>> d = StallDetector(checks=2)
    >>> d.check({"p3": (479, 291, 480)}, busy=False), d.check({"p3": (479, 291, 495)}, busy=False)
    ([], ['p3'])
    >>> d.check({"p3": (479, 291, 480)}, busy=True), d.check({"p3": (479, 300, 480)}, busy=False)
    ([], [])
    >>> d.check({"p1": (None, None, 40)}, busy=False), d.check({"p1": (None, None, 41)}, busy=False)
    ([], ['p1'])
    >>> d.stuck, d.check({"p1": (None, None, 41)}, busy=False), d.check({"p1": (None, None, 42)}, busy=False)
    ([], [], ['p1'])
    >>> d.stuck  # reported again at the same offsets: the seek in between did not help
    ['p1']
    >>> d.check({"p2": (99, 99, 100)}, busy=False), d.check({"p2": (99, 99, 100)}, busy=False)
    ([], [])
    >>> [d.check({"p4": (read, 200, read + 10)}, busy=read == 350) for read in (300, 350, 400, 450, 500)]
    [[], [], [], ['p4'], []]
    """

    def __init__(self, *, checks: int = 2, min_gap: int = 1, commit_checks: int = 3) -> None:
        self.checks = checks
        self.min_gap = min_gap
        self.commit_checks = commit_checks
        self._commits: dict[object, tuple[int | None, int | None, int]] = {}  # committed, read, count
        self._seen: dict[object, tuple[tuple[int | None, int | None], int]] = {}
        self._reported: dict[object, tuple[int | None, int | None]] = {}
        self.stuck: list = []

    def _behind(self, read: int | None, committed: int | None, end: int | None) -> bool:
        if read is not None and (committed is None or read > committed):
            return True
        position = (read if read is not None else -1) + 1
        return end is not None and end - position >= self.min_gap

    def check(self, offsets: dict, *, busy: bool) -> list:
        """``offsets``: partition -> (read offset, committed offset, log end offset or None).
        Returns the stalled ones."""
        stalled = []
        self.stuck = []
        for tp, (read, committed, end) in offsets.items():
            if not busy and self._hole(tp, read, committed):
                stalled.append(tp)
                continue
            if busy or not self._behind(read, committed, end):
                self._seen.pop(tp, None)
                if not busy:
                    self._reported.pop(tp, None)
                continue
            state = (read, committed)
            if self._reported.get(tp, state) != state:
                del self._reported[tp]  # it moved since it was reported
            previous, count = self._seen.get(tp, (None, 0))
            count = count + 1 if previous == state else 1
            self._seen[tp] = (state, count)
            if count >= self.checks:
                stalled.append(tp)
                self._seen.pop(tp, None)
                if self._reported.get(tp) == state:
                    self.stuck.append(tp)
                self._reported[tp] = state
        for tp in set(self._seen) - set(offsets):
            del self._seen[tp]
        for tp in set(self._reported) - set(offsets):
            del self._reported[tp]
        for tp in set(self._commits) - set(offsets):
            del self._commits[tp]
        return stalled

    def _hole(self, tp, read: int | None, committed: int | None) -> bool:
        """The committed offset stood still for ``commit_checks`` checks while reads went on.
        Checks during a batch neither count nor reset: a batch waiting on Triton holds commits
        back while the consumer reads ahead, and that is not a hole."""
        if read is None or (committed is not None and read <= committed):
            self._commits.pop(tp, None)
            return False
        last_committed, last_read, count = self._commits.get(tp, (None, None, 0))
        if last_committed != committed or last_read is None:
            count = 1
        elif read != last_read:
            count += 1
        self._commits[tp] = (committed, read, count)
        if count >= self.commit_checks:
            del self._commits[tp]
            return True
        return False


class CommitGate:
    """Commits happen between batches, never in the middle of one (exactly-once).

    Under exactly-once a commit ends the Kafka transaction with the offsets of the records
    acknowledged so far *and every output sent so far*. Faust commits on a timer and while a
    rebalance waits for in-flight work, so a commit in the middle of a batch put the outputs of
    its first records in a committed transaction while their offsets were not: a worker killed
    before the next commit left them to be processed again by the next owner, and read
    committed, they were duplicates (see ``streams/agents/outputs.py`` for the other half of
    the fix and the chaos suite's numbers).

    Batches hold the gate shared (:meth:`batch`); a commit (:meth:`commit`) waits until none
    is in flight, and batches that start meanwhile wait for the commit. Faust acknowledges a
    batch's records right after the batch body returns, with no await in between, so no commit
    can fall between the body and the acks. ``active`` is how many batches are in flight.

    >>> gate, log = CommitGate(), []
    >>> async def work(name, seconds):
    ...     async with gate.batch():
    ...         log.append(f"{name} starts")
    ...         await asyncio.sleep(seconds)
    ...         log.append(f"{name} ends")
    >>> async def commit():
    ...     await asyncio.sleep(0.01)
    ...     async with gate.commit():
    ...         log.append("commit")
    >>> async def scenario():
    ...     await asyncio.gather(work("a", 0.05), commit(), work("b", 0.0), _later(work("c", 0), 0.02))
    >>> async def _later(coro, seconds):
    ...     await asyncio.sleep(seconds)
    ...     await coro
    >>> asyncio.run(scenario())
    >>> log
    ['a starts', 'b starts', 'b ends', 'a ends', 'commit', 'c starts', 'c ends']
    """

    def __init__(self) -> None:
        self.active = 0
        self._idle: asyncio.Event | None = None
        self._open: asyncio.Event | None = None
        self._committing = 0

    def _events(self) -> tuple[asyncio.Event, asyncio.Event]:
        # Created on first use, inside the running loop.
        if self._idle is None or self._open is None:
            self._idle, self._open = asyncio.Event(), asyncio.Event()
            self._idle.set()
            self._open.set()
        return self._idle, self._open

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        idle, open_ = self._events()
        while self._committing:
            await open_.wait()
        self.active += 1
        idle.clear()
        try:
            yield
        finally:
            self.active -= 1
            if self.active == 0:
                idle.set()

    @contextlib.asynccontextmanager
    async def commit(self) -> AsyncIterator[None]:
        idle, open_ = self._events()
        self._committing += 1
        open_.clear()
        try:
            await idle.wait()
            yield
        finally:
            self._committing -= 1
            if not self._committing:
                open_.set()
