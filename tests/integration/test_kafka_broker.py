"""The real Apache Kafka broker: produce, consume in a group, commit, resume; kcat sees it."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.adapters.kafka_admin import consumer_lag, ensure_topics, list_topics
from streams.adapters.kafka_io import produce_lines, read_topic
from streams.runtime import faust_patches, fetched
from streams.settings import Settings
from streams.testing.stack import assert_loopback_only
from streams.topics import TopicNames

pytestmark = pytest.mark.integration


def test_consumer_group_commit_and_resume(kafka: Settings):
    topic, group = "it-resume", "it-resume-group"

    async def scenario() -> tuple[list[int], list[int], int]:
        await ensure_topics(kafka, [topic], partitions=3)
        values = [json.dumps({"i": i}).encode() for i in range(300)]
        await produce_lines(kafka, topic, "none", values)

        first: list[int] = []
        consumer = AIOKafkaConsumer(topic, **kafka.kafka_client_kwargs(), group_id=group,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            while len(first) < 120:
                for records in (await consumer.getmany(timeout_ms=2000, max_records=40)).values():
                    first += [json.loads(r.value)["i"] for r in records]
            await consumer.commit()  # commits exactly what was returned so far
        finally:
            await consumer.stop()

        lag = {g.topic: g.lag for g in await consumer_lag(kafka) if g.group == group}
        rest = [json.loads(r.value)["i"]
                async for r in read_topic(kafka, topic, group_id=group, idle_timeout_s=3)]
        return first, rest, lag[topic]

    first, rest, lag = asyncio.run(scenario())
    assert lag == 300 - len(first)
    assert sorted(first + rest) == list(range(300)), "resume must neither skip nor repeat"


def test_idempotent_transactional_producer(kafka: Settings):
    """Transactions (needed for exactly-once) work on this broker: aborted data stays invisible."""
    topic = "it-transactions"

    async def scenario() -> list[bytes]:
        await ensure_topics(kafka, [topic], partitions=1)
        producer = AIOKafkaProducer(**kafka.kafka_client_kwargs(), transactional_id="it-tx")
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send_and_wait(topic, b"committed")
            await producer.begin_transaction()
            await producer.send_and_wait(topic, b"aborted")
            await producer.abort_transaction()
        finally:
            await producer.stop()
        return [r.value async for r in read_topic(kafka, topic, idle_timeout_s=3)]

    assert asyncio.run(scenario()) == [b"committed"]


def test_the_fetcher_names_the_offsets_that_hold_no_record(kafka: Settings):
    """What lets a commit pass transaction markers and aborted records, and nothing else:
    Kafka's client (patched by the runtime) says which offsets it read past without a record."""
    topic = "it-markers"
    faust_patches.apply()

    async def scenario() -> tuple[list[int], list[tuple[int, int]]]:
        await ensure_topics(kafka, [topic], partitions=1)
        producer = AIOKafkaProducer(**kafka.kafka_client_kwargs(), transactional_id="it-markers")
        await producer.start()
        try:
            async with producer.transaction():  # offsets 0, 1; marker 2
                for value in (b"a", b"b"):
                    await producer.send_and_wait(topic, value)
            await producer.begin_transaction()  # offset 3 aborted; marker 4
            await producer.send_and_wait(topic, b"aborted")
            await producer.abort_transaction()
            for value in (b"c", b"d"):  # offset 5, marker 6; offset 7, marker 8
                async with producer.transaction():
                    await producer.send_and_wait(topic, value)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, **kafka.kafka_client_kwargs(), auto_offset_reset="earliest",
                                    isolation_level="read_committed", max_poll_records=1)
        await consumer.start()
        offsets, spans = [], []
        try:
            while len(offsets) < 4:  # one record a call: a marker is read on a call of its own
                for records in (await consumer.getmany(timeout_ms=2000)).values():
                    offsets += [record.offset for record in records]
                    spans += [span for record in records for span in fetched.no_record_spans(record)]
        finally:
            await consumer.stop()
        return offsets, spans

    offsets, spans = asyncio.run(scenario())
    assert offsets == [0, 1, 5, 7]
    empty = sorted(offset for begin, end in spans for offset in range(begin, end))
    assert empty in ([2, 3, 4, 6], [2, 3, 4, 6, 8])  # 8 when the last fetch read past it


def test_a_committed_offset_is_read_once_its_transaction_has_ended(kafka: Settings):
    """An offset committed in a transaction is pending until the transaction ends; the runtime
    reads committed offsets stable (KIP-447), so a worker taking the partition over waits for
    the previous owner's commit instead of reading the offset from before it (Kafka's Python
    client alone answers at once with the old one: the records would be processed twice)."""
    topic, group = "it-stable-offsets", "it-stable-offsets-group"
    tp = TopicPartition(topic, 0)
    faust_patches.apply()

    async def commit_in_transaction(producer: AIOKafkaProducer, offset: int, *, commit: bool,
                                    after_s: float) -> float:
        await producer.begin_transaction()
        await producer.send_offsets_to_transaction({tp: offset}, group)
        await asyncio.sleep(after_s)
        ended = time.monotonic()
        await (producer.commit_transaction() if commit else producer.abort_transaction())
        return ended

    async def scenario() -> list[tuple[int | None, bool]]:
        await ensure_topics(kafka, [topic], partitions=1)
        await produce_lines(kafka, topic, "none", [b"x"] * 20)
        producer = AIOKafkaProducer(**kafka.kafka_client_kwargs(), transactional_id="it-stable")
        reader = AIOKafkaConsumer(**kafka.kafka_client_kwargs(), group_id=group,
                                  isolation_level="read_committed", enable_auto_commit=False)
        await producer.start()
        await reader.start()
        seen = []
        try:
            for offset, commit in ((7, True), (15, False), (12, True)):
                ending = asyncio.create_task(
                    commit_in_transaction(producer, offset, commit=commit, after_s=1.5))
                await asyncio.sleep(0.5)  # the offset is pending now
                committed = await reader.committed(tp)
                seen.append((committed, time.monotonic() >= await ending))
        finally:
            await reader.stop()
            await producer.stop()
        return seen

    # Each read waited for its transaction to end; an aborted offset never shows.
    assert asyncio.run(scenario()) == [(7, True), (7, True), (12, True)]


def test_contract_topics_are_created_once(kafka: Settings):
    names = TopicNames(prefix="it.").all()
    created = asyncio.run(ensure_topics(kafka, names))
    assert sorted(created) == sorted(names)
    assert asyncio.run(ensure_topics(kafka, names)) == []
    topics = asyncio.run(list_topics(kafka))
    assert all(topics[n] == kafka.topic_partitions for n in names)


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is installed by `make setup`")
def test_kcat_an_independent_client_sees_the_broker_and_topics(kafka: Settings):
    asyncio.run(ensure_topics(kafka, TopicNames().all()))
    out = subprocess.run(["kcat", "-b", kafka.kafka_bootstrap, "-L"], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert f"broker 1 at {kafka.kafka_bootstrap}" in out
    for name in TopicNames().all():
        assert f'topic "{name}" with {kafka.topic_partitions} partitions' in out


def test_broker_binds_loopback_only(kafka: Settings):
    assert_loopback_only(int(kafka.kafka_bootstrap.rsplit(":", 1)[1]))
    assert_loopback_only(kafka.kafka_controller_port)
