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

__all__ = ["AdaptiveBatchSize", "AdaptiveLimiter", "CircuitBreaker", "backoff_s", "cancelling"]


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
        self.ceiling = maximum  # as configured; ``maximum`` may be lowered by :meth:`limit`
        self.target_s = target_s

    def limit(self, most: int) -> None:
        """At most ``most`` items per request (the server's own limit), never above the
        configured maximum.

        >>> size = AdaptiveBatchSize(initial=64, maximum=256)
        >>> size.limit(128); size.value, size.maximum
        (64, 128)
        >>> size.value = 128; size.limit(32); size.value, size.maximum
        (32, 32)
        """
        self.maximum = max(self.minimum, min(self.ceiling, most))
        self.value = min(self.value, self.maximum)

    def observe(self, *, latency_s: float, items: int) -> None:
        if latency_s > self.target_s:
            self.value = max(self.minimum, self.value // 2)
        elif items >= self.value and latency_s < self.target_s / 2:
            self.value = min(self.maximum, self.value * 2)
