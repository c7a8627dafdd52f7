"""Click-path throughput: one StreamSense worker against a bare aiokafka consume->produce loop,
on the same local broker, in the same run (the machine is shared: compare ratios, not rates).

``python -m streams.bench --events 60000 --write BENCHMARKS.md`` starts a private Kafka broker
(the project's own, on free ports under a temporary home), fills a clicks topic with simulated
clicks (``models.online.simulate``), then measures, each on its own copy of the input:

* **bare loop**: an aiokafka consumer that reads every record and produces one output record
  per input (no decoding, no model): the ceiling for a Python Kafka client;
* **worker**: ``streamsense worker`` (a subprocess, as users run it) doing the full click path:
  decode, validate, user state, co-visitation, click-through and ranking models, segments,
  a recommendation for every engagement, checkpoints.

The rate is taken between 10% and 90% of the input consumed (startup and the tail excluded):
the bare loop times itself, the worker is read from its ``streamsense_events_in_total`` metric.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from models.online import simulate_clicks
from models.online.evaluate import write_section
from streams.adapters.kafka_admin import ensure_topics
from streams.adapters.kafka_io import produce_lines
from streams.local.process import free_port
from streams.local.stack import LocalStack
from streams.settings import Settings
from streams.topics import TopicNames

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]


def _clicks(n: int) -> list[bytes]:
    sessions = max(50, n // 30)
    events = simulate_clicks(users=5000, items=2000, genres=10, sessions=sessions, seed=0).events[:n]
    return [json.dumps({"event_id": e.event_id, "user_id": e.user_id, "session_id": e.session_id,
                        "item_id": e.item_id, "action": e.action, "ts": int(e.ts * 1000)}).encode()
            for e in events]


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
            futures = []
            for records in batches.values():
                for rec in records:
                    futures.append(await producer.send(sink, rec.value, key=rec.key))
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


def _events_in(url: str) -> float:
    try:
        text = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return 0.0
    match = re.search(r'^streamsense_events_in_total\{topic="clicks"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def _worker_rate(env: dict[str, str], settings: Settings, n: int, log: Path) -> float:
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--loglevel", "warn"],
                            env={**os.environ, **env}, cwd=REPO, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    marks = {}
    try:
        deadline = time.monotonic() + 1800
        while len(marks) < 2 and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited: {log.read_text()[-2000:]}")
            seen = _events_in(url)
            for share in (0.1, 0.9):
                if share not in marks and seen >= share * n:
                    marks[share] = (time.perf_counter(), seen)
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    (t1, n1), (t2, n2) = marks[0.1], marks[0.9]
    return (n2 - n1) / (t2 - t1)


def run(n: int) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="streamsense-bench-"))
    env = {"STREAMSENSE_HOME": str(home), "STREAMSENSE_CACHE_DIR": str(REPO / ".streamsense"),
           "STREAMSENSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
           "STREAMSENSE_KAFKA_CONTROLLER_PORT": str(free_port()),
           "STREAMSENSE_METRICS_PORT": str(free_port()), "STREAMSENSE_WEB_PORT": str(free_port()),
           "STREAMSENSE_TOPIC_PREFIX": "bench."}
    os.environ.update(env)
    settings = Settings()
    stack = LocalStack(settings)
    stack.provision()
    kafka = stack.kafka()
    kafka.start(timeout_s=settings.startup_timeout_s)
    try:
        names = TopicNames(prefix="bench.")
        values = _clicks(n)
        asyncio.run(ensure_topics(settings, [*names.all(), "bare.clicks", "bare.out"]))
        asyncio.run(produce_lines(settings, "bare.clicks", "clicks", values))
        asyncio.run(produce_lines(settings, names.clicks, "clicks", values))
        bare = asyncio.run(_bare_loop(settings, "bare.clicks", "bare.out", len(values)))
        worker = _worker_rate(env, settings, len(values), home / "worker.log")
    finally:
        kafka.stop()
    engagements = sum(b'"action": "impression"' not in v for v in values)
    return {"events": float(len(values)), "engagement_share": engagements / len(values), "bare": bare,
            "worker": worker, "ratio": worker / bare}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--write", type=Path, help="replace the click-throughput section of this file")
    args = parser.parse_args(argv)
    result = run(args.events)
    table = "\n".join([
        f"{int(result['events'])} simulated click events ({result['engagement_share']:.0%} of them "
        "engagements, each answered with a recommendation), 4 partitions, one process each, rates "
        "between 10% and 90% of the input consumed.",
        "",
        "| consumer | clicks/s |",
        "|---|---|",
        f"| bare aiokafka consume -> produce loop | {result['bare']:.0f} |",
        f"| StreamSense worker (full click path) | {result['worker']:.0f} |",
        f"| **ratio** | **{result['ratio']:.2f}** |",
    ])
    print(table)
    if args.write:
        write_section(args.write, f"Command: `python -m streams.bench --events {args.events} --write "
                      f"{args.write}`\n\n{table}", name="click-throughput")


if __name__ == "__main__":
    main()
