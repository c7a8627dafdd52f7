"""The click section's side-by-side run: the same click events through a bare aiokafka loop, a
minimal faust-streaming agent and a Quix Streams app (all doing the plain-state workload of
:mod:`streams.bench.peer_apps`), next to StreamSense's full click path, on one broker.

Every consumer's rate is read the same way, from the records it wrote: the Kafka timestamps of
its output records between the 10th and the 90th percentile (its start-up and tail excluded;
nothing reads its output while it runs).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.adapters.kafka_admin import end_offsets
from streams.adapters.kafka_io import read_topic
from streams.bench.harness import REPO
from streams.bench.peer_apps import step
from streams.local.process import Service
from streams.settings import Settings

__all__ = ["PEERS", "bare_loop", "output_rate", "run_peer"]

PEERS = ("faust", "quix")


async def bare_loop(settings: Settings, source: str, sink: str, n: int) -> None:
    """The workload in one process: aiokafka in, a dict as state, aiokafka out (until ``n`` read)."""
    kwargs = settings.kafka_client_kwargs()
    consumer = AIOKafkaConsumer(source, **kwargs, group_id=f"bare-{time.monotonic_ns()}",
                                auto_offset_reset="earliest", enable_auto_commit=True)
    producer = AIOKafkaProducer(**kwargs, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    recent: dict[str, list[str]] = {}
    seen = 0
    try:
        while seen < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            futures = []
            for records in batches.values():
                for rec in records:
                    click = json.loads(rec.value)
                    recent[click["user_id"]], out = step(recent.get(click["user_id"]), click)
                    if out is not None:
                        futures.append(await producer.send(sink, json.dumps(out).encode(), key=rec.key))
                seen += len(records)
            await asyncio.gather(*futures)
    finally:
        await consumer.stop()
        await producer.stop()


def run_peer(name: str, settings: Settings, source: str, sink: str, expected: int, home: Path,
             *, timeout_s: float = 600) -> None:
    """Start the peer ``name`` as a process and stop it once ``sink`` holds ``expected`` records."""
    state = home / f"peer-{name}-{time.time_ns()}"
    state.mkdir(parents=True)
    env = {"PEER_BROKER": ",".join(settings.kafka_bootstrap_servers), "PEER_SOURCE": source,
           "PEER_SINK": sink, "PEER_GROUP": f"peer-{name}-{time.time_ns()}", "PEER_STATE_DIR": str(state)}
    command = [sys.executable, "-c", "import sys; from streams.bench.peer_apps import run; run(sys.argv[1])",
               name]
    # No port to ask: a peer is up once started, and shows it works by what it writes.
    peer = Service(name=f"peer-{name}", argv=command, run_dir=state, health=lambda: True, env=env, cwd=REPO)
    peer.start(timeout_s=30)
    try:
        deadline = time.monotonic() + timeout_s
        while asyncio.run(end_offsets(settings, [sink]))[sink] < expected:
            if peer.pid() is None:
                raise RuntimeError(f"the {name} peer exited; see {peer.log_file}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {name} peer did not write {expected} records in {timeout_s:.0f} s")
            time.sleep(1)
    finally:
        peer.stop()


async def output_rate(settings: Settings, topic: str, expected: int) -> float:
    """Records/s written to ``topic``, from its records' timestamps between the 10th and 90th
    percentile of the first ``expected``."""
    records = read_topic(settings, topic, max_records=expected, idle_timeout_s=10)
    stamps = [r.timestamp_ms async for r in records]
    if len(stamps) < expected:
        raise RuntimeError(f"{topic} holds {len(stamps)} records, not the {expected} expected")
    stamps.sort()
    lo, hi = int(0.1 * expected), int(0.9 * expected)
    return (hi - lo) / max(1e-3, (stamps[hi] - stamps[lo]) / 1000)
