"""Scoring a user's candidates without a feature dict per candidate.

Ranking is most of the click path's model time: every engagement scores its whole candidate
pool (about 40 items) with the click-through model and then the ranker, and the last list is
learned again on the next click. Built the plain way, each candidate costs two feature dicts,
two River ``predict_proba_one`` calls and a co-visitation lookup per recent item.

:class:`Candidates` computes what all candidates of one user share at one time once (the
segment, the co-visitation edges of the last item, the popularity leader, the weights of the
features every candidate has). :meth:`Candidates.click_through` gives one candidate's
click-through logit as a plain sum in the order of the feature dict River would have been
given: the number River computes, to the last bit (``tests/unit/test_ranking.py``; the ranker
learns from it). :meth:`Candidates.scores` ranks a whole pool with numpy, the same operations in
the same order (``exp`` and ``log`` within an ulp; the test holds it to River's own
predictions): a seeded replay of 90,519 simulated events gives identical recommendations to
River's per-item predictions. River stays the learner and the only place weights live: a
:class:`Candidates` reads the models' current weights and is made afresh for every ranking
(weights move with every example).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["BUCKETS", "LAST", "Candidates", "context_numbers", "probability"]

# Feature names (also the dict keys of recommender._context, which builds the same features).
LAST = {True: "covisitation_last|same_session", False: "covisitation_last|new_session"}
BUCKETS = tuple(f"covisitation_bucket={b}" for b in range(7))
_EPS = 1e-7


def context_numbers(*, segment: int | None, covis: float, share: float, last: float, same_session: bool,
                    recent: bool) -> list[float]:
    """A (user, item) context as numbers, what a pending impression keeps to learn from later
    and both models' features are built from: the segment (-1: none), log1p of the co-visitation
    with the user's recent items, the popularity share, log1p of the co-visitation with the last
    item (each to 4 decimals), same session, recently engaged."""
    return [segment if segment is not None else -1, round(math.log1p(covis), 4), round(share, 4),
            round(math.log1p(last), 4), int(same_session), int(recent)]


def probability(logit: float) -> float:
    """River's sigmoid (0 and 1 past +-30), kept inside ``(eps, 1 - eps)``."""
    p = 0.0 if logit < -30 else 1.0 if logit > 30 else 1 / (1 + math.exp(-logit))
    return min(1 - _EPS, max(_EPS, p))


