"""From detector outcomes to alert records: one alert per change, escalations, recoveries.

Pure logic (no faust, no I/O). An :class:`AlertBook` remembers the open alert of each
(kind, subject). A new detection opens one alert; further detections while it is open are
suppressed unless the severity rises (then an ``escalated`` update that refers to the first
alert); a recovery closes it with a ``recovered`` alert. A subject that alerted stays quiet for
``cooldown_s`` after recovering, so a flapping key cannot flood the topic.

>>> from datetime import UTC, datetime, timedelta
>>> book = AlertBook(cooldown_s=600)
>>> t0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
>>> shift = Shift(baseline_rate=0.1, current_rate=0.41, interval=(0.33, 0.49), events=57,
...               statistic=12.3, threshold=10.6, guarantee="ARL0 >= 10000")
>>> a = book.on_shift(kind="sentiment_shift", subject=("product", "p42"), shift=shift,
...                   detector="SentimentShiftDetector", params={}, evidence=[], now=t0)
>>> a.severity, a.message
('critical', 'Negative share of product p42 rose from 10% to 41% (95% CS 33%-49%) over the last 57 events.')
>>> book.on_shift(kind="sentiment_shift", subject=("product", "p42"), shift=shift,
...               detector="SentimentShiftDetector", params={}, evidence=[], now=t0) is None
True
>>> r = book.on_recovered(kind="sentiment_shift", subject=("product", "p42"), shift=shift,
...                       detector="SentimentShiftDetector", params={}, now=t0 + timedelta(minutes=5))
>>> r.status, r.related_alert_id == a.alert_id
('recovered', True)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from streams.records import Alert, Explanation, Subject

__all__ = ["STATE_CLASSES", "AlertBook", "Shift", "severity_of"]

Severity = Literal["info", "warning", "critical"]
_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True, slots=True)
class Shift:
    """A detector's view of a change: the numbers an alert reports."""

    baseline_rate: float
    current_rate: float
    interval: tuple[float, float]
    events: int
    statistic: float
    threshold: float
    guarantee: str
    measure: str = "Negative share"
    # "share" prints as percentages, "count" and "mean" as numbers.
    unit: Literal["share", "count", "mean"] = "share"
    # What the interval is: a time-uniform confidence sequence, or a fixed-sample interval.
    interval_label: str = "95% CS"
    unit_of_events: str = "events"

    def fmt(self, x: float) -> str:
        """A value in this shift's unit.

        >>> Shift(0.1, 0.4, (0.3, 0.5), 9, 1.0, 1.0, "").fmt(0.123)
        '12%'
        >>> Shift(2, 9, (7, 11), 9, 1.0, 1.0, "", unit="count").fmt(9)
        '9.0'
        """
        if self.unit == "share":
            return f"{x:.0%}"
        return f"{x:.1f}" if self.unit == "count" else f"{x:.3g}"


def severity_of(shift: Shift) -> Severity:
    """``critical`` if even the interval's low end is at least double the baseline (and, for a
    share, 20 points above it); ``warning`` if the low end is above the baseline; else ``info``.

    >>> severity_of(Shift(0.1, 0.2, (0.12, 0.3), 40, 11.0, 10.6, ""))
    'warning'
    """
    low = shift.interval[0]
    if low >= 2 * shift.baseline_rate and (shift.unit != "share" or low - shift.baseline_rate >= 0.2):
        return "critical"
    if low > shift.baseline_rate:
        return "warning"
    return "info"


@dataclass
class _Open:
    alert_id: str
    severity: Severity
    closed_at: datetime | None = None


