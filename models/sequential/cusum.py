"""CUSUM banks for rate increases in Bernoulli and Poisson streams, with a proven ARL0 bound.

Why our own: River's drift detectors (ADWIN, Page-Hinkley, KSWIN) watch a mean without a
stated average run length to false alarm, and none tests a rate against a given baseline.

**Guarantee.** Each bank runs one likelihood-ratio CUSUM per post-change rate on a grid of
``m`` rates above the baseline ``r0`` and alarms when any reaches ``log(m * arl0)``. The alarm
implies that the equal-weight mixture of the ``m`` likelihood ratios, started at some time,
reached ``arl0``. That mixture is a non-negative supermartingale with mean at most 1 whenever
the true rate is at most ``r0`` (for an increase, ``E_r[LR] <= 1`` iff ``r <= r0``), so by
Ville's inequality each start crosses with probability at most ``1 / arl0``, and by Lorden
(1971, Thm. 2) the expected number of observations to a false alarm is at least ``arl0``:

    ARL0 >= arl0 whenever the pre-change rate is <= r0.

``tests/unit/test_sequential.py`` checks this by seeded simulation.

>>> import random
>>> rng = random.Random(3)
>>> bank = BernoulliCUSUM(p0=0.1, arl0=1000)
>>> alarm = None
>>> for t in range(2000):
...     bank.update(rng.random() < (0.1 if t < 500 else 0.4))
...     if bank.drift_detected:
...         alarm = t
...         break
>>> 500 <= alarm < 560
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from river import base

__all__ = ["BernoulliCUSUM", "PoissonCUSUM"]

# Post-change rates tried, as multiples of the baseline: a bank covers small and large shifts.
DEFAULT_RATIOS = (1.5, 2.0, 3.0, 5.0)


class _CUSUMBank(base.Base):
    """Shared machinery: per-observation log-likelihood-ratio increments, one CUSUM per ratio."""

    def _check(self, arl0: float, ratios: Sequence[float]) -> None:
        if arl0 <= 1:
            raise ValueError("arl0 must be > 1")
        if not ratios or min(ratios) <= 1:
            raise ValueError("ratios must be > 1 (this bank detects increases)")

    @property
    def threshold(self) -> float:
        """``log(m * arl0)``: the level one CUSUM of the bank must reach to alarm."""
        return math.log(self._m * self.arl0)

    def _reset(self) -> None:
        self._stats = [0.0] * self._m
        self._run_lengths = [0] * self._m
        self._n = 0
        self.drift_detected = False

    def reset(self) -> None:
        """Start monitoring afresh (after an alarm has been handled)."""
        self._reset()

    def _step(self, increments: Sequence[float]) -> None:
        self._n += 1
        for i, inc in enumerate(increments):
            s = self._stats[i] + inc
            if s <= 0:
                self._stats[i], self._run_lengths[i] = 0.0, 0
            else:
                self._stats[i], self._run_lengths[i] = s, self._run_lengths[i] + 1
        self.drift_detected = max(self._stats) >= self.threshold

    @property
    def statistic(self) -> float:
        """The largest CUSUM of the bank (compare with :attr:`threshold`)."""
        return max(self._stats)

    @property
    def change_run_length(self) -> int:
        """Observations since the estimated change point, from the leading CUSUM."""
        return self._run_lengths[max(range(len(self._stats)), key=self._stats.__getitem__)]

    @property
    def n_seen(self) -> int:
        return self._n


class BernoulliCUSUM(_CUSUMBank):
    """Detects an increase of a success probability above ``p0`` (e.g. the negative share).

    ``update(x)`` takes a bool (or 0/1). Post-change rates are ``min(p0 * r, 0.99)`` for the
    ratios ``r``; see the module docstring for the ARL0 guarantee.
    """

    def __init__(self, *, p0: float, arl0: float = 10_000,
                 ratios: Sequence[float] = DEFAULT_RATIOS) -> None:
        if not 0 < p0 < 1:
            raise ValueError("p0 must be in (0, 1)")
        self._check(arl0, ratios)
        self.p0 = p0
        self.arl0 = arl0
        self.ratios = tuple(ratios)
        rates = sorted({min(p0 * r, 0.99) for r in self.ratios if min(p0 * r, 0.99) > p0})
        if not rates:
            raise ValueError(f"p0={p0} leaves no room for an increase")
        self._m = len(rates)
        self._up = [math.log(p1 / p0) for p1 in rates]
        self._down = [math.log((1 - p1) / (1 - p0)) for p1 in rates]
        self._reset()

    def update(self, x: bool | int) -> None:
        self._step(self._up if x else self._down)


class PoissonCUSUM(_CUSUMBank):
    """Detects an increase of a Poisson rate above ``lam0`` events per interval.

    ``update(count)`` takes the count of one interval (e.g. an entity's mentions per minute).
    """

    def __init__(self, *, lam0: float, arl0: float = 10_000,
                 ratios: Sequence[float] = DEFAULT_RATIOS) -> None:
        if lam0 <= 0:
            raise ValueError("lam0 must be > 0")
        self._check(arl0, ratios)
        self.lam0 = lam0
        self.arl0 = arl0
        self.ratios = tuple(ratios)
        self._m = len(self.ratios)
        self._reset()
        self._log_ratio = [math.log(r) for r in self.ratios]
        self._offset = [lam0 * (r - 1) for r in self.ratios]

    def update(self, count: int) -> None:
        if count < 0:
            raise ValueError("a count cannot be negative")
        self._step([count * lr - off for lr, off in zip(self._log_ratio, self._offset, strict=True)])
