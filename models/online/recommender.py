"""An online recommender for click streams: candidates from co-visitation, popularity and the
user's recent items, ranked by a River click-through model that learns from every impression.

Per event, in order (prequential: predict, then learn):

1. Impressions shown to the user earlier and not clicked within ``label_timeout_s`` become
   negative examples; the click-through model learns them (with the features and the
   prediction it made when the impression arrived).
2. ``impression``: the model predicts P(click) with the features of that moment and keeps the
   impression pending (at most ``max_pending`` per user).
3. ``click`` / ``add_to_cart`` / ``purchase``: a pending impression of that item becomes a
   positive example; a click is scored against the user's previous recommendation list
   (hit@k and reciprocal rank); co-visitation, popularity, the user's recent items and the
   user's segment learn from it; then a new list of ``k`` items is ranked and returned.

Features of a (user, item) pair: the item itself, the item crossed with the user's segment,
co-visitation with the user's recent items, popularity share, whether the user engaged with it
recently, and, where the enriched text streams know the item, its review sentiment and the
entities of its article (cross-stream fusion; ``item_signals``).

Segments: River's online :class:`~river.cluster.KMeans` over a user's behaviour (action mix,
activity, taste for popular or niche items, sentiment of the items they engage with).

Per-user state is a small JSON-able :class:`UserState` (the caller keeps it, e.g. in a Faust
table keyed by user). The model itself (everything else) is checkpointed as plain data
(:meth:`ClickRecommender.to_state`).

>>> from models.online.simulate import simulate_clicks
>>> data = simulate_clicks(users=200, items=100, sessions=600, seed=1)
>>> model, users = ClickRecommender(seed=1), {}
>>> steps = [model.observe(users.setdefault(e.user_id, UserState()), e, data.item_signals)
...          for e in data.events]
>>> sum(s.items is not None for s in steps) == sum(e.action != "impression" for e in data.events)
True
>>> report = model.report()
>>> report["hit_rate"] > 0.2, report["auc"] > 0.6
(True, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from river import base, cluster, linear_model, metrics, optim, stats, utils

from models.online.candidates import CoVisitation, Popularity
from models.online.ranking import BUCKETS, LAST, Candidates, context_numbers

__all__ = ["ACTIONS", "ClickEvent", "ClickRecommender", "Step", "UserState", "kmeans_learn_predict"]

ACTIONS = ("impression", "click", "add_to_cart", "purchase")
_ENGAGEMENT_WEIGHT = {"click": 1.0, "add_to_cart": 2.0, "purchase": 3.0}
_RECENT = 10
_EPS = 1e-7


@dataclass(frozen=True, slots=True)
class ClickEvent:
    event_id: str
    user_id: str
    item_id: str
    action: str  # one of ACTIONS
    ts: float  # event time, seconds since the epoch
    session_id: str | None = None


@dataclass(slots=True)
class UserState:
    """What the recommender remembers of one user; JSON-able (``to_dict`` / ``from_dict``)."""

    recent: list[str] = field(default_factory=list)  # engaged items, most recent last
    pending: list[list[Any]] = field(default_factory=list)  # [item, ts, p, context] per impression
    last_recs: list[str] = field(default_factory=list)
    profile: dict[str, float] = field(default_factory=dict)  # behaviour, decayed running means
    segment: int | None = None
    session: str | None = None
    last_ts: float = 0.0
    engaged_session: str | None = None  # the session of the last engagement ...
    engaged_ts: float = 0.0  # ... and its time

    def to_dict(self) -> dict[str, Any]:
        return {"recent": self.recent, "pending": self.pending, "last_recs": self.last_recs,
                "profile": self.profile, "segment": self.segment, "session": self.session,
                "last_ts": self.last_ts, "engaged_session": self.engaged_session,
                "engaged_ts": self.engaged_ts}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> UserState:
        return cls(recent=list(d.get("recent", [])), pending=[list(p) for p in d.get("pending", [])],
                   last_recs=list(d.get("last_recs", [])), profile=dict(d.get("profile", {})),
                   segment=d.get("segment"), session=d.get("session"), last_ts=float(d.get("last_ts", 0.0)),
                   engaged_session=d.get("engaged_session"), engaged_ts=float(d.get("engaged_ts", 0.0)))


@dataclass(frozen=True, slots=True)
class Step:
    """What one event produced."""

    items: list[tuple[str, float]] | None  # the new recommendation list (engagements only)
    labelled: list[tuple[float, bool]]  # (predicted P(click), clicked) for examples resolved now
    hit: bool | None = None  # was a clicked item in the previous list (clicks with a list only)
    reciprocal_rank: float | None = None
    segment: int | None = None


_SESSION_GAP_S = 1800.0


def _add_signal(x: dict[str, float], signal: Mapping[str, Any] | None) -> None:
    """The item's review sentiment and its first three entities, when the text agents gave them."""
    if signal:
        if signal.get("sentiment") is not None:
            x["sentiment"] = float(signal["sentiment"])
        for entity in signal.get("entities", ())[:3]:
            x[f"entity={entity}"] = 1.0


