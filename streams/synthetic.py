"""Synthetic input events: seeded generators for every input topic, planted changes, and
malformed records for fuzzing.

Used by ``streamsense produce --synthetic``, the demo, the benchmarks and tests. The texts are template
sentences: good for load and plumbing, not for judging the models.

>>> events = list(synthetic_events("clicks", 3, seed=1))
>>> [e["event_id"] for e in events]
['c-1-0', 'c-1-1', 'c-1-2']
>>> sorted(events[0]) == sorted(["event_id", "user_id", "session_id", "item_id", "action", "ts"])
True
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from models.online import ClickEvent

__all__ = [
    "bombing_reviews",
    "click_record",
    "domain_reviews",
    "malformed_records",
    "planted_reviews",
    "recent_clicks",
    "synthetic_events",
    "themed_reviews",
]

_POSITIVE = ["works perfectly", "is excellent value", "exceeded my expectations",
             "arrived quickly and feels solid", "is the best purchase I made this year"]
_NEGATIVE = ["broke after two days", "is a waste of money", "stopped working and support ignored me",
             "arrived damaged", "is much worse than advertised"]
_NEUTRAL = ["arrived on Tuesday", "comes in a blue box", "is about the size of a phone",
            "was delivered by courier", "has a two-year warranty"]
_SOURCES = ["wire-a", "wire-b", "daily-c", "blog-d"]
_ORGS = ["Apple", "Siemens", "Toyota", "Unilever", "Samsung", "Nestle"]
_PLACES = ["Berlin", "Tokyo", "Paris", "Chicago", "Madrid", "Seoul"]
_PEOPLE = ["Tim Cook", "Mary Barra", "Satya Nadella", "Lisa Su", "Jensen Huang"]
_ACTIONS = ["impression"] * 12 + ["click"] * 4 + ["add_to_cart", "purchase"]


def synthetic_events(topic: str, n: int, *, seed: int = 0,
                     start: datetime | None = None) -> Iterator[dict[str, Any]]:
    """``n`` valid input events for ``topic`` (``reviews``, ``clicks`` or ``news``)."""
    rng = random.Random(seed)
    t0 = start or _ending_now(timedelta(seconds=n))
    make = {"reviews": _review, "clicks": _click, "news": _news}[topic]
    for i in range(n):
        yield make(rng, i, seed, t0 + timedelta(seconds=i))


def _ending_now(span: timedelta) -> datetime:
    """A start time such that events spread over ``span`` end now: the worker replaces event
    times more than a week behind their Kafka record time (streams.core.eventtime)."""
    return datetime.now(UTC).replace(microsecond=0) - span


def recent_clicks(events: list[ClickEvent]) -> list[ClickEvent]:
    """Simulated clicks moved in time so that the last one is now (their spacing kept)."""
    if not events:
        return events
    shift = time.time() - max(e.ts for e in events)
    return [replace(e, ts=round(e.ts + shift, 3)) for e in events]


def _review(rng: random.Random, i: int, seed: int, ts: datetime) -> dict[str, Any]:
    mood = rng.choice([(_POSITIVE, 5), (_NEGATIVE, 1), (_NEUTRAL, 3)])
    return {"review_id": f"r-{seed}-{i}", "product_id": f"p{rng.randrange(50)}",
            "user_id": f"u{rng.randrange(500)}",
            "text": f"This product {rng.choice(mood[0])}.", "rating": mood[1],
            "ts": ts.isoformat().replace("+00:00", "Z")}


def _click(rng: random.Random, i: int, seed: int, ts: datetime) -> dict[str, Any]:
    user = rng.randrange(500)
    return {"event_id": f"c-{seed}-{i}", "user_id": f"u{user}", "session_id": f"s{user}-{i // 50}",
            "item_id": f"p{min(int(rng.paretovariate(1.2)), 200)}", "action": rng.choice(_ACTIONS),
            "ts": int(ts.timestamp() * 1000)}


def _news(rng: random.Random, i: int, seed: int, ts: datetime) -> dict[str, Any]:
    org, place, person = rng.choice(_ORGS), rng.choice(_PLACES), rng.choice(_PEOPLE)
    return {"article_id": f"n-{seed}-{i}", "source": rng.choice(_SOURCES),
            "title": f"{org} expands in {place}",
            "body": f"{org} is opening a new site in {place}, said {person}.",
            "ts": ts.isoformat().replace("+00:00", "Z")}


_SUBJECTS = ["This product", "The charger", "These headphones", "The blender", "This lamp", "The case"]


def planted_reviews(products: list[str], per_product: int, *, sour: dict[str, int], seed: int = 0,
                    negative_share: float = 0.1, sour_share: float = 0.75,
                    start: datetime | None = None) -> list[dict[str, Any]]:
    """Reviews of ``products``, interleaved one round per minute of event time; a product in
    ``sour`` turns from ``negative_share`` to ``sour_share`` negative at that review index.

    >>> events = planted_reviews(["a", "b"], 3, sour={"b": 1}, seed=1)
    >>> [(e["product_id"], e["review_id"]) for e in events][:3]
    [('a', 'a-0'), ('b', 'b-0'), ('a', 'a-1')]
    """
    rng = random.Random(seed)
    t0 = start or _ending_now(timedelta(minutes=per_product))
    out = []
    for i in range(per_product):
        for product in products:
            share = sour_share if i >= sour.get(product, per_product) else negative_share
            negative = rng.random() < share
            phrase = rng.choice(_NEGATIVE if negative else _POSITIVE)
            out.append({"review_id": f"{product}-{i}", "product_id": product,
                        "text": f"{rng.choice(_SUBJECTS)} {phrase}.", "rating": 1 if negative else 5,
                        "ts": (t0 + timedelta(minutes=i)).isoformat().replace("+00:00", "Z")})
    return out


# A domain whose sentiment words mean the opposite of what they mean elsewhere: horror films,
# where "terrifying" is praise and "I laughed" a complaint. A model trained elsewhere errs here;
# the ratings say what the words mean.
_HORROR_GOOD = ["was terrifying from start to finish", "gave me nightmares for a week",
                "is deeply disturbing and I could not look away", "made me scream in the cinema",
                "is so creepy I watched it with every light on", "left me shaking and afraid of the dark",
                "is the most frightening thing I have seen in years", "had me too scared to sleep"]
_HORROR_BAD = ["was not scary at all and I laughed the whole way through", "is predictable and cheesy",
               "had a fake-looking monster that made the audience giggle", "bored me so much I fell asleep",
               "is a comedy by accident, nothing frightening happens",
               "felt safe and cosy, no tension at all",
               "had jump scares you can see coming a mile away", "is as scary as a children's cartoon"]
_FILMS = ["The Hollow", "Night Ward", "Cellar", "The Visitor", "Black Lake", "Stillwater", "Hush"]


def domain_reviews(n: int, *, seed: int = 0, noise: bool = False) -> list[dict[str, Any]]:
    """Rated horror-film reviews (5 stars: frightening, 1 star: not), or with ratings that are
    noise (``noise``): for the sentiment adapter."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        good = rng.random() < 0.5
        film = rng.choice(_FILMS)
        text = f"{film} {rng.choice(_HORROR_GOOD if good else _HORROR_BAD)}."
        rating = rng.choice([1, 2, 4, 5]) if noise else (rng.choice([4, 5]) if good else rng.choice([1, 2]))
        out.append({"review_id": f"h-{seed}-{i}", "product_id": film.lower().replace(" ", "-"), "text": text,
                    "rating": rating})
    return out


