"""Sections ``inference`` (the Triton ceiling), ``text`` (the text path at saturation) and
``latency`` (end to end at 25/50/80% load)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from streams.adapters.kafka_admin import ensure_topics
from streams.adapters.kafka_io import produce_lines, read_topic
from streams.bench.harness import (
    REPO,
    Stack,
    Workers,
    cpu_seconds,
    percentiles,
    review_texts,
    wait_for_stable_group,
)
from streams.settings import Settings

__all__ = ["inference", "latency", "text"]

_BATCHES = (1, 2, 4, 8, 16, 32, 64)


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


def inference(stack: Stack, seconds: float) -> tuple[str, float]:
    texts = [r["text"] for r in review_texts(64, seed=1)]
    rows = asyncio.run(_sweep(stack.settings.triton_url, texts, seconds=seconds))
    before = cpu_seconds({"triton": stack.triton_pid})
    started = time.perf_counter()
    [best] = asyncio.run(_sweep(stack.settings.triton_url, texts, seconds=seconds, batches=(64,)))
    used = cpu_seconds({"triton": stack.triton_pid})["triton"] - before["triton"]
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


def _instance_scaling(stack: Stack, texts: list[str], seconds: float) -> dict[int, dict[int, float]]:
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
            with stack.triton_on(repo):
                rows = sweep()
        out[count] = {r["batch"]: r["texts_per_s"] for r in rows}
    return out


def _text_rate(stack: Stack, prefix: str, workers: int, n: int, *,
               depth: int = 1) -> tuple[float, dict[str, float]]:
    """Reviews/s at saturation, and CPU-ms per review of the workers, Triton and Kafka;
    ``depth``: text batches in flight per agent (``STREAMSENSE_TEXT_PIPELINE_DEPTH``)."""
    settings, env, names = stack.prefixed(prefix)
    env = {**env, "STREAMSENSE_TEXT_PIPELINE_DEPTH": str(depth)}
    reviews = review_texts(n, seed=2)
    asyncio.run(ensure_topics(settings, names.all()))
    with Workers(env, workers, stack.home) as running:
        # Produce once every worker has its partitions: a rebalance inside the measured window
        # (a second worker joining late) would be measured instead of throughput.
        asyncio.run(wait_for_stable_group(settings, workers))
        values = [json.dumps(r).encode() for r in reviews]
        asyncio.run(produce_lines(settings, names.reviews, "reviews", values))
        roots = {**running.pids(), "triton": stack.triton_pid, "kafka": stack.kafka_pid}
        rate = running.rate('streamsense_events_out_total{topic="reviews.enriched"}', n,
                            cpu=lambda: cpu_seconds(roots))
    per_review = {}
    for name, (cpu, count, _) in running.cpu.items():
        key = "workers" if name.startswith("worker") else name
        per_review[key] = per_review.get(key, 0.0) + 1000 * cpu / count
    wall = next(iter(running.cpu.values()))[2]
    per_review["cores busy"] = sum(cpu for cpu, _, _ in running.cpu.values()) / wall
    return rate, per_review


def text(stack: Stack, ceiling: float, n: int) -> tuple[str, float]:
    """One worker and two at the default depth, and one worker with two text batches in flight
    per agent (the pipeline, ``streams/runtime/pipeline.py``)."""
    runs = {(workers, depth): _text_rate(stack, f"bench-t{workers}d{depth}.", workers, n, depth=depth)
            for workers, depth in ((1, 1), (2, 1), (1, 2))}
    lines = [f"{n} reviews pre-produced, then consumed at saturation; 4 partitions. CPU-ms per review "
             "between 10% and 90% of the input, by process tree.", "",
             "| workers | text batches in flight per agent | reviews/s end to end | / Triton ceiling "
             "| CPU-ms/review: Triton | workers | Kafka | cores busy |", "|---|---|---|---|---|---|---|---|"]
    for (workers, depth), (rate, cpu) in runs.items():
        ratio = f"**{rate / ceiling:.2f}**" if (workers, depth) == (1, 1) else f"{rate / ceiling:.2f}"
        lines.append(f"| {workers} | {depth} | {rate:.0f} | {ratio} | {cpu['triton']:.2f} | "
                     f"{cpu['workers']:.2f} | {cpu['kafka']:.2f} | {cpu['cores busy']:.2f} |")
    stack.figures["text"] = {"ceiling": ceiling,
                             "rates": {w: rate for (w, depth), (rate, _) in runs.items() if depth == 1}}
    return "\n".join(lines), runs[1, 1][0]


async def _paced(settings: Settings, topic: str, rate: float, seconds: float, tag: str) -> int:
    producer = AIOKafkaProducer(**settings.kafka_client_kwargs(), acks="all", linger_ms=2)
    await producer.start()
    sent, t0 = 0, time.monotonic()
    base = review_texts(200, seed=3)
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


def latency(stack: Stack, saturation: float, seconds: float) -> str:
    settings, env, names = stack.prefixed("bench-l.")
    asyncio.run(ensure_topics(settings, names.all()))
    lines = [f"Rate-controlled producer, {seconds:.0f} s per load level, one worker; latency = "
             "`processed_at - ts` of every enriched review (event time stamped at send).", "",
             "| load | reviews/s offered | p50 (ms) | p95 (ms) | p99 (ms) | reviews |",
             "|---|---|---|---|---|---|"]
    with Workers(env, 1, stack.home) as running:
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
            p50, p95, p99 = percentiles(values)
            stack.figures.setdefault("latency", {"rows": []})["rows"].append(
                {"offered": share * saturation, "p50": p50, "p95": p95, "p99": p99})
            lines.append(f"| {share:.0%} | {share * saturation:.0f} | {1000 * p50:.0f} | {1000 * p95:.0f} | "
                         f"{1000 * p99:.0f} | {len(values)} of {sent} |")
    return "\n".join(lines)