def _with_item(x: dict[str, float], item: str, segment: float) -> dict[str, float]:
    """Click-through features: a context plus the item and the item per segment."""
    return {**x, f"item={item}": 1.0, f"segment={int(segment)}|item={item}": 1.0}


# What a user's behaviour profile holds (ClickRecommender._update_segment), in a fixed order.
_PROFILE_FEATURES = ("activity", "popular_taste", "sentiment_taste", "share_add_to_cart", "share_click",
                     "share_purchase")


def _same_session(user: UserState, ts: float) -> bool:
    """Was the user's last engagement in the session of now (by id, else a 30-minute gap)?"""
    if user.session is not None:
        return user.engaged_session == user.session
    return bool(user.recent) and ts - user.engaged_ts < _SESSION_GAP_S


class ClickRecommender(base.Base):
    """Candidates + River click-through ranking, learning from every event (see module doc)."""

    def __init__(self, *, k: int = 10, n_candidates: int = 60, n_segments: int = 6,
                 label_timeout_s: float = 1800.0, max_pending: int = 20, half_life_s: float = 6 * 3600.0,
                 learning_rate: float = 0.05, l2: float = 1e-6, window: int = 5000, seed: int = 0) -> None:
        self.k = k
        self.n_candidates = n_candidates
        self.n_segments = n_segments
        self.label_timeout_s = label_timeout_s
        self.max_pending = max_pending
        self.half_life_s = half_life_s
        self.learning_rate = learning_rate
        self.l2 = l2
        self.window = window
        self.seed = seed
        self._ctr = linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate), l2=l2)
        self._ranker = linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate), l2=l2)
        self._covis = CoVisitation(half_life_s=half_life_s)
        self._popularity = Popularity(half_life_s=half_life_s, leaders=max(20, n_candidates // 3))
        self._segments = cluster.KMeans(n_clusters=n_segments, halflife=0.05, sigma=0.5, seed=seed)
        # River's KMeans draws a centre's coordinate the first time a feature name is looked up,
        # in the order of a set of names: that order changes with PYTHONHASHSEED, so the same
        # clicks gave other segments in another process. Drawing them all now, in a fixed order,
        # makes a replay give the same segments.
        for centre in self._segments.centers.values():
            for name in _PROFILE_FEATURES:
                centre[name]  # the lookup draws the coordinate
        self._log_loss = utils.Rolling(metrics.LogLoss, window_size=window)
        self._auc = metrics.RollingROCAUC(window_size=window)
        self._hit_rate = utils.Rolling(stats.Mean, window_size=window)
        self._mrr = utils.Rolling(stats.Mean, window_size=window)
        self._events = 0
        self._examples = 0

    # -- the event loop ------------------------------------------------------------------

    def observe(self, user: UserState, event: ClickEvent,
                item_signals: Mapping[str, Mapping[str, Any]] | None = None) -> Step:
        """Predict, then learn, from one event; ``user`` is updated in place."""
        signals = item_signals or {}
        self._events += 1
        labelled = self._expire(user, event.ts, signals)
        user.session = event.session_id
        user.last_ts = max(user.last_ts, event.ts)
        if event.action == "impression":
            numbers = self._numbers(user, event.item_id, event.ts)
            p = self._predict(self._features(event.item_id, numbers, signals))
            user.pending.append([event.item_id, event.ts, round(p, 6), numbers])
            if len(user.pending) > self.max_pending:
                labelled.append(self._learn(user.pending.pop(0), False, signals))
            return Step(items=None, labelled=labelled, segment=user.segment)

        labelled += self._resolve_click(user, event, signals)
        hit = rr = None
        if event.action == "click" and user.last_recs:
            shown = user.last_recs[: self.k]
            rank = shown.index(event.item_id) if event.item_id in shown else None
            self._learn_ranking(user, event, signals)
            hit, rr = rank is not None, (1.0 / (rank + 1) if rank is not None else 0.0)
            self._hit_rate.update(float(hit))
            self._mrr.update(rr)
        self._covis.learn(user.recent, event.item_id, event.ts)
        self._popularity.learn(event.item_id, event.ts, _ENGAGEMENT_WEIGHT[event.action])
        if event.item_id in user.recent:
            user.recent.remove(event.item_id)
        user.recent.append(event.item_id)
        del user.recent[:-_RECENT]
        user.engaged_session, user.engaged_ts = event.session_id, event.ts
        self._update_segment(user, event, signals)
        pool = self.recommend(user, event.ts, signals, exclude=event.item_id)
        user.last_recs = [item for item, _ in pool]
        return Step(items=pool[: self.k], labelled=labelled, hit=hit, reciprocal_rank=rr,
                    segment=user.segment)

    def recommend(self, user: UserState, ts: float, item_signals: Mapping[str, Mapping[str, Any]],
                  *, exclude: str | None = None) -> list[tuple[str, float]]:
        """The ranked candidate pool for ``user`` now (``2 * k`` items; the first ``k`` are the
        recommendation), each with the ranker's probability that it is engaged next."""
        covis = self._covis.candidates(user.recent, ts)
        pool = dict(sorted(covis.items(), key=lambda kv: -kv[1])[: self.n_candidates])
        for item, _ in self._popularity.top(ts):
            pool.setdefault(item, 0.0)
        for item in user.recent:
            pool.setdefault(item, covis.get(item, 0.0))
        pool.pop(exclude, None)
        candidates = self._candidates(user, ts, item_signals)
        scored = list(zip(pool, candidates.scores(list(pool), list(pool.values())).tolist(), strict=True))
        scored.sort(key=lambda kv: (-kv[1], kv[0]))
        return [(item, round(p, 6)) for item, p in scored[: 2 * self.k]]

    def _candidates(self, user: UserState, ts: float, signals: Mapping[str, Mapping[str, Any]]) -> Candidates:
        """What ranking ``user``'s candidates now needs, computed once (:mod:`.ranking`)."""
        return Candidates(ctr=self._ctr, ranker=self._ranker, segment=user.segment, recent=user.recent,
                          same_session=_same_session(user, ts), share=self._popularity.shares(ts),
                          last_edges=self._covis.neighbours(user.recent[-1], ts) if user.recent else {},
                          signals=signals)

    # -- learning ------------------------------------------------------------------------

    def _expire(self, user: UserState, ts: float, signals) -> list[tuple[float, bool]]:
        labelled = []
        while user.pending and ts - user.pending[0][1] > self.label_timeout_s:
            labelled.append(self._learn(user.pending.pop(0), False, signals))
        return labelled

    def _resolve_click(self, user: UserState, event: ClickEvent, signals) -> list[tuple[float, bool]]:
        for i, pending in enumerate(user.pending):
            if pending[0] == event.item_id:
                return [self._learn(user.pending.pop(i), True, signals)]
        if event.action != "click":
            return []  # a cart or purchase of an item not impressed: no click-through example
        # A click with no impression (search, a link): a positive example as of now.
        numbers = self._numbers(user, event.item_id, event.ts)
        p = self._predict(self._features(event.item_id, numbers, signals))
        return [self._learn([event.item_id, event.ts, p, numbers], True, signals)]

    def _learn(self, pending: list[Any], clicked: bool, signals) -> tuple[float, bool]:
        """Learn one impression with the context it had when shown (item signals as of now)."""
        item, _, p, numbers = pending
        self._ctr.learn_one(self._features(item, numbers, signals), clicked)
        self._log_loss.update(clicked, {True: p, False: 1.0 - p})
        self._auc.update(clicked, {True: p, False: 1.0 - p})
        self._examples += 1
        return p, clicked

    def _learn_ranking(self, user: UserState, event: ClickEvent, signals) -> None:
        """The clicked item is a positive, the rest of the user's last pool negatives (features
        as of now, before this click is learned anywhere)."""
        candidates = self._candidates(user, event.ts, signals)
        recent = user.recent
        # In the list's order (a set's would follow PYTHONHASHSEED: another process replaying the
        # same clicks learned in another order and ended with another model).
        for item in dict.fromkeys([*user.last_recs, event.item_id]):
            logit, numbers, _, _ = candidates.click_through(item, self._covis.score(recent, item, event.ts))
            x = self._context(item, numbers, signals)
            x["click_through_logit"] = logit
            self._ranker.learn_one(x, item == event.item_id)

    def _predict(self, x: dict[str, float]) -> float:
        return min(1 - _EPS, max(_EPS, self._ctr.predict_proba_one(x)[True]))

    def _numbers(self, user: UserState, item: str, ts: float) -> list[float]:
        """The (user, item) context now (:func:`.ranking.context_numbers`): what a pending
        impression keeps to learn from later (compact: user state is written to a table on
        every batch)."""
        return context_numbers(segment=user.segment, covis=self._covis.score(user.recent, item, ts),
                               share=self._popularity.share(item, ts),
                               last=self._covis.score(user.recent[-1:], item, ts) if user.recent else 0.0,
                               same_session=_same_session(user, ts), recent=item in user.recent)

    @staticmethod
    def _context(item: str, numbers: list[float], signals: Mapping[str, Mapping[str, Any]]
                 ) -> dict[str, float]:
        _, covis, popularity, last, same_session, recent = numbers
        x = {"covisitation": covis, "popularity": popularity, LAST[bool(same_session)]: last,
             BUCKETS[min(6, int(2 * covis))]: 1.0, "recently_engaged": float(recent)}
        _add_signal(x, signals.get(item))
        return x

    def _features(self, item: str, numbers: list[float], signals: Mapping[str, Mapping[str, Any]]
                  ) -> dict[str, float]:
        """Click-through features: the context plus the item and the item per segment."""
        return _with_item(self._context(item, numbers, signals), item, numbers[0])

    def _update_segment(self, user: UserState, event: ClickEvent, signals) -> None:
        """Behaviour vector: decayed means of the action mix, popularity and sentiment taste."""
        profile, rate = user.profile, 0.1
        observed = {f"share_{a}": float(event.action == a) for a in ("click", "add_to_cart", "purchase")}
        observed["popular_taste"] = self._popularity.share(event.item_id, event.ts)
        sentiment = (signals.get(event.item_id) or {}).get("sentiment")
        if sentiment is not None:
            observed["sentiment_taste"] = float(sentiment)
        for name, value in observed.items():
            profile[name] = value if name not in profile else (1 - rate) * profile[name] + rate * value
        profile["activity"] = min(1.0, profile.get("activity", 0.0) + 0.02)
        user.segment = kmeans_learn_predict(self._segments, profile)

    def segment_profile(self, segment: int) -> dict[str, float]:
        """The centre of a segment: the behaviour its users share (see ``_update_segment``)."""
        centre = self._segments.centers.get(segment, {})
        return {name: round(float(value), 3) for name, value in sorted(centre.items())}

    # -- reporting -----------------------------------------------------------------------

    @property
    def events(self) -> int:
        return self._events

    @property
    def examples(self) -> int:
        return self._examples

    # -- checkpoints: plain data, never a pickle ------------------------------------------

    _PARAMS = ("k", "n_candidates", "n_segments", "label_timeout_s", "max_pending", "half_life_s",
               "learning_rate", "l2", "window", "seed")

    def to_state(self) -> dict[str, Any]:
        """Everything the model has learned as plain data (dicts, lists, numbers, strings): JSON
        writes it and :meth:`from_state` rebuilds an equal model from it, River's parts included
        (their weights, the segment centres and the random generator's state, the metric windows)."""
        return {"params": {name: getattr(self, name) for name in self._PARAMS},
                "ctr": _linear_state(self._ctr), "ranker": _linear_state(self._ranker),
                "covisitation": self._covis.to_state(), "popularity": self._popularity.to_state(),
                "segments": {"centers": [[i, list(c.items())] for i, c in self._segments.centers.items()],
                             "rng": _rng_state(self._segments._rng)},
                # The two example metrics see the same (clicked, p) pairs: one window serves both.
                "examples_window": [[args[0], args[1][True]] for args, _ in self._log_loss.window],
                "hits_window": [args[0] for args, _ in self._hit_rate.window],
                "ranks_window": [args[0] for args, _ in self._mrr.window],
                "events": self._events, "examples": self._examples}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ClickRecommender:
        """The model :meth:`to_state` described. ValueError (or KeyError, TypeError) when
        ``state`` is not such a description; only this class and River's are ever built."""
        params = state["params"]
        if not isinstance(params, dict) or set(params) != set(cls._PARAMS) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in params.values()):
            raise ValueError("click model state: bad parameters")
        model = cls(**params)
        _load_linear(model._ctr, state["ctr"])
        _load_linear(model._ranker, state["ranker"])
        model._covis.load_state(state["covisitation"])
        model._popularity.load_state(state["popularity"])
        centers = model._segments.centers
        for i, values in state["segments"]["centers"]:
            if i not in centers:
                raise ValueError(f"click model state: no segment {i!r}")
            centers[i].clear()
            centers[i].update((str(name), _float(v)) for name, v in values)
        model._segments._rng.setstate(_rng_tuple(state["segments"]["rng"]))
        for clicked, p in state["examples_window"]:
            if not isinstance(clicked, bool):
                raise ValueError("click model state: an example's label is not a boolean")
            p = _float(p)
            model._log_loss.update(clicked, {True: p, False: 1.0 - p})
            model._auc.update(clicked, {True: p, False: 1.0 - p})
        for rolling, key in ((model._hit_rate, "hits_window"), (model._mrr, "ranks_window")):
            for value in state[key]:
                rolling.update(_float(value))
        model._events, model._examples = int(state["events"]), int(state["examples"])
        return model

    def report(self) -> dict[str, float]:
        """Prequential metrics over the last ``window`` examples / evaluated clicks."""
        return {"events": float(self._events), "examples": float(self._examples),
                "log_loss": self._log_loss.get(), "auc": self._auc.get(),
                "hit_rate": self._hit_rate.get(), "mrr": self._mrr.get(),
                "items": float(len(self._covis))}


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"click model state: expected a number, got {type(value).__name__}")
    return float(value)


