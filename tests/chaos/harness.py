"""The chaos suite's tools: a mixed input stream, an independent checker that reconciles every
output topic against what was produced, worker fleets that can be killed, and a TCP proxy that
makes Triton slow.

The checker shares no code path with the workers: it reads the output topics with its own
aiokafka consumer (no group, ``read_committed``, from the beginning), counts each review and
article id in its enriched topic, each engagement's recommendation (by trigger event id) and
each bad record's ``(source_topic, partition, offset)`` in ``deadletter``; it finds where each
bad record landed by reading the input topics itself, so a dead letter is matched to its
source offset, not just counted. Lost: produced but never seen; duplicated: seen more than once.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.adapters.kafka_io import produce_lines
from streams.bench.harness import wait_for_stable_group
from streams.settings import Settings
from streams.testing import malformed_records, synthetic_events
from streams.testing.stack import WorkerProcess
from streams.topics import TopicNames

__all__ = ["OUTCOMES", "Fleet", "Outcome", "Stream", "bad_positions", "input_positions", "lost_positions",
           "reconcile", "uncommitted_after"]


@dataclass(frozen=True)
class Stream:
    """Reviews and articles with unique ids, and malformed records interleaved with them."""

    reviews: list[bytes]
    news: list[bytes]
    review_ids: frozenset[str]
    article_ids: frozenset[str]
    bad: int  # malformed records among the inputs
    clicks: list[bytes] = field(default_factory=list)
    engagement_ids: frozenset[str] = frozenset()  # clicks that each get one recommendation
    bad_lines: frozenset[bytes] = frozenset()

    @classmethod
    def build(cls, run: str, *, reviews: int, news: int, bad: int, seed: int, clicks: int = 0) -> Stream:
        rng = random.Random(seed)
        good_reviews = [{**r, "review_id": f"{run}-r{i}"}
                        for i, r in enumerate(synthetic_events("reviews", reviews, seed=seed))]
        good_news = [{**n, "article_id": f"{run}-n{i}"}
                     for i, n in enumerate(synthetic_events("news", news, seed=seed + 1))]
        good_clicks = [{**c, "event_id": f"{run}-c{i}"}
                       for i, c in enumerate(synthetic_events("clicks", clicks, seed=seed + 2))]
        review_lines = [json.dumps(r).encode() for r in good_reviews]
        news_lines = [json.dumps(n).encode() for n in good_news]
        click_lines = [json.dumps(c).encode() for c in good_clicks]
        shares = {"reviews": bad // 2, "news": bad - bad // 2 - (bad // 5 if clicks else 0),
                  "clicks": bad // 5 if clicks else 0}
        bad_lines = set()
        for topic, lines in (("reviews", review_lines), ("news", news_lines), ("clicks", click_lines)):
            for _, raw in malformed_records(topic, shares[topic], seed=seed):
                lines.insert(rng.randrange(len(lines) + 1), raw)
                bad_lines.add(raw)
        return cls(review_lines, news_lines, frozenset(r["review_id"] for r in good_reviews),
                   frozenset(n["article_id"] for n in good_news), bad, click_lines,
                   frozenset(c["event_id"] for c in good_clicks if c["action"] != "impression"),
                   frozenset(bad_lines))

    def produce(self, settings: Settings, names: TopicNames, *, rate: float, part: slice = slice(None)) -> None:
        """Send (a slice of) every input at ``rate`` records/s in all; blocks until acked."""
        inputs = [(names.reviews, "reviews", self.reviews[part]), (names.news, "news", self.news[part]),
                  (names.clicks, "clicks", self.clicks[part])]
        total = sum(len(lines) for _, _, lines in inputs)

        async def all_inputs() -> None:
            await asyncio.gather(*(produce_lines(settings, topic, base, lines, rate=rate * len(lines) / total)
                                   for topic, base, lines in inputs if lines))

        asyncio.run(all_inputs())

    def produce_in_background(self, settings: Settings, names: TopicNames, *, rate: float) -> threading.Thread:
        thread = threading.Thread(target=self.produce, args=(settings, names), kwargs={"rate": rate},
                                  daemon=True)
        thread.start()
        return thread


@dataclass
class Seen:
    reviews: Counter = field(default_factory=Counter)
    news: Counter = field(default_factory=Counter)
    recommendations: Counter = field(default_factory=Counter)  # by trigger event id
    dead: Counter = field(default_factory=Counter)  # (source topic, partition, offset)
    # Where each copy of a record landed: (output partition, offset, processed_at), for diagnosis.
    copies: dict = field(default_factory=dict)

    def kcat_duplicates(self, settings, names) -> str:
        """A second opinion from an independent client (librdkafka's kcat, read_committed) on the
        records this checker saw more than once: a checker bug must not pass as a pipeline one."""
        if shutil.which("kcat") is None:
            return "kcat not installed: no second opinion"
        counts: Counter = Counter()
        for topic, field_ in ((names.reviews_enriched, "review_id"), (names.news_enriched, "article_id")):
            out = subprocess.run(["kcat", "-b", settings.kafka_bootstrap, "-C", "-t", topic, "-e", "-q",
                                  "-X", "isolation.level=read_committed", "-f", "%s\\n"],
                                 capture_output=True, text=True, timeout=120).stdout
            counts.update(json.loads(line)[field_] for line in out.splitlines() if line.strip())
        both = [k for k, where in self.copies.items() if len(where) > 1 and not isinstance(k, tuple)]
        return (f"kcat (read_committed) sees {sum(n - 1 for n in counts.values() if n > 1)} duplicated "
                f"enriched records; of the {len(both)} this checker saw twice, kcat sees "
                f"{sum(counts[k] > 1 for k in both)} twice")

    def duplicates(self, limit: int = 5) -> str:
        shown = [f"{key}: {where}" for key, where in self.copies.items() if len(where) > 1][:limit]
        return "duplicated records (output partition, offset, processed_at of each copy):\n" + "\n".join(shown)

    def complete(self, stream: Stream) -> bool:
        return (stream.review_ids <= self.reviews.keys() and stream.article_ids <= self.news.keys()
                and stream.engagement_ids <= self.recommendations.keys() and len(self.dead) >= stream.bad)


def read_outputs(settings: Settings, names: TopicNames, *, until=None, timeout_s: float = 5.0,
                 idle_s: float = 3.0) -> Seen:
    """Everything committed in the enriched topics and ``deadletter`` so far; keeps reading
    until ``until(seen)`` holds and nothing new came for ``idle_s`` (or ``timeout_s``)."""
    async def read() -> Seen:
        seen = Seen()
        topics = [names.reviews_enriched, names.news_enriched, names.recommendations, names.deadletter]
        consumer = AIOKafkaConsumer(*topics, **settings.kafka_client_kwargs(), group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    isolation_level="read_committed", request_timeout_ms=10_000)
        await consumer.start()
        try:
            deadline = time.monotonic() + timeout_s
            last_new = time.monotonic()
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, records in batch.items():
                    for r in records:
                        body = json.loads(r.value)
                        if tp.topic == names.reviews_enriched:
                            key = body["review_id"]
                            seen.reviews[key] += 1
                        elif tp.topic == names.news_enriched:
                            key = body["article_id"]
                            seen.news[key] += 1
                        elif tp.topic == names.recommendations:
                            key = ("recommendation", body["trigger_event_id"])
                            seen.recommendations[body["trigger_event_id"]] += 1
                        else:
                            key = (body["source_topic"], body["partition"], body["offset"])
                            seen.dead[key] += 1
                        seen.copies.setdefault(key, []).append((tp.partition, r.offset, body.get("processed_at")))
                if batch:
                    last_new = time.monotonic()
                elif time.monotonic() - last_new >= idle_s and (until is None or until(seen)):
                    break
            return seen
        finally:
            await consumer.stop()

    return asyncio.run(read())


@dataclass(frozen=True)
class Outcome:
    scenario: str
    guarantee: str
    produced: int  # good records
    bad: int
    lost: int
    duplicated: int
    dead_lost: int
    dead_duplicated: int
    faults: str
    seconds: float

    def row(self) -> str:
        return (f"| {self.scenario} | {self.guarantee} | {self.faults} | {self.produced} + {self.bad} bad | "
                f"{self.lost} | {self.duplicated} | {self.dead_lost} / {self.dead_duplicated} | "
                f"{self.seconds:.0f} s |")


OUTCOMES: list[Outcome] = []  # rows for the terminal summary (tests/chaos/conftest.py)


def bad_positions(settings: Settings, names: TopicNames, stream: Stream) -> set[tuple[str, int, int]]:
    """Where each malformed record of ``stream`` landed: (topic, partition, offset), read back
    from the input topics by this checker's own consumer."""
    return input_positions(settings, names, stream)[0]


_ID_FIELDS = ("review_id", "article_id", "event_id")


def input_positions(settings: Settings, names: TopicNames, stream: Stream
                    ) -> tuple[set[tuple[str, int, int]], dict[str, tuple[str, int, int]]]:
    """Where ``stream``'s records landed, read back from the input topics by this checker's own
    consumer: the malformed ones' positions, and each good record's by its id."""
    async def read() -> tuple[set[tuple[str, int, int]], dict[str, tuple[str, int, int]]]:
        consumer = AIOKafkaConsumer(**settings.kafka_client_kwargs(), group_id=None, enable_auto_commit=False)
        await consumer.start()
        bad: set[tuple[str, int, int]] = set()
        good: dict[str, tuple[str, int, int]] = {}
        try:
            partitions = [TopicPartition(topic, p) for topic in (names.reviews, names.news, names.clicks)
                          for p in range(settings.topic_partitions)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            deadline = time.monotonic() + 120
            # Every partition to its end: an empty fetch is no sign that the topics are read.
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                assert time.monotonic() < deadline, "could not read the input topics to their end"
                batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
                for r in (r for records in batch.values() for r in records):
                    if r.value in stream.bad_lines:
                        bad.add((r.topic, r.partition, r.offset))
                    elif (key := _record_id(r.value)) is not None:
                        good[key] = (r.topic, r.partition, r.offset)
            return bad, good
        finally:
            await consumer.stop()

    return asyncio.run(read())


def uncommitted_after(settings: Settings, names: TopicNames, *, timeout_s: float) -> dict[str, int]:
    """Wait until the workers' group has committed every input partition (the internal
    ``entity-mentions`` and ``sentiment-feedback`` included) past its last committed record, or
    ``timeout_s``; return the partitions with committed records after their committed offset,
    with how many (transaction markers and aborted records are not work left). A commit that
    stands behind a record nobody will process again is what a dropped record looks like before
    it is lost or processed late."""
    topics = (names.reviews, names.news, names.clicks, names.entity_mentions, names.sentiment_feedback)
    partitions = [TopicPartition(topic, p) for topic in topics for p in range(settings.topic_partitions)]

    async def behind() -> dict[str, int]:
        admin = AIOKafkaAdminClient(**settings.kafka_client_kwargs())
        # read_committed: its end offsets stop before open transactions, its reads skip markers.
        consumer = AIOKafkaConsumer(**settings.kafka_client_kwargs(), group_id=None, enable_auto_commit=False,
                                    isolation_level="read_committed")
        await asyncio.gather(admin.start(), consumer.start())
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                committed = await admin.list_consumer_group_offsets(settings.consumer_group)
                ends = await consumer.end_offsets(partitions)
                starts = {tp: max(getattr(committed.get(tp), "offset", 0), 0) for tp in partitions}
                left = {tp: await _records_between(consumer, tp, starts[tp], ends[tp])
                        for tp in partitions if ends[tp] - starts[tp] > 1}
                left = {f"{tp.topic}[{tp.partition}]": n for tp, n in left.items() if n}
                if not left or time.monotonic() > deadline:
                    return left
                await asyncio.sleep(1.0)
        finally:
            await asyncio.gather(admin.close(), consumer.stop())

    return asyncio.run(behind())


async def _records_between(consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int) -> int:
    """Records ``consumer`` (``read_committed``) reads in partition ``tp`` from ``start`` up to
    ``end``."""
    consumer.assign([tp])
    consumer.seek(tp, start)
    count, deadline = 0, time.monotonic() + 20
    while await consumer.position(tp) < end and time.monotonic() < deadline:
        batch = await consumer.getmany(tp, timeout_ms=500)
        count += sum(1 for r in batch.get(tp, []) if r.offset < end)
    return count


def _record_id(value: bytes) -> str | None:
    try:
        body = json.loads(value)
    except ValueError:
        return None
    return next((str(body[f]) for f in _ID_FIELDS if isinstance(body, dict) and f in body), None)


def lost_positions(stream: Stream, seen: Seen, where: dict[str, tuple[str, int, int]]) -> str:
    """The lost records by input partition, as offset ranges: where a commit ran past them.

    >>> s = Stream.build("x", reviews=3, news=0, bad=0, seed=1)
    >>> ids = sorted(s.review_ids)
    >>> lost_positions(s, Seen(), {ids[0]: ("r", 0, 4), ids[1]: ("r", 0, 5), ids[2]: ("r", 1, 9)})
    'lost records by input partition (offsets): r[0]: 4-5; r[1]: 9'
    """
    expected = ((stream.review_ids, seen.reviews), (stream.article_ids, seen.news),
                (stream.engagement_ids, seen.recommendations))
    lost = [i for ids, counts in expected for i in ids - counts.keys()]
    if not lost:
        return ""
    by_partition: dict[tuple[str, int], list[int]] = {}
    for i in lost:
        topic, partition, offset = where.get(i, ("(not found in the inputs)", -1, -1))
        by_partition.setdefault((topic, partition), []).append(offset)
    parts = []
    for (topic, partition), offsets in sorted(by_partition.items()):
        ranges, offsets = [], sorted(offsets)
        start = prev = offsets[0]
        for offset in [*offsets[1:], None]:
            if offset is not None and offset == prev + 1:
                prev = offset
                continue
            ranges.append(f"{start}-{prev}" if prev > start else str(start))
            if offset is not None:
                start = prev = offset
        parts.append(f"{topic}[{partition}]: {', '.join(ranges)}")
    return "lost records by input partition (offsets): " + "; ".join(parts)


def reconcile(scenario: str, guarantee: str, stream: Stream, seen: Seen, *, faults: str,
              started: float, bad_at: set[tuple[str, int, int]] | None = None) -> Outcome:
    """``bad_at``: where the malformed records are (:func:`bad_positions`); each must have its
    own dead letter. Without it dead letters are only counted."""
    expected = ((stream.review_ids, seen.reviews), (stream.article_ids, seen.news),
                (stream.engagement_ids, seen.recommendations))
    lost = sum(len(ids - counts.keys()) for ids, counts in expected)
    duplicated = sum(counts[i] - 1 for ids, counts in expected for i in ids if counts[i] > 1)
    if bad_at is not None:
        assert len(bad_at) == stream.bad, (len(bad_at), stream.bad)
        dead_lost = len(bad_at - seen.dead.keys())
    else:
        dead_lost = max(0, stream.bad - len(seen.dead))
    produced = len(stream.review_ids) + len(stream.article_ids) + len(stream.engagement_ids)
    outcome = Outcome(scenario, guarantee, produced, stream.bad, lost, duplicated, dead_lost,
                      sum(n - 1 for n in seen.dead.values()), faults, time.monotonic() - started)
    OUTCOMES.append(outcome)
    return outcome


class Fleet:
    """Worker processes by index, under a supervisor (as Kubernetes or systemd would run them):
    any can be SIGKILLed and replaced, and one that exits on its own is restarted and counted
    in ``crashes`` with the tail of its log."""

    def __init__(self, env: dict[str, str], log_dir: Path, *, workers: int) -> None:
        self.env = env
        self.log_dir = log_dir
        self.workers = {i: self._start(i) for i in range(workers)}
        self.kills = 0
        self.stops = 0  # SIGTERMs of a rolling restart (stop_and_replace)
        self.crashes: list[str] = []
        self.hung: list[int] = []
        self.stop_statuses: list[int | None] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()

    def _start(self, index: int) -> WorkerProcess:
        return WorkerProcess(self.env, index=index, log_dir=self.log_dir)

    def _supervise(self) -> None:
        while not self._stopping.wait(1.0):
            with self._lock:
                for index, worker in list(self.workers.items()):
                    if worker.proc.poll() is not None:
                        self.crashes.append(f"worker {index} exited ({worker.proc.returncode}):\n{worker.tail()}")
                        self.workers[index] = self._start(index)

    def kill_and_replace(self, rng: random.Random, *, down_s: float = 1.0) -> None:
        self._replace(rng, down_s, self._kill)

    def _kill(self, index: int, worker: WorkerProcess) -> None:
        worker.kill(signal.SIGKILL)
        self.kills += 1

    def _replace(self, rng: random.Random, down_s: float, end) -> None:
        """``end`` a worker chosen by ``rng``; ``down_s`` later, its replacement starts."""
        with self._lock:
            index = rng.choice(sorted(self.workers))
            end(index, self.workers[index])
            time.sleep(down_s)
            self.workers[index] = self._start(index)

    def stop_and_replace(self, rng: random.Random, settings: Settings, *, down_s: float = 1.0) -> None:
        """One step of a rolling restart: once the group is stable with every worker in it (a
        rollout waits for the last replacement to be ready), SIGTERM to a worker (as `kubectl
        rollout restart` or systemd would send), its exit awaited, its replacement started. One
        that needed the SIGKILL is listed in ``hung``; every exit status in ``stop_statuses``.
        (A worker whose group is rebalancing when it is told to stop waits in Kafka's client for
        the join, up to the rebalance, which can wait out the session of a member that restarted
        without leaving: its stop deadline ends that, status 143.)"""
        asyncio.run(wait_for_stable_group(settings, len(self.workers)))
        self._replace(rng, down_s, self._stop)

    def _stop(self, index: int, worker: WorkerProcess) -> None:
        worker.stop()
        self.stops += 1
        self.stop_statuses.append(worker.proc.returncode)
        if worker.hung_on_stop:
            self.hung.append(index)

    def faults(self) -> str:
        crashed = f", {len(self.crashes)} crashed and restarted" if self.crashes else ""
        hung = f", {len(self.hung)} ignored SIGTERM" if self.hung else ""
        restarts = self.self_restarts()
        restarted = f", {restarts} restarted itself (stalled partition)" if restarts else ""
        overdue = sum(status == 128 + signal.SIGTERM for status in self.stop_statuses)
        stops = f"{self.stops} SIGTERM restarts ({overdue} at the stop deadline), " if self.stops else ""
        return f"{stops}{self.kills} kills{crashed}{hung}{restarted}"

    def self_restarts(self) -> int:
        """Workers that restarted themselves in place (a partition stalled past a seek)."""
        return self.logged("restarts itself in place")

    def logged(self, text: str) -> int:
        """How often the workers' logs (every run of every worker) say ``text``."""
        return sum(log.read_text(errors="replace").count(text) for log in self.log_dir.glob("worker-*.log"))

    def alive(self) -> bool:
        return not self.crashes and all(w.proc.poll() is None for w in self.workers.values())

    def stop(self) -> None:
        """SIGTERM to every worker at once; those that ignore it for 30 s are SIGKILLed and
        listed in ``hung`` (a worker must stop when told: a hang is a failure)."""
        self._stopping.set()
        self._supervisor.join(5)
        stoppers = [threading.Thread(target=w.stop) for w in self.workers.values()]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
        self.hung += [i for i, w in self.workers.items() if w.hung_on_stop]

    def tails(self) -> str:
        crashes = "".join(f"--- crash\n{c[-2000:]}\n" for c in self.crashes)
        return crashes + "\n".join(f"--- worker {i}\n{w.tail()}" for i, w in self.workers.items())
