"""Sentiment-shift detection for one key (a product, an entity, a news source).

The detector watches the stream of "was this text negative?" outcomes of its key:

1. **warm-up**: the first ``warmup`` outcomes estimate the key's baseline negative share, with
   a Beta prior (``prior_rate``, ``prior_strength``) so a new key starts from a sensible value.
   The baseline used is the posterior's upper ``baseline_level`` quantile (never below
   ``min_rate``): a rate the key's true pre-change share is unlikely to exceed.
2. **monitoring**: a :class:`~models.sequential.cusum.BernoulliCUSUM` bank tests for an
   increase above that baseline. **Guarantee**: the average number of outcomes between false
   alarms is at least ``arl0`` whenever the key's negative share stays at or below the baseline
   (Lorden 1971; checked by simulation in the tests).
3. **shifted**: after an alarm, the current share is estimated from the outcomes since the
   estimated change point, with a 95% time-uniform confidence sequence (Robbins' mixture), and
   a reverse CUSUM watches for the share to fall back to the baseline; when it does,
   :attr:`recovered` is set and monitoring resumes. **Guarantee**: while the share stays at or
   above ``baseline * min(ratios)``, false recoveries come at most once per ``arl0`` outcomes
   on average (same argument).

It follows River's detector shape: call ``update(x)``, then read ``drift_detected``.

>>> import random
>>> rng = random.Random(11)
>>> detector = SentimentShiftDetector(arl0=10_000)
>>> for t in range(400):
...     detector.update(rng.random() < (0.1 if t < 200 else 0.5))
...     if detector.drift_detected:
...         break
>>> 200 < t < 300, detector.state
(True, 'shifted')
>>> s = detector.summary()
>>> s.baseline_rate < 0.25 < s.current_interval[0] < s.current_rate < s.current_interval[1]
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from river import base

from models.sequential.confidence import bernoulli_confidence_sequence, beta_upper_quantile
from models.sequential.cusum import DEFAULT_RATIOS, BernoulliCUSUM

__all__ = ["SentimentShiftDetector", "ShiftSummary"]


@dataclass(frozen=True, slots=True)
class ShiftSummary:
    """What an alert reports: baseline vs current, statistic vs threshold, and the guarantee."""

    state: str
    baseline_rate: float
    baseline_events: int
    current_rate: float
    current_interval: tuple[float, float]
    current_events: int
    statistic: float
    threshold: float
    guarantee: str


class SentimentShiftDetector(base.Base):
    """Detects a rise of one key's negative share; see the module docstring."""

    def __init__(self, *, arl0: float = 10_000, warmup: int = 50, prior_rate: float = 0.2,
                 prior_strength: float = 10.0, baseline_level: float = 0.95,
                 min_rate: float = 0.05, alpha: float = 0.05,
                 ratios: tuple[float, ...] = DEFAULT_RATIOS) -> None:
        if warmup < 1:
            raise ValueError("warmup must be >= 1")
        self.arl0 = arl0
        self.warmup = warmup
        self.prior_rate = prior_rate
        self.prior_strength = prior_strength
        self.baseline_level = baseline_level
        self.min_rate = min_rate
        self.alpha = alpha
        self.ratios = ratios
        self._state: Literal["warmup", "monitoring", "shifted"] = "warmup"
        self._warm_n = 0
        self._warm_neg = 0
        self._baseline: float | None = None
        self._monitor: BernoulliCUSUM | None = None
        self._recovery: BernoulliCUSUM | None = None
        self._window: list[bool] = []  # outcomes since the estimated change point
        self.drift_detected = False
        self.recovered = False

    @property
    def state(self) -> str:
        return self._state

    @property
    def baseline_rate(self) -> float | None:
        return self._baseline

    @property
    def shifted_events(self) -> int:
        """Outcomes since the estimated change point while shifted (else 0); cheaper than
        :meth:`summary`, which also computes the confidence sequence."""
        return len(self._window) if self._state == "shifted" else 0


    def update(self, x: bool | int) -> None:
        negative = bool(x)
        self.drift_detected = self.recovered = False
        if self._state == "warmup":
            self._warm_n += 1
            self._warm_neg += negative
            if self._warm_n >= self.warmup:
                self._start_monitoring()
            return
        if self._state == "monitoring":
            assert self._monitor is not None
            self._monitor.update(negative)
            if self._monitor.drift_detected:
                # The run length counts this outcome too; the earlier ones are in the window.
                earlier = self._monitor.change_run_length - 1
                self._window = [*(self._window[-earlier:] if earlier > 0 else []), negative]
                self._state = "shifted"
                self.drift_detected = True
                self._start_recovery_watch()
            else:
                self._window.append(negative)
                del self._window[:-self._max_window]
            return
        assert self._recovery is not None
        self._window.append(negative)
        self._recovery.update(not negative)
        if self._recovery.drift_detected:
            self.recovered = True
            self._state = "monitoring"
            # Keep the outcomes since the estimated recovery point: what the recovery was seen
            # in (the summary, and so the recovered alert, reports their share; the monitor's
            # run lengths restart at the reset below, so no later change is attributed to them).
            self._window = self._window[-self._recovery.change_run_length:]
            assert self._monitor is not None
            self._monitor.reset()

    @property
    def _max_window(self) -> int:
        # Enough history to cover any run the CUSUM can attribute to a change.
        return 10 * self.warmup + 1000

    def _start_monitoring(self) -> None:
        a = self.prior_rate * self.prior_strength
        b = (1 - self.prior_rate) * self.prior_strength
        upper = beta_upper_quantile(successes=self._warm_neg, trials=self._warm_n,
                                    level=self.baseline_level, prior_a=a, prior_b=b)
        self._baseline = min(max(upper, self.min_rate), 0.5)
        self._monitor = BernoulliCUSUM(p0=self._baseline, arl0=self.arl0, ratios=self.ratios)
        self._state = "monitoring"

    def _start_recovery_watch(self) -> None:
        assert self._baseline is not None
        # Recovery tests "back at the baseline" against "still at least the smallest shift the
        # bank looks for" (``baseline * min(ratios)``). Any share at or above that makes the
        # likelihood ratio a supermartingale, so a true shift of any size is declared recovered
        # falsely no more often than once per ``arl0`` outcomes. (Using the share seen at the
        # alarm as the null instead is biased upward, since alarms come when the recent share
        # looks high, and declared a steady 60% share "recovered".)
        elevated = min(self._baseline * min(self.ratios), 0.98)
        # A fall of the negative share from `elevated` to the baseline is a rise of the
        # non-negative share from 1 - elevated to 1 - baseline.
        self._recovery = BernoulliCUSUM(p0=1 - elevated, arl0=self.arl0,
                                        ratios=((1 - self._baseline) / (1 - elevated),))

    @property
    def guarantee(self) -> str:
        if self._baseline is None:
            return f"warming up: {self._warm_n}/{self.warmup} events seen"
        return (f"ARL0 >= {self.arl0:g} events between false alarms while the negative share "
                f"stays <= {self._baseline:.3f} (upper {self.baseline_level:.0%} bound from "
                f"{self._warm_n} warm-up events); CUSUM bank, Lorden 1971")

    def summary(self) -> ShiftSummary:
        window = self._window if self._state == "shifted" else self._window[-self.warmup:]
        n, neg = len(window), sum(window)
        return ShiftSummary(
            state=self._state,
            baseline_rate=self._baseline if self._baseline is not None else self.prior_rate,
            baseline_events=self._warm_n,
            current_rate=neg / n if n else float("nan"),
            current_interval=bernoulli_confidence_sequence(successes=neg, trials=n, alpha=self.alpha),
            current_events=n,
            # The monitor is frozen while shifted: these are the values that raised the alarm.
            statistic=self._monitor.statistic if self._monitor else 0.0,
            threshold=self._monitor.threshold if self._monitor else float("inf"),
            guarantee=self.guarantee,
        )