def _linear_state(model: linear_model.LogisticRegression) -> dict[str, Any]:
    """A River linear model's learned part (its parameters are the recommender's)."""
    return {"weights": dict(model._weights), "intercept": model.intercept,
            "iterations": model.optimizer.n_iterations}


def _load_linear(model: linear_model.LogisticRegression, state: Mapping[str, Any]) -> None:
    weights = state["weights"]
    if not isinstance(weights, dict):
        raise ValueError("click model state: weights are not a mapping")
    model._weights = utils.VectorDict({str(name): _float(w) for name, w in weights.items()})
    model.intercept = _float(state["intercept"])
    model.optimizer.n_iterations = int(state["iterations"])


def _rng_state(rng: Any) -> list[Any]:
    version, internal, gauss_next = rng.getstate()
    return [version, list(internal), gauss_next]


def _rng_tuple(state: Any) -> tuple[Any, ...]:
    version, internal, gauss_next = state
    if not (isinstance(internal, list) and len(internal) == 625 and all(type(v) is int for v in internal)):
        raise ValueError("click model state: bad random generator state")
    return int(version), tuple(internal), None if gauss_next is None else _float(gauss_next)


def kmeans_learn_predict(kmeans: cluster.KMeans, x: dict[str, float]) -> int:
    """River's ``KMeans.learn_predict_one`` (the closest centre, moved toward ``x``; the two
    calls learn_one then predict_one were 44% of a click's model time), without building a set
    of feature names per centre: once every centre holds every feature of ``x`` (River draws a
    centre's coordinate the first time a name is looked up, so after the first click with
    it), the distance is a sum over the centre's own features. Otherwise River's own path."""
    centers = kmeans.centers
    if kmeans.p != 2 or not all(x.keys() <= c.keys() for c in centers.values()):
        return int(kmeans.learn_predict_one(x))

    def distance(i: int) -> float:
        return sum((v - x.get(k, 0.0)) ** 2 for k, v in centers[i].items())

    closest = min(centers, key=distance)
    center, rate = centers[closest], kmeans.halflife
    for k, xk in x.items():
        center[k] += rate * (xk - center[k])
    return int(closest)

