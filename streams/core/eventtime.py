"""Event time with a sanity window: the only event times the detectors and models ever see.

A producer's ``ts`` can be anything from year 1 to 9999. Detectors keyed by time (mention
buckets, popularity decay, alert cooldowns) would follow it: one record stamped 9999 once hung
the event loop closing billions of minute buckets and then made every real mention of its
entity "late". So each input's event time is compared with its Kafka record time: outside
``[record time - behind_s, record time + ahead_s]`` it is replaced by the record time, and the
output says so (``time_flags``). A Kafka record time can be set by the producer too
(``CreateTime``); one more than ``ahead_s`` past the worker's clock, or more than
``max_lag_s`` behind it, is not trusted either, and the worker's clock is used instead.

>>> from datetime import UTC, datetime
>>> window = EventTimeWindow(behind_s=7 * 86400, ahead_s=3600)
>>> now = datetime(2026, 11, 29, 12, tzinfo=UTC)
>>> broker_ms = int(now.timestamp() * 1000)
>>> resolved = window.resolve(datetime(9999, 1, 1, tzinfo=UTC), broker_ms=broker_ms, now=now)
>>> resolved.ts.isoformat(), resolved.flags
('2026-11-29T12:00:00+00:00', ('event_time_ahead',))
>>> window.resolve(datetime(2026, 11, 29, 11, tzinfo=UTC), broker_ms=broker_ms, now=now).flags
()
>>> window.resolve(None, broker_ms=None, now=now).ts == now
True
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["TIME_FLAGS", "EventTime", "EventTimeWindow", "record_time_ms"]

_LATEST_MS = 253402300799000  # the end of year 9999, in epoch milliseconds
# Every flag ``EventTimeWindow.resolve`` can return, for docs and metrics.
TIME_FLAGS = ("event_time_ahead", "event_time_behind", "record_time_untrusted")


@dataclass(frozen=True, slots=True)
class EventTime:
    ts: datetime  # aware, UTC, inside the window
    flags: tuple[str, ...]  # empty when the input's own time was used as it was


@dataclass(frozen=True, slots=True)
class EventTimeWindow:
    behind_s: float = 7 * 86400.0
    ahead_s: float = 3600.0
    # How far behind the worker's clock a Kafka record time may be and still be trusted: a
    # backlog this old is still processed in its own time.
    max_lag_s: float = 365 * 86400.0

    def resolve(self, ts: datetime | None, *, broker_ms: int | float | None, now: datetime) -> EventTime:
        """The event time to use for an input stamped ``ts`` (None: no ``ts`` field) whose Kafka
        record time is ``broker_ms`` (epoch milliseconds; None or negative: unknown)."""
        _, flags = self.resolve_s(None if ts is None else ts.timestamp(), broker_ms=broker_ms,
                                  now_s=now.timestamp())
        if ts is not None and flags[-1:] not in (("event_time_ahead",), ("event_time_behind",)):
            return EventTime(ts, flags)  # its own time, as it came
        record = self._record_time(broker_ms)
        return EventTime(now if record is None or "record_time_untrusted" in flags else record, flags)

    def resolve_s(self, ts: float | None, *, broker_ms: int | float | None, now_s: float
                  ) -> tuple[float, tuple[str, ...]]:
        """:meth:`resolve` in epoch seconds (``ts``, ``now_s`` and the result): the click path's
        time, with no datetime built per click."""
        flags: tuple[str, ...] = ()
        reference = broker_ms / 1000 if broker_ms is not None and 0 <= broker_ms < _LATEST_MS else None
        if reference is None or not now_s - self.max_lag_s <= reference <= now_s + self.ahead_s:
            if reference is not None:
                flags = ("record_time_untrusted",)
            reference = now_s
        if ts is None:
            return reference, flags
        if ts > reference + self.ahead_s:
            return reference, (*flags, "event_time_ahead")
        if ts < reference - self.behind_s:
            return reference, (*flags, "event_time_behind")
        return ts, flags

    @staticmethod
    def _record_time(broker_ms: int | float | None) -> datetime | None:
        if broker_ms is None or not 0 <= broker_ms < _LATEST_MS:
            return None
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=broker_ms)


def record_time_ms(timestamp_s: object) -> int | None:
    """A Kafka record time as Faust gives it (seconds, float) in epoch milliseconds; None when
    the record has none.

    >>> record_time_ms(1764417600.25), record_time_ms(None), record_time_ms(float("nan"))
    (1764417600250, None, None)
    """
    if isinstance(timestamp_s, bool) or not isinstance(timestamp_s, int | float):
        return None
    if timestamp_s != timestamp_s:  # NaN
        return None
    return int(timestamp_s * 1000) if abs(timestamp_s) < 1e15 else None
