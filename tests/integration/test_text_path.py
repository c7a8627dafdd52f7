"""The text path end to end on the real broker, real Triton and real worker processes.

Killed workers are the chaos suite's (tests/chaos/test_chaos.py: two workers SIGKILLed every
few seconds under both guarantees, every output reconciled against its input), which covers
what a single kill here used to."""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request
from pathlib import Path

import pytest

from streams.adapters.kafka_io import produce_lines, read_topic
from streams.settings import Settings
from streams.testing import synthetic_events
from streams.testing.stack import WorkerProcess, ids_in
from streams.topics import TopicNames

pytestmark = pytest.mark.integration

POSITIVE = "Absolutely love it, works perfectly and was worth every penny."
NEGATIVE = "Terrible, it broke after two days and support ignored me."
BAD = [b"not json at all", b'{"review_id": "bad-1", "product_id": "p1"}', b"\xff\xfe\xfa",
       b'{"review_id": "bad-2", "product_id": "p1", "text": 42}', b"[1, 2, 3]"]




def test_every_review_and_article_comes_out_exactly_once(kafka: Settings, triton: Settings,
                                                          stack_environment: dict[str, str], tmp_path: Path):
    env = {**stack_environment, "STREAMSENSE_TOPIC_PREFIX": "tp1."}
    settings = kafka.model_copy(update={"topic_prefix": "tp1."})
    names = TopicNames(prefix="tp1.")
    reviews = list(synthetic_events("reviews", 2000, seed=1))
    rng = random.Random(1)
    polar = {}
    for r in rng.sample(reviews, 100):
        r["text"] = rng.choice([POSITIVE, NEGATIVE])
        polar[r["review_id"]] = "positive" if r["text"] == POSITIVE else "negative"
    news = list(synthetic_events("news", 500, seed=2))
    worker = WorkerProcess(env, log_dir=tmp_path)
    try:
        asyncio.run(produce_lines(settings, names.reviews, "reviews",
                                  [json.dumps(r).encode() for r in reviews] + BAD))
        asyncio.run(produce_lines(settings, names.news, "news", [json.dumps(n).encode() for n in news]))
        enriched = ids_in(settings, names.reviews_enriched, "review_id", expect=2000, timeout_s=240, worker=worker)
        articles = ids_in(settings, names.news_enriched, "article_id", expect=500, timeout_s=120, worker=worker)
        dead = ids_in(settings, names.deadletter, "review_id", expect=len(BAD), timeout_s=60, worker=worker)
        metrics = urllib.request.urlopen(
            f"http://127.0.0.1:{env['STREAMSENSE_METRICS_PORT']}/metrics", timeout=10).read().decode()
    finally:
        worker.stop()
    assert worker.proc.returncode in (0, -15, 143), worker.tail()
    assert set(enriched) == {r["review_id"] for r in reviews}, worker.tail()
    assert max(enriched.values()) == 1
    assert set(articles) == {n["article_id"] for n in news} and max(articles.values()) == 1
    assert sum(dead.values()) == len(BAD)
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line and not line.startswith("#")}
    assert samples['streamsense_events_in_total{topic="reviews"}'] == 2000 + len(BAD)
    assert samples['streamsense_events_out_total{topic="reviews.enriched"}'] == 2000
    assert samples['streamsense_deadletter_total{source_topic="reviews"}'] == len(BAD)
    assert samples["streamsense_triton_request_seconds_count"] > 0
    assert samples['streamsense_end_to_end_seconds_count{topic="news"}'] == 500

    async def polar_labels() -> dict[str, str]:
        out = {}
        async for rec in read_topic(settings, names.reviews_enriched, idle_timeout_s=3):
            body = json.loads(rec.value)
            if body["review_id"] in polar:
                out[body["review_id"]] = body["sentiment"]["label"]
        return out

    labels = asyncio.run(polar_labels())
    assert labels == polar


