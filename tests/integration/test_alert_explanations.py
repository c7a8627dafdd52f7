"""Alerts that say why, on the real stack: a product whose reviews turn negative because of one
planted complaint gets a sentiment alert naming that complaint, with planted texts as quotes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from streams.adapters.kafka_io import produce_lines, read_topic
from streams.settings import Settings
from streams.testing import themed_reviews
from streams.testing.stack import WorkerProcess, ids_in
from streams.topics import TopicNames

pytestmark = pytest.mark.integration


def test_a_planted_complaint_is_named_and_quoted_by_its_sentiment_alert(
        kafka: Settings, triton: Settings, stack_environment: dict[str, str], tmp_path: Path):
    prefix = "tx1."
    env = {**stack_environment, "STREAMSENSE_TOPIC_PREFIX": prefix}
    settings = kafka.model_copy(update={"topic_prefix": prefix})
    names = TopicNames(prefix=prefix)
    products = ["p-sour", *(f"p-stable-{k}" for k in range(5))]
    reviews = themed_reviews(products, 220, planted={"p-sour": 110}, seed=3)
    worker = WorkerProcess(env, log_dir=tmp_path)
    try:
        asyncio.run(produce_lines(settings, names.reviews, "reviews", [json.dumps(r).encode() for r in reviews]))
        ids_in(settings, names.reviews_enriched, "review_id", expect=len(reviews), timeout_s=240, worker=worker)

        async def alerts() -> list[dict]:
            return [json.loads(rec.value) async for rec in read_topic(settings, names.alerts, idle_timeout_s=5)]

        records = asyncio.run(alerts())
    finally:
        worker.stop()
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
