"""Windowed sentiment aggregates on the real stack: the sentiment.stats records of a replayed
stream equal the counts computed independently from reviews.enriched, late records included."""

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


def _stream() -> tuple[list[dict], dict[str, int]]:
    """Three products, a review every 10 s each; every 7th review is 25 s older than the latest
    before it (late, but inside the grace period); the reviews of p-a name a shop. Returns the
    reviews and the late count per (product, minute)."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=15)
    reviews, latest, late = [], {}, Counter()
    for r in themed_reviews(["p-a", "p-b", "p-c"], 60, planted={}, seed=4, start=start):
        i = int(r["review_id"].rsplit("-", 1)[1])
        ts = start + timedelta(seconds=10 * i)
        if i % 7 == 6:
            ts = latest[r["product_id"]] - timedelta(seconds=25)
            late[r["product_id"], math.floor(ts.timestamp() / 60) * 60] += 1
        latest[r["product_id"]] = max(latest.get(r["product_id"], ts), ts)
        text = r["text"] + (" I ordered it from Amazon in Seattle." if r["product_id"] == "p-a" else "")
        reviews.append({**r, "text": text, "ts": ts.isoformat().replace("+00:00", "Z")})
    return reviews, late


def test_sentiment_stats_equal_counts_computed_from_the_enriched_reviews(
        kafka: Settings, triton: Settings, stack_environment: dict[str, str], tmp_path: Path):
    prefix = "tw1."
    env = {**stack_environment, "STREAMSENSE_TOPIC_PREFIX": prefix, "STREAMSENSE_STATS_GRACE_S": str(GRACE_S)}
    settings = kafka.model_copy(update={"topic_prefix": prefix})
    reviews, late = _stream()
    out, worker = replay_reviews(settings, env, reviews, log_dir=tmp_path, read=("reviews.enriched", "sentiment.stats"))
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
    assert sum(late[k] for k in closed) > 5  # the late records were there to count
    assert all(len(s["themes"]) <= 3 for s in stats)
    _check_entities(enriched, stats)


def _check_entities(enriched: list[dict], stats: list[dict]) -> None:
    """Per entity and minute, counted independently from the enriched reviews (which name an
    entity once per text, at score >= 0.6) in the order of p-a's partition, the only one whose
    texts name any: a mention behind its entity's newest time is late, one for a minute already
    closed is not counted."""
    expected: dict[tuple[str, float], Counter] = defaultdict(Counter)
    late, newest = Counter(), {}
    for r in (r for r in enriched if r["product_id"] == "p-a"):
        ts = datetime.fromisoformat(r["ts"]).timestamp()
        for key in {entity_key(e["text"]) for e in r["entities"] if e["score"] >= MIN_ENTITY_SCORE}:
            if len(key) < 2 or key.replace(" ", "").isdigit():
                continue
            minute, seen = math.floor(ts / 60) * 60, newest.get(key)
            if seen is not None and minute + 60 + GRACE_S <= seen:
                continue  # its minute had closed
            expected[key, minute][r["sentiment"]["label"]] += 1
            late[key, minute] += seen is not None and ts < seen
            newest[key] = ts if seen is None else max(seen, ts)
    closed = {k for k in expected if k[1] + 60 + GRACE_S <= newest[k[0]]}
    minutes = {(entity_key(s["subject"]["id"]), datetime.fromisoformat(s["window"]["start"]).timestamp()): s
               for s in stats if s["window"]["size"] == "1m" and s["subject"]["type"] == "entity"}
    assert len({key for key, _ in closed}) >= 1, sorted(expected)  # the shop was found in the texts
    assert set(minutes) == closed, sorted(set(minutes) ^ closed)
    for key in closed:
        record, labels = minutes[key], expected[key]
        assert {k: v for k, v in record["labels"].items() if v} == dict(labels), (key, record)
        assert record["late"] == late[key], (key, record)
