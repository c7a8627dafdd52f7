"""Windowed sentiment aggregates on the real stack: the sentiment.stats records of a replayed
stream equal the counts computed independently from reviews.enriched, late records included."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streams.settings import Settings
from streams.testing import themed_reviews
from streams.testing.stack import replay_reviews

pytestmark = pytest.mark.integration
GRACE_S = 60


def _stream() -> tuple[list[dict], dict[str, int]]:
    """Three products, a review every 10 s each; every 7th review is 25 s older than the latest
    before it (late, but inside the grace period). Returns the reviews and the late count per
    (product, minute)."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=15)
    reviews, latest, late = [], {}, Counter()
    for r in themed_reviews(["p-a", "p-b", "p-c"], 60, planted={}, seed=4, start=start):
        i = int(r["review_id"].rsplit("-", 1)[1])
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
               for s in stats if s["window"]["size"] == "1m"}
    assert set(minutes) == closed, (sorted(set(minutes) ^ closed), worker.tail())
    for key in closed:
        record, labels = minutes[key], expected[key]
        assert record["count"] == sum(labels.values()), (key, record)
        assert {k: v for k, v in record["labels"].items() if v} == dict(labels), (key, record)
        assert record["late"] == late[key], (key, record)
        assert record["subject"]["type"] == "product"
    assert sum(late[k] for k in closed) > 5  # the late records were there to count
    assert all(len(s["themes"]) <= 3 for s in stats)
