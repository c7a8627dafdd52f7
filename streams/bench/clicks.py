"""Section ``clicks``: the click path against a bare aiokafka consume -> produce loop."""

from __future__ import annotations

import asyncio
import json
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from models.online import simulate_clicks
from streams.adapters.kafka_admin import ensure_topics
from streams.adapters.kafka_io import produce_lines
from streams.bench.harness import Stack, Workers, wait_for_stable_group
from streams.settings import Settings
from streams.synthetic import click_record, recent_clicks

__all__ = ["clicks"]



def _clicks(n: int) -> list[bytes]:
    events = recent_clicks(
        simulate_clicks(users=5000, items=2000, genres=10, sessions=max(50, n // 30), seed=0).events[:n])
    return [json.dumps(click_record(e)).encode() for e in events]


async def _bare_loop(settings: Settings, source: str, sink: str, n: int) -> float:
    """Records per second of a plain consume -> produce loop between 10% and 90% of ``n``."""
    kwargs = settings.kafka_client_kwargs()
    consumer = AIOKafkaConsumer(source, **kwargs, group_id=f"bare-{time.monotonic_ns()}",
                                auto_offset_reset="earliest", enable_auto_commit=True)
    producer = AIOKafkaProducer(**kwargs, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    seen, marks = 0, {}
    try:
        while seen < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            futures = [await producer.send(sink, rec.value, key=rec.key)
                       for records in batches.values() for rec in records]
            await asyncio.gather(*futures)
            seen += len(futures)
            for share in (0.1, 0.9):
                if share not in marks and seen >= share * n:
                    marks[share] = (time.perf_counter(), seen)
    finally:
        await consumer.stop()
        await producer.stop()
    (t1, n1), (t2, n2) = marks[0.1], marks[0.9]
    return (n2 - n1) / (t2 - t1)


def clicks(stack: Stack, n: int) -> str:
    values = _clicks(n)
    base, _, _ = stack.prefixed("bench-c.")
    asyncio.run(ensure_topics(base, ["bare.clicks", "bare.out"]))
    asyncio.run(produce_lines(base, "bare.clicks", "clicks", values))
    bare = asyncio.run(_bare_loop(base, "bare.clicks", "bare.out", len(values)))
    rates = {}
    for workers in (1, 2):
        # A topic prefix (and so a consumer group and fresh tables) per run.
        settings, env, names = stack.prefixed(f"bench-c{workers}.")
        asyncio.run(ensure_topics(settings, names.all()))
        with Workers(env, workers, stack.home) as running:
            asyncio.run(wait_for_stable_group(settings, workers))  # no rebalance while measuring
            asyncio.run(produce_lines(settings, names.clicks, "clicks", values))
            rates[workers] = running.rate('streamsense_events_in_total{topic="clicks"}', len(values))
    stack.figures["clicks"] = {"bare": bare, "rates": rates}
    share = sum(b'"action": "impression"' not in v for v in values) / len(values)
    return "\n".join([
        f"{len(values)} simulated click events ({share:.0%} of them engagements, each answered with a "
        "recommendation), 4 partitions; the bare loop is one process.", "",
        "| consumer | clicks/s | / bare loop |", "|---|---|---|",
        f"| bare aiokafka consume -> produce loop | {bare:.0f} | 1.00 |",
        f"| StreamSense, 1 worker (full click path) | {rates[1]:.0f} | **{rates[1] / bare:.2f}** |",
        f"| StreamSense, 2 workers | {rates[2]:.0f} | {rates[2] / bare:.2f} |"])
