"""Section ``commits``: what the processing guarantee and the commit interval cost downstream.

One worker takes a paced click stream; an independent ``read_committed`` consumer notes when
each recommendation becomes visible to it. Latency = visible - sent (both on this machine's
monotonic clock). Under at-least-once an output is visible once written; under exactly-once only
when its transaction commits, which happens every ``STREAMSENSE_COMMIT_INTERVAL_S`` (and each
commit holds the batches back while it runs): the table says what that costs.
"""

from __future__ import annotations

import asyncio
import json
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.adapters.kafka_admin import ensure_topics
from streams.adapters.kafka_io import produce_lines
from streams.bench.clicks import click_values
from streams.bench.harness import Stack, Workers, percentiles, wait_until
from streams.settings import Settings
from streams.topics import TopicNames

__all__ = ["CONFIGS", "commits"]

# (guarantee, commit interval in seconds)
CONFIGS = (("at_least_once", 2.8), ("exactly_once", 2.8), ("exactly_once", 1.0), ("exactly_once", 0.25))
_SATURATION = 8000  # clicks produced at once after the paced ones
_WARM = 100  # clicks before the measured ones, until the worker has sent a recommendation


def commits(stack: Stack, seconds: float, rate: float = 150.0) -> str:
    n = int(rate * seconds)
    values = click_values(_WARM + n + _SATURATION)
    warm, values, backlog = values[:_WARM], values[_WARM:_WARM + n], values[_WARM + n:]
    # The clicks that each get one recommendation: all but impressions.
    recommended = {b["event_id"] for b in map(json.loads, values) if b["action"] != "impression"}
    lines = [f"One worker, clicks paced at {rate:.0f}/s for {seconds:.0f} s (once it has sent its first "
             "recommendation); latency = when a `read_committed` consumer first sees each recommendation "
             "- when its click was sent. Exactly-once outputs are visible only once their transaction "
             "commits.",
             f"Then {_SATURATION} clicks at once: the clicks/s the worker takes in.", "",
             "| guarantee | commit interval | recommendations | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) "
             "| clicks/s at saturation |", "|---|---|---|---|---|---|---|---|"]
    rows = []
    for i, (guarantee, interval) in enumerate(CONFIGS):
        settings, env, names = stack.prefixed(f"bench-k{i}.")
        env = {**env, "STREAMSENSE_PROCESSING_GUARANTEE": guarantee,
               "STREAMSENSE_COMMIT_INTERVAL_S": str(interval)}
        asyncio.run(ensure_topics(settings, names.all()))
        with Workers(env, 1, stack.home) as running:
            asyncio.run(produce_lines(settings, names.clicks, "clicks", warm))
            wait_until(lambda: running.total('streamsense_events_out_total{topic="recommendations"}') >= 1,
                       120, running.procs, f"the worker sent no recommendation within 120 s ({guarantee})")
            sent, seen = asyncio.run(_paced_and_watched(settings, names, values, rate))
            asyncio.run(produce_lines(settings, names.clicks, "clicks", backlog))
            # From 10% to 90% of all clicks: the paced ones are long in, so the backlog's.
            saturated = running.rate('streamsense_events_in_total{topic="clicks"}', _WARM + n + len(backlog))
        engagements = [k for k in sent if k in recommended]
        measured = [seen[k] - sent[k] for k in engagements if k in seen]
        if len(measured) < len(engagements):
            raise RuntimeError(f"{len(engagements) - len(measured)} of {len(engagements)} recommendations "
                               f"never became visible ({guarantee}, commit interval {interval} s)")
        p50, p95, p99 = percentiles(measured)
        rows.append({"guarantee": guarantee, "interval": interval, "p50": p50, "p95": p95, "p99": p99,
                     "saturated": saturated})
        lines.append(f"| {guarantee.replace('_', '-')} | {interval:g} s | {len(measured)} | "
                     f"{1000 * p50:.0f} | {1000 * p95:.0f} | {1000 * p99:.0f} | {1000 * max(measured):.0f} "
                     f"| {saturated:,.0f} |")
    stack.figures["commits"] = {"rows": rows}
    return "\n".join(lines)


async def _paced_and_watched(settings: Settings, names: TopicNames, values: list[bytes], rate: float,
                             *, idle_s: float = 10.0) -> tuple[dict[str, float], dict[str, float]]:
    """Send ``values`` to ``clicks`` at ``rate`` while watching ``recommendations``: when each
    click was sent, and when its recommendation (by trigger id) was first seen; in send order."""
    consumer = AIOKafkaConsumer(names.recommendations, **settings.kafka_client_kwargs(), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                isolation_level="read_committed", fetch_max_wait_ms=20)
    producer = AIOKafkaProducer(**settings.kafka_client_kwargs(), acks="all", linger_ms=2)
    await asyncio.gather(consumer.start(), producer.start())
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = asyncio.Event()

    async def watch() -> None:
        last_new = time.monotonic()
        while not (done.is_set() and time.monotonic() - last_new > idle_s):
            batch = await consumer.getmany(timeout_ms=50)
            now = time.monotonic()
            for records in batch.values():
                for record in records:
                    seen.setdefault(json.loads(record.value)["trigger_event_id"], now)
                    last_new = now

    watching = asyncio.create_task(watch())
    try:
        t0 = time.monotonic()
        for i, value in enumerate(values):
            ahead = t0 + i / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            body = json.loads(value)
            await producer.send(names.clicks, value, key=body["user_id"].encode())
            sent[body["event_id"]] = time.monotonic()
        await producer.flush()
        done.set()
        await watching
    finally:
        watching.cancel()
        await asyncio.gather(consumer.stop(), producer.stop(), return_exceptions=True)
    return sent, seen