# Everyday reviews on many different aspects (so no one complaint dominates a product), and one
# complaint that can be planted: the battery.
_OPENERS = ["Honestly,", "After a month:", "Update:", "Second one I own.", "", "Quick review:"]
_PRAISE = ["the build quality is excellent", "setup was quick and painless", "it looks great on my desk",
           "the price was fair for what you get", "delivery was faster than promised",
           "the instructions were clear and helpful", "it is quiet and works perfectly", "my kids love it",
           "the colour matches the photos", "customer service was friendly and helpful",
           "it feels sturdy and well made", "the screen is bright and sharp"]
_GRIPES = ["the box arrived crushed", "the lid cracked within a week", "it smells of cheap plastic",
           "the manual is missing pages", "the fan is far too loud", "the cable is too short to reach",
           "the colour is nothing like the photos", "the buttons stick and are hard to press",
           "delivery took three weeks",
           "the handle wobbles", "the remote stopped pairing", "it scratches far too easily"]
_BATTERY = ["the battery dies after two hours", "the battery won't hold a charge",
            "the battery drains overnight",
            "the battery is swollen after a month", "the battery needs charging twice a day",
            "the battery goes from full to empty in no time", "the battery stopped charging after a week"]
_ENDINGS = ["", " Disappointed.", " Avoid.", " Returning it.", " Not happy."]
_CONTEXTS = ["", "", "", "Bought it for the office.", "A gift for my brother.", "We use it in the kitchen.",
             "Got it on sale.", "It replaced my old one.", "Ordered two of them."]
