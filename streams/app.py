"""Composition root: Settings -> faust.App with its topics, adapters and agents.

Agents are thin: ``take_events`` a batch, call the pure core (``streams.core.text``), call
Triton through the :class:`~streams.adapters.triton_client.Inferencer`, send the outputs.

No data is lost because (1) Faust acks a ``take_events`` batch only after the loop body has
finished with it, and commits offsets only after flushing the producer (or inside the Kafka
transaction in ``exactly_once`` mode); and (2) the body never raises: Triton failures are
retried until they succeed (which also stops the stream pulling: backpressure), and a record
whose processing keeps failing is dead-lettered with the error after ``_ATTEMPTS`` tries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import faust

from streams.adapters.kafka_admin import consumer_lag
from streams.adapters.metrics import Metrics
from streams.adapters.triton_client import Inferencer, TritonInferencer
from streams.core.text import Analysis, RawRecord, decode_batch, enrich
from streams.records import dead_letter, encode
from streams.settings import Settings
from streams.topics import TopicNames

__all__ = ["create_app"]

log = logging.getLogger(__name__)
_ATTEMPTS = 3


def _credentials(settings: Settings):
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    ssl_context = settings.kafka_client_kwargs().get("ssl_context")
    if settings.kafka_security_protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None
        return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                     password=settings.kafka_sasl_password.get_secret_value(),
                                     mechanism=settings.kafka_sasl_mechanism, ssl_context=ssl_context)
    return faust.SSLCredentials(ssl_context)


def create_app(settings: Settings, *, worker_index: int = 0, inferencer: Inferencer | None = None,
               metrics: Metrics | None = None) -> faust.App:
    metrics = metrics or Metrics()
    inferencer = inferencer or TritonInferencer(
        url=settings.triton_url, timeout_s=settings.triton_request_timeout_s,
        max_chunk=settings.batch_max, latency_target_s=settings.triton_latency_target_s, metrics=metrics)
    datadir = settings.home / "workers" / f"worker-{worker_index}"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        "streamsense",
        broker=[f"kafka://{s}" for s in settings.kafka_bootstrap_servers],
        broker_credentials=_credentials(settings),
        processing_guarantee=settings.processing_guarantee,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        topic_allow_declare=True,
        web_host=settings.web_host, web_bind=settings.web_host,
        web_port=settings.web_port + worker_index,
        datadir=str(datadir),
        store="memory://",
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=max(256, 4 * settings.batch_max),
    )
    names = TopicNames(prefix=settings.topic_prefix)

    def topic(name: str) -> faust.TopicT:
        return app.topic(name, key_serializer="raw", value_serializer="raw")

    deadletter = topic(names.deadletter)

    def text_agent(base: str, output: faust.TopicT):
        async def agent(stream):
            async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
                await process_text_events(base, events, inferencer=inferencer, output=output,
                                          deadletter=deadletter, metrics=metrics)
        agent.__name__ = f"{base}_agent"
        return agent

    @app.timer(15.0)
    async def report_consumer_lag() -> None:
        try:
            for row in await consumer_lag(settings):
                if row.group == app.conf.id and row.topic in names.all():
                    metrics.consumer_lag.labels(topic=names.base(row.topic)).set(row.lag)
        except Exception:
            metrics.errors.labels(kind="lag_probe").inc()
            log.debug("reading consumer lag failed", exc_info=True)

    app.agent(topic(names.reviews), name="reviews")(text_agent("reviews", topic(names.reviews_enriched)))
    app.agent(topic(names.news), name="news")(text_agent("news", topic(names.news_enriched)))
    return app


async def process_text_events(base: str, events: Sequence, *, inferencer: Inferencer, output,
                              deadletter, metrics: Metrics) -> None:
    """One batch of ``reviews`` or ``news`` events: decode, analyse, send. Never raises."""
    raws = [RawRecord(e.message.topic, e.message.partition, e.message.offset, e.message.key,
                      e.message.value, int(e.message.timestamp * 1000)) for e in events]
    metrics.events_in.labels(topic=base).inc(len(raws))
    metrics.batch_size.labels(topic=base).observe(len(raws))
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            await _process(base, raws, inferencer=inferencer, output=output, deadletter=deadletter,
                           metrics=metrics)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            # The batch must not crash the agent: Faust would ack it anyway (data loss).
            metrics.errors.labels(kind="batch_failed").inc()
            log.exception("processing a %s batch failed (attempt %d/%d)", base, attempt, _ATTEMPTS)
    # The batch keeps failing: process records one at a time so only the culprits are dead-lettered.
    for raw in raws:
        try:
            await _process(base, [raw], inferencer=inferencer, output=output, deadletter=deadletter,
                           metrics=metrics)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            record = dead_letter(source_topic=raw.topic, partition=raw.partition, offset=raw.offset,
                                 raw=raw.value, error=f"processing failed: {exc!r}"[:1000],
                                 now=datetime.now(UTC))
            await deadletter.send(key=raw.key, value=encode(record))
            metrics.deadlettered.labels(source_topic=base).inc()


async def _process(base: str, raws: list[RawRecord], *, inferencer: Inferencer, output, deadletter,
                   metrics: Metrics) -> None:
    batch = decode_batch(base, raws, now=datetime.now(UTC))
    texts = [item.model_text for item in batch.items if item.model_text]
    results = iter(await inferencer.analyse(texts))
    analyses: list[Analysis | None] = [next(results) if item.model_text else None for item in batch.items]
    now = datetime.now(UTC)
    for item, enriched in zip(batch.items, enrich(batch.items, analyses, now=now), strict=True):
        await output.send(key=item.raw.key, value=encode(enriched))
        event_time = item.record.ts or (datetime.fromtimestamp(item.raw.timestamp_ms / 1000, UTC)
                                        if item.raw.timestamp_ms else now)
        metrics.end_to_end_seconds.labels(topic=base).observe(max(0.0, (now - event_time).total_seconds()))
    metrics.events_out.labels(topic=f"{base}.enriched").inc(len(batch.items))
    for record in batch.dead:
        await deadletter.send(key=None, value=encode(record))
    metrics.deadlettered.labels(source_topic=base).inc(len(batch.dead))
