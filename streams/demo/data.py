"""The demo's stream: real texts from packages, simulated shoppers, and four planted changes.

* **reviews**: tweets about six games (``models.bert.tweets``: the packaged entity-level
  tweets), each game a product. Every product's texts are drawn with a fixed label mix (15%
  negative), so its sentiment is stationary, except the sour product: from 60% of its reviews on,
  70% of its texts are negative ones, and 60% of those are its tweets about the game's delay
  (held back until then: a planted theme its alert should name).
* **news**: tweets that name one of six companies, as headlines from four sources with a fixed
  label mix. The planted change: from 60% of its articles on, 80% of one source's (``techdaily``)
  are negative pieces naming one company (Nvidia): that source turns negative, and the
  company's entity gets both more mentions and a more negative tone.
* **clicks**: shoppers from ``models.online.simulate``; from 60% of the clicks on, they click a
  fifth as often as before (``shift="fewer_clicks"``: a broken page, a redesign).
* **review bombing**: three quarters of the way in, 30 accounts post near-duplicate one-star
  reviews of one stable product (``fifa``) within 15 minutes (``streams.synthetic``).

Every input event is stamped in event time: reviews one round (a review of every product) per
minute from ``start``, articles one round (an article of every source) spaced so that the last
round of each comes at the same time; clicks as simulated from ``start``. A change's position
is given in its subject's own sequence (the sour product's reviews, the source's articles, all
clicks) and in event time, so the summary can say how many events after the change an alert
came.
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from models.bert.tweets import EntityTweet, entity_tweets
from models.online import ClickEvent, simulate_clicks
from streams.synthetic import bombing_reviews

__all__ = ["MIX", "PRODUCTS", "SOURCES", "DemoStream", "PlantedChange", "build_stream"]

# product id -> the tweets' entity column
PRODUCTS = {"borderlands": "Borderlands", "cyberpunk-2077": "Cyberpunk2077", "fifa": "FIFA",
            "overwatch": "Overwatch", "nba-2k": "NBA2K", "fortnite": "Fortnite"}
SOUR_PRODUCT = "cyberpunk-2077"
BOMBED_PRODUCT = "fifa"  # a stable product that a review-bombing campaign targets
COMPANIES = ("Microsoft", "Google", "Amazon", "Nvidia", "Facebook", "Verizon")
SOURCES = ("newswire", "techdaily", "marketbeat", "gamerhub")
SOUR_SOURCE, SOUR_COMPANY = "techdaily", "Nvidia"
CHANGE_AT = 0.6  # share of a sequence before its planted change

_STABLE_MIX = {"negative": 0.15, "neutral": 0.30, "positive": 0.55}
_SOUR_MIX = {"negative": 0.70, "neutral": 0.15, "positive": 0.15}
_NEWS_MIX = {"negative": 0.25, "neutral": 0.45, "positive": 0.30}
_SOUR_THEME = re.compile(r"\bdelay\w*", re.IGNORECASE)
_THEME_SHARE = 0.6  # of the sour product's negative reviews after its change: about the delay
_SOUR_SOURCE_SHARE = 0.8  # of the source's articles after its change: negative, naming the company
_RATINGS = {"negative": (1, 2), "neutral": (3,), "positive": (4, 5)}
MIX = {"clicks": 0.7, "reviews": 0.2, "news": 0.1}  # share of the stream per topic


@dataclass(frozen=True, slots=True)
class PlantedChange:
    kind: str  # "product", "source", "clicks", "bombing"
    subject: str  # product id, news source or "clicks"
    index: int  # position of the first changed event in the subject's own sequence
    total: int  # length of that sequence
    at: datetime  # event time of the first changed event
    description: str
    # what an alert caused by this change is about: (subject type, id pattern), e.g. the
    # company's entity for the source's change
    subjects: tuple[tuple[str, str], ...]
    # the kinds of alert that count as catching it (empty: any alert on its subjects)
    alert_kinds: tuple[str, ...] = ()
    theme: str | None = None  # a word the changed texts are mostly about, when one was planted


@dataclass(frozen=True)
class DemoStream:
    run: str
    start: datetime
    reviews: list[dict[str, Any]]
    news: list[dict[str, Any]]
    clicks: list[ClickEvent]
    changes: list[PlantedChange]

    @property
    def end(self) -> datetime:
        """The event time of the stream's last event."""
        texts = [datetime.fromisoformat(r["ts"]) for r in (*self.reviews[-1:], *self.news[-1:])]
        clicks = [datetime.fromtimestamp(max(e.ts for e in self.clicks), UTC)] if self.clicks else []
        return max([self.start, *texts, *clicks])

    @property
    def engagements(self) -> list[ClickEvent]:
        return [e for e in self.clicks if e.action != "impression"]

    def change(self, kind: str) -> PlantedChange | None:
        return next((c for c in self.changes if c.kind == kind), None)


