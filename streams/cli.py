"""The ``streamsense`` command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from streams.cli_model import console, learn, model_app, reapply_model_version, train
from streams.cli_model import fail as _fail
from streams.cli_model import local_settings as _settings
from streams.local.process import ServiceError
from streams.topics import INPUT_TOPICS, OUTPUT_TOPICS, TopicNames

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="StreamSense: real-time review, click and news intelligence on Kafka.")


app.add_typer(model_app, name="model")
app.command()(train)
app.command()(learn)


@app.command()
def setup() -> None:
    """Fetch the Kafka broker's jars and prepare Triton's runtime (idempotent)."""
    from streams.local.stack import LocalStack

    stack = LocalStack(_settings())
    try:
        with console.status("provisioning Kafka jars and Triton runtime"):
            stack.provision()
    except ServiceError as exc:
        raise _fail(str(exc)) from None
    console.print(f"ready: Kafka jars in {stack.kafka_libs}, Triton runtime in {stack.triton_runtime}")


@app.command()
def up(
    kafka: Annotated[bool, typer.Option(help="start the local Kafka broker")] = True,
    triton: Annotated[bool, typer.Option(help="start the local Triton server")] = True,
    prometheus: Annotated[bool, typer.Option(help="also start a local Prometheus scraping the "
                                             "workers and Triton (Debian's package)")] = False,
) -> None:
    """Start the local Kafka broker and Triton server; returns when both are healthy."""
    from streams.adapters.kafka_admin import ensure_topics
    from streams.local.stack import LocalStack

    settings = _settings()
    stack = LocalStack(settings)
    try:
        with console.status("provisioning"):
            stack.provision()
        with console.status("starting services and waiting for health"):
            pids = stack.up(with_kafka=kafka, with_triton=triton, with_prometheus=prometheus)
        if kafka:
            created = asyncio.run(ensure_topics(settings, TopicNames(prefix=settings.topic_prefix).all()))
            if created:
                console.print(f"created topics: {', '.join(created)}")
        if triton:
            reapply_model_version(settings)
    except (ServiceError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    for name, pid in pids.items():
        console.print(f"[green]{name}[/green] running (pid {pid})")
    console.print(f"Kafka {settings.kafka_bootstrap} · Triton gRPC {settings.triton_url}, "
                  f"HTTP {settings.triton_http_url} · logs in {settings.home / 'run'}")


@app.command()
def down() -> None:
    """Stop everything `streamsense up` and `streamsense worker` started from this directory."""
    from streams.local.stack import LocalStack

    stopped = LocalStack(_settings()).down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status() -> None:
    """What is running, where, worker throughput, topics and consumer lag."""
    from streams.adapters.kafka_admin import consumer_lag, list_topics
    from streams.adapters.worker_probe import probe_workers
    from streams.local.stack import LocalStack

    settings = _settings()
    table = Table("service", "pid", "healthy", "address", title="services")
    rows = LocalStack(settings).status()
    for row in rows:
        table.add_row(row.name, str(row.pid or "-"), "yes" if row.healthy else "[red]no[/red]",
                      row.address)
    out = Console()
    out.print(table)
    workers = probe_workers(settings)
    t = Table("worker", "metrics", "in/s", "out/s", "dead-lettered", "errors", title="workers on this host")
    for w in workers:
        t.add_row(str(w.index), w.address, f"{w.in_per_s:.0f}", f"{w.out_per_s:.0f}", f"{w.deadlettered:.0f}",
                  f"{w.errors:.0f}" if not w.errors else f"[yellow]{w.errors:.0f}[/yellow]")
    out.print(t if workers else "no worker answers on this host's metrics ports "
              f"({settings.metrics_host}:{settings.metrics_port}+)")
    if not rows[0].healthy:
        return
    topics = asyncio.run(list_topics(settings))
    t = Table("topic", "partitions", title="topics")
    for name, parts in topics.items():
        t.add_row(name, str(parts))
    out.print(t)
    lag = asyncio.run(consumer_lag(settings))
    t = Table("group", "topic", "committed", "end", "lag", title="consumer lag")
    for g in lag:
        t.add_row(g.group, g.topic, str(g.committed), str(g.end), str(g.lag))
    out.print(t)


@app.command()
def bench(
    only: Annotated[list[str] | None, typer.Option(help="sections: inference, text, latency, clicks, "
                                                   "profile, soak (repeat the option); default all "
                                                   "but soak")] = None,
    write: Annotated[Path | None, typer.Option(help="replace each section's part of this Markdown file "
                                               "(BENCHMARKS.md)")] = None,
) -> None:
    """Measure throughput, latency and efficiency on a private local stack (what `make bench` runs)."""
    from streams.bench import SECTIONS
    from streams.bench import main as run_bench

    unknown = sorted(set(only or ()) - set(SECTIONS))
    if unknown:
        raise _fail(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    run_bench([*(["--only", *only] if only else []), *(["--write", str(write)] if write else [])])


@app.command()
def worker(
    index: Annotated[int, typer.Option(help="worker number: its web and metrics ports are the "
                                       "configured ones plus this")] = 0,
    loglevel: Annotated[str, typer.Option(help="crit, error, warn, info or debug")] = "warn",
) -> None:
    """Run one Faust worker in the foreground (start several, each with its own --index)."""

    from streams.adapters.kafka_admin import ensure_topics
    from streams.adapters.metrics import Metrics
    from streams.app import create_app
    from streams.runtime import Worker

    settings = _settings()
    try:
        asyncio.run(ensure_topics(settings, TopicNames(prefix=settings.topic_prefix).all()))
    except Exception as exc:
        raise _fail(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc!r}") from None
    metrics = Metrics()
    port = settings.metrics_port + index
    try:
        metrics.serve(host=settings.metrics_host, port=port, heartbeat_timeout_s=settings.heartbeat_timeout_s)
    except OSError as exc:
        raise _fail(f"metrics port {settings.metrics_host}:{port} is not free ({exc}); "
                    "use another --index or STREAMSENSE_METRICS_PORT") from None
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    faust_app = create_app(settings, worker_index=index, metrics=metrics)
    # The tables' changelog topics too, before Faust starts: on a fresh cluster Faust creates
    # them itself, and a table read before its consumer's metadata lists the new topic crashed
    # the agent ("changelog topic ... has 0 partitions"), which took the worker down.
    loop.run_until_complete(ensure_topics(
        settings, [table.changelog_topic.get_topic_name() for table in faust_app.tables.values()],
        config={"cleanup.policy": "compact"}))
    run_dir = settings.home / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    pid_file = run_dir / f"worker-{index}.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    web = f"http://{settings.web_host}:{settings.web_port + index}/" if settings.web_enabled else "off"
    console.print(f"worker {index}: metrics http://{settings.metrics_host}:{port}/metrics, "
                  f"health /healthz, Faust web {web}")
    try:
        runner = Worker(faust_app, loglevel=loglevel, quiet=True, stop_timeout_s=settings.stop_timeout_s)
        # Faust's terminal spinner sets the root logger to DEBUG, so every debug call in aiokafka
        # and Faust built a log record: 15% of the event loop in `make bench`'s profile.
        runner.spinner = None
        runner.execute_from_commandline()
    finally:
        pid_file.unlink(missing_ok=True)


def _lines(path: Path) -> Iterator[bytes]:
    with (sys.stdin.buffer if str(path) == "-" else path.open("rb")) as fh:
        for line in fh:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line


@app.command()
def produce(
    topic: Annotated[str, typer.Argument(help=f"one of {', '.join(INPUT_TOPICS)}")],
    file: Annotated[Path | None, typer.Option("--file", "-f",
                                              help="JSON-lines file ('-' for stdin)")] = None,
    synthetic: Annotated[int | None, typer.Option(help="send N generated events instead")] = None,
    rate: Annotated[float | None, typer.Option(help="events per second (default: unlimited)")] = None,
    seed: Annotated[int, typer.Option(help="seed for --synthetic")] = 0,
) -> None:
    """Produce events to an input topic, keyed by their natural key. Lines are sent as they are:
    malformed ones reach the worker, which dead-letters them with the reason."""
    from streams.adapters.kafka_io import produce_lines
    from streams.synthetic import synthetic_events

    if topic not in INPUT_TOPICS:
        raise _fail(f"unknown input topic {topic!r}; choose one of {', '.join(INPUT_TOPICS)}")
    if (file is None) == (synthetic is None):
        raise _fail("give exactly one of --file F or --synthetic N")
    if file is not None and str(file) != "-" and not file.exists():
        raise _fail(f"no such file: {file}")
    settings = _settings()
    values = (_lines(file) if file is not None else
              (json.dumps(e).encode() for e in synthetic_events(topic, synthetic or 0, seed=seed)))
    full = TopicNames(prefix=settings.topic_prefix).name(topic)
    try:
        sent = asyncio.run(produce_lines(settings, full, topic, values, rate=rate))
    except Exception as exc:
        raise _fail(f"producing to {full} at {settings.kafka_bootstrap} failed: {exc!r}") from None
    console.print(f"sent {sent} records to {full}")


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="a topic, e.g. reviews.enriched or alerts")],
    from_beginning: Annotated[bool, typer.Option(help="start at the oldest record")] = True,
    follow: Annotated[bool, typer.Option("--follow", "-F", help="keep waiting for records")] = False,
    max_records: Annotated[int | None, typer.Option("--max", help="stop after N records")] = None,
    idle_timeout: Annotated[float, typer.Option(help="stop after S seconds without records")] = 5.0,
) -> None:
    """Print the records of a topic, one JSON value per line."""
    from streams.adapters.kafka_io import read_topic

    settings = _settings()
    names = TopicNames(prefix=settings.topic_prefix)
    full = names.name(topic) if topic in INPUT_TOPICS + OUTPUT_TOPICS else topic

    async def run() -> int:
        n = 0
        async for rec in read_topic(settings, full, from_beginning=from_beginning,
                                    idle_timeout_s=None if follow else idle_timeout,
                                    max_records=max_records):
            value = (rec.value or b"").decode("utf-8", "replace")
            sys.stdout.write(value + "\n")
            sys.stdout.flush()
            n += 1
        return n

    try:
        n = asyncio.run(run())
    except KeyboardInterrupt:
        return
    console.print(f"{n} records from {full}")


@app.command()
def schemas(
    out: Annotated[Path, typer.Option(help="directory for <topic>.schema.json files")] =
        Path(__file__).parent / "schemas",
) -> None:
    """Write the JSON Schema of every topic's values (for producers in other languages)."""
    from streams.records import json_schemas

    out.mkdir(parents=True, exist_ok=True)
    for topic, schema in json_schemas().items():
        (out / f"{topic}.schema.json").write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    console.print(f"wrote {len(json_schemas())} schemas to {out}")


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="events to replay over all input topics "
                                        "(70% clicks, 20% reviews, 10% news)")] = 15_000,
    rate: Annotated[float, typer.Option(help="events per second over all topics")] = 300.0,
    keep_running: Annotated[bool, typer.Option(help="leave the stack and the worker up afterwards")] = False,
    kafka: Annotated[str | None, typer.Option(help="use this Kafka bootstrap, not a local one")] = None,
    triton: Annotated[str | None, typer.Option(help="use this Triton gRPC URL, not a local one")] = None,
    seed: Annotated[int, typer.Option(help="seed of the replayed stream")] = 7,
) -> None:
    """Start the local stack and a worker, replay a realistic stream with planted changes and a
    live view, summarise, write a report, stop."""
    from streams.demo import DemoOptions, run_demo

    # Ctrl-C (or `kill -INT`) stops the demo and everything it started, also when it was launched
    # from a shell that starts background jobs with SIGINT ignored (the disposition is inherited).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    settings = _settings()
    overrides = {k: v for k, v in {"kafka_bootstrap": kafka, "triton_url": triton}.items() if v}
    settings = settings.model_copy(update=overrides)
    options = DemoOptions(events=events, rate=rate, keep_running=keep_running, seed=seed,
                          start_kafka=kafka is None, start_triton=triton is None)
    try:
        outputs = run_demo(settings, options, console)
    except ServiceError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        console.print("interrupted" + ("" if keep_running else "; everything the demo started was stopped"))
        raise typer.Exit(130) from None
    if outputs.problem:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
