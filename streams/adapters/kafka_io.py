"""Produce raw records to, and read records from, Kafka topics (used by the CLI and tests)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.settings import Settings

__all__ = ["ConsumedRecord", "natural_key", "produce_lines", "read_topic"]

# The internal entity-mentions topic is keyed by the entity, as the worker sends it.
_KEYS = {"reviews": "product_id", "clicks": "user_id", "news": "source", "entity-mentions": "key"}


def natural_key(topic: str, value: bytes) -> bytes | None:
    """The record's natural key (``product_id`` / ``user_id`` / ``source``), if it has one.

    Malformed values get no key: they still go through, and the worker dead-letters them.

    >>> natural_key("reviews", b'{"product_id": "p42"}')
    b'p42'
    >>> natural_key("reviews", b'not json') is None
    True
    """
    field = _KEYS.get(topic)
    if field is None:
        return None
    try:
        key = json.loads(value).get(field)
    except (ValueError, AttributeError):
        return None
    return key.encode("utf-8") if isinstance(key, str) else None


async def produce_lines(settings: Settings, topic: str, base_topic: str, values: Iterable[bytes],
                        *, rate: float | None = None, on_sent=None) -> int:
    """Send each value to ``topic`` keyed by its natural key; waits for every ack.

    ``rate`` caps records per second (None: as fast as the broker takes them).
    """
    producer = AIOKafkaProducer(**settings.kafka_client_kwargs(), acks="all",
                                enable_idempotence=True, linger_ms=5)
    await producer.start()
    sent = 0
    pending: list[asyncio.Future] = []
    t0 = time.monotonic()
    try:
        for value in values:
            if rate:
                ahead = t0 + sent / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            pending.append(await producer.send(topic, value, key=natural_key(base_topic, value)))
            sent += 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
            if on_sent is not None:
                on_sent(sent)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


async def read_topic(settings: Settings, topic: str, *, from_beginning: bool = True,
                     idle_timeout_s: float | None = 5.0, max_records: int | None = None,
                     group_id: str | None = None, max_seconds: float | None = None
                     ) -> AsyncIterator[ConsumedRecord]:
    """Yield records of ``topic`` until ``max_records``, ``idle_timeout_s`` without one, or
    ``max_seconds`` of reading (checked between fetches).

    ``idle_timeout_s=None`` follows the topic forever. Only committed (transactional) data is read.
    """
    consumer = AIOKafkaConsumer(
        topic, **settings.kafka_client_kwargs(), group_id=group_id,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=group_id is not None, isolation_level="read_committed",
    )
    await consumer.start()
    count = 0
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    try:
        while (max_records is None or count < max_records) \
                and (deadline is None or time.monotonic() < deadline):
            batch = await consumer.getmany(timeout_ms=int((idle_timeout_s or 1.0) * 1000))
            if not batch:
                if idle_timeout_s is not None:
                    return
                continue
            for records in batch.values():
                for r in records:
                    yield ConsumedRecord(r.topic, r.partition, r.offset, r.key, r.value,
                                         r.timestamp)
                    count += 1
                    if max_records is not None and count >= max_records:
                        return
    finally:
        await consumer.stop()
