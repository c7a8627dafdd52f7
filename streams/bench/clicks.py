"""Section ``clicks``: StreamSense's full click path next to its peers on the same broker, in one
run: a bare aiokafka loop, a minimal faust-streaming agent and a Quix Streams app, all doing the
plain-state workload of :mod:`streams.bench.peer_apps` (:mod:`streams.bench.peers`)."""

from __future__ import annotations

import asyncio
import json
import time

from models.online import simulate_clicks
from streams.adapters.kafka_admin import ensure_topics
from streams.adapters.kafka_io import produce_lines
from streams.bench.harness import Stack, Workers, rss_mib, wait_for_stable_group
from streams.bench.peers import PEERS, bare_loop, output_rate, run_peer
from streams.synthetic import click_record, recent_clicks

__all__ = ["click_values", "clicks", "in_process_us", "streamsense_clicks"]

_NAMES = {"bare": "bare aiokafka loop, dict state", "faust": "faust-streaming minimal per-record agent, "
          "changelogged table", "quix": "Quix Streams app, RocksDB state (librdkafka client)"}


def click_values(n: int) -> list[bytes]:
    events = recent_clicks(
        simulate_clicks(users=5000, items=2000, genres=10, sessions=max(50, n // 30), seed=0).events[:n])
    return [json.dumps(click_record(e)).encode() for e in events]


def in_process_us(values: list[bytes], batch: int = 500) -> float:
    """Microseconds per click of the full click path in this process, on the test kit's fakes
    (no Kafka, no Faust): what the worker's models, state and encoding cost alone."""
    from streams.adapters.metrics import Metrics
    from streams.agents.clicks import ClickProcessor
    from streams.core.monitoring import MonitorConfig
    from streams.core.state import StateSeal
    from streams.testing import FakeEvent, FakeTable, FakeTopic

    events = [FakeEvent(topic="clicks", partition=i % 4, offset=i, value=v) for i, v in enumerate(values)]
    processor = ClickProcessor(users=FakeTable(), models=FakeTable(), signals=FakeTable(),
                               recommendations=FakeTopic(), alerts=FakeTopic(), deadletter=FakeTopic(),
                               metrics=Metrics(), config=MonitorConfig(), checkpoint_s=30.0,
                               checkpoint_events=100_000, seal=StateSeal(b"bench" * 8))

    async def run() -> None:
        for i in range(0, len(events), batch):
            await processor.process(events[i:i + batch])
            processor.flush()  # as a commit would (a worker commits every few seconds)

    started = time.perf_counter()
    asyncio.run(run())
    return 1e6 * (time.perf_counter() - started) / len(events)


def _peers(stack: Stack, values: list[bytes], engagements: int) -> dict[str, float]:
    base, _, _ = stack.prefixed("bench-c.")
    sinks = {name: f"peers.out.{name}" for name in ("bare", *PEERS)}
    asyncio.run(ensure_topics(base, ["peers.clicks", *sinks.values()]))
    asyncio.run(produce_lines(base, "peers.clicks", "clicks", values))
    asyncio.run(bare_loop(base, "peers.clicks", sinks["bare"], len(values)))
    for name in PEERS:
        run_peer(name, base, "peers.clicks", sinks[name], engagements, stack.home)
    return {name: asyncio.run(output_rate(base, sink, engagements)) for name, sink in sinks.items()}


def streamsense_clicks(stack: Stack, values: list[bytes], workers: int, *, store: str = "memory",
                       tag: str = "") -> tuple[float, int, float, float]:
    """Recommendations/s of ``workers`` workers (a topic prefix, so a group and fresh tables,
    per run), how many they sent, the clicks/s they took (from their own metrics), and the first
    worker's resident memory at the end (MiB). ``store``: STREAMSENSE_TABLE_STORE."""
    settings, env, names = stack.prefixed(f"bench-c{workers}{tag}.")
    env = {**env, "STREAMSENSE_TABLE_STORE": store}
    asyncio.run(ensure_topics(settings, names.all()))
    with Workers(env, workers, stack.home) as running:
        asyncio.run(wait_for_stable_group(settings, workers))  # no rebalance while measuring
        asyncio.run(produce_lines(settings, names.clicks, "clicks", values))
        taken = running.rate('streamsense_events_in_total{topic="clicks"}', len(values))
        deadline = time.monotonic() + 300
        while running.total('streamsense_events_in_total{topic="clicks"}') < len(values):
            if time.monotonic() > deadline:
                raise TimeoutError("the workers did not take every click in 300 s")
            time.sleep(0.5)
        time.sleep(2)  # the last batch's sends
        sent = int(running.total('streamsense_events_out_total{topic="recommendations"}'))
        rss = rss_mib(running.procs[0].pid)
    return asyncio.run(output_rate(settings, names.recommendations, sent)), sent, taken, rss


def clicks(stack: Stack, n: int) -> str:
    values = click_values(n)
    engagements = sum(json.loads(v)["action"] != "impression" for v in values)
    alone = in_process_us(values)
    rates = _peers(stack, values, engagements)
    sent, taken = {}, {}
    for workers in (1, 2):
        rate, sent[workers], taken[workers], _ = streamsense_clicks(stack, values, workers)
        rates[f"streamsense-{workers}"] = rate
    stack.figures["clicks"] = {"rates": rates}
    one, faust, quix = rates["streamsense-1"], rates["faust"], rates["quix"]
    intro = (f"{len(values):,} simulated click events, {engagements:,} of them engagements (one output "
             f"record each; StreamSense sent {sent[1]:,} recommendations), 4 partitions, every consumer "
             "on the same broker in this run. Rates are output records/s from the outputs' own Kafka "
             "timestamps (10th-90th percentile).")
    lines = [intro, "", "| consumer | outputs/s | x bare loop | x minimal Faust |", "|---|---|---|---|"]
    rows = [(_NAMES[k], rates[k]) for k in ("bare", "quix", "faust")]
    rows += [("StreamSense, 1 worker, full click path (models + recommendations)", one),
             ("StreamSense, 2 workers", rates["streamsense-2"])]
    lines += [f"| {name} | {rate:,.0f} | {rate / rates['bare']:.2f} | {rate / faust:.2f} |"
              for name, rate in rows]
    two = rates["streamsense-2"] / one
    lines += ["", f"StreamSense (1 worker) / minimal Faust: **{one / faust:.2f}** (goal 1.5); / Quix "
              f"Streams: **{one / quix:.2f}** (goal 0.5); 2 workers / 1: **{two:.2f}** (goal 1.7). "
              f"Input side, from the workers' own counters: {taken[1]:,.0f} clicks/s with 1 worker, "
              f"{taken[2]:,.0f} with 2. The same click path in one process on the test kit's fakes "
              f"(no Kafka, no Faust) costs {alone:.0f} us per click, against {1e6 / taken[1]:.0f} us in a "
              "worker."]
    return "\n".join(lines)
