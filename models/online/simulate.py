"""A click-stream simulator with known user preferences, for evaluating recommenders.

Why a simulator: River's click/ratings datasets (``MovieLens100K``) are downloaded at run time,
not shipped in the wheel, and no PyPI or npm package we can reach bundles a click or ratings log
(checked: river 0.26 ships only the CSVs of its small tabular datasets).

The world, all seeded:

* ``items`` items in ``genres`` genres; within a genre, popularity falls off like a Zipf law.
  Each item has a quality in (0, 1); its review sentiment (what ``reviews.enriched`` would say,
  ``item_signals``) is ``2 * quality - 1`` plus noise.
* Each item has three complements in its genre (accessories, sequels): after engaging with an
  item, users often look at its complements next. This is the sequential structure that
  co-visitation can learn.
* Each user has a taste over genres (Dirichlet, concentrated on one or two) and a propensity to
  buy.
* A session: one user, a theme genre drawn from their taste, a handful of steps. At each step
  the site shows impressions (overall best-sellers, popular items of the theme, complements of
  the last item engaged, one random item); the user clicks at most one, with probability
  growing with taste for its genre, its quality and whether it complements the last item; a
  click may lead to add-to-cart and purchase.
* Optionally a planted change from session ``shift_at`` on, of one of two kinds (``shift``):
  ``"reverse_quality"``: every item's quality is reversed (``q -> 1 - q``), what shoppers
  clicked they now pass over and the other way round (a recommender's accuracy drops; an online
  click-through model, which keeps learning per item, adapts within a few hundred events);
  ``"fewer_clicks"``: shoppers click a fifth as often as before (a broken page, a redesign),
  which the click-through rate shows.

>>> data = simulate_clicks(users=50, items=40, sessions=20, seed=3)
>>> len(data.events) > 100, data.events[0].action
(True, 'impression')
>>> sorted({e.action for e in data.events})
['add_to_cart', 'click', 'impression', 'purchase']
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from models.online.recommender import ClickEvent

__all__ = ["SimulatedClicks", "simulate_clicks"]


@dataclass(frozen=True, slots=True)
class SimulatedClicks:
    events: list[ClickEvent]
    item_signals: dict[str, dict[str, Any]]  # item -> {"sentiment": mean review sentiment}
    genre: dict[str, int]
    taste: dict[str, list[float]]  # user -> preference over genres (the ground truth)
    shift_index: int | None = None  # index in ``events`` of the first event after the planted change


def simulate_clicks(*, users: int = 2000, items: int = 400, genres: int = 8, sessions: int = 6000,
                    seed: int = 0, start_ts: float = 1_763_805_600.0,
                    shift_at: int | None = None,
                    shift: Literal["reverse_quality", "fewer_clicks"] = "reverse_quality") -> SimulatedClicks:
    if shift not in ("reverse_quality", "fewer_clicks"):
        raise ValueError(f"shift must be 'reverse_quality' or 'fewer_clicks', not {shift!r}")
    rng = random.Random(seed)
    item_ids = [f"i{n}" for n in range(items)]
    genre = {item: n % genres for n, item in enumerate(item_ids)}
    quality = {item: rng.betavariate(2, 2) for item in item_ids}
    by_genre: dict[int, list[str]] = {g: [i for i in item_ids if genre[i] == g] for g in range(genres)}
    weight = {}
    for members in by_genre.values():
        rng.shuffle(members)
        for rank, item in enumerate(members):
            weight[item] = 1.0 / (rank + 1) ** 0.9
    complements = {item: rng.sample([i for i in by_genre[genre[item]] if i != item],
                                    min(3, len(by_genre[genre[item]]) - 1)) for item in item_ids}
    best_sellers = sorted(item_ids, key=lambda i: -weight[i] * quality[i])[:20]
    signals = {item: {"sentiment": max(-1.0, min(1.0, 2 * quality[item] - 1 + rng.gauss(0, 0.15)))}
               for item in item_ids}

    user_ids = [f"u{n}" for n in range(users)]
    taste = {u: _dirichlet(rng, genres, 0.3) for u in user_ids}
    buyer = {u: rng.betavariate(2, 4) for u in user_ids}

    events: list[ClickEvent] = []
    ts = start_ts
    counter = 0
    shift_index = None
    click_factor = 1.0

    def emit(user: str, item: str, action: str, session: str) -> None:
        nonlocal counter
        events.append(ClickEvent(f"e{seed}-{counter}", user, item, action, round(ts, 3), session))
        counter += 1

    for s in range(sessions):
        if s == shift_at:
            if shift == "reverse_quality":
                quality = {item: 1.0 - q for item, q in quality.items()}
            else:
                click_factor = 1 / 5
            shift_index = len(events)
        user = rng.choice(user_ids)
        session = f"s{seed}-{s}"
        theme = rng.choices(range(genres), weights=taste[user])[0]
        last: str | None = None
        for _ in range(1 + int(rng.expovariate(1 / 4))):
            shown = set(rng.sample(best_sellers, 2))
            shown.update(rng.choices(by_genre[theme], weights=[weight[i] for i in by_genre[theme]], k=2))
            if last is not None:
                shown.update(complements[last][:2])
            shown.add(rng.choice(item_ids))
            shown_items = sorted(shown)
            for item in shown_items:
                emit(user, item, "impression", session)
            follows = set(complements[last]) if last else set()
            appeal = [taste[user][genre[i]] * (0.2 + quality[i]) * (3.0 if i in follows else 1.0)
                      for i in shown_items]
            choice = rng.choices(shown_items, weights=appeal)[0]
            ts += rng.uniform(5, 30)
            if rng.random() < click_factor * min(0.9, 0.15 + 1.2 * appeal[shown_items.index(choice)]):
                emit(user, choice, "click", session)
                last = choice
                if rng.random() < buyer[user] * quality[choice]:
                    ts += rng.uniform(5, 30)
                    emit(user, choice, "add_to_cart", session)
                    if rng.random() < 0.6:
                        emit(user, choice, "purchase", session)
            ts += rng.uniform(5, 60)
        ts += rng.uniform(0, 20)
    return SimulatedClicks(events=events, item_signals=signals, genre=genre, taste=taste,
                           shift_index=shift_index)


def _dirichlet(rng: random.Random, n: int, alpha: float) -> list[float]:
    draws = [rng.gammavariate(alpha, 1.0) for _ in range(n)]
    total = sum(draws) or 1.0
    return [d / total for d in draws]
