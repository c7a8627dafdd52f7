"""Alerts that say why, on the real stack: a product whose reviews turn negative because of one
planted complaint gets a sentiment alert naming that complaint, with planted texts as quotes;
a review-bombing campaign gets its own alert and its reviews are flagged."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from streams.settings import Settings
from streams.testing import bombing_reviews, themed_reviews
from streams.testing.stack import replay_reviews

pytestmark = pytest.mark.integration


def test_a_planted_complaint_is_named_and_quoted_by_its_sentiment_alert(
        kafka: Settings, triton: Settings, stack_environment: dict[str, str], tmp_path: Path):
    products = ["p-sour", *(f"p-stable-{k}" for k in range(5))]
    reviews = themed_reviews(products, 220, planted={"p-sour": 110}, seed=3)
    out, worker = replay_reviews(*_topics("tx1.", kafka, stack_environment), reviews, log_dir=tmp_path)
    records = out["alerts"]
    shifts = [a for a in records if a["kind"] == "sentiment_shift" and a["status"] != "recovered"]
    assert {a["subject"]["id"] for a in shifts} == {"p-sour"}, (shifts, worker.tail())
    alert = shifts[0]
    explanation = alert["explanation"]
    assert explanation is not None, alert
    top = explanation["themes"][0]
    assert "battery" in top["words"], explanation
    assert top["quotes"] and all(q["id"].endswith("-battery") for q in top["quotes"]), explanation
    assert top["share_now"] > top["share_before"] and top["interval"][0] <= top["share_now"] <= top["interval"][1]
    assert explanation["summary"] and alert["message"].endswith(explanation["summary"])
    # The evidence is still the strongest negative texts, without the themes' bookkeeping.
    assert all(set(e) == {"id", "text", "sentiment", "score"} for e in alert["evidence"])


def test_a_review_bombing_campaign_is_caught_and_its_reviews_flagged(
        kafka: Settings, triton: Settings, stack_environment: dict[str, str], tmp_path: Path):
    products = ["p-bomb", *(f"p-stable-{k}" for k in range(5))]
    ordinary = themed_reviews(products, 200, planted={}, seed=5)
    start = datetime.fromisoformat(ordinary[0]["ts"]) + timedelta(minutes=120)
    campaign = bombing_reviews("p-bomb", 30, start=start, seed=5)
    reviews = sorted(ordinary + campaign, key=lambda r: r["ts"])  # the order they were written in
    out, worker = replay_reviews(*_topics("tx2.", kafka, stack_environment), reviews, log_dir=tmp_path,
                                 read=("alerts", "reviews.enriched"))
    alerts, enriched = out["alerts"], out["reviews.enriched"]
    bursts = [a for a in alerts if a["kind"] == "coordinated_reviews"]
    assert [a["subject"]["id"] for a in bursts] == ["p-bomb"], (bursts, worker.tail())
    burst = bursts[0]
    assert burst["current"]["rate"] >= 10 and all(e["id"].endswith("-bomb") for e in burst["evidence"])
    assert "near-duplicate reviews of product p-bomb from" in burst["message"]
    flagged = {r["review_id"] for r in enriched if "coordinated" in r["text_flags"]}
    assert flagged and all(i.endswith("-bomb") for i in flagged) and len(flagged) >= 10, flagged
    # The stable products raise nothing at all.
    assert not [a for a in alerts if a["subject"]["id"].startswith("p-stable")], alerts


def _topics(prefix: str, kafka: Settings, stack_environment: dict[str, str]) -> tuple[Settings, dict[str, str]]:
    return kafka.model_copy(update={"topic_prefix": prefix}), {**stack_environment, "STREAMSENSE_TOPIC_PREFIX": prefix}
