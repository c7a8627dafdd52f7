"""Hostile records and hostile state on the real stack (issue: nothing a producer sends, and
nothing written to a state topic, can crash, stall, silently disable or take over a worker).

* Timestamps at both ends of the calendar (with offsets), a year-9999 review naming an entity,
  a ~900 kB review and far-future clicks, then ordinary traffic: the worker never exits or
  restarts, every later review is enriched, every later engagement gets a non-empty list, and
  every hostile record is enriched with its time corrected and flagged, or dead-lettered.
* A pickle that would create a file, written into a detector table's changelog: after a
  restart the worker rejects it (counted), never runs it, and processes the key's next review.
* Triton reached over TLS (a TLS-terminating proxy in front of it, certificates made here).
"""

from __future__ import annotations

import asyncio
import base64
import json
import pickle
import ssl
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from models.online import simulate_clicks
from streams.adapters.kafka_io import produce_lines, read_topic
from streams.settings import Settings
from streams.testing import click_record, recent_clicks, synthetic_events
from streams.testing.stack import TcpProxy, WorkerProcess, ids_in, make_certificates
from streams.topics import TopicNames

pytestmark = pytest.mark.integration


def _produce(settings: Settings, topic: str, base: str, values: list[dict | bytes]) -> None:
    lines = [v if isinstance(v, bytes) else json.dumps(v).encode() for v in values]
    asyncio.run(produce_lines(settings, topic, base, lines))


def _read(settings: Settings, topic: str) -> list[dict]:
    async def read() -> list[dict]:
        return [json.loads(rec.value) async for rec in read_topic(settings, topic, idle_timeout_s=4)]
    return asyncio.run(read())


def _metric(env: dict[str, str], name: str, labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{env['STREAMSENSE_METRICS_PORT']}/metrics",
                                  timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and labels in line)


def _restarted(worker: WorkerProcess) -> bool:
    text = worker.log.read_text(errors="replace")
    return worker.proc.poll() is not None or "restarts itself in place" in text or "exiting" in text


