"""Windowed sentiment aggregates on the real stack: the sentiment.stats records of a replayed
stream equal the counts computed independently from reviews.enriched, late records included,
per product and per entity named in the reviews."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streams.core.mentions import entity_key
from streams.records import MIN_ENTITY_SCORE
from streams.settings import Settings
from streams.testing import themed_reviews
from streams.testing.stack import replay_reviews

pytestmark = pytest.mark.integration
GRACE_S = 60
BRANDS = {"p-a": "Better than the Samsung I had before.", "p-b": "I also bought a Sony speaker at Walmart."}


def _stream() -> tuple[list[dict], dict[str, int]]:
    """Three products, a review every 10 s each; every 7th review is 25 s older than the latest
    before it (late, but inside the grace period). Returns the reviews and the late count per
    (product, minute)."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=15)
    reviews, latest, late = [], {}, Counter()
    for r in themed_reviews(["p-a", "p-b", "p-c"], 60, planted={}, seed=4, start=start):
        i = int(r["review_id"].rsplit("-", 1)[1])
        if i % 2 and r["product_id"] in BRANDS:  # entities, each named in one product's reviews
            r = {**r, "text": f"{r['text']} {BRANDS[r['product_id']]}"}
        ts = start + timedelta(seconds=10 * i)
        if i % 7 == 6:
            ts = latest[r["product_id"]] - timedelta(seconds=25)
            late[r["product_id"], math.floor(ts.timestamp() / 60) * 60] += 1
        latest[r["product_id"]] = max(latest.get(r["product_id"], ts), ts)
        reviews.append({**r, "ts": ts.isoformat().replace("+00:00", "Z")})
    return reviews, late


def test_sentiment_stats_equal_counts_computed_from_the_enriched_reviews(
        kafka: Settings, triton: Settings, stack_environment: dict[str, str], tmp_path: Path):
    prefix = "tw1."
    env = {**stack_environment, "STREAMSENSE_TOPIC_PREFIX": prefix, "STREAMSENSE_STATS_GRACE_S": str(GRACE_S)}
    settings = kafka.model_copy(update={"topic_prefix": prefix})
    reviews, late = _stream()
    out, worker = replay_reviews(settings, env, reviews, log_dir=tmp_path, read=("reviews.enriched", "sentiment.stats"),
                                 until=lambda out: _entity_minutes(out["sentiment.stats"]).keys()
                                 >= _entity_expected(out["reviews.enriched"]).keys())
    enriched, stats = out["reviews.enriched"], out["sentiment.stats"]
    # Independently: per product and minute, from the enriched records.
    expected: dict[tuple[str, float], Counter] = defaultdict(Counter)
    newest: dict[str, float] = {}
    for r in enriched:
        ts = datetime.fromisoformat(r["ts"]).timestamp()
        expected[r["product_id"], math.floor(ts / 60) * 60][r["sentiment"]["label"]] += 1
        newest[r["product_id"]] = max(newest.get(r["product_id"], ts), ts)
    closed = {k for k in expected if k[1] + 60 + GRACE_S <= newest[k[0]]}
    minutes = {(s["subject"]["id"], datetime.fromisoformat(s["window"]["start"]).timestamp()): s
               for s in stats if s["window"]["size"] == "1m" and s["subject"]["type"] == "product"}
    assert set(minutes) == closed, (sorted(set(minutes) ^ closed), worker.tail())
    for key in closed:
        record, labels = minutes[key], expected[key]
        assert record["count"] == sum(labels.values()), (key, record)
        assert {k: v for k, v in record["labels"].items() if v} == dict(labels), (key, record)
        assert record["late"] == late[key], (key, record)
        assert record["subject"]["type"] == "product"
    assert sum(late[k] for k in closed) > 5  # the late records were there to count
    assert all(len(s["themes"]) <= 3 for s in stats)

    # Entities: each brand is named in one product's reviews, so its mentions come in that
    # product's order; counted with the model's own label (no ratings here: it is the served one).
    entity_expected, entity_minutes = _entity_expected(enriched), _entity_minutes(stats)
    assert entity_minutes.keys() == entity_expected.keys() and len(entity_expected) >= 10, \
        (sorted(entity_minutes.keys() ^ entity_expected.keys()), worker.tail())
    for key, (labels, late_count) in entity_expected.items():
        record = entity_minutes[key]
        assert {k: v for k, v in record["labels"].items() if v} == dict(labels), (key, record)
        assert record["late"] == late_count, (key, record)


def _entity_expected(enriched: list[dict]) -> dict[tuple[str, float], tuple[Counter, int]]:
    """(entity key, minute) -> label counts and late count, for the closed minutes of entities
    named in one product's reviews, from the enriched records in their order."""
    seen: dict[str, list[tuple[float, str]]] = defaultdict(list)
    products: dict[str, set[str]] = defaultdict(set)
    for r in enriched:
        assert r["sentiment"]["source"] == "base"
        keys = {entity_key(e["text"]) for e in r["entities"] if e["score"] >= MIN_ENTITY_SCORE}
        for key in keys - {k for k in keys if len(k) < 2 or k.replace(" ", "").isdigit()}:
            seen[key].append((datetime.fromisoformat(r["ts"]).timestamp(), r["sentiment"]["label"]))
            products[key].add(r["product_id"])
    out: dict[tuple[str, float], tuple[Counter, int]] = {}
    for key, texts in seen.items():
        if len(products[key]) != 1:
            continue
        newest, running = max(t for t, _ in texts), None
        for ts, label in texts:
            minute = math.floor(ts / 60) * 60
            if minute + 60 + GRACE_S <= newest:
                labels, late_count = out.get((key, minute), (Counter(), 0))
                labels[label] += 1
                out[key, minute] = (labels, late_count + (running is not None and ts < running))
            running = ts if running is None else max(running, ts)
    return out


def _entity_minutes(stats: list[dict]) -> dict[tuple[str, float], dict]:
    return {(entity_key(s["subject"]["id"]), datetime.fromisoformat(s["window"]["start"]).timestamp()): s
            for s in stats if s["window"]["size"] == "1m" and s["subject"]["type"] == "entity"}
