"""The click path on the real broker: one recommendation per engagement, bad clicks dead-lettered,
recommendations better than popularity, and a worker restart resumes the learned models."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from models.online import ClickEvent, simulate_clicks
from models.online.evaluate import popularity_recommender, score_recommender
from streams.adapters.kafka_io import produce_lines, read_topic
from streams.settings import Settings
from streams.testing import click_record, recent_clicks
from streams.testing.stack import WorkerProcess, ids_in
from streams.topics import TopicNames

pytestmark = pytest.mark.integration

BAD = [b'{"event_id": "bad-1", "user_id": "u1", "item_id": "i1", "action": "buy"}',
       b'{"event_id": "bad-2", "item_id": "i1", "action": "click"}',
       b"\xff\xfe not json"]


def _wire(e: ClickEvent) -> bytes:
    return json.dumps(click_record(e)).encode()


def test_clicks_get_recommendations_that_beat_popularity_across_a_restart(
        kafka: Settings, triton: Settings, stack_environment: dict[str, str], tmp_path: Path):
    prefix = "tc1."
    env = {**stack_environment, "STREAMSENSE_TOPIC_PREFIX": prefix, "STREAMSENSE_CLICK_CHECKPOINT_S": "1"}
    settings = kafka.model_copy(update={"topic_prefix": prefix})
    names = TopicNames(prefix=prefix)
    data = simulate_clicks(users=300, items=120, genres=6, sessions=700, seed=5)
    events = recent_clicks(data.events)
    half = len(events) // 2
    engaged = [e.event_id for e in events if e.action != "impression"]
    engaged_first = [e.event_id for e in events[:half] if e.action != "impression"]

    def produce(values: list[bytes]) -> None:
        asyncio.run(produce_lines(settings, names.clicks, "clicks", values))

    worker = WorkerProcess(env, log_dir=tmp_path)
    try:
        produce([_wire(e) for e in events[:half]] + BAD)
        ids_in(settings, names.recommendations, "trigger_event_id", expect=len(engaged_first), timeout_s=240,
               worker=worker)
        asyncio.run(asyncio.sleep(3))  # past the 1 s checkpoint interval: the idle models are saved
        worker.stop()
        assert worker.proc.returncode in (0, -15, 143), worker.tail()
        worker = WorkerProcess(env, log_dir=tmp_path)
        produce([_wire(e) for e in events[half:]])
        got = ids_in(settings, names.recommendations, "trigger_event_id", expect=len(engaged), timeout_s=300,
                     worker=worker)

        async def read(topic: str) -> list[dict]:
            return [json.loads(rec.value) async for rec in read_topic(settings, topic, idle_timeout_s=5)]

        recommendations, dead = asyncio.run(read(names.recommendations)), asyncio.run(read(names.deadletter))
    finally:
        worker.stop()

    # One recommendation per click / add-to-cart / purchase, none for impressions.
    assert set(got) == set(engaged), worker.tail()
    assert all(len(r["items"]) == 10 or r["model"].endswith(".1") for r in recommendations[-100:])
    errors = sorted(d["error"] for d in dead if d["source_topic"] == names.clicks)
    assert [e.split(":")[0] for e in errors] == ["action", "user_id", "value is not valid UTF-8 (byte 0"], errors

    # The stream's own quality: each click scored against the user's previous list.
    by_trigger = {r["trigger_event_id"]: [i["item_id"] for i in r["items"]] for r in recommendations}
    hits: list[bool] = []
    last: dict[str, list[str]] = {}
    for n, e in enumerate(events):
        if e.action == "click" and e.user_id in last and n >= half:
            hits.append(e.item_id in last[e.user_id])
        if e.event_id in by_trigger:
            last[e.user_id] = by_trigger[e.event_id]
    popularity, _, _ = score_recommender(events, popularity_recommender())  # the baseline on the whole stream
    ours = sum(hits) / len(hits)
    assert ours > 1.5 * popularity, (ours, popularity)
    # A model version is <name>@p<partition>.<events learned>; a restarted worker that lost
    # its models would start counting again from 0.
    after_restart = [r for r in recommendations if r["trigger_event_id"] in set(engaged[len(engaged_first):])]
    versions = {}
    for r in after_restart:
        partition, learned = r["model"].split("@p")[1].split(".")
        versions.setdefault(partition, int(learned))
    # Every model resumed from a checkpoint holding all it learned before the stop.
    assert len(versions) == 4 and sum(versions.values()) >= half, (versions, half)
