"""The click benchmark's peers (streams/bench/peers.py) do the same work on the real broker:
every engagement answered once, with the user's last items as the shared `step` defines them."""

from __future__ import annotations

import asyncio
import json

import pytest

from streams.adapters.kafka_admin import ensure_topics
from streams.adapters.kafka_io import produce_lines, read_topic
from streams.bench.clicks import click_values
from streams.bench.peer_apps import step
from streams.bench.peers import PEERS, bare_loop, output_rate, run_peer
from streams.settings import Settings

pytestmark = pytest.mark.integration


def expected_outputs(values: list[bytes]) -> dict[str, list[str]]:
    """event_id -> recent items, from the events in order (per user order is all that matters)."""
    recent: dict[str, list[str]] = {}
    out = {}
    for value in values:
        click = json.loads(value)
        recent[click["user_id"]], record = step(recent.get(click["user_id"]), click)
        if record is not None:
            out[record["event_id"]] = record["recent"]
    return out


def test_every_peer_answers_each_engagement_once_with_the_same_state(kafka: Settings, tmp_path):
    values = click_values(1500)
    want = expected_outputs(values)
    sinks = {name: f"it-peers.out.{name}" for name in ("bare", *PEERS)}
    asyncio.run(ensure_topics(kafka, ["it-peers.clicks", *sinks.values()], partitions=4))
    asyncio.run(produce_lines(kafka, "it-peers.clicks", "clicks", values))
    asyncio.run(bare_loop(kafka, "it-peers.clicks", sinks["bare"], len(values)))
    for name in PEERS:
        run_peer(name, kafka, "it-peers.clicks", sinks[name], len(want), tmp_path, timeout_s=240)

    async def read(topic: str) -> list[dict]:
        return [json.loads(r.value) async for r in read_topic(kafka, topic, idle_timeout_s=3)]

    for name, sink in sinks.items():
        got = asyncio.run(read(sink))
        assert len(got) == len(want), name
        assert {r["event_id"]: r["recent"] for r in got} == want, name
        assert asyncio.run(output_rate(kafka, sink, len(want))) > 0
