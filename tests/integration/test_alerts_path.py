"""Detectors on the real stack: a product turning sour gets one alert, stable ones none, and
detector state survives a worker restart (it lives in changelog-backed tables), whether the
worker keeps its tables in memory or in RocksDB."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from streams.adapters.kafka_io import produce_lines, read_topic
from streams.settings import Settings
from streams.testing import planted_reviews
from streams.testing.stack import WorkerProcess, ids_in
from streams.topics import TopicNames

pytestmark = pytest.mark.integration

CHANGE_AT = 120
RESTART_AT = 130  # after the change: a detector that forgot its baseline could not see it


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_a_product_turning_sour_gets_one_alert_across_a_worker_restart(
        kafka: Settings, triton: Settings, stack_environment: dict[str, str], tmp_path: Path, store: str):
    prefix = f"ta1{store[0]}."
    home = tmp_path / "home"  # the worker's own: its RocksDB files are looked for here
    env = {**stack_environment, "STREAMSENSE_TOPIC_PREFIX": prefix, "STREAMSENSE_TABLE_STORE": store,
           "STREAMSENSE_HOME": str(home)}
    settings = kafka.model_copy(update={"topic_prefix": prefix})
    names = TopicNames(prefix=prefix)
    products = ["p-sour", *(f"p-stable-{k}" for k in range(3))]
    reviews = planted_reviews(products, 240, sour={"p-sour": CHANGE_AT}, seed=7)
    first_part = [r for r in reviews if int(r["review_id"].rsplit("-", 1)[1]) < RESTART_AT]
    rest = reviews[len(first_part):]

    def produce(events: list[dict]) -> None:
        asyncio.run(produce_lines(settings, names.reviews, "reviews", [json.dumps(e).encode() for e in events]))

    worker = WorkerProcess(env, log_dir=tmp_path)
    try:
        produce(first_part)
        ids_in(settings, names.reviews_enriched, "review_id", expect=len(first_part), timeout_s=240, worker=worker)
        worker.stop()
        assert worker.proc.returncode in (0, -15, 143), worker.tail()
        on_disk = {p.name for p in home.glob("workers/worker-0/**/*product-monitors*") if p.is_dir()}
        assert bool(on_disk) == (store == "rocksdb"), on_disk
        worker = WorkerProcess(env, log_dir=tmp_path)
        produce(rest)
        # Restarting while the input grows is where faust-streaming dropped records in flight
        # (streams.core.flow.StallDetector): every review must still come out.
        got = ids_in(settings, names.reviews_enriched, "review_id", expect=len(reviews), timeout_s=180, worker=worker)

        async def alerts() -> list[dict]:
            return [json.loads(rec.value) async for rec in read_topic(settings, names.alerts, idle_timeout_s=5)]

        records = asyncio.run(alerts())
    finally:
        worker.stop()
    assert set(got) == {r["review_id"] for r in reviews}, worker.tail()
    shifts = [a for a in records if a["kind"] == "sentiment_shift"]
    # One change, one alert (plus at most an escalation as the share keeps rising).
    assert {a["subject"]["id"] for a in shifts} == {"p-sour"}, (shifts, worker.tail())
    assert [a["status"] for a in shifts] in (["open"], ["open", "escalated"]), shifts
    alert = shifts[0]
    # A detector that lost its state at the restart would re-learn its baseline from the sour
    # reviews (about 0.5, the cap) and alert late if at all.
    assert alert["baseline"]["rate"] < 0.3 < alert["current"]["rate"], alert
    t0 = datetime.fromisoformat(reviews[0]["ts"])
    detected_after = (datetime.fromisoformat(alert["detected_at"]) - t0) / timedelta(minutes=1) - CHANGE_AT
    assert 0 <= detected_after <= 60, alert  # reviews of the product after the change
    assert "ARL0 >= 10000" in alert["detector"]["guarantee"]
    assert alert["statistic"] >= alert["threshold"]
    assert alert["evidence"] and all(e["sentiment"] == "negative" and e["id"].startswith("p-sour-") for e in alert["evidence"])
    assert alert["message"].startswith("Negative share of product p-sour rose from")