class AlertBook:
    def __init__(self, *, cooldown_s: float = 3600.0) -> None:
        self.cooldown_s = cooldown_s
        self._open: dict[tuple[str, str, str], _Open] = {}

    def on_shift(self, *, kind: str, subject: tuple[str, str], shift: Shift, detector: str,
                 params: dict[str, Any], evidence: list[dict[str, Any]], now: datetime,
                 explanation: Explanation | None = None, message: str | None = None) -> Alert | None:
        """The alert to emit for a detection, or None when it would repeat an open one.
        ``message``: the alert's sentence, when the shift's own would not say it."""
        key = (kind, *subject)
        severity = severity_of(shift)
        current = self._open.get(key)
        if current is not None and current.closed_at is None:
            if _RANK[severity] <= _RANK[current.severity]:
                return None
            current.severity = severity
            return self._alert(kind, subject, shift, detector, params, evidence, now, severity,
                               status="escalated", related=current.alert_id, explanation=explanation,
                               message=message)
        if current is not None and current.closed_at is not None and \
                now - current.closed_at < timedelta(seconds=self.cooldown_s):
            return None
        alert = self._alert(kind, subject, shift, detector, params, evidence, now, severity,
                            status="open", related=None, explanation=explanation, message=message)
        self._open[key] = _Open(alert.alert_id, severity)
        return alert

    def on_recovered(self, *, kind: str, subject: tuple[str, str], shift: Shift, detector: str,
                     params: dict[str, Any], now: datetime) -> Alert | None:
        key = (kind, *subject)
        current = self._open.get(key)
        if current is None or current.closed_at is not None:
            return None
        current.closed_at = now
        return self._alert(kind, subject, shift, detector, params, [], now, "info",
                           status="recovered", related=current.alert_id)

    def close_quietly(self, *, kind: str, subject: tuple[str, str], now: datetime) -> None:
        """End the open alert without a ``recovered`` record (for one-off changes such as a
        drift, which has no "back to normal"); the cooldown starts now."""
        current = self._open.get((kind, *subject))
        if current is not None and current.closed_at is None:
            current.closed_at = now

    @staticmethod
    def _alert(kind: str, subject: tuple[str, str], shift: Shift, detector: str,
               params: dict[str, Any], evidence: list[dict[str, Any]], now: datetime,
               severity: Severity, *, status: str, related: str | None,
               explanation: Explanation | None = None, message: str | None = None) -> Alert:
        subject_type, subject_id = subject
        lo, hi = shift.interval
        message = message or _sentence(shift, subject_type, subject_id, status, explanation)
        # Deterministic ids: a reprocessed event yields the same alert id (dedup downstream).
        alert_id = hashlib.sha256(
            f"{kind}|{subject_type}|{subject_id}|{status}|{now.isoformat()}".encode()
        ).hexdigest()[:20]
        return Alert(
            alert_id=alert_id, kind=kind, subject=Subject(type=subject_type, id=subject_id),
            detected_at=now, severity=severity, status=status, related_alert_id=related,
            detector={"name": detector, "params": params, "guarantee": shift.guarantee},
            baseline={"rate": shift.baseline_rate, "measure": shift.measure, "unit": shift.unit},
            current={"rate": shift.current_rate, "interval": [lo, hi], "interval_label": shift.interval_label,
                     "events": shift.events},
            statistic=shift.statistic, threshold=shift.threshold, evidence=evidence, message=message,
            explanation=explanation,
        )


def _sentence(shift: Shift, subject_type: str, subject_id: str, status: str,
              explanation: Explanation | None) -> str:
    """The alert's one readable sentence, from its shift."""
    lo, hi = shift.interval
    if status == "recovered":
        message = (f"{shift.measure} of {subject_type} {subject_id} is back near its baseline "
                   f"of {shift.fmt(shift.baseline_rate)}.")
    else:
        direction = "rose" if shift.current_rate >= shift.baseline_rate else "fell"
        interval = (f"({shift.interval_label} {shift.fmt(lo)}-{shift.fmt(hi)}) "
                    if shift.interval_label else "")
        message = (f"{shift.measure} of {subject_type} {subject_id} {direction} from "
                   f"{shift.fmt(shift.baseline_rate)} to {shift.fmt(shift.current_rate)} {interval}"
                   f"over the last {shift.events} {shift.unit_of_events}.")
        if explanation is not None and explanation.summary:
            message += " " + explanation.summary
    return message


# The classes an AlertBook is made of, by name, for plain-data state (streams.core.plainstate).
STATE_CLASSES = {"AlertBook": AlertBook, "OpenAlert": _Open}
