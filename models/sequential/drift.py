"""Drift of the stream as a whole, with River's ADWIN per named channel.

Channels are plain numbers per event, e.g. ``text_length`` (log characters),
``non_ascii_share`` (a language-mix signal), ``unknown_token_share``, one indicator per
predicted sentiment label (prediction drift) and the online models' per-event log loss
(model-error drift). :func:`text_features` computes the input channels of one text.

**Guarantee** (ADWIN, Bifet & Gavaldà 2007): at every step the probability that ADWIN cuts its
window although the mean has not changed is at most ``delta``; so the false-alarm rate per
event and channel is at most ``delta`` (default 1e-5, i.e. ARL0 >= 100,000 events per
channel). The bound is conservative; the tests measure it on null streams.

>>> import random
>>> rng = random.Random(0)
>>> monitor = StreamDriftMonitor()
>>> events = [monitor.update("label_negative", rng.random() < (0.2 if i < 3000 else 0.5))
...           for i in range(4000)]
>>> hits = [(i, e) for i, e in enumerate(events) if e]
>>> first, event = hits[0]
>>> 3000 < first < 3300, event.channel, round(event.before, 2) < round(event.after, 2)
(True, 'label_negative', True)
"""

from __future__ import annotations

import base64
import math
from collections import deque
from dataclasses import dataclass

from river import base, drift

__all__ = ["DriftEvent", "StreamDriftMonitor", "text_features"]


@dataclass(frozen=True, slots=True)
class DriftEvent:
    channel: str
    before: float  # mean of the points ADWIN dropped (the old level)
    after: float  # mean of the last ``recent`` points (the new level)
    window: int
    detector: str
    guarantee: str
    statistic: float = 0.0  # |after - before|
    threshold: float = 0.0  # ADWIN's cut bound for the split it made (Bifet & Gavalda, Thm. 3.1)


class StreamDriftMonitor(base.Base):
    """One ADWIN per channel, created on first use; ``update`` returns a DriftEvent on drift."""

    def __init__(self, *, delta: float = 1e-5, grace_period: int = 200, recent: int = 50) -> None:
        self.delta = delta
        self.recent = recent
        self._recent: dict[str, deque[float]] = {}
        self.grace_period = grace_period
        self._detectors: dict[str, drift.ADWIN] = {}


    @property
    def guarantee(self) -> str:
        return (f"false-alarm probability <= {self.delta:g} per event and channel "
                f"(ADWIN, Bifet & Gavalda 2007)")

    def forget(self, channel: str) -> None:
        """Start ``channel`` afresh (its values from now on are not comparable with before)."""
        self._detectors.pop(channel, None)
        self._recent.pop(channel, None)

    def update(self, channel: str, value: float) -> DriftEvent | None:
        detector = self._detectors.get(channel)
        if detector is None:
            detector = self._detectors[channel] = drift.ADWIN(
                delta=self.delta, grace_period=self.grace_period)
        recent = self._recent.setdefault(channel, deque(maxlen=self.recent))
        recent.append(float(value))
        width, total, spread = detector.width, detector.total, detector.variance
        detector.update(float(value))
        if not detector.drift_detected:
            return None
        # ADWIN decided; for the report, compare the mean of the points it dropped (the old
        # level) with the mean of the last ``recent`` points (the new level): the window it
        # keeps still holds mostly old points right after a cut.
        dropped = width + 1 - detector.width
        before = (total + float(value) - detector.total) / dropped
        after = sum(recent) / len(recent)
        return DriftEvent(channel=channel, before=before, after=after,
                          window=len(recent), detector=f"ADWIN(delta={self.delta:g})",
                          guarantee=self.guarantee, statistic=abs(after - before),
                          # River's ADWIN.variance is the window's sum of squared deviations.
                          threshold=_adwin_cut(dropped + len(recent), len(recent),
                                               spread / max(width, 1.0), self.delta))

    def estimates(self) -> dict[str, float]:
        """The current mean of every channel."""
        return {name: d.estimation for name, d in self._detectors.items()}

    def to_state(self) -> dict:
        """Plain data (JSON-able). Each ADWIN's window summary (its buckets) is the bytes River's
        own ``AdaptiveWindowing`` writes and reads back (base64): data, never code."""
        return {"delta": self.delta, "grace_period": self.grace_period, "recent": self.recent,
                "channels": [[name, list(self._recent.get(name, ())), {
                    "clock": d.clock, "max_buckets": d.max_buckets, "min_window_length": d.min_window_length,
                    "window": base64.b64encode(d._helper.__getstate__()).decode("ascii")}]
                    for name, d in self._detectors.items()]}

    @classmethod
    def from_state(cls, state: dict) -> StreamDriftMonitor:
        """The monitor :meth:`to_state` described; ValueError when it is not such a description."""
        monitor = cls(delta=float(state["delta"]), grace_period=int(state["grace_period"]),
                      recent=int(state["recent"]))
        for name, recent, adwin in state["channels"]:
            if not isinstance(name, str) or not isinstance(recent, list):
                raise ValueError("drift monitor state: bad channel")
            detector = drift.ADWIN(delta=monitor.delta, clock=int(adwin["clock"]),
                                   max_buckets=int(adwin["max_buckets"]),
                                   min_window_length=int(adwin["min_window_length"]),
                                   grace_period=monitor.grace_period)
            window = base64.b64decode(adwin["window"], validate=True)
            try:
                detector._helper.__setstate__(window)
            except BaseException as exc:  # River's Rust side panics (a BaseException) on bad bytes
                if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                    raise
                raise ValueError(f"drift monitor state: ADWIN window of {name!r} unreadable") from None
            monitor._detectors[name] = detector
            monitor._recent[name] = deque((float(v) for v in recent), maxlen=monitor.recent)
        return monitor


def _adwin_cut(total: float, recent: float, variance: float, delta: float) -> float:
    """ADWIN's bound on the difference of sub-window means for a split of ``total`` points
    into ``total - recent`` old and ``recent`` new ones (a report of the cut, not used to decide).

    >>> round(_adwin_cut(2000, 500, 0.16, 1e-5), 3)
    0.136
    """
    old = max(total - recent, 1.0)
    recent = max(recent, 1.0)
    m = 1 / (1 / old + 1 / recent)
    log_term = math.log(2 * math.log(max(total, 3.0)) / delta)
    return math.sqrt(2 / m * variance * log_term) + 2 / (3 * m) * log_term


def text_features(text: str) -> dict[str, float]:
    """Input-drift channels of one text.

    >>> text_features("Grüße aus Köln")
    {'text_length': 2.708, 'non_ascii_share': 0.25}
    """
    letters = [c for c in text if c.isalpha()]
    non_ascii = sum(1 for c in letters if ord(c) > 127)
    return {"text_length": round(math.log1p(len(text)), 3),
            "non_ascii_share": round(non_ascii / len(letters), 3) if letters else 0.0}
