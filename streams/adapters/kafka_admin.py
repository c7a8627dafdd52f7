"""Kafka administration at the edge: create topics, read end offsets and consumer-group lag."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import Settings
from streams.topics import COMPACTED_TOPICS

__all__ = ["GroupLag", "consumer_lag", "end_offsets", "ensure_topics", "list_topics"]

# Event logs use time retention; tables of latest state (user-segments) are compacted.
_TOPIC_CONFIG = {"cleanup.policy": "delete"}
_COMPACTED_CONFIG = {"cleanup.policy": "compact"}


async def ensure_topics(settings: Settings, names: Iterable[str], *,
                        partitions: int | None = None, config: dict[str, str] | None = None) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if not missing:
            return []
        new = [NewTopic(name=n, num_partitions=partitions or settings.topic_partitions,
                        replication_factor=settings.topic_replication_factor,
                        topic_configs=config or _config_of(n)) for n in missing]
        # Another worker may create them between our list and create.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(new)
        await _wait_for_leaders(admin, missing)
        return missing
    finally:
        await admin.close()


def _config_of(name: str) -> dict[str, str]:
    # Names carry the topic prefix: match the contract name at the end.
    return _COMPACTED_CONFIG if name.endswith(COMPACTED_TOPICS) else _TOPIC_CONFIG



async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str],
                            timeout_s: float = 30.0) -> None:
    """Creation is asynchronous in KRaft: return once every partition has a leader."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        if all(d["error_code"] == 0 and d["partitions"]
               and all(p["leader"] >= 0 for p in d["partitions"]) for d in described):
            return
        if loop.time() > deadline:
            raise TimeoutError(f"topics {', '.join(names)} have no leader after {timeout_s:.0f}s")
        await asyncio.sleep(0.1)


async def list_topics(settings: Settings) -> dict[str, int]:
    """``{topic: partition count}`` of the non-internal topics."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_kwargs())
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if not t.startswith("__")]
        described = await admin.describe_topics(names) if names else []
        return {d["topic"]: len(d["partitions"]) for d in sorted(described, key=lambda d: d["topic"])}
    finally:
        await admin.close()


@dataclass(frozen=True, slots=True)
class GroupLag:
    group: str
    topic: str
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


async def consumer_lag(settings: Settings) -> list[GroupLag]:
    """Lag per consumer group and topic, summed over partitions."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_kwargs())
    consumer = AIOKafkaConsumer(**settings.kafka_client_kwargs())
    await asyncio.gather(admin.start(), consumer.start())
    try:
        groups = [g[0] for g in await admin.list_consumer_groups()]
        rows: list[GroupLag] = []
        for group in sorted(groups):
            offsets = await admin.list_consumer_group_offsets(group)
            parts = [tp for tp, meta in offsets.items() if meta is not None and meta.offset >= 0]
            if not parts:
                continue
            ends = await consumer.end_offsets(parts)
            per_topic: dict[str, tuple[int, int]] = {}
            for tp in parts:
                committed, end = per_topic.get(tp.topic, (0, 0))
                per_topic[tp.topic] = (committed + offsets[tp].offset, end + ends[tp])
            rows += [GroupLag(group, t, c, e) for t, (c, e) in sorted(per_topic.items())]
        return rows
    finally:
        await asyncio.gather(admin.close(), consumer.stop())



async def end_offsets(settings: Settings, topics: Iterable[str]) -> dict[str, int]:
    """Records ever written to each topic (sum of its partitions' end offsets)."""
    topics = list(topics)
    admin = AIOKafkaAdminClient(**settings.kafka_client_kwargs())
    consumer = AIOKafkaConsumer(**settings.kafka_client_kwargs())
    await asyncio.gather(admin.start(), consumer.start())
    try:
        # A consumer that subscribes to nothing knows no partitions: ask the admin client.
        described = await admin.describe_topics(topics)
        tps = [TopicPartition(d["topic"], p["partition"]) for d in described if d["error_code"] == 0
               for p in d["partitions"]]
        ends = await consumer.end_offsets(tps) if tps else {}
        return {t: sum(v for tp, v in ends.items() if tp.topic == t) for t in topics}
    finally:
        await asyncio.gather(admin.close(), consumer.stop())
