"""Anytime-valid test that one labeller beats another, from their disagreements.

Two labellers (the base model and an adapted one) label the same stream; a rated review says
which is right. Only *discordant* items carry information (one right, the other wrong: the
sequential form of McNemar's test). :class:`PairedBettingTest` bets on the challenger at each
discordant item: its wealth ``K_n = prod (1 + lambda_i d_i)``, ``d_i = +1`` when the challenger
was right and ``-1`` when the incumbent was, with a stake ``lambda_i in [0, max_stake]`` chosen
from earlier items only. Whenever the challenger is no better than the incumbent (the chance
that it is the right one of a discordant pair is at most 1/2 at every step, however that
chance moves), ``K`` is a non-negative supermartingale with ``K_0 = 1``, so by Ville's
inequality **the test rejects (``rejected`` becomes True) at any time with probability at most
``alpha``**, however long it runs. The stake follows the running share of wins (a plug-in
bet: Waudby-Smith and Ramdas 2023), so a clear winner is found in few discordant items.

>>> import random
>>> rng = random.Random(7)
>>> test = PairedBettingTest(alpha=0.01)
>>> for _ in range(400):  # the challenger is right in 70% of the disagreements
...     _ = test.update(1 if rng.random() < 0.7 else -1)
>>> test.rejected, test.n <= 400
(True, True)
>>> noise = PairedBettingTest(alpha=0.01)
>>> for _ in range(2000):
...     _ = noise.update(1 if rng.random() < 0.5 else -1)
>>> noise.rejected
False
"""

from __future__ import annotations

import math

__all__ = ["PairedBettingTest"]


class PairedBettingTest:
    """One-sided sequential test of "the challenger is right in more than half of the
    disagreements"; ``update(+1 | -1 | 0)``, then read ``rejected`` (False positives: at most
    ``alpha`` over the whole run)."""

    def __init__(self, *, alpha: float = 0.01, max_stake: float = 0.5, prior_wins: float = 1.0,
                 memory: float | None = None) -> None:
        if not 0 < alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        if not 0 < max_stake < 1:
            raise ValueError("max_stake must be in (0, 1)")
        self.alpha = alpha
        self.max_stake = max_stake
        self.prior_wins = prior_wins  # pseudo-counts of wins and losses behind the first stakes
        # The stake follows the win share of about the last ``memory`` disagreements (None: all of
        # them): a challenger that improves (an adapter still learning) is backed sooner.
        self.memory = memory
        self._recent_wins = 0.0
        self._recent_n = 0.0
        self._log_wealth = 0.0
        self._wins = 0
        self._losses = 0
        self._rejected = False

    @property
    def n(self) -> int:
        """Discordant items seen."""
        return self._wins + self._losses

    @property
    def wins(self) -> int:
        return self._wins

    @property
    def wealth(self) -> float:
        return math.exp(self._log_wealth)

    @property
    def rejected(self) -> bool:
        return self._rejected

    def stake(self) -> float:
        """The next bet, from earlier items only (predictable): the plug-in optimum ``2q - 1``
        for a smoothed win share ``q``, clipped to ``[0, max_stake]``."""
        wins, n = (self._recent_wins, self._recent_n) if self.memory else (self._wins, self.n)
        q = (wins + self.prior_wins) / (n + 2 * self.prior_wins)
        return min(self.max_stake, max(0.0, 2 * q - 1))

    def update(self, d: int) -> PairedBettingTest:
        """``+1``: the challenger was right and the incumbent wrong; ``-1``: the reverse; ``0``:
        they agreed (no information, nothing changes)."""
        if d not in (-1, 0, 1):
            raise ValueError(f"d must be -1, 0 or 1, not {d!r}")
        if d == 0:
            return self
        lam = self.stake()
        self._log_wealth += math.log1p(lam * d)
        if d > 0:
            self._wins += 1
        else:
            self._losses += 1
        if self.memory:
            keep = 1.0 - 1.0 / self.memory
            self._recent_wins = keep * self._recent_wins + (d > 0)
            self._recent_n = keep * self._recent_n + 1.0
        if self._log_wealth >= math.log(1 / self.alpha):
            self._rejected = True
        return self

    def to_dict(self) -> dict:
        return {"log_wealth": self._log_wealth, "wins": self._wins, "losses": self._losses,
                "recent_wins": self._recent_wins, "recent_n": self._recent_n, "rejected": self._rejected}

    def load_dict(self, state: dict) -> PairedBettingTest:
        self._log_wealth = float(state["log_wealth"])
        self._wins, self._losses = int(state["wins"]), int(state["losses"])
        self._rejected = bool(state["rejected"])
        self._recent_wins = float(state.get("recent_wins", 0.0))
        self._recent_n = float(state.get("recent_n", 0.0))
        if self._wins < 0 or self._losses < 0 or not math.isfinite(self._log_wealth) \
                or not 0 <= self._recent_wins <= self._recent_n:
            raise ValueError("invalid test state")
        return self