def test_dead_letters_carry_reason_source_and_raw_bytes(kafka: Settings, triton: Settings,
                                                         stack_environment: dict[str, str], tmp_path: Path):
    env = {**stack_environment, "STREAMSENSE_TOPIC_PREFIX": "tp2."}
    settings = kafka.model_copy(update={"topic_prefix": "tp2."})
    names = TopicNames(prefix="tp2.")
    worker = WorkerProcess(env, log_dir=tmp_path)
    try:
        asyncio.run(produce_lines(settings, names.reviews, "reviews", [BAD[1], BAD[2]]))

        async def dead() -> list[dict]:
            out: list[dict] = []
            deadline = time.monotonic() + 120
            async for rec in read_topic(settings, names.deadletter, idle_timeout_s=None):
                out.append(json.loads(rec.value))
                if len(out) == 2 or time.monotonic() > deadline:
                    break
            return out

        records = sorted(asyncio.run(asyncio.wait_for(dead(), 150)), key=lambda d: d["raw_encoding"])
    finally:
        worker.stop()
    binary, missing_text = records
    assert missing_text["error"] == "text: field required" and missing_text["source_topic"] == "tp2.reviews"
    assert missing_text["raw"] == BAD[1].decode() and missing_text["offset"] >= 0
    assert binary["raw_encoding"] == "base64" and binary["error"].startswith("value is not valid UTF-8")


def _produce_at_rate(settings: Settings, topic: str, events: list[dict], rate: float) -> None:
    asyncio.run(produce_lines(settings, topic, "reviews", [json.dumps(e).encode() for e in events], rate=rate))


def test_triton_outage_delays_but_loses_nothing(kafka: Settings, stack_environment: dict[str, str],
                                                tmp_path: Path):
    import threading

    from streams.local.process import free_port
    from streams.local.stack import LocalStack

    ports = {"STREAMSENSE_TRITON_URL": f"127.0.0.1:{free_port()}",
             "STREAMSENSE_TRITON_HTTP_URL": f"127.0.0.1:{free_port()}",
             "STREAMSENSE_TRITON_METRICS_PORT": str(free_port())}
    env = {**stack_environment, **ports, "STREAMSENSE_TOPIC_PREFIX": "tp3."}
    settings = kafka.model_copy(update={
        "topic_prefix": "tp3.", "triton_url": ports["STREAMSENSE_TRITON_URL"],
        "triton_http_url": ports["STREAMSENSE_TRITON_HTTP_URL"],
        "triton_metrics_port": int(ports["STREAMSENSE_TRITON_METRICS_PORT"]),
        "home": kafka.home / "outage"})
    names = TopicNames(prefix="tp3.")
    triton_service = LocalStack(settings).triton()
    triton_service.start(timeout_s=settings.startup_timeout_s)
    reviews = list(synthetic_events("reviews", 900, seed=3))
    worker = WorkerProcess(env, log_dir=tmp_path)
    try:
        producer = threading.Thread(target=_produce_at_rate, args=(settings, names.reviews, reviews, 30.0))
        producer.start()
        time.sleep(8)
        triton_service.stop()
        down_at = time.monotonic()
        before = ids_in(settings, names.reviews_enriched, "review_id", expect=10**9, timeout_s=3)
        time.sleep(max(0.0, 20 - (time.monotonic() - down_at)))
        during = ids_in(settings, names.reviews_enriched, "review_id", expect=10**9, timeout_s=3)
        triton_service.start(timeout_s=settings.startup_timeout_s)
        producer.join()
        enriched = ids_in(settings, names.reviews_enriched, "review_id", expect=900, timeout_s=180, worker=worker)
    finally:
        worker.stop()
        triton_service.stop()
    assert 0 < sum(before.values()) < 900
    # While Triton was down at most the batches already in hand finished; then nothing.
    assert sum(during.values()) - sum(before.values()) <= 2 * 64
    assert set(enriched) == {r["review_id"] for r in reviews}, worker.tail()
    assert max(enriched.values()) == 1