class Candidates:
    """The features and scores of one user's candidates at one time.

    ``ctr`` and ``ranker``: River linear models (their ``_weights`` and ``intercept`` are read,
    never written); ``last_edges``: the decayed co-visitation of the user's last item with
    each item (empty without one); ``share``: the popularity share of an item now."""

    __slots__ = ("_base_ctr", "_base_rank", "_ctr", "_ctr_w", "_rank", "_rank_w", "last_edges", "last_key",
                 "recent", "segment", "segment_prefix", "share", "signals")

    def __init__(self, *, ctr: Any, ranker: Any, segment: int | None, recent: Iterable[str],
                 same_session: bool, last_edges: Mapping[str, float], share: Callable[[str], float],
                 signals: Mapping[str, Mapping[str, Any]]) -> None:
        self.segment = segment if segment is not None else -1
        self.segment_prefix = f"segment={int(self.segment)}|item="
        self.recent = set(recent)
        self.last_edges = last_edges
        self.last_key = LAST[bool(same_session)]
        self.share = share
        self.signals = signals
        self._ctr, self._rank = ctr, ranker
        self._ctr_w, self._rank_w = ctr._weights, ranker._weights
        names = ("covisitation", "popularity", self.last_key, "recently_engaged", "sentiment", *BUCKETS)
        self._base_ctr = {n: self._ctr_w.get(n, 0.0) for n in names}
        self._base_rank = {n: self._rank_w.get(n, 0.0) for n in (*names, "click_through_logit")}

    def numbers(self, item: str, covis: float) -> list[float]:
        """:func:`context_numbers` of ``item`` with co-visitation ``covis``."""
        return context_numbers(segment=self.segment, covis=covis, share=self.share(item),
                               last=self.last_edges.get(item, 0.0), same_session=self.last_key == LAST[True],
                               recent=item in self.recent)

    def _entities(self, item: str) -> tuple[float | None, tuple[str, ...]]:
        signal = self.signals.get(item)
        if not signal:
            return None, ()
        sentiment, entities = signal.get("sentiment"), signal.get("entities")
        # a dict keeps the first of repeated names, as the feature dict does
        names = tuple(dict.fromkeys(f"entity={e}" for e in entities[:3])) if entities else ()
        return None if sentiment is None else float(sentiment), names

    def _sum(self, base: Mapping[str, float], weights: Any, numbers: list[float],
             sentiment: float | None, entities: tuple[str, ...]) -> float:
        """The dot product over the context features, in the order of ``_context``'s dict."""
        _, covis, popularity, last, _, recent = numbers
        s = 0.0
        s += covis * base["covisitation"]
        s += popularity * base["popularity"]
        s += last * base[self.last_key]
        s += 1.0 * base[BUCKETS[min(6, int(2 * covis))]]
        s += float(recent) * base["recently_engaged"]
        if sentiment is not None:
            s += sentiment * base["sentiment"]
        for name in entities:
            s += 1.0 * weights.get(name, 0.0)
        return s

    def click_through(self, item: str, covis: float
                      ) -> tuple[float, list[float], float | None, tuple[str, ...]]:
        """The click-through model's logit of ``item`` (co-visitation ``covis``) and its context:
        the numbers, the item's sentiment and entity feature names."""
        numbers = self.numbers(item, covis)
        sentiment, entities = self._entities(item)
        s = self._sum(self._base_ctr, self._ctr_w, numbers, sentiment, entities)
        s += 1.0 * self._ctr_w.get(f"item={item}", 0.0)
        s += 1.0 * self._ctr_w.get(self.segment_prefix + item, 0.0)
        p = probability(s + self._ctr.intercept)
        return math.log(p / (1 - p)), numbers, sentiment, entities

    def scores(self, items: Sequence[str], covis: Sequence[float]) -> np.ndarray:
        """The ranker's probability that each item is engaged next (``covis``: each item's
        co-visitation): numpy over the pool, the operations of :meth:`click_through` and
        :meth:`_sum` in the same order; only ``exp`` and ``log`` come from numpy (within an ulp)."""
        n = len(items)
        if n == 0:
            return np.zeros(0)
        cov = np.round(np.log1p(np.asarray(covis, dtype=float)), 4)
        pop = np.round(np.fromiter(map(self.share, items), float, n), 4)
        last = np.round(np.log1p(np.fromiter((self.last_edges.get(i, 0.0) for i in items), float, n)), 4)
        recent = np.fromiter((i in self.recent for i in items), float, n)
        bucket = np.minimum(6, (2 * cov).astype(int))
        sentiment = np.zeros(n)
        ctr_w, rank_w = self._ctr_w, self._rank_w
        ctr_ent, rank_ent = np.zeros((3, n)), np.zeros((3, n))
        item_w, segment_w = np.zeros(n), np.zeros(n)
        for k, item in enumerate(items):
            value, names = self._entities(item)
            if value is not None:
                sentiment[k] = value
            for j, name in enumerate(names):
                ctr_ent[j, k], rank_ent[j, k] = ctr_w.get(name, 0.0), rank_w.get(name, 0.0)
            item_w[k] = ctr_w.get(f"item={item}", 0.0)
            segment_w[k] = ctr_w.get(self.segment_prefix + item, 0.0)
        s = self._sums(self._base_ctr, cov, pop, last, bucket, recent, sentiment, ctr_ent)
        s = s + item_w
        s = s + segment_w
        p = _probabilities(s + self._ctr.intercept)
        logit = np.log(p / (1 - p))
        r = self._sums(self._base_rank, cov, pop, last, bucket, recent, sentiment, rank_ent)
        r = r + logit * self._base_rank["click_through_logit"]
        return _probabilities(r + self._rank.intercept)

    def _sums(self, base: Mapping[str, float], cov, pop, last, bucket, recent, sentiment,
              entities) -> np.ndarray:
        """:meth:`_sum` over arrays (an absent sentiment or entity adds 0.0: the same sum)."""
        s = cov * base["covisitation"]
        s = s + pop * base["popularity"]
        s = s + last * base[self.last_key]
        s = s + 1.0 * np.array([base[b] for b in BUCKETS])[bucket]
        s = s + recent * base["recently_engaged"]
        s = s + sentiment * base["sentiment"]
        for row in entities:
            s = s + 1.0 * row
        return s


def _probabilities(logits: np.ndarray) -> np.ndarray:
    """:func:`probability` over an array."""
    p = np.where(logits < -30, 0.0, np.where(logits > 30, 1.0, 1 / (1 + np.exp(-np.clip(logits, -31, 31)))))
    return np.minimum(1 - _EPS, np.maximum(_EPS, p))
