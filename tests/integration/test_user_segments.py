"""User segments out, on the real broker: the compacted user-segments topic gets one record per
segment change of each user, the same changes an independent replay of the clicks finds."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from models.online import UserState, simulate_clicks
from streams.adapters.kafka_io import produce_lines, read_topic
from streams.core.clicks import PartitionModel, decode_click, segment_change
from streams.core.monitoring import MonitorConfig
from streams.settings import Settings
from streams.testing import click_record, recent_clicks
from streams.testing.stack import WorkerProcess, ids_in
from streams.topics import TopicNames

pytestmark = pytest.mark.integration


def test_user_segments_has_one_record_per_segment_change(
        kafka: Settings, triton: Settings, stack_environment: dict[str, str], tmp_path: Path):
    prefix = "ts1."
    env = {**stack_environment, "STREAMSENSE_TOPIC_PREFIX": prefix}
    settings = kafka.model_copy(update={"topic_prefix": prefix})
    names = TopicNames(prefix=prefix)
    events = recent_clicks(simulate_clicks(users=120, items=80, genres=5, sessions=300, seed=8).events)
    engaged = [e.event_id for e in events if e.action != "impression"]
    worker = WorkerProcess(env, log_dir=tmp_path)
    try:
        asyncio.run(produce_lines(settings, names.clicks, "clicks",
                                  [json.dumps(click_record(e)).encode() for e in events]))
        ids_in(settings, names.recommendations, "trigger_event_id", expect=len(engaged), timeout_s=240,
               worker=worker)

        async def read(topic: str) -> list:
            return [rec async for rec in read_topic(settings, topic, idle_timeout_s=5)]

        segments, clicks = asyncio.run(read(names.user_segments)), asyncio.run(read(names.clicks))
        policy = asyncio.run(_cleanup_policy(settings, names.user_segments))
    finally:
        worker.stop()
    assert policy == "compact"
    got: dict[str, list[dict]] = defaultdict(list)
    for rec in sorted(segments, key=lambda r: (r.partition, r.offset)):
        value = json.loads(rec.value)
        assert rec.key.decode() == value["user_id"]
        got[value["user_id"]].append(value)
    # An independent replay: each partition's clicks, in offset order, through a fresh model.
    expected: dict[str, list[tuple[str | None, str]]] = defaultdict(list)
    models: dict[int, PartitionModel] = {}
    users: dict[str, UserState] = defaultdict(UserState)
    for rec in sorted(clicks, key=lambda r: (r.partition, r.offset)):
        click, _ = decode_click(rec.value, broker_ms=rec.timestamp_ms, now=datetime.now(UTC))
        model = models.setdefault(rec.partition, PartitionModel(partition=rec.partition, config=MonitorConfig()))
        user = users[click.user_id]
        before = user.segment
        model.observe(user, click, {})
        change = segment_change(click.user_id, click, partition=rec.partition, before=before, after=user.segment,
                                profile={}, model="replay")
        if change is not None:
            expected[click.user_id].append((change.previous, change.segment))
    assert expected, "the simulated shoppers never changed segment: the test checks nothing"
    assert {u: [(r["previous"], r["segment"]) for r in records] for u, records in got.items()} == dict(expected)
    sample = next(iter(got.values()))[-1]
    assert sample["description"] and set(sample["profile"]) >= {"share_click", "activity"}, sample


async def _cleanup_policy(settings: Settings, topic: str) -> str:
    admin = AIOKafkaAdminClient(**settings.kafka_client_kwargs())
    await admin.start()
    try:
        [described] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        entries = {entry[0]: entry[1] for entry in described.resources[0][4]}
        return entries["cleanup.policy"]
    finally:
        await admin.close()