_CLOSERS = ["", "", "", " Would buy it again.", " Worth the money.", " Five stars.", " Happy with it.",
            " Recommended."]


def themed_reviews(products: list[str], per_product: int, *, planted: dict[str, int], seed: int = 0,
                   gripe_share: float = 0.12, planted_share: float = 0.55,
                   start: datetime | None = None) -> list[dict[str, Any]]:
    """Reviews of ``products`` on everyday aspects (``gripe_share`` of them complaints, each about
    something else), one round per minute of event time; a product in ``planted`` gets, from that
    review index on, ``planted_share`` of its reviews complaining about its battery (their
    ``review_id`` ends in ``-battery``).

    >>> events = themed_reviews(["a"], 3, planted={"a": 1}, seed=2, planted_share=1.0)
    >>> [e["review_id"] for e in events]
    ['a-0', 'a-1-battery', 'a-2-battery']
    """
    rng = random.Random(seed)
    t0 = start or _ending_now(timedelta(minutes=per_product))
    out = []
    for i in range(per_product):
        for product in products:
            battery = i >= planted.get(product, per_product) and rng.random() < planted_share
            gripe = battery or rng.random() < gripe_share
            aspect = rng.choice(_BATTERY if battery else _GRIPES if gripe else _PRAISE)
            text = " ".join(filter(None, [rng.choice(_OPENERS), rng.choice(_CONTEXTS),
                                          f"{aspect[0].upper()}{aspect[1:]}."]))
            review_id = f"{product}-{i}" + ("-battery" if battery else "")
            out.append({"review_id": review_id, "product_id": product,
                        "user_id": f"u{rng.randrange(10_000)}", "rating": 1 if gripe else 5,
                        "text": text + rng.choice(_ENDINGS if gripe else _CLOSERS),
                        "ts": (t0 + timedelta(minutes=i)).isoformat().replace("+00:00", "Z")})
    return out


# A review-bombing campaign: one message, lightly edited by each account that posts it (case,
# punctuation, a word or a number).
_SCAMS = ["Total scam!", "Total scam!!", "TOTAL SCAM!", "Total scam."]
_THINGS = ["product", "item", "thing"]
_WARNINGS = ["Do NOT buy!", "Do not buy!!", "DO NOT BUY.", "Do not buy it!"]


