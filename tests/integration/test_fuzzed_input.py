"""10,000+ malformed records interleaved with good ones through the real pipeline: no worker
crash, every bad record in `deadletter` (matched by topic, partition and offset) with a reason,
every good record processed."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streams.adapters.kafka_admin import ensure_topics
from streams.adapters.kafka_io import natural_key, read_topic
from streams.settings import Settings
from streams.testing import malformed_records, synthetic_events
from streams.testing.stack import WorkerProcess
from streams.topics import TopicNames

pytestmark = pytest.mark.integration

BAD = {"reviews": 4000, "clicks": 3500, "news": 2500}
GOOD = {"reviews": 150, "clicks": 300, "news": 50}


async def _produce(settings: Settings, names: TopicNames) -> tuple[set[tuple[str, int, int]], dict[str, set[str]]]:
    """Sends the interleaved stream; returns the (topic, partition, offset) of every bad record
    and the ids of the good ones per topic."""
    rng = random.Random(11)
    stream: list[tuple[str, bytes, bool]] = []
    good_ids: dict[str, set[str]] = {}
    for topic in BAD:
        stream += [(topic, raw, False) for _, raw in malformed_records(topic, BAD[topic], seed=11)]
        good = list(synthetic_events(topic, GOOD[topic], seed=11))
        id_field = {"reviews": "review_id", "clicks": "event_id", "news": "article_id"}[topic]
        good_ids[topic] = {g[id_field] for g in good}
        stream += [(topic, json.dumps(g).encode(), True) for g in good]
    rng.shuffle(stream)
    producer = AIOKafkaProducer(**settings.kafka_client_kwargs(), acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [(await producer.send(names.name(t), raw, key=natural_key(t, raw)), ok) for t, raw, ok in stream]
        metadata = [(await f, ok) for f, ok in futures]
    finally:
        await producer.stop()
    bad = {(m.topic, m.partition, m.offset) for m, ok in metadata if not ok}
    return bad, good_ids


def test_ten_thousand_malformed_records_are_dead_lettered_and_nothing_else_is_lost(
        kafka: Settings, triton: Settings, stack_environment: dict[str, str], tmp_path: Path):
    prefix = "tf1."
    env = {**stack_environment, "STREAMSENSE_TOPIC_PREFIX": prefix}
    settings = kafka.model_copy(update={"topic_prefix": prefix})
    names = TopicNames(prefix=prefix)
    asyncio.run(ensure_topics(settings, names.all()))
    bad, good_ids = asyncio.run(_produce(settings, names))
    assert len(bad) == sum(BAD.values()) >= 10_000

    async def read(topic: str) -> list[dict]:
        return [json.loads(rec.value) async for rec in read_topic(settings, topic, idle_timeout_s=3)]

    worker = WorkerProcess(env, log_dir=tmp_path)
    try:
        deadline = time.monotonic() + 300
        dead: list[dict] = []
        while time.monotonic() < deadline and worker.proc.poll() is None:
            dead = asyncio.run(read(names.deadletter))
            if len(dead) >= len(bad):
                break
            time.sleep(3)
        outputs = {"reviews": asyncio.run(read(names.reviews_enriched)), "news": asyncio.run(read(names.news_enriched)),
                   "clicks": asyncio.run(read(names.recommendations))}
        alive = worker.proc.poll() is None
    finally:
        worker.stop()
    assert alive, worker.tail()  # no crash
    got = {(d["source_topic"], d["partition"], d["offset"]) for d in dead}
    assert got == bad, (len(got), len(bad), sorted(bad - got)[:5], sorted(got - bad)[:5])
    assert len(dead) == len(bad)  # once each
    assert all(d["error"] and d["raw_size"] >= 0 for d in dead)
    assert {r["review_id"] for r in outputs["reviews"]} == good_ids["reviews"]
    assert {r["article_id"] for r in outputs["news"]} == good_ids["news"]
    engaged = {e["event_id"] for e in synthetic_events("clicks", GOOD["clicks"], seed=11) if e["action"] != "impression"}
    assert {r["trigger_event_id"] for r in outputs["clicks"]} == engaged
