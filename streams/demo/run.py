"""``streamsense demo``: bring up the local stack and a worker, replay a realistic stream, show it
live, summarise and write a report.

The stream (:mod:`streams.demo.data`) is real text from packages (tweets about games as product
reviews, tweets naming companies as news headlines) and simulated shoppers, with four planted
changes: a product turning sour, a news source turning negative about a company, a flip in
click behaviour, and a review-bombing campaign on a stable product. Each run uses its own
topics (prefix ``demo-<date>-<time>.``), so detector state and alerts of earlier runs never mix
with this one's.

The live view shows the replay per topic, what the worker has produced, consumer lag, alerts as
they arrive and recent recommendations. The summary says which planted change was caught and
how many events after the change, lists any alert on a stable key as a false alert, and gives
counts, throughput and end-to-end latency percentiles (Kafka timestamps of input and output).

The stack and the worker are stopped on exit, Ctrl-C included, unless ``--keep-running`` (or
``--kafka`` / ``--triton`` point at services that are not ours; the worker is always ours
unless kept running).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter, deque
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams.adapters.kafka_admin import consumer_lag, ensure_topics
from streams.adapters.kafka_io import produce_lines
from streams.demo.data import DemoStream, build_stream
from streams.demo.report import write_report
from streams.demo.summary import attribute, summary, where_to_look
from streams.demo.types import DemoOptions, DemoOutputs
from streams.local.prometheus import binary as prometheus_binary
from streams.local.settings import LocalStackSettings
from streams.local.stack import LocalStack
from streams.synthetic import click_record
from streams.topics import INPUT_TOPICS, TopicNames

__all__ = ["run_demo"]

_OUTPUTS = ("reviews.enriched", "news.enriched", "alerts", "recommendations", "deadletter")


def run_demo(settings: LocalStackSettings, options: DemoOptions, console: Console) -> DemoOutputs:
    _log_to_file(settings.home / "run" / "demo.log")
    stack = LocalStack(settings)
    started = False
    worker: subprocess.Popen | None = None
    try:
        if options.start_kafka or options.start_triton:
            with console.status("setting up and starting the local services"):
                stack.provision()
                # Prometheus too where Debian's package is installed (`make setup` does), for
                # exploring the run's metrics afterwards (--keep-running).
                stack.up(with_kafka=options.start_kafka, with_triton=options.start_triton,
                         with_prometheus=prometheus_binary() is not None)
            started = True
            console.print(f"[green]stack up[/green]: Kafka {settings.kafka_bootstrap}, "
                          f"Triton {settings.triton_url}")
        with console.status("building the stream from packaged texts"):
            stream = build_stream(options.events, seed=options.seed, partitions=settings.topic_partitions,
                                  warmup=options.detector_warmup)
        prefix = f"{settings.topic_prefix}demo-{stream.start:%Y%m%d-%H%M%S}."
        settings = settings.model_copy(update={"topic_prefix": prefix,
                                               "detector_warmup": options.detector_warmup})
        names = TopicNames(prefix=prefix)
        asyncio.run(ensure_topics(settings, names.all()))
        worker = _start_worker(settings)
        console.print(f"worker started (pid {worker.pid}, log {_worker_log(settings)}); "
                      f"topics {prefix}*")
        for change in stream.changes:
            where = f"from event {change.index} of {change.total}" if change.kind != "bombing" else \
                f"at {change.at:%H:%M} event time"
            console.print(f"planted: {change.description}, {where}")
        outputs = asyncio.run(_live(settings, names, options, stream, worker, console))
        summary(stream, outputs, console)
        report = write_report(settings.home / "reports" / f"demo-{stream.start:%Y%m%d-%H%M%S}.html",
                              stream, outputs, attribute(stream, outputs.alerts))
        console.print(f"report: {report.resolve()}")
        where_to_look(settings, options, console)
        return outputs
    finally:
        keep = options.keep_running
        if worker is not None and worker.poll() is None and not keep:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        if started and not keep:
            with console.status("stopping the stack"):
                stopped = stack.down()
            console.print(f"stopped: {', '.join(stopped)}")
        elif keep:
            console.print("left running; stop with `streamsense down`")


def _log_to_file(path: Path) -> None:
    """The demo's own log records (Kafka clients retrying while a new topic gets its leaders,
    say) go to a file: on the terminal they would tear the live view apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def _worker_log(settings: LocalStackSettings) -> Path:
    return settings.home / "run" / "worker-demo.log"


