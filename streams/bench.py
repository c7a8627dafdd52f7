"""``make bench`` / ``streamsense bench``: throughput, latency and efficiency on the real local
stack, each against its limit measured in the same run (the machine is shared and noisy:
compare ratios, not absolute rates).

Sections (each replaces its part of BENCHMARKS.md with ``--write``):

* ``inference``: the raw Triton ceiling: texts/s and request latency of ``text_analysis`` (one
  model answers sentiment and entities) at batch sizes 1..64, an async gRPC client keeping 4
  requests in flight;
* ``text``: reviews/s end to end (produce -> ``reviews.enriched``) at saturation, with 1 and 2
  workers, divided by the batch-64 ceiling;
* ``latency``: end-to-end p50/p95/p99 (``processed_at - ts`` of each enriched review) at 25%,
  50% and 80% of the one-worker saturation rate, with a rate-controlled producer;
* ``clicks``: one worker's click path against a bare aiokafka consume->produce loop;
* ``profile``: where one worker spends its time on the text path (py-spy, when it may attach);
* ``soak`` (only when asked for: ``make soak``): one worker's resident memory while it takes
  per-key state for 100k click users and then 100k entities, each seen twice.

Before each section the whole machine's CPU use is sampled for two seconds while our own stack
is idle: above ``BUSY_WARNING`` (a quarter of all cores busy with other work) the section's
text in BENCHMARKS.md says so, because on a small machine anything else running skews it.

Rates are taken between 10% and 90% of the input consumed (startup and the tail excluded). The
review texts are the synthetic templates of ``streams.testing`` (short); the ceiling uses the
same texts, so the ratio compares like with like.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from models.benchmarks import write_section
from models.online import simulate_clicks
from streams.adapters.kafka_admin import consumer_lag, ensure_topics
from streams.adapters.kafka_io import produce_lines, read_topic
from streams.bench_plots import render
from streams.core.monitoring import EntityMention, Observation
from streams.local.stack import LocalStack, private_stack_env
from streams.settings import Settings
from streams.testing import click_record, recent_clicks, synthetic_events
from streams.topics import TopicNames

__all__ = ["SECTIONS", "main"]

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("inference", "text", "latency", "clicks", "profile", "soak")
_BATCHES = (1, 2, 4, 8, 16, 32, 64)
BUSY_WARNING = 0.25


def _cpu_times(stat_line: str) -> tuple[int, int]:
    """``(busy, total)`` jiffies from the aggregate ``cpu`` line of ``/proc/stat``.

    >>> _cpu_times("cpu  4705 356 584 3699 23 23 0 0 0 0")
    (5668, 9390)
    """
    values = [int(v) for v in stat_line.split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def _busy_fraction(seconds: float = 2.0) -> float | None:
    """Share of all cores' time spent busy over the next ``seconds`` (None without /proc/stat)."""
    stat = Path("/proc/stat")
    if not stat.exists():
        return None
    busy0, total0 = _cpu_times(stat.read_text().splitlines()[0])
    time.sleep(seconds)
    busy1, total1 = _cpu_times(stat.read_text().splitlines()[0])
    return (busy1 - busy0) / max(1, total1 - total0)


@dataclass
class _Stack:
    """A private Kafka broker and Triton server on free ports under a temporary home."""

    with_triton: bool
    home: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="streamsense-bench-")))
    env: dict[str, str] = field(init=False)
    settings: Settings = field(init=False)
    triton_cpu_ms_per_text: float = 0.0
    figures: dict[str, dict] = field(default_factory=dict)  # each section's numbers, for its plot

    def __post_init__(self) -> None:
        self.env = private_stack_env(self.home)
        self.settings = Settings.from_env(self.env)
        self.stack = LocalStack(self.settings)
        self.services = []

    def __enter__(self) -> _Stack:
        self.stack.provision()
        self.services = [self.stack.kafka()] + ([self.stack.triton()] if self.with_triton else [])
        for service in self.services:
            service.start(timeout_s=self.settings.startup_timeout_s)
        return self

    def __exit__(self, *exc) -> None:
        for service in reversed(self.services):
            service.stop()
        if exc[0] is None:
            shutil.rmtree(self.home, ignore_errors=True)  # kept, with its logs, after a failure

    @property
    def triton_pid(self) -> int | None:
        return self.stack.triton().pid() if self.with_triton else None

    @property
    def kafka_pid(self) -> int | None:
        return self.stack.kafka().pid()

    def prefixed(self, prefix: str) -> tuple[Settings, dict[str, str], TopicNames]:
        return (self.settings.model_copy(update={"topic_prefix": prefix}),
                {**self.env, "STREAMSENSE_TOPIC_PREFIX": prefix}, TopicNames(prefix=prefix))