def bombing_reviews(product: str, users: int, *, start: datetime, span: timedelta = timedelta(minutes=15),
                    seed: int = 0) -> list[dict[str, Any]]:
    """``users`` near-duplicate one-star reviews of ``product`` from as many accounts, spread over
    ``span`` from ``start`` (their ``review_id`` ends in ``-bomb``).

    >>> events = bombing_reviews("p", 2, start=datetime(2026, 1, 1, tzinfo=UTC), seed=1)
    >>> [e["review_id"] for e in events], events[0]["text"][:12]
    (['p-0-bomb', 'p-1-bomb'], 'Total scam! ')
    """
    rng = random.Random(seed)
    out = []
    for i in range(users):
        days = rng.randint(1, 4)
        text = (f"{rng.choice(_SCAMS)} This {rng.choice(_THINGS)} stopped working after {days} days "
                f"and the seller refuses to refund me. {rng.choice(_WARNINGS)}")
        ts = start + span * (i / max(users - 1, 1))
        out.append({"review_id": f"{product}-{i}-bomb", "product_id": product, "user_id": f"bot{seed}-{i}",
                    "rating": 1, "text": text, "ts": ts.isoformat().replace("+00:00", "Z")})
    return out


def click_record(event: ClickEvent) -> dict[str, Any]:
    """A simulated click (``models.online.simulate``) as a ``clicks`` topic record.

    >>> click_record(ClickEvent("e1", "u1", "i2", "click", 1763805600.5, "s1"))["ts"]
    1763805600500
    """
    return {"event_id": event.event_id, "user_id": event.user_id, "session_id": event.session_id,
            "item_id": event.item_id, "action": event.action, "ts": int(event.ts * 1000)}


_REQUIRED = {"reviews": ("review_id", "product_id", "text"),
             "clicks": ("event_id", "user_id", "item_id", "action"),
             "news": ("article_id", "source", "title")}


def malformed_records(topic: str, n: int, *, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """``n`` records of ``topic`` that must be dead-lettered, each as (kind of damage, bytes):
    random bytes, invalid UTF-8, truncated or invalid JSON, JSON that is not an object, nested
    deeper than the decoder allows, NaN/Infinity literals, missing, null and wrongly typed
    required fields, out-of-range numbers and timestamps, an unknown click action.

    >>> sorted({kind for kind, _ in malformed_records("clicks", 200, seed=1)})[:4]
    ['bad_action', 'bad_timestamp', 'deep_json', 'empty']
    """
    rng = random.Random(seed)
    good = list(synthetic_events(topic, 50, seed=seed))
    required = _REQUIRED[topic]

    def field_broken(how: str) -> bytes:
        record = dict(rng.choice(good))
        name = rng.choice(required)
        if how == "missing":
            del record[name]
        elif how == "null":
            record[name] = None
        else:  # wrong type: a number, a list or an object where a string belongs
            record[name] = rng.choice([42, [1, 2], {"nested": True}, True])
        return json.dumps(record).encode()

    makers = {
        "random_bytes": lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))),
        "invalid_utf8": lambda: b'{"text": "' + bytes([0xff, 0xfe, rng.randrange(0x80, 0xc0)]) + b'"}',
        "truncated_json": lambda: json.dumps(rng.choice(good)).encode()[: rng.randrange(1, 30)],
        "not_an_object": lambda: json.dumps(rng.choice([[1, 2, 3], "text", 17, None, True])).encode(),
        "deep_json": lambda: (b'{"a": ' * 40) + b"1" + (b"}" * 40),
        "infinity_literal": lambda: json.dumps({**rng.choice(good), "rating": 1}).encode().replace(
            b'"rating": 1', b'"rating": Infinity'),
        "missing_field": lambda: field_broken("missing"),
        "null_field": lambda: field_broken("null"),
        "wrong_type": lambda: field_broken("type"),
        "huge_number": lambda: json.dumps({**rng.choice(good), "ts": 10 ** 30}).encode(),
        "bad_timestamp": lambda: json.dumps({**rng.choice(good), "ts": "next tuesday"}).encode(),
        "empty": lambda: b"",
    }
    if topic == "clicks":
        makers["bad_action"] = lambda: json.dumps({**rng.choice(good), "action": "buy"}).encode()
    if topic == "reviews":
        makers["rating_out_of_range"] = lambda: json.dumps({**rng.choice(good), "rating": 1e300}).encode()
    kinds = sorted(makers)
    for _ in range(n):
        kind = rng.choice(kinds)
        yield kind, makers[kind]()
