"""What every benchmark section stands on: a private local stack, worker processes, CPU
accounting, and small statistics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from streams.adapters.kafka_admin import consumer_lag
from streams.local.settings import LocalStackSettings
from streams.local.stack import LocalStack, private_stack_env
from streams.settings import Settings
from streams.synthetic import synthetic_events
from streams.topics import TopicNames

__all__ = ["BUSY_WARNING", "REPO", "Stack", "Workers", "busy_fraction", "committed", "cpu_seconds",
           "percentiles", "review_texts", "rss_mib", "wait_for_stable_group", "wait_until"]

REPO = Path(__file__).resolve().parents[2]
BUSY_WARNING = 0.25


def _cpu_times(stat_line: str) -> tuple[int, int]:
    """``(busy, total)`` jiffies from the aggregate ``cpu`` line of ``/proc/stat``.

    >>> _cpu_times("cpu  4705 356 584 3699 23 23 0 0 0 0")
    (5668, 9390)
    """
    values = [int(v) for v in stat_line.split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_fraction(seconds: float = 2.0, *, ours: dict[str, int | None] | None = None) -> float | None:
    """Share of all cores' time spent busy over the next ``seconds``, less what the process
    trees in ``ours`` used meanwhile (a broker or Triton still starting up is not other work);
    None without /proc/stat."""
    stat = Path("/proc/stat")
    if not stat.exists():
        return None
    ours = ours or {}
    busy0, total0 = _cpu_times(stat.read_text().splitlines()[0])
    own0 = sum(cpu_seconds(ours).values())
    time.sleep(seconds)
    busy1, total1 = _cpu_times(stat.read_text().splitlines()[0])
    own = (sum(cpu_seconds(ours).values()) - own0) * os.sysconf("SC_CLK_TCK")
    return max(0.0, busy1 - busy0 - own) / max(1, total1 - total0)


@dataclass
class Stack:
    """A private Kafka broker and Triton server on free ports under a temporary home."""

    with_triton: bool
    home: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="streamsense-bench-")))
    env: dict[str, str] = field(init=False)
    settings: LocalStackSettings = field(init=False)
    triton_cpu_ms_per_text: float = 0.0
    figures: dict[str, dict] = field(default_factory=dict)  # each section's numbers, for its plot

    def __post_init__(self) -> None:
        self.env = private_stack_env(self.home)
        self.settings = LocalStackSettings.from_env(self.env)
        self.stack = LocalStack(self.settings)
        self.services = []

    def __enter__(self) -> Stack:
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

    @contextlib.contextmanager
    def triton_on(self, repository: Path) -> Iterator[None]:
        """Triton serving ``repository`` instead of the stack's model repository for the block,
        on the same ports; the stack's own comes back after it (not when unwinding: the stack
        stops anyway)."""
        self.services[-1].stop()
        settings = self.settings.model_copy(update={"triton_model_repository": repository})
        variant = LocalStack(settings).triton()
        variant.start(timeout_s=self.settings.startup_timeout_s)
        try:
            yield
        finally:
            variant.stop()
        self.services[-1].start(timeout_s=self.settings.startup_timeout_s)

    def prefixed(self, prefix: str) -> tuple[Settings, dict[str, str], TopicNames]:
        return (self.settings.model_copy(update={"topic_prefix": prefix}),
                {**self.env, "STREAMSENSE_TOPIC_PREFIX": prefix}, TopicNames(prefix=prefix))


class Workers:
    """``streamsense worker`` subprocesses, as users run them; stopped on exit."""

    def __init__(self, env: dict[str, str], count: int, log_dir: Path, *,
                 module: str = "streams.cli") -> None:
        self.env = env
        self.procs = [subprocess.Popen(
            [sys.executable, "-m", module, "worker", "--index", str(i), "--loglevel", "warn"],
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

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=60)


def cpu_seconds(roots: dict[str, int | None]) -> dict[str, float]:
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


def review_texts(n: int, seed: int = 0) -> list[dict]:
    return list(synthetic_events("reviews", n, seed=seed))


def wait_until(done, timeout_s: float, procs: list[subprocess.Popen], failure: str) -> None:
    """Until ``done()`` holds; RuntimeError(``failure``) after ``timeout_s`` or as soon as one of
    ``procs`` (the workers, say) has exited."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError(failure)
        time.sleep(1)


async def wait_for_stable_group(settings: Settings, members: int, timeout_s: float = 120) -> None:
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


def percentiles(values: list[float]) -> tuple[float, float, float]:
    values = sorted(values)
    at = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return at(0.5), at(0.95), at(0.99)


def committed(settings: Settings, topic: str) -> int:
    rows = asyncio.run(consumer_lag(settings))
    return sum(r.committed for r in rows if r.group == settings.consumer_group and r.topic == topic)


def rss_mib(pid: int) -> float:
    """Resident memory of one process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
