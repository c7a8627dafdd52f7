"""Candidate generation for recommendations: item co-visitation and popularity, both with
exponential time decay (event time, seconds) and both bounded in memory.

Decay: a count seen ``dt`` seconds ago weighs ``2 ** (-dt / half_life_s)``. Each stored value
carries the time it was last brought up to date, so reading or adding decays it lazily.

>>> covis = CoVisitation(half_life_s=3600)
>>> covis.learn(["a", "b"], "c", ts=0.0)
>>> sorted(covis.neighbours("c", ts=0.0).items())
[('a', 0.5), ('b', 1.0)]
>>> round(covis.neighbours("c", ts=3600.0)["b"], 3)
0.5
>>> pop = Popularity(half_life_s=3600, leaders=2)
>>> for item in ["x", "y", "y", "z", "z", "z"]:
...     pop.learn(item, ts=0.0)
>>> pop.top(ts=0.0)
[('z', 3.0), ('y', 2.0)]
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Sequence

from river import base

__all__ = ["CoVisitation", "Popularity"]


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an item id, got {type(value).__name__}")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _decayed(value: float, since: float, now: float, half_life_s: float) -> float:
    return value * 2.0 ** (-max(0.0, now - since) / half_life_s)


class CoVisitation(base.Base):
    """Items engaged one after another by the same user are co-visited.

    ``learn(history, item)`` adds ``1 / (j + 1)`` between ``item`` and the ``j``-th most recent
    item of ``history`` (up to ``window`` of them), in both directions. Each item keeps at most
    ``max_neighbours`` neighbours (the strongest, pruned when twice that many accumulate) and at
    most ``max_items`` items are kept (least recently touched dropped first), so memory is
    bounded by ``max_items * 2 * max_neighbours`` edges whatever the catalogue size.
    """

    def __init__(self, *, half_life_s: float = 6 * 3600.0, window: int = 3, max_neighbours: int = 30,
                 max_items: int = 5000) -> None:
        self.half_life_s = half_life_s
        self.window = window
        self.max_neighbours = max_neighbours
        self.max_items = max_items
        self._edges: OrderedDict[str, dict[str, list[float]]] = OrderedDict()

    def learn(self, history: Sequence[str], item: str, ts: float) -> None:
        for j, previous in enumerate(reversed(history[-self.window:])):
            if previous != item:
                weight = 1.0 / (j + 1)
                self._add(item, previous, weight, ts)
                self._add(previous, item, weight, ts)

    def _add(self, item: str, other: str, weight: float, ts: float) -> None:
        edges = self._edges.get(item)
        if edges is None:
            edges = self._edges[item] = {}
            if len(self._edges) > self.max_items:
                self._edges.popitem(last=False)
        else:
            self._edges.move_to_end(item)
        edge = edges.get(other)
        if edge is None:
            edges[other] = [weight, ts]
            if len(edges) > 2 * self.max_neighbours:
                keep = heapq.nlargest(self.max_neighbours, edges.items(),
                                      key=lambda kv: _decayed(kv[1][0], kv[1][1], ts, self.half_life_s))
                edges.clear()
                edges.update(keep)
        else:
            edge[0] = _decayed(edge[0], edge[1], ts, self.half_life_s) + weight
            edge[1] = max(edge[1], ts)

    def neighbours(self, item: str, ts: float) -> dict[str, float]:
        edges = self._edges.get(item, {})
        return {other: _decayed(v, since, ts, self.half_life_s) for other, (v, since) in edges.items()}

    def score(self, history: Sequence[str], item: str, ts: float, *, recency: float = 0.7) -> float:
        """How strongly ``item`` follows the recent ``history`` (most recent last)."""
        total = 0.0
        for j, previous in enumerate(reversed(history)):
            edge = self._edges.get(previous, {}).get(item)
            if edge is not None:
                total += recency ** j * _decayed(edge[0], edge[1], ts, self.half_life_s)
        return total

    def candidates(self, history: Sequence[str], ts: float, *, recency: float = 0.7) -> dict[str, float]:
        """Every neighbour of the recent ``history``, scored like :meth:`score`."""
        scores: dict[str, float] = {}
        for j, previous in enumerate(reversed(history)):
            w = recency ** j
            for other, value in self.neighbours(previous, ts).items():
                scores[other] = scores.get(other, 0.0) + w * value
        return scores

    def __len__(self) -> int:
        return len(self._edges)

    def to_state(self) -> dict:
        """Plain data (JSON-able): items least recently touched first, each with its edges."""
        return {"edges": [[item, [[other, v, since] for other, (v, since) in edges.items()]]
                          for item, edges in self._edges.items()]}

    def load_state(self, state: dict) -> CoVisitation:
        edges: OrderedDict[str, dict[str, list[float]]] = OrderedDict()
        for item, pairs in state["edges"]:
            edges[_text(item)] = {_text(other): [_number(v), _number(since)] for other, v, since in pairs}
        self._edges = edges
        return self


class Popularity(base.Base):
    """Decayed engagement counts per item and the ``leaders`` most popular items, kept exact.

    Counts are stored in the units of a reference time ``t0`` (a count ``c`` at time ``t`` is
    stored as ``c * 2 ** ((t - t0) / half_life_s)``), so every item decays at the same rate
    without being touched and stored values only grow: the leader board is updated in
    ``O(leaders)`` per event. ``t0`` moves forward before the scale could overflow.
    """

    def __init__(self, *, half_life_s: float = 6 * 3600.0, leaders: int = 50,
                 max_items: int = 20_000) -> None:
        self.half_life_s = half_life_s
        self.leaders = leaders
        self.max_items = max_items
        self._counts: OrderedDict[str, float] = OrderedDict()
        self._leaders: dict[str, float] = {}
        self._t0: float | None = None

    def _scale(self, ts: float) -> float:
        if self._t0 is None:
            self._t0 = ts
        # Far behind the reference (after a clock jump ahead): as if 500 half-lives old, so the
        # scale stays a positive float instead of underflowing to a division by zero.
        exponent = max((ts - self._t0) / self.half_life_s, -500.0)
        if exponent > 500:  # rebase: divide everything stored by 2**exponent
            shrink = 2.0 ** -exponent
            for item in self._counts:
                self._counts[item] *= shrink
            self._leaders = {item: v * shrink for item, v in self._leaders.items()}
            self._t0, exponent = ts, 0.0
        return 2.0 ** exponent

    def learn(self, item: str, ts: float, weight: float = 1.0) -> None:
        stored = self._counts.pop(item, 0.0) + weight * self._scale(ts)
        self._counts[item] = stored
        if len(self._counts) > self.max_items:
            self._counts.popitem(last=False)
        if item in self._leaders or len(self._leaders) < self.leaders:
            self._leaders[item] = stored
        else:
            weakest = min(self._leaders, key=self._leaders.__getitem__)
            if stored > self._leaders[weakest]:
                del self._leaders[weakest]
                self._leaders[item] = stored

    def count(self, item: str, ts: float) -> float:
        return self._counts.get(item, 0.0) / self._scale(ts) if self._t0 is not None else 0.0

    def share(self, item: str, ts: float) -> float:
        """The item's count relative to the most popular item's (0..1)."""
        return self.shares(ts)(item)

    def shares(self, ts: float) -> Callable[[str], float]:
        """:meth:`share` for many items at one time (the leader looked up once)."""
        best = max(self._leaders.values(), default=0.0)
        if best <= 0:
            return lambda item: 0.0
        counts = self._counts
        return lambda item: min(1.0, counts.get(item, 0.0) / best)

    def to_state(self) -> dict:
        """Plain data (JSON-able): the counts least recently touched first, the leaders, ``t0``."""
        return {"counts": list(self._counts.items()), "leaders": list(self._leaders.items()), "t0": self._t0}

    def load_state(self, state: dict) -> Popularity:
        self._counts = OrderedDict((_text(item), _number(v)) for item, v in state["counts"])
        self._leaders = {_text(item): _number(v) for item, v in state["leaders"]}
        self._t0 = None if state["t0"] is None else _number(state["t0"])
        return self

    def top(self, ts: float) -> list[tuple[str, float]]:
        scale = self._scale(ts) if self._t0 is not None else 1.0
        ranked = ((item, v / scale) for item, v in self._leaders.items())
        return sorted(ranked, key=lambda kv: (-kv[1], kv[0]))
