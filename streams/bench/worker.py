"""Section ``worker``: what the text path costs in the worker alone, Triton replaced by an
in-process fake, so that neither Triton's CPU nor its speed is in the number.

With a GPU Triton the worker's CPU per review is the bound on a worker's rate (``BENCHMARKS.md``,
"Projection"); on this 2-core machine the ``text`` section can only read it next to a CPU
Triton taking most of the cores. Here one ``streamsense worker`` (the real CLI and app, the
reviews path with every detector: themes, review-bombing screening, entity mentions and their
own agent, sentiment stats) gets from :class:`FakeTriton` for each text what the real model
gives (a sentiment, an entity for a third of them, a 384-dimensional float16 embedding: one of
12 directions plus noise, so themes form), after 2 ms per request. Reviews are pre-produced and
taken at saturation; CPU is the worker process's, between 10% and 90% of the input, once with
one batch at a time and once with the text pipeline (``STREAMSENSE_TEXT_PIPELINE_DEPTH=2``).

``python -m streams.bench.worker worker --index 0`` runs such a worker by hand.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time

import numpy as np

from streams.adapters.kafka_admin import ensure_topics
from streams.adapters.kafka_io import produce_lines
from streams.bench.harness import Stack, Workers, cpu_seconds, review_texts, wait_for_stable_group
from streams.core.text import Analysis

__all__ = ["FakeTriton", "in_process_us", "worker_cpu"]

_BRANDS = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark")


class FakeTriton:
    """An :class:`~streams.adapters.triton_client.Inferencer` that answers in process, the same
    answer for the same text, with what the real model's answer holds."""

    def __init__(self, *, seconds_per_request: float = 0.002) -> None:
        self.seconds_per_request = seconds_per_request
        self.directions = np.random.default_rng(3).standard_normal((12, 384))

    async def analyse(self, texts: list[str], *, domain: str | None = None) -> list[Analysis]:
        await asyncio.sleep(self.seconds_per_request)
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> Analysis:
        h = int(hashlib.md5(text.encode()).hexdigest()[:8], 16)
        negative = 0.8 if h % 5 == 0 or any(w in text for w in ("broke", "stopped", "bad")) else 0.1
        vector = self.directions[h % 12] + 0.8 * np.random.default_rng(h).standard_normal(384)
        brand = _BRANDS[h % len(_BRANDS)]
        entity = {"text": brand, "type": "ORG", "start": 0, "end": len(brand), "score": 0.9}
        entities = [entity] if h % 3 == 0 else []
        label = "negative" if negative > 0.5 else "positive"
        probs = {"negative": negative, "neutral": 0.05, "positive": 0.95 - negative}
        return Analysis(sentiment={"label": label, "score": max(negative, 1 - negative), "probs": probs},
                        entities=entities, truncated=False, model="fake@1", unknown_token_share=0.0,
                        embedding=(vector / np.linalg.norm(vector)).astype(np.float16))


def worker_cpu(stack: Stack, n: int) -> str:
    rows = ["| text batches in flight per agent | reviews/s | worker CPU-ms per review | worker cores busy |",
            "|---|---|---|---|"]
    reviews = [json.dumps(r).encode() for r in review_texts(n, seed=4)]
    for depth in (1, 2):
        rate, ms, cores = _run(stack, reviews, depth)
        rows.append(f"| {depth} | {rate:,.0f} | {ms:.2f} | {cores:.2f} |")
    alone = in_process_us(reviews)
    return (f"{n:,} reviews pre-produced, one worker with Triton replaced by an in-process fake (2 ms per "
            "request; every detector on), 4 partitions. CPU of the worker process between 10% and 90% of "
            "the input.\n\n" + "\n".join(rows) + "\n\nThe same reviews through the same text path in one "
            f"process on the test kit's fakes (no Kafka, no Faust; `in_process_us`): **{alone / 1000:.2f} "
            "CPU-ms per review**, what our own code costs of the worker's.")


def _run(stack: Stack, reviews: list[bytes], depth: int) -> tuple[float, float, float]:
    settings, env, names = stack.prefixed(f"bench-w{depth}.")
    env = {**env, "STREAMSENSE_TEXT_PIPELINE_DEPTH": str(depth)}
    asyncio.run(ensure_topics(settings, names.all()))
    with Workers(env, 1, stack.home, module="streams.bench.worker") as running:
        asyncio.run(wait_for_stable_group(settings, 1))
        asyncio.run(produce_lines(settings, names.reviews, "reviews", reviews))
        pid = running.procs[0].pid
        rate = running.rate('streamsense_events_out_total{topic="reviews.enriched"}', len(reviews),
                            cpu=lambda: cpu_seconds({"worker": pid}), timeout_s=600)
        used, done, seconds = running.cpu["worker"]
    return rate, 1000 * used / max(done, 1), used / seconds


