"""Timestamps on the wire: RFC 3339 strings or epoch milliseconds in, RFC 3339 UTC out.

Used by every schema in :mod:`streams.records`. Parsing never raises anything but ``ValueError``
(which the decoder turns into a dead letter's reason).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, StringConstraints

__all__ = ["Id", "Timestamp"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)
# RFC 3339 allows a leap second (second 60); Python's datetime does not.
_LEAP_SECOND = re.compile(r"^(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:)60(?=$|[.,Zz+-])")


def _to_utc(value: Any) -> Any:
    """RFC 3339 strings or epoch milliseconds -> aware UTC datetime. Never raises anything but
    ``ValueError``: a time whose UTC equivalent falls outside years 1-9999 (``0001-01-01T00:00
    +14:00``) is clamped to the nearest representable instant; the event-time window
    (:mod:`streams.core.eventtime`) replaces such times anyway.

    >>> _to_utc("0001-01-01T00:00:00+14:00") == _EARLIEST, _to_utc("2016-12-31T23:59:60Z").isoformat()
    (True, '2017-01-01T00:00:00+00:00')
    """
    if isinstance(value, bool):
        raise ValueError("must be an RFC 3339 string or epoch milliseconds, not a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > 253402300799999:  # year 9999
            raise ValueError("epoch milliseconds out of range")
        try:
            return _EPOCH + timedelta(milliseconds=value)
        except OverflowError:  # before year 1
            raise ValueError("epoch milliseconds out of range") from None
    if isinstance(value, str):
        text, leap = _LEAP_SECOND.subn(r"\g<1>59", value.strip(), count=1)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"not an RFC 3339 timestamp: {value[:40]!r}") from None
        if parsed.tzinfo is None:
            raise ValueError(f"timestamp has no UTC offset: {value[:40]!r}")
        return _shift_to_utc(parsed, timedelta(seconds=leap))
    if isinstance(value, datetime):
        return _shift_to_utc(value if value.tzinfo else value.replace(tzinfo=UTC), timedelta(0))
    raise ValueError("must be an RFC 3339 string or epoch milliseconds")


def _shift_to_utc(parsed: datetime, extra: timedelta) -> datetime:
    try:
        return parsed.astimezone(UTC) + extra
    except (OverflowError, ValueError):
        # Only at the ends of the calendar: an offset or leap second past year 1 or 9999.
        return _EARLIEST if parsed.year < 5000 else _LATEST


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Timestamp = Annotated[
    datetime,
    BeforeValidator(_to_utc),
    PlainSerializer(_rfc3339, return_type=str, when_used="json"),
]
Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]
