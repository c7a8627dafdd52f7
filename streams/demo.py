"""``streamsense demo``: bring up the local stack and a worker, replay a mixed stream, summarise.

The replay is rate-controlled per topic; the live view shows events/s per input topic and the
worker's progress (reviews and articles enriched or dead-lettered). The summary shows counts,
throughput and a few enriched reviews. The stack and the worker are stopped on exit, Ctrl-C
included, unless ``--keep-running`` (or ``--kafka`` / ``--triton`` point at services that are
not ours; the worker is always ours).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from models.online import ClickEvent, simulate_clicks
from models.online.evaluate import popularity_recommender, score_recommender
from streams.adapters.kafka_admin import end_offsets, ensure_topics
from streams.adapters.kafka_io import produce_lines, read_topic
from streams.local.stack import LocalStack
from streams.settings import Settings
from streams.testing import click_record, planted_reviews, synthetic_events
from streams.topics import INPUT_TOPICS, TopicNames

__all__ = ["DemoOptions", "run_demo"]

# Share of the stream per topic, roughly the mix of a shop with a news feed.
_MIX = {"clicks": 0.7, "reviews": 0.2, "news": 0.1}


@dataclass(frozen=True)
class _Plan:
    """The reviews of one run: four products (new ids each run, because detector state persists
    in Kafka between runs), one of which turns sour 60% of the way through its reviews."""

    products: list[str]
    start: datetime
    change_at: int
    reviews: list[dict]
    clicks: list[ClickEvent]  # simulated shoppers with known tastes (models.online.simulate)

    @property
    def sour(self) -> str:
        return self.products[1]

    @classmethod
    def new(cls, n: int, n_clicks: int, seed: int) -> _Plan:
        run = time.strftime("%H%M%S")
        products = [f"demo-{run}-p{k}" for k in range(4)]
        start = datetime.now(UTC).replace(microsecond=0)
        per_product = max(1, n // len(products))
        change_at = int(per_product * 0.6)
        reviews = planted_reviews(products, per_product, sour={products[1]: change_at}, seed=seed,
                                  start=start)
        world = simulate_clicks(users=300, items=150, genres=6, sessions=max(10, n_clicks // 25), seed=seed,
                                start_ts=start.timestamp())
        clicks = [replace(e, event_id=f"demo-{run}-{e.event_id}") for e in world.events[:n_clicks]]
        return cls(products, start, change_at, reviews, clicks)

    @property
    def engagements(self) -> list[ClickEvent]:
        return [e for e in self.clicks if e.action != "impression"]


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
    worker: subprocess.Popen | None = None
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
        outputs = [names.reviews_enriched, names.news_enriched, names.deadletter]
        before = asyncio.run(end_offsets(settings, outputs))
        worker = _start_worker(settings)
        console.print(f"worker started (pid {worker.pid}, log {settings.home / 'run' / 'worker-demo.log'})")
        t0 = time.monotonic()
        plan = _Plan.new(max(1, round(options.events * _MIX["reviews"])),
                         max(1, round(options.events * _MIX["clicks"])), options.seed)
        sent = asyncio.run(_replay(settings, names, options, plan, console))
        expected = sent["reviews"] + sent["news"]
        done = _wait_for_outputs(settings, outputs, before, expected, worker, console)
        elapsed = time.monotonic() - t0
        _summary(settings, names, sent, done, before, elapsed, console)
        _alerts_summary(settings, names, plan, console)
        _recommendations_summary(settings, names, plan, worker, console)
        return sent
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        if started and not options.keep_running:
            with console.status("stopping the stack"):
                stopped = stack.down()
            console.print(f"stopped: {', '.join(stopped)}")
        elif started:
            console.print("left running; stop with `streamsense down`")


def _start_worker(settings: Settings) -> subprocess.Popen:
    log = settings.home / "run" / "worker-demo.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "STREAMSENSE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "STREAMSENSE_TRITON_URL": settings.triton_url}
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait_for_outputs(settings: Settings, outputs: list[str], before: dict[str, int], expected: int,
                      worker: subprocess.Popen, console: Console, timeout_s: float = 600.0) -> int:
    """Wait until every replayed review and article is enriched or dead-lettered."""
    progress = Progress(TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console)
    deadline = time.monotonic() + timeout_s
    done = 0
    with progress:
        task = progress.add_task("enriched", total=expected)
        while done < expected and time.monotonic() < deadline and worker.poll() is None:
            now = asyncio.run(end_offsets(settings, outputs))
            done = sum(now[t] - before[t] for t in outputs)
            progress.update(task, completed=min(done, expected))
            time.sleep(1.0)
    if worker.poll() is not None:
        console.print(f"[red]the worker exited ({worker.returncode}); see "
                      f"{settings.home / 'run' / 'worker-demo.log'}[/red]")
    return done


async def _replay(settings: Settings, names: TopicNames, options: DemoOptions, plan: _Plan,
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

    counts["reviews"], counts["clicks"] = len(plan.reviews), len(plan.clicks)
    events = {"reviews": plan.reviews, "clicks": [click_record(e) for e in plan.clicks],
              "news": list(synthetic_events("news", counts["news"], seed=options.seed))}
    with progress:
        results = await asyncio.gather(*(
            produce_lines(settings, names.name(topic), topic, (json.dumps(e).encode() for e in events[topic]),
                          rate=options.rate * _MIX[topic], on_sent=on_sent(topic))
            for topic in counts))
    return dict(zip(counts, results, strict=True))


def _summary(settings: Settings, names: TopicNames, sent: dict[str, int], done: int,
             before: dict[str, int], elapsed: float, console: Console) -> None:
    after = asyncio.run(end_offsets(settings, [names.reviews_enriched, names.news_enriched,
                                               names.deadletter]))
    table = Table("topic", "records", title="summary")
    for topic in INPUT_TOPICS:
        table.add_row(f"{names.name(topic)} (replayed)", str(sent.get(topic, 0)))
    for topic, count in after.items():
        table.add_row(f"{topic} (new)", str(count - before[topic]))
    console.print(table)
    console.print(f"{done} reviews and articles processed in {elapsed:.1f}s "
                  f"({done / max(elapsed, 1e-6):.0f}/s end to end, replay included)")

    async def examples() -> list[dict]:
        latest: deque[dict] = deque(maxlen=200)
        async for rec in read_topic(settings, names.reviews_enriched, idle_timeout_s=2):
            latest.append(json.loads(rec.value))
        return list(latest)

    sample = asyncio.run(examples())
    mix = {label: sum(r["sentiment"]["label"] == label for r in sample)
           for label in ("negative", "neutral", "positive")}
    console.print(f"sentiment mix of {len(sample)} enriched reviews: {mix}")
    for review in sample[:3]:
        console.print(f"  ({review['sentiment']['label']} {review['sentiment']['score']:.2f}) "
                      f"{escape(review['text'][:80])}")
    console.print(f"worker metrics: http://{settings.metrics_host}:{settings.metrics_port}/metrics")


def _alerts_summary(settings: Settings, names: TopicNames, plan: _Plan, console: Console) -> None:
    """The alerts of this run, and whether the planted change was caught and how fast."""
    async def read() -> list[dict]:
        out = [json.loads(rec.value) async for rec in read_topic(settings, names.alerts, idle_timeout_s=3)]
        # Alert times are event times, and an earlier run's reviews are stamped into the future
        # (one per minute): pick this run's products by id, other subjects by time.
        return [a for a in out
                if (a["subject"]["id"] in plan.products if a["subject"]["type"] == "product"
                    else datetime.fromisoformat(a["detected_at"]) >= plan.start)]

    time.sleep(2)  # the last batch's alerts follow its enriched records
    alerts = asyncio.run(read())
    table = Table("kind", "status", "subject", "severity", "message", title=f"alerts ({len(alerts)})")
    for a in alerts[-12:]:
        table.add_row(a["kind"], a.get("status", "open"), f"{a['subject']['type']} {a['subject']['id']}",
                      a["severity"], escape(a["message"]))
    console.print(table)
    sour, change_at = plan.sour, plan.change_at
    caught = [a for a in alerts if a["kind"] == "sentiment_shift" and a["subject"]["id"] == sour]
    stable = [a for a in alerts if a["kind"] == "sentiment_shift" and a["subject"]["id"] != sour]
    if caught:
        # Review i of every product is stamped start + i minutes.
        minutes = (datetime.fromisoformat(caught[0]["detected_at"]) - plan.start).total_seconds() / 60
        delay = round(minutes) - change_at
        console.print(f"[green]planted change caught[/green]: {sour}'s reviews turned sour at review "
                      f"{change_at}; alerted {delay} reviews later.")
    elif change_at < 60:
        console.print(f"planted change not checked: {sour} has too few reviews for the detector's "
                      "warm-up (use --events 3000 or more).")
    else:
        console.print(f"[red]planted change missed[/red]: no sentiment_shift alert for {sour}.")
    console.print(f"false alerts on the stable products: {len(stable)}")


def _recommendations_summary(settings: Settings, names: TopicNames, plan: _Plan, worker: subprocess.Popen,
                             console: Console, timeout_s: float = 120.0) -> None:
    """One recommendation per engagement, and how often shoppers clicked what they were shown."""
    wanted = {e.event_id for e in plan.engagements}

    async def read() -> dict[str, list[str]]:
        return {body["trigger_event_id"]: [i["item_id"] for i in body["items"]]
                async for rec in read_topic(settings, names.recommendations, idle_timeout_s=2)
                if (body := json.loads(rec.value))["trigger_event_id"] in wanted}

    deadline = time.monotonic() + timeout_s
    lists = asyncio.run(read())
    while len(lists) < len(wanted) and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(2)
        lists = asyncio.run(read())
    # The worker's lists, scored like the offline recommenders: each click against the list the
    # shopper got after their previous engagement.
    hit_rate, _, scored = score_recommender(plan.clicks, lambda e: lists.get(e.event_id))
    baseline, _, _ = score_recommender(plan.clicks, popularity_recommender())
    console.print(f"recommendations: {len(lists)} for {len(wanted)} clicks, add-to-carts and purchases")
    if scored:
        console.print(f"shoppers' next click was in their top 10 {hit_rate:.0%} of the time "
                      f"({scored} clicks; recommending the most popular items: {baseline:.0%})")
