"""``streamsense demo``: bring up the local stack, replay a mixed stream with a live view, stop.

The replay is rate-controlled per topic; the view shows progress and events/s per topic, then a
summary of what the broker holds. The stack is stopped on exit, Ctrl-C included, unless
``--keep-running`` (or ``--kafka`` / ``--triton`` point at services that are not ours).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams.adapters.kafka_admin import consumer_lag, ensure_topics, list_topics
from streams.adapters.kafka_io import produce_lines
from streams.local.stack import LocalStack
from streams.settings import Settings
from streams.testing import synthetic_events
from streams.topics import INPUT_TOPICS, TopicNames

__all__ = ["DemoOptions", "run_demo"]

# Share of the stream per topic, roughly the mix of a shop with a news feed.
_MIX = {"clicks": 0.7, "reviews": 0.2, "news": 0.1}


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    events: int = 3000
    rate: float = 500.0
    keep_running: bool = False
    start_stack: bool = True
    seed: int = 7


def run_demo(settings: Settings, options: DemoOptions, console: Console) -> dict[str, int]:
    stack = LocalStack(settings)
    started = False
    try:
        if options.start_stack:
            with console.status("setting up and starting Kafka and Triton"):
                stack.provision()
                stack.up()
            started = True
            console.print(f"[green]stack up[/green]: Kafka {settings.kafka_bootstrap}, "
                          f"Triton {settings.triton_url}")
        names = TopicNames(prefix=settings.topic_prefix)
        asyncio.run(ensure_topics(settings, names.all()))
        sent = asyncio.run(_replay(settings, names, options, console))
        _summary(settings, names, sent, console)
        return sent
    finally:
        if started and not options.keep_running:
            with console.status("stopping the stack"):
                stopped = stack.down()
            console.print(f"stopped: {', '.join(stopped)}")
        elif started:
            console.print("left running; stop with `streamsense down`")


async def _replay(settings: Settings, names: TopicNames, options: DemoOptions,
                  console: Console) -> dict[str, int]:
    counts = {t: max(1, round(options.events * share)) for t, share in _MIX.items()}
    progress = Progress(TextColumn("{task.fields[topic]:>8}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]:>7.0f} ev/s"), TimeElapsedColumn(),
                        console=console)
    tasks = {t: progress.add_task(t, total=n, topic=t, rate=0.0) for t, n in counts.items()}
    t0 = time.monotonic()

    def on_sent(topic: str):
        def update(n: int) -> None:
            if n % 25 == 0 or n == counts[topic]:
                progress.update(tasks[topic], completed=n,
                                rate=n / max(time.monotonic() - t0, 1e-6))
        return update

    with progress:
        results = await asyncio.gather(*(
            produce_lines(settings, names.name(topic), topic,
                          (json.dumps(e).encode() for e in
                           synthetic_events(topic, n, seed=options.seed)),
                          rate=options.rate * _MIX[topic], on_sent=on_sent(topic))
            for topic, n in counts.items()))
    return dict(zip(counts, results, strict=True))


def _summary(settings: Settings, names: TopicNames, sent: dict[str, int], console: Console) -> None:
    topics = asyncio.run(list_topics(settings))
    lag = {(g.group, g.topic): g.lag for g in asyncio.run(consumer_lag(settings))}
    table = Table("topic", "partitions", "sent by the demo", title="summary")
    for topic in INPUT_TOPICS:
        full = names.name(topic)
        table.add_row(full, str(topics.get(full, 0)), str(sent.get(topic, 0)))
    console.print(table)
    if lag:
        console.print(f"consumer lag: {sum(lag.values())} records over {len(lag)} group/topic pairs")