def in_process_us(reviews: list[bytes], *, batch: int = 64, commit_every: int = 32,
                  repeats: int = 3) -> float:
    """Microseconds per review of the whole text path in this process, on the test kit's fakes
    (no Kafka, no Faust; :class:`FakeTriton` without its wait): each batch of reviews through
    the text processor (screening, sentiment adapter feedback, detectors, stats windows), its
    entity mentions through the entities' agent and its feedback through the adapter's learner,
    with the state written behind every ``commit_every`` batches, as a commit would (a worker
    at saturation commits every 2,000-3,000 reviews). The best of ``repeats`` runs, each on
    fresh state: what our own code costs, next to what the worker process spends."""
    return min(_in_process_once(reviews, batch, commit_every) for _ in range(repeats))


def _in_process_once(reviews: list[bytes], batch: int, commit_every: int) -> float:
    from streams.testing import FakeEvent

    path = _TextPath()
    events = [FakeEvent(topic="reviews", partition=i % 4, offset=i, value=v) for i, v in enumerate(reviews)]

    async def run() -> None:
        for i in range(0, len(events), batch):
            await path.text.process(events[i:i + batch])
            await path.detectors.on_mentions(path.taken("mentions", "entity-mentions"))
            await path.adaptation.learn(path.taken("feedback", "sentiment-feedback"))
            if (i // batch) % commit_every == commit_every - 1:
                path.commit()
        path.commit()

    started = time.process_time()  # CPU: time the machine gave to others is not ours
    asyncio.run(run())
    used = time.process_time() - started
    enriched, dead = len(path.topics["enriched"].sent), path.topics["dead"].values()
    if enriched != len(events) or dead or not path.keyed["entity"].table or not path.topics["stats"].sent:
        raise RuntimeError(f"the in-process text path enriched {enriched} of {len(events)} reviews, "
                           f"dead-lettered {dead[:1]}: it measured something else")
    return 1e6 * used / len(events)


class _TextPath:
    """The reviews path as ``streams.app`` wires it, on the test kit's fakes."""

    def __init__(self) -> None:
        from models.online.sentiment import SentimentAdapter
        from streams.adapters.metrics import Metrics
        from streams.agents.adaptation import SentimentAdaptation
        from streams.agents.detectors import Detectors, KeyedMonitors
        from streams.agents.text import TextProcessor
        from streams.core.monitoring import MonitorConfig, StreamMonitor
        from streams.core.state import StateSeal
        from streams.runtime import WriteBehind
        from streams.testing import FakeTable, FakeTopic

        metrics, config, seal = Metrics(), MonitorConfig(), StateSeal(b"bench" * 8)
        names = ("enriched", "alerts", "mentions", "stats", "feedback", "dead")
        self.topics = {name: FakeTopic() for name in names}
        self.keyed = {kind: KeyedMonitors(FakeTable(), kind, config, with_surge=kind == "entity",
                                          metrics=metrics, seal=seal)
                      for kind in ("product", "source", "entity")}
        self.signals = WriteBehind(FakeTable())
        self.detectors = Detectors(
            alerts=self.topics["alerts"], mentions=self.topics["mentions"], metrics=metrics,
            subjects={"reviews": self.keyed["product"], "news": self.keyed["source"]},
            streams={base: StreamMonitor(base, config) for base in ("reviews", "news")},
            entities=self.keyed["entity"], item_signals=self.signals, stats=self.topics["stats"])
        self.adaptation = SentimentAdaptation(
            table=FakeTable(), feedback=self.topics["feedback"], deadletter=self.topics["dead"],
            metrics=metrics, seal=seal, template=SentimentAdapter(), checkpoint_s=30.0)
        self.text = TextProcessor("reviews", inferencer=FakeTriton(seconds_per_request=0.0),
                                  output=self.topics["enriched"], deadletter=self.topics["dead"],
                                  metrics=metrics, detectors=self.detectors, adaptation=self.adaptation)

    def taken(self, name: str, topic: str) -> list:
        """What was sent to ``name`` since, as the events its agent reads (and forgotten)."""
        from streams.testing import FakeEvent

        sent, self.topics[name].sent = self.topics[name].sent, []
        return [FakeEvent(topic=topic, partition=i % 4, offset=i, key=key, value=value)
                for i, (key, value) in enumerate(sent)]

    def commit(self) -> None:
        for written in (*self.keyed.values(), self.signals):
            written.flush()


def main() -> None:
    """``streamsense`` with :class:`FakeTriton` in place of Triton (its ``worker`` command)."""
    import streams.app
    from streams import cli

    create_app = streams.app.create_app
    streams.app.create_app = lambda settings, **kwargs: create_app(settings, **{**kwargs,
                                                                              "inferencer": FakeTriton()})
    sys.argv = ["streamsense", *sys.argv[1:]]
    cli.main()


if __name__ == "__main__":
    main()