def test_hostile_times_and_sizes_neither_stop_nor_disable_the_worker(
        kafka: Settings, triton: Settings, stack_environment: dict[str, str], tmp_path: Path):
    prefix = "th1."
    env = {**stack_environment, "STREAMSENSE_TOPIC_PREFIX": prefix}
    settings = kafka.model_copy(update={"topic_prefix": prefix})
    names = TopicNames(prefix=prefix)
    clicks = [click_record(e) for e in recent_clicks(simulate_clicks(users=60, items=40, sessions=160,
                                                                     seed=9).events)]
    warm, later = clicks[: len(clicks) // 2], clicks[len(clicks) // 2:]
    hostile_reviews = [
        {"review_id": "h-year1", "product_id": "ph", "text": "Fine product.", "ts": "0001-01-01T00:00:00+14:00"},
        {"review_id": "h-year9999", "product_id": "ph", "text": "Tim Cook visited Berlin with Apple staff.",
         "ts": "9999-12-31T23:59:59-14:00"},
        {"review_id": "h-leap", "product_id": "ph", "text": "Works.", "ts": "2016-12-31T23:59:60Z"},
        {"review_id": "h-huge", "product_id": "ph", "text": "x" * 900_000},
    ]
    hostile_news = [{"article_id": "h-news", "source": "wire-h", "title": "Siemens opens in Paris",
                     "ts": 253402300799999}]
    now_ms = int(time.time() * 1000)
    hostile_clicks = [{**c, "event_id": f"h-{i}", "ts": ts} for i, (c, ts) in enumerate(
        [(warm[0], 253402300799999), (warm[1], "9999-12-31T23:59:59-14:00"), (warm[2], "0001-01-01T00:00:00+14:00"),
         (warm[3], now_ms + 10 * 365 * 86400_000)])]
    for c in hostile_clicks:
        c["action"] = "click"
    ordinary = list(synthetic_events("reviews", 200, seed=21))
    worker = WorkerProcess(env, log_dir=tmp_path)
    try:
        _produce(settings, names.clicks, "clicks", warm)
        _produce(settings, names.reviews, "reviews", hostile_reviews)
        _produce(settings, names.news, "news", hostile_news)
        _produce(settings, names.clicks, "clicks", hostile_clicks)
        _produce(settings, names.clicks, "clicks", later)
        _produce(settings, names.reviews, "reviews", ordinary)
        engaged = [c["event_id"] for c in [*warm, *hostile_clicks, *later] if c["action"] != "impression"]
        got = ids_in(settings, names.recommendations, "trigger_event_id", expect=len(engaged), timeout_s=240,
                     worker=worker)
        enriched = ids_in(settings, names.reviews_enriched, "review_id", expect=len(ordinary) + 3, timeout_s=240,
                          worker=worker)
        assert not _restarted(worker), worker.tail()
        replaced = _metric(env, "streamsense_event_time_replaced_total", "")
    finally:
        worker.stop()
    assert set(got) >= set(engaged), worker.tail()
    assert {r["review_id"] for r in ordinary} <= set(enriched)
    reviews = {r["review_id"]: r for r in _read(settings, names.reviews_enriched)}
    for review_id, flag in (("h-year1", "event_time_behind"), ("h-year9999", "event_time_ahead"),
                            ("h-leap", "event_time_behind")):
        record = reviews[review_id]
        assert record["time_flags"] == [flag] and record["ts_original"], record
        assert abs(datetime.fromisoformat(record["ts"]) - datetime.now(UTC)) < timedelta(minutes=10), record
    # A leap second is a valid RFC 3339 time (here years old, so replaced like the others).
    assert reviews["h-leap"]["ts_original"] == "2017-01-01T00:00:00.000Z"
    [article] = _read(settings, names.news_enriched)
    assert article["time_flags"] == ["event_time_ahead"]
    dead = [d for d in _read(settings, names.deadletter) if d["source_topic"] == names.reviews]
    assert len(dead) == 1 and "over the input limit" in dead[0]["error"]
    assert replaced >= 3 + 1 + 4  # three reviews, the article, the four clicks
    # Every engagement after the hostile clicks got a real list: no division by zero, no
    # dead letter, no model stuck in year 9999.
    recommendations = {r["trigger_event_id"]: r for r in _read(settings, names.recommendations)}
    later_engaged = [c["event_id"] for c in later if c["action"] != "impression"]
    assert all(recommendations[e]["items"] for e in later_engaged)


class _Forged:
    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_forged_detector_state_in_a_changelog_is_rejected_not_run(
        kafka: Settings, triton: Settings, stack_environment: dict[str, str], tmp_path: Path):
    prefix = "th2."
    env = {**stack_environment, "STREAMSENSE_TOPIC_PREFIX": prefix}
    settings = kafka.model_copy(update={"topic_prefix": prefix})
    names = TopicNames(prefix=prefix)
    marker = tmp_path / "forged-state-ran"
    first = [{**r, "product_id": "p-forged"} for r in synthetic_events("reviews", 20, seed=31)]
    worker = WorkerProcess(env, log_dir=tmp_path)
    try:
        _produce(settings, names.reviews, "reviews", first)
        ids_in(settings, names.reviews_enriched, "review_id", expect=len(first), timeout_s=180, worker=worker)
    finally:
        worker.stop()

    # Faust's changelog for the product monitors: key and value JSON strings, the value the
    # base64 of what the worker would unpickle. Written to every partition.
    changelog = f"{settings.consumer_group}-{prefix}product-monitors-changelog"
    forged = base64.b64encode(pickle.dumps((1, _Forged(marker)))).decode()

    async def forge() -> None:
        producer = AIOKafkaProducer(**settings.kafka_client_kwargs())
        await producer.start()
        try:
            for partition in await producer.partitions_for(changelog):
                await producer.send_and_wait(changelog, json.dumps(forged).encode(),
                                             key=json.dumps("p-forged").encode(), partition=partition)
        finally:
            await producer.stop()

    asyncio.run(forge())
    nxt = {**next(synthetic_events("reviews", 1, seed=32)), "review_id": "after-forgery", "product_id": "p-forged"}
    worker = WorkerProcess(env, log_dir=tmp_path)
    try:
        _produce(settings, names.reviews, "reviews", [nxt])
        got = ids_in(settings, names.reviews_enriched, "review_id", expect=len(first) + 1, timeout_s=180,
                     worker=worker)
        rejected = _metric(env, "streamsense_state_rejected_total", 'table="product-monitors"')
        alive = worker.proc.poll() is None
    finally:
        worker.stop()
    assert "after-forgery" in got, worker.tail()
    assert alive and not marker.exists()
    assert rejected >= 1, worker.tail()
    assert "discarded the stored state" in worker.log.read_text(errors="replace")


def test_the_worker_reaches_triton_over_tls(kafka: Settings, triton: Settings,
                                            stack_environment: dict[str, str], tmp_path: Path):
    make_certificates(tmp_path / "tls")
    tls = tmp_path / "tls"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls / "broker.crt", tls / "broker.key")
    context.set_alpn_protocols(["h2"])  # gRPC clients ask for HTTP/2
    prefix = "th3."
    settings = kafka.model_copy(update={"topic_prefix": prefix})
    names = TopicNames(prefix=prefix)
    reviews = list(synthetic_events("reviews", 50, seed=41))
    with TcpProxy(triton.triton_url, tls=context) as proxy:
        env = {**stack_environment, "STREAMSENSE_TOPIC_PREFIX": prefix, "STREAMSENSE_TRITON_URL": proxy.address,
               "STREAMSENSE_TRITON_SSL": "true", "STREAMSENSE_TRITON_SSL_CAFILE": str(tls / "ca.pem")}
        worker = WorkerProcess(env, log_dir=tmp_path)
        try:
            _produce(settings, names.reviews, "reviews", reviews)
            got = ids_in(settings, names.reviews_enriched, "review_id", expect=len(reviews), timeout_s=180,
                         worker=worker)
        finally:
            worker.stop()
    assert set(got) == {r["review_id"] for r in reviews}, worker.tail()