def build_stream(events: int, *, seed: int = 7, start: datetime | None = None,
                 tweets: list[EntityTweet] | None = None, partitions: int = 4,
                 warmup: int = 50) -> DemoStream:
    """About ``events`` input events (70% clicks, 20% reviews, 10% news) with the planted changes.

    A change is planted only where its detectors can see it: at least ``warmup`` + 10 events of
    the subject before it (the detectors' warm-up), and for clicks a baseline of the click-through
    rate in each of the ``partitions`` partitions (about 1,200 impressions each: its monitor starts
    after 500 and ADWIN wants 200 more).
    """
    tweets = tweets if tweets is not None else entity_tweets()
    if start is None:
        # Event times end now: the worker replaces times far from the Kafka record time (its
        # sanity window, streams.core.eventtime), and the shoppers' sessions span days.
        now = datetime.now(UTC).replace(microsecond=0)
        draft = build_stream(events, seed=seed, start=now, tweets=tweets, partitions=partitions,
                             warmup=warmup)
        start = now - (draft.end - now)
    rng = random.Random(seed)
    run = start.strftime("%H%M%S")
    n_reviews, n_news, n_clicks = (max(len(PRODUCTS), round(events * MIX["reviews"])),
                                   max(len(SOURCES), round(events * MIX["news"])),
                                   max(1, round(events * MIX["clicks"])))
    reviews, review_change = _reviews(rng, tweets, n_reviews // len(PRODUCTS), run, start, warmup + 10)
    # Articles are spread over the same stretch of event time as the reviews: both inputs' clocks
    # advance together through the replay, as live inputs' would.
    per_product, per_source = n_reviews // len(PRODUCTS), n_news // len(SOURCES)
    news, news_change = _news(rng, tweets, per_source, run, start, warmup + 10,
                              step=timedelta(minutes=per_product / per_source))
    clicks, clicks_change = _clicks(n_clicks, seed, run, start, 1400 * partitions)
    reviews, bombing = _bombing(reviews, run, start, per_product, seed=seed)
    changes = [c for c in (review_change, news_change, clicks_change, bombing) if c is not None]
    return DemoStream(run, start, reviews, news, clicks, changes)


def _stamp(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _pools(tweets: list[EntityTweet], keep) -> dict[tuple[str, str], list[str]]:
    pools: dict[tuple[str, str], list[str]] = defaultdict(list)
    seen = set()
    for t in tweets:
        key = keep(t)
        if key is not None and (key, t.label, t.text) not in seen:
            seen.add((key, t.label, t.text))
            pools[key, t.label].append(t.text)
    return pools


def _draw(rng: random.Random, mix: dict[str, float]) -> str:
    return rng.choices(list(mix), weights=list(mix.values()))[0]


def _reviews(rng: random.Random, tweets: list[EntityTweet], per_product: int, run: str, start: datetime,
             min_before: int) -> tuple[list[dict[str, Any]], PlantedChange | None]:
    entity_to_product = {entity: product for product, entity in PRODUCTS.items()}
    pools = _pools(tweets, lambda t: entity_to_product.get(t.entity))
    # The planted theme: the sour product's negative tweets about its delay are held back until
    # the change, then make up most of its negative reviews.
    themed = [t for t in pools[SOUR_PRODUCT, "negative"] if _SOUR_THEME.search(t)]
    if len(themed) >= 20:
        pools[SOUR_PRODUCT, "negative"] = [t for t in pools[SOUR_PRODUCT, "negative"] if t not in set(themed)]
    else:
        themed = []
    change_at = int(per_product * CHANGE_AT)
    if change_at < min_before:
        change_at = per_product  # too short to see a change: none planted
    out = []
    for i in range(per_product):
        ts = _stamp(start + timedelta(minutes=i))
        for product in PRODUCTS:
            sour = product == SOUR_PRODUCT and i >= change_at
            label = _draw(rng, _SOUR_MIX if sour else _STABLE_MIX)
            pool = themed if sour and label == "negative" and themed and rng.random() < _THEME_SHARE \
                else pools[product, label]
            out.append({"review_id": f"{run}-{product}-{i}", "product_id": product,
                        "user_id": f"u{rng.randrange(300)}", "text": rng.choice(pool),
                        "rating": rng.choice(_RATINGS[label]), "ts": ts})
    if not 0 < change_at < per_product:
        return out, None
    name = PRODUCTS[SOUR_PRODUCT]
    return out, PlantedChange(
        "product", SOUR_PRODUCT, change_at, per_product, start + timedelta(minutes=change_at),
        f"reviews of {SOUR_PRODUCT} turn sour ({_STABLE_MIX['negative']:.0%} -> {_SOUR_MIX['negative']:.0%} "
        "negative)" + (f", {_THEME_SHARE:.0%} of the negative ones about its delay" if themed else ""),
        (("product", re.escape(SOUR_PRODUCT)), ("entity", _alias(name))), theme="delay" if themed else None)


def _bombing(reviews: list[dict[str, Any]], run: str, start: datetime, per_product: int, *, seed: int
             ) -> tuple[list[dict[str, Any]], PlantedChange | None]:
    """A review-bombing campaign on one stable product, three quarters of the way in: 30
    accounts post near-duplicate one-star reviews within 15 minutes of event time."""
    if per_product < 120:  # a short stream: no room for it after the detectors' warm-up
        return reviews, None
    at = start + timedelta(minutes=int(per_product * 0.75))
    campaign = [{**r, "review_id": f"{run}-{BOMBED_PRODUCT}-bomb-{i}"}
                for i, r in enumerate(bombing_reviews(BOMBED_PRODUCT, 30, start=at, seed=seed))]
    for r in campaign:
        r["ts"] = _stamp(datetime.fromisoformat(r["ts"]))
    merged = sorted([*reviews, *campaign], key=lambda r: r["ts"])  # stable: each round keeps its order
    return merged, PlantedChange(
        "bombing", BOMBED_PRODUCT, 0, len(campaign), at,
        f"30 accounts post near-duplicate 1-star reviews of {BOMBED_PRODUCT} within 15 minutes",
        (("product", re.escape(BOMBED_PRODUCT)),), alert_kinds=("coordinated_reviews",))


def _alias(entity: str) -> str:
    """A pattern for the entity keys the tagger may find for a dataset entity
    (``Cyberpunk2077`` -> "cyberpunk", "cyberpunk 2077", "@cyberpunkgame" ...)."""
    word = re.match(r"[A-Z]?[a-z]+|[A-Z]+", entity).group(0).casefold()
    return rf".*{re.escape(word)}.*"


def _news(rng: random.Random, tweets: list[EntityTweet], per_source: int, run: str, start: datetime,
          min_before: int, *, step: timedelta = timedelta(minutes=1)
          ) -> tuple[list[dict[str, Any]], PlantedChange | None]:
    # Tweets about a company that name it, as headlines.
    pools = _pools(tweets, lambda t: t.entity if t.entity in COMPANIES and
                   re.search(rf"\b{t.entity}\b", t.text, re.IGNORECASE) else None)
    change_at = int(per_source * CHANGE_AT)
    if change_at < min_before:
        change_at = per_source
    out = []
    for i in range(per_source):
        ts = _stamp(start + i * step)
        for source in SOURCES:
            if source == SOUR_SOURCE and i >= change_at and rng.random() < _SOUR_SOURCE_SHARE:
                company, label = SOUR_COMPANY, "negative"
            else:
                company, label = rng.choice(COMPANIES), _draw(rng, _NEWS_MIX)
            out.append({"article_id": f"{run}-{source}-{i}", "source": source,
                        "title": rng.choice(pools[company, label]), "ts": ts})
    if not 0 < change_at < per_source:
        return out, None
    return out, PlantedChange(
        "source", SOUR_SOURCE, change_at, per_source, start + change_at * step,
        f"{SOUR_SOURCE} turns negative about {SOUR_COMPANY}",
        (("source", re.escape(SOUR_SOURCE)), ("entity", _alias(SOUR_COMPANY))))


def _clicks(n: int, seed: int, run: str, start: datetime, min_before: int
            ) -> tuple[list[ClickEvent], PlantedChange | None]:
    world = dict(users=300, items=150, genres=6, sessions=max(10, math.ceil(n / 15)), seed=seed,
                 start_ts=start.timestamp())
    # The simulation is identical up to the change: find the session where 60% of the clicks are
    # reached, then simulate again with the change there.
    counts = defaultdict(int)
    for e in simulate_clicks(**world).events[:n]:
        counts[e.session_id] += 1
    sessions, seen = list(counts), 0
    shift_at = None
    for s, session in enumerate(sessions):
        seen += counts[session]
        if seen >= n * CHANGE_AT:
            shift_at = s + 1 if seen >= min_before else None
            break
    data = simulate_clicks(**world, shift_at=shift_at, shift="fewer_clicks")
    events = [replace(e, event_id=f"{run}-{e.event_id}") for e in data.events[:n]]
    if data.shift_index is None or data.shift_index >= len(events):
        return events, None
    first = events[data.shift_index]
    return events, PlantedChange(
        "clicks", "clicks", data.shift_index, len(events), datetime.fromtimestamp(first.ts, UTC),
        "shoppers click a fifth as often", (("stream", r"clicks:p\d+:click_through"),
                                            ("model", r"click-through:.*")))
