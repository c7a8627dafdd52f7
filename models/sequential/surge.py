"""Mention surges for one subject (an entity): a Poisson CUSUM over fixed time buckets.

Mentions arrive as timestamps; the detector closes a bucket of ``bucket_s`` seconds when a
later mention arrives (or on :meth:`advance_to`), counts empty buckets as zeros, and feeds the
counts to a :class:`~models.sequential.cusum.PoissonCUSUM`. A mention of the bucket before the
open one still counts in the open one (small disorder within a key); an older one is only
tallied in ``late`` and not counted: when one input runs behind another (a lagging partition,
a replay), its mentions would otherwise pile into the open bucket and fake a surge.

The baseline rate is the upper ``baseline_level`` quantile of the Gamma posterior after
``warmup`` buckets (prior: ``prior_rate`` mentions per bucket with ``prior_buckets`` of
weight). **Guarantee**: ARL0 >= ``arl0`` buckets between false alarms while the mention rate
stays at or below that baseline (Lorden 1971, see ``cusum.py``).

>>> d = MentionSurgeDetector(bucket_s=60, warmup=30, arl0=10_000)
>>> alarms = []
>>> for minute in range(60):
...     for k in range(2 if minute < 45 else 12):
...         d.update(minute * 60 + k)
...         if d.drift_detected:
...             alarms.append((minute, round(d.alarm_statistic, 1), round(d.threshold, 1)))
>>> alarms[0]
(47, 20.6, 10.6)
"""

from __future__ import annotations

from river import base
from scipy.special import gammaincinv

from models.sequential.cusum import DEFAULT_RATIOS, PoissonCUSUM

__all__ = ["MentionSurgeDetector"]


class MentionSurgeDetector(base.Base):
    # Class attributes, so that detectors pickled before they existed load with them.
    max_late_buckets = 1
    late = 0  # mentions too old to count

    def __init__(self, *, bucket_s: float = 60.0, arl0: float = 10_000, warmup: int = 30,
                 prior_rate: float = 1.0, prior_buckets: float = 5.0,
                 baseline_level: float = 0.95, min_rate: float = 0.5,
                 ratios: tuple[float, ...] = DEFAULT_RATIOS, recent: int = 10) -> None:
        self.recent = recent
        self.bucket_s = bucket_s
        self.arl0 = arl0
        self.warmup = warmup
        self.prior_rate = prior_rate
        self.prior_buckets = prior_buckets
        self.baseline_level = baseline_level
        self.min_rate = min_rate
        self.ratios = ratios
        self._bucket: int | None = None
        self._count = 0
        self._warm_buckets = 0
        self._warm_total = 0
        self._baseline: float | None = None
        self._cusum: PoissonCUSUM | None = None
        self.last_count = 0
        self.recent_counts: list[int] = []  # the last ``recent`` closed buckets, oldest first
        self.quiet_buckets = 0  # consecutive closed buckets at or below the baseline
        self.alarm_statistic = 0.0
        self.drift_detected = False


    @property
    def baseline_rate(self) -> float | None:
        return self._baseline

    @property
    def statistic(self) -> float:
        return self._cusum.statistic if self._cusum else 0.0

    @property
    def threshold(self) -> float:
        return self._cusum.threshold if self._cusum else float("inf")

    @property
    def guarantee(self) -> str:
        if self._baseline is None:
            return f"warming up: {self._warm_buckets}/{self.warmup} buckets seen"
        return (f"ARL0 >= {self.arl0:g} buckets of {self.bucket_s:g}s between false alarms while "
                f"mentions stay <= {self._baseline:.2f} per bucket; Poisson CUSUM bank, Lorden 1971")

    def update(self, ts: float) -> None:
        """Count one mention at ``ts`` (seconds); closes the buckets before it."""
        self.drift_detected = False
        bucket = int(ts // self.bucket_s)
        if self._bucket is None:
            self._bucket = bucket
        if bucket > self._bucket:
            self._close_until(bucket)
        elif bucket < self._bucket - self.max_late_buckets:
            self.late += 1
            return
        self._count += 1

    def advance_to(self, ts: float) -> None:
        """Close the buckets that ended before ``ts`` (call on a timer for quiet subjects)."""
        self.drift_detected = False
        if self._bucket is not None:
            self._close_until(int(ts // self.bucket_s))

    def _close_until(self, bucket: int) -> None:
        assert self._bucket is not None
        detected = False
        # A long gap is closed one bucket at a time only until the warm-up has ended and the
        # recent counts and the CUSUM have seen enough empty buckets to settle (an empty bucket
        # only lowers the statistic); the rest are skipped in one step. A time far ahead (a clock
        # gone wrong) would otherwise keep the loop busy for billions of buckets.
        settle = self.warmup + self.recent + 1000
        while self._bucket < bucket and settle > 0:
            detected |= self._close(self._count)
            self._count = 0
            self._bucket += 1
            settle -= 1
        if self._bucket < bucket:
            skipped = bucket - self._bucket
            self.quiet_buckets += skipped if self._baseline is not None else 0
            self._bucket = bucket
        self.drift_detected = detected

    def current_interval(self, level: float = 0.95) -> tuple[float, float, float]:
        """Mean count per bucket over the recent buckets, with its exact (Garwood) Poisson
        interval at ``level`` (a fixed-sample interval, not a confidence sequence)."""
        k, total = len(self.recent_counts), sum(self.recent_counts)
        if k == 0:
            return float("nan"), 0.0, float("inf")
        tail = (1 - level) / 2
        lo = float(gammaincinv(total, tail)) / k if total else 0.0
        hi = float(gammaincinv(total + 1, 1 - tail)) / k
        return total / k, lo, hi

    def _close(self, count: int) -> bool:
        self.last_count = count
        self.recent_counts = [*self.recent_counts[-(self.recent - 1):], count] if self.recent > 1 else [count]
        self.quiet_buckets = self.quiet_buckets + 1 if (
            self._baseline is not None and count <= self._baseline) else 0
        if self._cusum is None:
            self._warm_buckets += 1
            self._warm_total += count
            if self._warm_buckets >= self.warmup:
                shape = self._warm_total + self.prior_rate * self.prior_buckets
                rate = self._warm_buckets + self.prior_buckets
                upper = float(gammaincinv(shape, self.baseline_level)) / rate
                self._baseline = max(upper, self.min_rate)
                self._cusum = PoissonCUSUM(lam0=self._baseline, arl0=self.arl0, ratios=self.ratios)
            return False
        self._cusum.update(count)
        if self._cusum.drift_detected:
            self.alarm_statistic = self._cusum.statistic
            self._cusum.reset()  # one alarm per surge start; the alert layer tracks escalation
            return True
        return False