class _Workers:
    """``streamsense worker`` subprocesses, as users run them; stopped on exit."""

    def __init__(self, env: dict[str, str], count: int, log_dir: Path) -> None:
        self.env = env
        self.procs = [subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--index", str(i), "--loglevel", "warn"],
            env={**os.environ, **env}, cwd=REPO, stderr=subprocess.STDOUT, start_new_session=True,
            stdout=(log_dir / f"worker-{i}-{time.time_ns()}.log").open("wb")) for i in range(count)]
        port = int(env["STREAMSENSE_METRICS_PORT"])
        self.urls = [f"http://127.0.0.1:{port + i}/metrics" for i in range(count)]

    def total(self, series: str) -> float:
        """Sum of one series (``name{labels}``) over the workers' metrics."""
        total = 0.0
        for url in self.urls:
            try:
                text = urllib.request.urlopen(url, timeout=2).read().decode()
            except OSError:
                continue
            total += sum(float(m) for m in re.findall(rf"^{re.escape(series)} (\S+)$", text, re.M))
        return total

    def rate(self, series: str, n: int, *, timeout_s: float = 900, cpu=None) -> float:
        """Per second between 10% and 90% of ``n`` counted by ``series``; ``cpu`` (a callable)
        is sampled at both marks into ``self.cpu``."""
        marks: dict[float, tuple[float, float]] = {}
        samples = []
        deadline = time.monotonic() + timeout_s
        while len(marks) < 2 and time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError("a worker exited during the benchmark")
            seen = self.total(series)
            for share in (0.1, 0.9):
                if share not in marks and seen >= share * n:
                    marks[share] = (time.perf_counter(), seen)
                    samples.append(cpu() if cpu else {})
            time.sleep(0.2)
        (t1, n1), (t2, n2) = marks[0.1], marks[0.9]
        self.cpu = {k: (samples[1][k] - samples[0][k], n2 - n1, t2 - t1) for k in samples[0]}
        return (n2 - n1) / (t2 - t1)

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Until every worker answers on its metrics port."""
        deadline = time.monotonic() + timeout_s
        for url in self.urls:
            while True:
                try:
                    urllib.request.urlopen(url, timeout=2).read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no worker answered on {url}") from None
                    time.sleep(0.5)

    def pids(self) -> dict[str, int]:
        return {f"worker {i}": p.pid for i, p in enumerate(self.procs)}

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=60)


def _cpu_seconds(roots: dict[str, int | None]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each named process and its descendants
    (Triton's Python-backend stubs are children of tritonserver). Linux /proc only."""
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    out = {}
    for name, root in roots.items():
        tree, frontier = set(), {root} if root else set()
        while frontier:
            tree |= frontier
            frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - tree
        out[name] = sum(used.get(pid, 0.0) for pid in tree)
    return out


def _review_texts(n: int, seed: int = 0) -> list[dict]:
    return list(synthetic_events("reviews", n, seed=seed))


# -- inference ceiling -----------------------------------------------------------------------

async def _requests_until(client, data, stop: float, latencies: list[float]) -> None:
    import tritonclient.grpc.aio as grpcclient

    while time.monotonic() < stop:
        inp = grpcclient.InferInput("TEXT", list(data.shape), "BYTES")
        inp.set_data_from_numpy(data)
        started = time.perf_counter()
        await client.infer("text_analysis", [inp])
        latencies.append(time.perf_counter() - started)


