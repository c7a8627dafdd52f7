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

import numpy as np

from streams.adapters.kafka_admin import ensure_topics
from streams.adapters.kafka_io import produce_lines
from streams.bench.harness import Stack, Workers, cpu_seconds, review_texts, wait_for_stable_group
from streams.core.text import Analysis

__all__ = ["FakeTriton", "worker_cpu"]

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
    for depth in (1, 2):
        rate, ms, cores = _run(stack, n, depth)
        rows.append(f"| {depth} | {rate:,.0f} | {ms:.2f} | {cores:.2f} |")
    return (f"{n:,} reviews pre-produced, one worker with Triton replaced by an in-process fake (2 ms per "
            "request; every detector on), 4 partitions. CPU of the worker process between 10% and 90% of "
            "the input.\n\n" + "\n".join(rows))


def _run(stack: Stack, n: int, depth: int) -> tuple[float, float, float]:
    settings, env, names = stack.prefixed(f"bench-w{depth}.")
    env = {**env, "STREAMSENSE_TEXT_PIPELINE_DEPTH": str(depth)}
    asyncio.run(ensure_topics(settings, names.all()))
    reviews = [json.dumps(r).encode() for r in review_texts(n, seed=4)]
    with Workers(env, 1, stack.home, module="streams.bench.worker") as running:
        asyncio.run(wait_for_stable_group(settings, 1))
        asyncio.run(produce_lines(settings, names.reviews, "reviews", reviews))
        pid = running.procs[0].pid
        rate = running.rate('streamsense_events_out_total{topic="reviews.enriched"}', n,
                            cpu=lambda: cpu_seconds({"worker": pid}), timeout_s=600)
        used, done, seconds = running.cpu["worker"]
    return rate, 1000 * used / max(done, 1), used / seconds


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
