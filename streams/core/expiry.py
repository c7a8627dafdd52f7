"""Idle keys of a table: found by a sweep that visits a bounded number of keys per batch.

A user seen once keeps its state in the ``click-users`` table for good: memory grows with every
user ever seen (about 0.8 MiB per 1,000 in ``make soak``). A key whose last event is older than
a time to live (event time, against the newest event time of its own partition, so a replay
expires the same keys) is deleted, which also writes a tombstone to the table's changelog: a
restarted or rebalanced worker does not bring it back.

The sweep walks a snapshot of the table's keys a few at a time (:class:`Sweep`), so no batch
pays for a whole pass. A key can only be deleted in the changelog partition it lives in, which
is its input partition: the value names it, and a key is deleted only while a batch of that
partition is being processed (its changelog write then goes with that batch, in its
transaction under exactly-once). Keys of other partitions wait for a later pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Sweep", "idle_keys", "is_idle"]


def is_idle(last_ts: float | None, newest_ts: float | None, ttl_s: float) -> bool:
    """Whether a key last seen at ``last_ts`` is idle when its partition is at ``newest_ts``.

    >>> is_idle(1_000.0, 1_000.0 + 86_400, ttl_s=3_600)
    True
    >>> is_idle(1_000.0, 2_000.0, ttl_s=3_600), is_idle(None, 2e9, ttl_s=3_600), is_idle(5.0, 9e9, ttl_s=0)
    (False, False, False)
    """
    if ttl_s <= 0 or last_ts is None or newest_ts is None:
        return False
    return newest_ts - last_ts > ttl_s


@dataclass
class Sweep:
    """Visits every key of a table, at most ``per_batch`` at a time; a new pass starts from a
    fresh snapshot of the keys once the last one is done.

    ``period_s`` paces it: a pass over the snapshot's keys is spread over at least that many
    seconds (``clock``), so a busy stream does not pay a lookup per key per batch (200 keys per
    64-click batch were 18% of the click path's CPU in a py-spy profile on 2026-12-01; idle keys
    now leave at most ``period_s`` past their time to live). 0: ``per_batch`` keys every call.

    >>> table = {"a": 1, "b": 2, "c": 3}
    >>> sweep = Sweep(per_batch=2)
    >>> sweep.next(table.keys), sweep.next(table.keys), sweep.next(table.keys)
    (['a', 'b'], ['c'], ['a', 'b'])
    >>> now = [0.0]
    >>> paced = Sweep(per_batch=2, period_s=30, clock=lambda: now[0])
    >>> def at(t):
    ...     now[0] = t
    ...     return paced.next(table.keys)
    >>> at(0), at(10), at(20), at(30), at(40), at(50), at(55)
    ([], ['a'], ['b'], ['c'], [], ['a'], ['b'])
    """

    per_batch: int = 200
    period_s: float = 0.0
    clock: Callable[[], float] = time.monotonic
    _keys: Iterator | None = field(default=None, repr=False)
    _size: int = field(default=0, repr=False)
    _visited: int = field(default=0, repr=False)
    _started: float | None = field(default=None, repr=False)

    def next(self, keys: Callable[[], Iterable]) -> list:
        now = self.clock()
        if self._keys is None:
            if self._started is not None and now - self._started < self.period_s:
                return []  # the last pass was quicker than the period: wait for it
            snapshot = list(keys())
            self._keys, self._size, self._visited, self._started = iter(snapshot), len(snapshot), 0, now
        budget = self.per_batch
        if self.period_s > 0:
            due = math.ceil(self._size * min(1.0, (now - self._started) / self.period_s))
            budget = min(budget, due - self._visited)
        out = []
        for key in self._keys if budget > 0 else ():
            out.append(key)
            if len(out) >= budget:
                break
        self._visited += len(out)
        if len(out) < budget or self._visited >= self._size:
            self._keys = None  # this pass is done: the next call starts another
        return out


def idle_keys(keys: Iterable, where: Callable[[Any], tuple[Any, Any] | None], batch: Mapping[int, Any],
              newest: Mapping[int, float], ttl_s: float) -> list[tuple[Any, Any]]:
    """Which of ``keys`` to delete now, each with the batch event to delete it under.

    ``where(key)``: the key's partition and last event time as stored (``None``, or values of
    the wrong type: not a key this can judge, kept). ``batch``: partition -> an event of the
    batch being processed; a key of a partition the batch does not hold waits for another
    batch. ``newest``: each partition's newest event time.

    >>> stored = {"a": (0, 10.0), "b": (1, 10.0), "c": (0, 95.0), "d": None}
    >>> idle_keys(stored, stored.get, {0: "event-of-p0"}, {0: 100.0, 1: 100.0}, ttl_s=60)
    [('a', 'event-of-p0')]
    """
    out = []
    for key in keys:
        found = where(key)
        if not found:
            continue
        partition, last_ts = found
        event = batch.get(partition) if isinstance(partition, int) else None
        if event is not None and isinstance(last_ts, int | float) and is_idle(
                last_ts, newest.get(partition), ttl_s):
            out.append((key, event))
    return out
