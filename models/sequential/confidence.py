"""Time-uniform confidence sequences for a Bernoulli rate (Robbins' Beta-mixture martingale).

For ``s`` successes in ``n`` trials the set ``{p : M_n(p) < 1/alpha}`` with
``M_n(p) = B(s + a, n - s + b) / B(a, b) / (p**s * (1 - p)**(n - s))`` is a ``1 - alpha``
confidence sequence: with probability at least ``1 - alpha`` it contains the true ``p`` at
*every* ``n`` simultaneously (``M_n(p)`` is a non-negative martingale with mean 1 under ``p``;
Ville's inequality). So the interval stays valid however often it is looked at, which is what a
stream that is read continuously needs. Coverage is checked by simulation in the tests.

>>> lo, hi = bernoulli_confidence_sequence(successes=41, trials=100, alpha=0.05)
>>> round(lo, 3), round(hi, 3)
(0.257, 0.576)
>>> bernoulli_confidence_sequence(successes=0, trials=0)
(0.0, 1.0)
"""

from __future__ import annotations

import math

from scipy.special import betaincinv

__all__ = ["bernoulli_confidence_sequence", "beta_upper_quantile"]


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def bernoulli_confidence_sequence(*, successes: int, trials: int, alpha: float = 0.05,
                                  prior_a: float = 0.5, prior_b: float = 0.5) -> tuple[float, float]:
    """The ``1 - alpha`` time-uniform interval for the rate after ``successes`` of ``trials``."""
    if not 0 <= successes <= trials:
        raise ValueError("need 0 <= successes <= trials")
    if trials == 0:
        return 0.0, 1.0
    s, f = successes, trials - successes
    log_mix = _log_beta(s + prior_a, f + prior_b) - _log_beta(prior_a, prior_b)
    bound = math.log(1 / alpha)

    def inside(p: float) -> bool:
        log_lik = (s * math.log(p) if s else 0.0) + (f * math.log1p(-p) if f else 0.0)
        return log_mix - log_lik < bound

    centre = s / trials
    # The mixture-to-likelihood ratio is convex in p with its minimum at s/n: bisect each side.
    lo = 0.0 if s == 0 else _edge(inside, inner=centre, outer=0.0)
    hi = 1.0 if f == 0 else _edge(inside, inner=centre, outer=1.0)
    return lo, hi


def _edge(inside, *, inner: float, outer: float, steps: int = 60) -> float:
    if not inside(min(max(inner, 1e-12), 1 - 1e-12)):
        return inner
    for _ in range(steps):
        mid = (inner + outer) / 2
        if inside(min(max(mid, 1e-12), 1 - 1e-12)):
            inner = mid
        else:
            outer = mid
    return inner


def beta_upper_quantile(*, successes: float, trials: float, level: float = 0.95,
                        prior_a: float = 1.0, prior_b: float = 1.0) -> float:
    """Upper ``level`` quantile of the Beta posterior of a rate.

    Used to set a baseline that the true pre-change rate is unlikely to exceed.

    >>> round(beta_upper_quantile(successes=10, trials=100), 3)
    0.162
    """
    return float(betaincinv(successes + prior_a, trials - successes + prior_b, level))