async def _sweep(url: str, texts: list[str], *, seconds: float, in_flight: int = 4,
                 batches: Sequence[int] = _BATCHES) -> list[dict]:
    import numpy as np
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(url)
    rows = []
    try:
        for batch in batches:
            data = np.array([[t.encode()] for t in texts[:batch]], dtype=np.object_)
            latencies: list[float] = []
            # Warm-up: the first requests of a new shape are slower.
            await _requests_until(client, data, time.monotonic() + 0.5, [])
            stop = time.monotonic() + seconds
            t0 = time.perf_counter()
            await asyncio.gather(*(_requests_until(client, data, stop, latencies) for _ in range(in_flight)))
            elapsed = time.perf_counter() - t0
            latencies.sort()
            rows.append({"batch": batch, "texts_per_s": batch * len(latencies) / elapsed,
                         "p50_ms": 1000 * latencies[len(latencies) // 2],
                         "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]})
    finally:
        await client.close()
    return rows


def inference(stack: _Stack, seconds: float) -> tuple[str, float]:
    texts = [r["text"] for r in _review_texts(64, seed=1)]
    rows = asyncio.run(_sweep(stack.settings.triton_url, texts, seconds=seconds))
    before = _cpu_seconds({"triton": stack.triton_pid})
    started = time.perf_counter()
    [best] = asyncio.run(_sweep(stack.settings.triton_url, texts, seconds=seconds, batches=(64,)))
    used = _cpu_seconds({"triton": stack.triton_pid})["triton"] - before["triton"]
    stack.triton_cpu_ms_per_text = 1000 * used / (best["texts_per_s"] * (time.perf_counter() - started))
    lines = ["| batch | texts/s | request p50 (ms) | request p99 (ms) |", "|---|---|---|---|"]
    lines += [f"| {r['batch']} | {r['texts_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
              for r in rows]
    ceiling = max(r["texts_per_s"] for r in rows)
    scaling = _instance_scaling(stack, texts, seconds)
    stack.figures["inference"] = {"rows": rows}
    lines += ["", "| Triton instances of `text_analysis` | texts/s at batch 16 | texts/s at batch 64 |",
              "|---|---|---|"]
    lines += [f"| {count} | {rates[16]:.0f} | {rates[64]:.0f} |" for count, rates in scaling.items()]
    intro = (f"Triton `text_analysis` on CPU (one multi-task model: sentiment and entities), 4 requests "
             f"in flight, {seconds:.0f} s per batch size, review texts of "
             f"{statistics.mean(map(len, texts)):.0f} characters on average. "
             f"Ceiling: **{ceiling:.0f} texts/s**; at batch 64 Triton used "
             f"{stack.triton_cpu_ms_per_text:.2f} CPU-ms per text (this machine: {os.cpu_count()} cores).")
    return intro + "\n\n" + "\n".join(lines), ceiling


def _instance_scaling(stack: _Stack, texts: list[str], seconds: float) -> dict[int, dict[int, float]]:
    """Texts/s with 1 and 2 instances of the model (Triton restarted on a copy of the repository
    whose files are links to ours, with only the instance count changed)."""
    out = {}

    def sweep() -> list[dict]:
        return asyncio.run(_sweep(stack.settings.triton_url, texts, seconds=seconds, batches=(16, 64)))

    for count in (1, 2):
        if count == 1:
            rows = sweep()
        else:
            repo = stack.home / f"triton_repo_x{count}"
            shutil.copytree(REPO / "triton_repo", repo, copy_function=os.symlink)
            config = repo / "text_analysis" / "config.pbtxt"
            text = config.read_text()
            config.unlink()
            config.write_text(text.replace("kind: KIND_CPU, count: 1", f"kind: KIND_CPU, count: {count}"))
            stack.services[-1].stop()
            variant = LocalStack(stack.settings.model_copy(update={"triton_model_repository": repo})).triton()
            variant.start(timeout_s=stack.settings.startup_timeout_s)
            try:
                rows = sweep()
            finally:
                variant.stop()
                stack.services[-1].start(timeout_s=stack.settings.startup_timeout_s)
        out[count] = {r["batch"]: r["texts_per_s"] for r in rows}
    return out


# -- text path -------------------------------------------------------------------------------

def _text_rate(stack: _Stack, prefix: str, workers: int, n: int) -> tuple[float, dict[str, float]]:
    """Reviews/s at saturation, and CPU-ms per review of the workers, Triton and Kafka."""
    settings, env, names = stack.prefixed(prefix)
    reviews = _review_texts(n, seed=2)
    asyncio.run(ensure_topics(settings, names.all()))
    with _Workers(env, workers, stack.home) as running:
        # Produce once every worker has its partitions: a rebalance inside the measured window
        # (a second worker joining late) would be measured instead of throughput.
        asyncio.run(_wait_for_stable_group(settings, workers))
        values = [json.dumps(r).encode() for r in reviews]
        asyncio.run(produce_lines(settings, names.reviews, "reviews", values))
        roots = {**running.pids(), "triton": stack.triton_pid, "kafka": stack.kafka_pid}
        rate = running.rate('streamsense_events_out_total{topic="reviews.enriched"}', n,
                            cpu=lambda: _cpu_seconds(roots))
    per_review = {}
    for name, (cpu, count, _) in running.cpu.items():
        key = "workers" if name.startswith("worker") else name
        per_review[key] = per_review.get(key, 0.0) + 1000 * cpu / count
    wall = next(iter(running.cpu.values()))[2]
    per_review["cores busy"] = sum(cpu for cpu, _, _ in running.cpu.values()) / wall
    return rate, per_review


async def _wait_for_stable_group(settings: Settings, members: int, timeout_s: float = 120) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**settings.kafka_client_kwargs())
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                [response] = await admin.describe_consumer_groups([settings.consumer_group])
                _, _, state, _, _, found = response.groups[0][:6]
            except Exception:  # the group or its coordinator does not exist yet
                state, found = "", []
            if state == "Stable" and len(found) == members:
                await asyncio.sleep(2)  # let Faust finish its own assignment work (table recovery)
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"consumer group {settings.consumer_group} never had {members} stable members")
    finally:
        await admin.close()


def text(stack: _Stack, ceiling: float, n: int) -> tuple[str, float]:
    runs = {workers: _text_rate(stack, f"bench-t{workers}.", workers, n) for workers in (1, 2)}
    lines = [f"{n} reviews pre-produced, then consumed at saturation; 4 partitions. CPU-ms per review "
             "between 10% and 90% of the input, by process tree.", "",
             "| workers | reviews/s end to end | / Triton ceiling | CPU-ms/review: Triton | workers | Kafka "
             "| cores busy |", "|---|---|---|---|---|---|---|"]
    for workers, (rate, cpu) in runs.items():
        ratio = f"**{rate / ceiling:.2f}**" if workers == 1 else f"{rate / ceiling:.2f}"
        lines.append(f"| {workers} | {rate:.0f} | {ratio} | {cpu['triton']:.2f} | {cpu['workers']:.2f} | "
                     f"{cpu['kafka']:.2f} | {cpu['cores busy']:.2f} |")
    stack.figures["text"] = {"ceiling": ceiling, "rates": {w: rate for w, (rate, _) in runs.items()}}
    return "\n".join(lines), runs[1][0]


# -- latency ---------------------------------------------------------------------------------

async def _paced(settings: Settings, topic: str, rate: float, seconds: float, tag: str) -> int:
    producer = AIOKafkaProducer(**settings.kafka_client_kwargs(), acks="all", linger_ms=2)
    await producer.start()
    sent, t0 = 0, time.monotonic()
    base = _review_texts(200, seed=3)
    try:
        while time.monotonic() - t0 < seconds:
            ahead = t0 + sent / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            review = {**base[sent % len(base)], "review_id": f"{tag}-{sent}",
                      "ts": datetime.now(UTC).isoformat()}
            await producer.send(topic, json.dumps(review).encode(), key=review["product_id"].encode())
            sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    values = sorted(values)
    at = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return at(0.5), at(0.95), at(0.99)


def latency(stack: _Stack, saturation: float, seconds: float) -> str:
    settings, env, names = stack.prefixed("bench-l.")
    asyncio.run(ensure_topics(settings, names.all()))
    lines = [f"Rate-controlled producer, {seconds:.0f} s per load level, one worker; latency = "
             "`processed_at - ts` of every enriched review (event time stamped at send).", "",
             "| load | reviews/s offered | p50 (ms) | p95 (ms) | p99 (ms) | reviews |",
             "|---|---|---|---|---|---|"]
    with _Workers(env, 1, stack.home) as running:
        # Warm the worker up (first batch, table recovery) before measuring.
        asyncio.run(_paced(settings, names.reviews, 20, 2, "warm"))
        deadline = time.monotonic() + 60
        while running.total('streamsense_events_out_total{topic="reviews.enriched"}') < 1 and \
                time.monotonic() < deadline:
            time.sleep(0.5)
        for share in (0.25, 0.5, 0.8):
            tag = f"lat{int(share * 100)}"
            sent = asyncio.run(_paced(settings, names.reviews, share * saturation, seconds, tag))

            async def collect(tag: str = tag, sent: int = sent) -> list[float]:
                got: dict[str, float] = {}
                until = time.monotonic() + 120
                while len(got) < sent and time.monotonic() < until:
                    async for rec in read_topic(settings, names.reviews_enriched, idle_timeout_s=2):
                        body = json.loads(rec.value)
                        if body["review_id"].startswith(f"{tag}-"):
                            got[body["review_id"]] = (datetime.fromisoformat(body["processed_at"])
                                                      - datetime.fromisoformat(body["ts"])).total_seconds()
                return list(got.values())

            values = asyncio.run(collect())
            p50, p95, p99 = _percentiles(values)
            stack.figures.setdefault("latency", {"rows": []})["rows"].append(
                {"offered": share * saturation, "p50": p50, "p95": p95, "p99": p99})
            lines.append(f"| {share:.0%} | {share * saturation:.0f} | {1000 * p50:.0f} | {1000 * p95:.0f} | "
                         f"{1000 * p99:.0f} | {len(values)} of {sent} |")
    return "\n".join(lines)


# -- clicks ----------------------------------------------------------------------------------

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


def clicks(stack: _Stack, n: int) -> str:
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
        with _Workers(env, workers, stack.home) as running:
            asyncio.run(_wait_for_stable_group(settings, workers))  # no rebalance while measuring
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


# -- profile ---------------------------------------------------------------------------------

def profile(stack: _Stack, n: int, seconds: float = 10.0) -> str:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return "py-spy is not installed (`pip install py-spy`): no profile."
    settings, env, names = stack.prefixed("bench-p.")
    reviews = _review_texts(n, seed=4)
    asyncio.run(ensure_topics(settings, names.all()))
    asyncio.run(produce_lines(settings, names.reviews, "reviews", [json.dumps(r).encode() for r in reviews]))
    raw = stack.home / "profile.txt"
    with _Workers(env, 1, stack.home) as running:
        deadline = time.monotonic() + 120
        while running.total('streamsense_events_out_total{topic="reviews.enriched"}') < 0.1 * n and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        done = subprocess.run([spy, "record", "-p", str(running.procs[0].pid), "-d", str(int(seconds)),
                               "-f", "raw", "-o", str(raw)], capture_output=True, text=True)
    if done.returncode != 0 or not raw.exists():
        return f"py-spy could not attach ({done.stderr.strip()[:200]}): no profile."
    return _profile_table(raw.read_text())


def _profile_table(raw: str, top: int = 12) -> str:
    """Inclusive share of samples of the busiest functions in the worker's main thread."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not any("Handle._run" in f for f in frames):
            continue  # not the event loop thread's work
        total += int(count)
        for frame in {re.sub(r" \(.*/site-packages/", " (", f) for f in frames}:
            inclusive[frame] += int(count)
    interesting = [(f, c) for f, c in inclusive.most_common()
                   if not re.match(r"(Handle\._run|BaseEventLoop|<module>|_run_code|Worker\.|Typer|Command|"
                                   r"Context\.invoke|_main|main |worker |get_callback|_run_module)", f)]
    lines = ["| share of event-loop samples | function |", "|---|---|"]
    lines += [f"| {c / max(total, 1):.0%} | `{f}` |" for f, c in interesting[:top]]
    return "\n".join(lines)


# -- soak ------------------------------------------------------------------------------------

def _rss_mib(pid: int) -> float:
    """Resident memory of one process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _soak_clicks(keys: int, passes: int, seed: int) -> list[bytes]:
    """``passes`` rounds over ``keys`` distinct users (shuffled each round), one event each."""
    rng = random.Random(seed)
    out = []
    for round_ in range(passes):
        users = list(range(keys))
        rng.shuffle(users)
        for i, user in enumerate(users):
            out.append(json.dumps({"event_id": f"s{round_}-{i}", "user_id": f"u{user}",
                                   "item_id": f"i{rng.randrange(2000)}", "session_id": f"s{user}-{round_}",
                                   "action": rng.choice(("impression", "impression", "click")),
                                   "ts": 1_763_805_600_000 + (round_ * keys + i) * 10}).encode())
    return out


def _soak_mentions(keys: int, passes: int, seed: int) -> list[bytes]:
    """``passes`` rounds over ``keys`` distinct entities, as the text path would repartition them."""
    rng = random.Random(seed)
    out = []
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    for round_ in range(passes):
        names = list(range(keys))
        rng.shuffle(names)
        for i, n in enumerate(names):
            label = rng.choice(("negative", "neutral", "positive"))
            ts = datetime.fromtimestamp(start + (round_ * keys + i) * 0.05, UTC)
            mention = EntityMention(f"entity {n}", f"Entity {n}", "ORG", Observation(
                f"m{round_}-{i}", f"a text that names Entity {n}", label,
                0.9 if label == "negative" else 0.05, ts))
            out.append(mention.to_json())
    return out


def _committed(settings: Settings, topic: str) -> int:
    rows = asyncio.run(consumer_lag(settings))
    return sum(r.committed for r in rows if r.group == settings.consumer_group and r.topic == topic)


def soak(stack: _Stack, keys: int, passes: int = 2) -> str:
    """RSS of one worker sampled as it works through per-key state for ``keys`` users, then
    ``keys`` entities, each seen ``passes`` times. Once every key is known (the later passes)
    memory grows only as each key's state fills up to its cap."""
    settings, env, names = stack.prefixed("bench-s.")
    asyncio.run(ensure_topics(settings, names.all()))
    phases = [("click users", "clicks", _soak_clicks(keys, passes, seed=5)),
              ("entities", "entity-mentions", _soak_mentions(keys, passes, seed=6))]
    rows = []
    with _Workers(env, 1, stack.home) as running:
        pid = running.procs[0].pid
        running.wait_ready()
        time.sleep(10)  # partitions assigned, tables recovered
        rows.append(("start", 0, 0, _rss_mib(pid)))
        for phase, base, records in phases:
            topic = names.name(base)
            asyncio.run(produce_lines(settings, topic, base, records))
            marks = [round(len(records) * k / 8) for k in range(1, 9)]
            deadline = time.monotonic() + 1800
            while marks and time.monotonic() < deadline:
                if running.procs[0].poll() is not None:
                    raise RuntimeError("the worker exited during the soak")
                done = _committed(settings, topic)
                if done >= marks[0]:
                    rows.append((phase, done, min(keys, done), _rss_mib(pid)))
                    marks = [m for m in marks if m > done]
                time.sleep(0.5)
            if marks:
                raise RuntimeError(f"the soak's {phase} were not all processed within 30 minutes")
    stack.figures["soak"] = {"rows": rows}
    return _soak_table(rows, keys, passes)


def _soak_table(rows: list[tuple[str, int, int, float]], keys: int, passes: int) -> str:
    """The RSS curve and, per phase, MiB per 1,000 keys up to the first sample with every key
    seen, and the growth after it (when every key is already known).

    >>> print(_soak_table([("start", 0, 0, 100.0), ("users", 50, 50, 150.0), ("users", 100, 100, 200.0),
    ...                    ("users", 150, 100, 201.0), ("users", 200, 100, 202.0)], 100, 2))
    ... # doctest: +NORMALIZE_WHITESPACE
    | phase | events processed | keys known | worker RSS (MiB) |
    |---|---|---|---|
    | start | 0 | 0 | 100 |
    | users | 50 | 50 | 150 |
    | users | 100 | 100 | 200 |
    | users | 150 | 100 | 201 |
    | users | 200 | 100 | 202 |
    <BLANKLINE>
    | phase | first pass: MiB per 1,000 keys | later passes: growth (MiB) |
    |---|---|---|
    | users | 1000.0 | +2 |
    """
    lines = ["| phase | events processed | keys known | worker RSS (MiB) |", "|---|---|---|---|"]
    lines += [f"| {p} | {n} | {k} | {rss:.0f} |" for p, n, k, rss in rows]
    lines += ["", "| phase | first pass: MiB per 1,000 keys | later passes: growth (MiB) |", "|---|---|---|"]
    before = rows[0][3]
    for phase in dict.fromkeys(p for p, *_ in rows[1:]):
        mine = [r for r in rows if r[0] == phase]
        known = next(r for r in mine if r[1] >= keys)  # the first sample with every key seen
        per_key = (known[3] - before) / known[1] * 1000
        lines.append(f"| {phase} | {per_key:.1f} | {mine[-1][3] - known[3]:+.0f} |")
        before = mine[-1][3]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # The soak (about 10 minutes here) runs on its own: `make soak`.
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=[s for s in SECTIONS if s != "soak"])
    parser.add_argument("--reviews", type=int, default=3000, help="reviews per text-path run")
    parser.add_argument("--events", type=int, default=60_000, help="click events for the click path")
    parser.add_argument("--soak-keys", type=int, default=100_000, help="distinct keys per soak phase")
    parser.add_argument("--seconds", type=float, default=15.0, help="per load level / batch size")
    parser.add_argument("--write", type=Path, help="replace each section's part of this file")
    parser.add_argument("--plots", type=Path, default=REPO / "deploy" / "benchmarks",
                        help="with --write: where each section's PNG goes (linked from the file)")
    args = parser.parse_args(argv)
    sections: dict[str, str] = {}
    warnings: dict[str, str] = {}
    machine = f"{os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d')}"

    def check(*names: str) -> None:
        # Our stack is idle between sections: what is busy now is other work on the machine.
        busy = _busy_fraction()
        if busy is not None and busy > BUSY_WARNING:
            note = (f"**Warning:** {busy:.0%} of the machine's CPU time was taken by other work just "
                    f"before this section (or a measurement it is compared with) ran; its numbers are "
                    f"likely off.")
            print(note, file=sys.stderr, flush=True)
            warnings.update(dict.fromkeys(names, note))

    def out(name: str, body: str) -> None:
        if name in warnings:
            body = f"{warnings[name]}\n\n{body}"
        sections[name] = body
        print(f"\n## {name}\n{body}", flush=True)
        if args.write:
            png = render(name, stack.figures[name], args.plots) if name in stack.figures else None
            if png is not None:
                link = os.path.relpath(png, args.write.resolve().parent)
                body += f"\n\n![{name}]({link})"
                print(f"plot: {png}", flush=True)
            command = f"python -m streams.bench --only {name} --write {args.write}"
            write_section(args.write, f"bench-{name}", f"Command: `{command}` ({machine})\n\n{body}")

    needs_triton = bool({"inference", "text", "latency", "profile"} & set(args.only))
    with _Stack(with_triton=needs_triton) as stack:
        ceiling = saturation = 0.0
        if {"inference", "text", "latency"} & set(args.only):
            check("inference", "text", "latency")
            body, ceiling = inference(stack, args.seconds / 3)
            if "inference" in args.only:
                out("inference", body)
        if {"text", "latency"} & set(args.only):
            check("text", "latency")
            body, saturation = text(stack, ceiling, args.reviews)
            if "text" in args.only:
                out("text", body)
        if "latency" in args.only:
            check("latency")
            out("latency", latency(stack, saturation, args.seconds))
        if "clicks" in args.only:
            check("clicks")
            out("clicks", clicks(stack, args.events))
        if "profile" in args.only:
            check("profile")
            out("profile", profile(stack, args.reviews))
        if "soak" in args.only:
            check("soak")
            out("soak", soak(stack, args.soak_keys))


if __name__ == "__main__":
    main()