def _start_worker(settings: LocalStackSettings) -> subprocess.Popen:
    log = _worker_log(settings)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "STREAMSENSE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "STREAMSENSE_TRITON_URL": settings.triton_url, "STREAMSENSE_TOPIC_PREFIX": settings.topic_prefix,
           "STREAMSENSE_DETECTOR_WARMUP": str(settings.detector_warmup)}
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)  # Ctrl-C reaches the demo, which stops it


class _View:
    """The live terminal view: replay bars, per-topic progress and lag, alerts, recommendations."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.progress = Progress(TextColumn("{task.fields[topic]:>8}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]:>6.0f} ev/s"), TimeElapsedColumn())
        self.tasks = {t: self.progress.add_task(t, total=n, topic=t, rate=0.0) for t, n in counts.items()}
        self.lag: dict[str, int] = {}
        self.peak_lag: Counter[str] = Counter()
        self.alerts: deque[dict] = deque(maxlen=8)
        self.recommendations: deque[dict] = deque(maxlen=3)
        self.out: Counter[str] = Counter()
        self.status = "replaying"

    def render(self) -> Group:
        flow = Table("input", "produced by the worker", "consumer lag", title=self.status,
                     title_justify="left")
        made = {"reviews": ("reviews.enriched", "enriched"), "news": ("news.enriched", "enriched"),
                "clicks": ("recommendations", "recommendation lists")}
        for topic in INPUT_TOPICS:
            out_topic, what = made[topic]
            flow.add_row(topic, f"{self.out[out_topic]} {what}", str(self.lag.get(topic, "-")))
        flow.add_row("", f"{self.out['deadletter']} dead-lettered", "")
        alerts = Table("kind", "subject", "status", "message", title=f"alerts ({self.out['alerts']})",
                       title_justify="left")
        for a in self.alerts:
            alerts.add_row(a["kind"], f"{a['subject']['type']} {escape(a['subject']['id'])}",
                           a.get("status", "open"), escape(a["message"][:90]))
        recs = Table("user", "after", "recommended", title="recommendations", title_justify="left")
        for r in self.recommendations:
            recs.add_row(r["user_id"], r.get("trigger_event_id", "")[-12:],
                         ", ".join(i["item_id"] for i in r["items"][:6]))
        return Group(self.progress, flow, alerts, recs)


async def _live(settings: LocalStackSettings, names: TopicNames, options: DemoOptions, stream: DemoStream,
                worker: subprocess.Popen, console: Console) -> DemoOutputs:
    events = {"reviews": stream.reviews, "clicks": [click_record(e) for e in stream.clicks],
              "news": stream.news}
    total = sum(len(v) for v in events.values())
    view = _View({t: len(v) for t, v in events.items()})
    outputs = DemoOutputs()
    t0 = time.monotonic()

    def on_sent(topic: str):
        def update(n: int) -> None:
            if n % 25 == 0 or n == len(events[topic]):
                view.progress.update(view.tasks[topic], completed=n,
                                     rate=n / max(time.monotonic() - t0, 1e-6))
        return update

    engagements = {e.event_id for e in stream.engagements}

    def done() -> bool:
        sent = outputs.sent
        dead = Counter(d.get("source_topic") for d in outputs.deadletter)
        return (len(sent) == len(events)
                and len(outputs.reviews) + dead[names.reviews] >= sent["reviews"]
                and len(outputs.news) + dead[names.news] >= sent["news"]
                and engagements <= outputs.recommendations.keys())

    reader = asyncio.create_task(_read_outputs(settings, names, outputs, view))
    lag = asyncio.create_task(_watch_lag(settings, names, view))
    with Live(view.render(), console=console, refresh_per_second=4) as live:
        refresher = asyncio.create_task(_refresh(live, view))
        try:
            results = await asyncio.gather(*(
                produce_lines(settings, names.name(topic), topic, (json.dumps(e).encode() for e in values),
                              rate=options.rate * len(values) / total, on_sent=on_sent(topic))
                for topic, values in events.items()))
            outputs.sent = dict(zip(events, results, strict=True))
            view.status = "replay done; waiting for the worker to catch up"
            deadline = time.monotonic() + options.timeout_s
            while not done() and time.monotonic() < deadline and worker.poll() is None:
                if reader.done():  # the reader failed: say why instead of waiting for nothing
                    reader.result()
                await asyncio.sleep(0.5)
            await asyncio.sleep(3)  # alerts of the last batch follow its enriched records
            view.status = "done" if done() else "stopped waiting"
            live.update(view.render())
        finally:
            for task in (refresher, reader, lag):
                task.cancel()
            await asyncio.gather(refresher, reader, lag, return_exceptions=True)
    console.print()  # the live view's last frame ends without a newline
    outputs.peak_lag = dict(view.peak_lag)
    if worker.poll() is not None:
        outputs.problem = f"the worker exited ({worker.returncode}); see {_worker_log(settings)}"
    elif not done():
        outputs.problem = (f"the worker did not catch up within {options.timeout_s:.0f}s; "
                           f"see {_worker_log(settings)}")
    if outputs.problem:
        console.print(f"[red]{outputs.problem}[/red]")
    return outputs


async def _refresh(live: Live, view: _View) -> None:
    while True:
        live.update(view.render())
        await asyncio.sleep(0.25)


async def _watch_lag(settings: LocalStackSettings, names: TopicNames, view: _View) -> None:
    while True:
        try:
            for row in await consumer_lag(settings):
                if row.group == settings.consumer_group and row.topic in (names.reviews, names.news,
                                                                          names.clicks):
                    base = names.base(row.topic)
                    view.lag[base] = row.lag
                    view.peak_lag[base] = max(view.peak_lag[base], row.lag)
        except Exception:  # the view goes on without lag; the summary does not need it
            pass
        await asyncio.sleep(1.0)


async def _read_outputs(settings: LocalStackSettings, names: TopicNames, outputs: DemoOutputs,
                        view: _View) -> None:
    """Follow the run's input and output topics from the beginning (they are this run's alone)."""
    topics = [names.name(t) for t in INPUT_TOPICS + _OUTPUTS]
    # No group: every partition of these topics, from the beginning.
    consumer = AIOKafkaConsumer(*topics, **settings.kafka_client_kwargs(), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                isolation_level="read_committed")
    await consumer.start()
    try:
        ids = {names.reviews: "review_id", names.news: "article_id", names.clicks: "event_id"}
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            for tp, records in batch.items():
                for r in records:
                    _collect(names, ids, outputs, view, tp.topic, r)
    finally:
        await consumer.stop()


def _collect(names: TopicNames, ids: dict[str, str], outputs: DemoOutputs, view: _View, topic: str,
             r) -> None:
    try:
        value = json.loads(r.value)
    except (TypeError, ValueError):
        return
    if topic in ids:
        if isinstance(value, dict) and ids[topic] in value:
            outputs.input_ts[str(value[ids[topic]])] = r.timestamp
            outputs.first_ts = min(outputs.first_ts or r.timestamp, r.timestamp)
        return
    base = names.base(topic)
    value["_ts"] = r.timestamp
    outputs.last_out_ts = max(outputs.last_out_ts or r.timestamp, r.timestamp)
    view.out[base] += 1
    if base == "reviews.enriched":
        outputs.reviews.append(value)
    elif base == "news.enriched":
        outputs.news.append(value)
    elif base == "alerts":
        outputs.alerts.append(value)
        view.alerts.append(value)
    elif base == "recommendations":
        outputs.recommendations[value["trigger_event_id"]] = value
        view.recommendations.append(value)
    else:
        outputs.deadletter.append(value)
