"""The sentiment adapter on the real stack: rated reviews from a domain whose sentiment words
mean the opposite of what they mean elsewhere (horror films: "terrifying" is praise; the served
model gets most of them wrong) make it take over; reviews whose ratings are noise never do.

Phase 1 streams rated reviews; the worker sends each to ``sentiment-feedback``, learns, and
publishes the adapter. Phase 2 streams reviews held out of phase 1 once everything was learned:
their enriched records say which label they carry (``sentiment.source``).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import pytest

from streams.adapters.kafka_io import produce_lines, read_topic
from streams.settings import Settings
from streams.testing import domain_reviews
from streams.testing.stack import WorkerProcess, ids_in
from streams.topics import TopicNames

pytestmark = pytest.mark.integration

def _metrics(env: dict[str, str]) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{env['STREAMSENSE_METRICS_PORT']}/metrics",
                                  timeout=10).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def _wait_learned(env: dict[str, str], count: int, worker: WorkerProcess, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and worker.proc.poll() is None:
        samples = _metrics(env)
        if samples.get("streamsense_sentiment_adapter_learned", 0) >= count:
            return samples
        time.sleep(1)
    raise AssertionError(f"the adapter did not learn {count} rated reviews in time:\n{worker.tail()}")


def _run(prefix: str, reviews: list[dict], heldout: list[dict], kafka: Settings, env: dict[str, str],
         tmp_path: Path) -> tuple[dict, list[dict]]:
    env = {**env, "STREAMSENSE_TOPIC_PREFIX": prefix, "STREAMSENSE_SENTIMENT_ADAPTER_CHECKPOINT_S": "1"}
    settings = kafka.model_copy(update={"topic_prefix": prefix})
    names = TopicNames(prefix=prefix)
    worker = WorkerProcess(env, log_dir=tmp_path)
    try:
        asyncio.run(produce_lines(settings, names.reviews, "reviews", [json.dumps(r).encode() for r in reviews]))
        ids_in(settings, names.reviews_enriched, "review_id", expect=len(reviews), timeout_s=300, worker=worker)
        samples = _wait_learned(env, len(reviews), worker)
        time.sleep(3)  # the learner stores every second; serving workers read the stored state
        asyncio.run(produce_lines(settings, names.reviews, "reviews", [json.dumps(r).encode() for r in heldout]))
        ids_in(settings, names.reviews_enriched, "review_id", expect=len(reviews) + len(heldout), timeout_s=120,
               worker=worker)

        async def served() -> list[dict]:
            wanted = {r["review_id"] for r in heldout}
            return [body async for rec in read_topic(settings, names.reviews_enriched, idle_timeout_s=3)
                    if (body := json.loads(rec.value))["review_id"] in wanted]

        records = asyncio.run(served())
    finally:
        worker.stop()
    assert worker.proc.returncode in (0, -15, 143), worker.tail()
    return samples, records


def _reviews(seed: int, *, noise: bool, rated: int) -> tuple[list[dict], list[dict], dict[str, str]]:
    """``rated`` reviews with ratings (meaningful, or noise), and 100 others without a rating
    to see what is served after learning; the labels their ratings imply."""
    reviews = [{**r, "category": "films"} for r in domain_reviews(rated + 100, seed=seed, noise=noise)]
    truth = {r["review_id"]: "positive" if r["rating"] >= 4 else "negative" for r in reviews}
    heldout = [{k: v for k, v in r.items() if k != "rating"} for r in reviews[rated:]]
    return reviews[:rated], heldout, truth


def test_rated_reviews_from_a_domain_the_model_gets_wrong_make_the_adapter_take_over(
        kafka: Settings, triton: Settings, stack_environment: dict[str, str], tmp_path: Path):
    reviews, heldout, truth = _reviews(3, noise=False, rated=300)
    samples, records = _run("ad1.", reviews, heldout, kafka, stack_environment, tmp_path)
    assert samples["streamsense_sentiment_adapter_serving"] == 1.0
    assert samples['streamsense_sentiment_rated_accuracy{labeller="adapted"}'] > \
        samples['streamsense_sentiment_rated_accuracy{labeller="base"}']
    assert samples["streamsense_sentiment_feedback_total"] == len(reviews)
    # The category's own adapter learned too, on top of the deployment's (which learned the same
    # rows: nothing left for it to add here; tests/unit/test_adaptation.py has categories that differ).
    assert samples['streamsense_sentiment_adapter_categories{state="learned"}'] == 1.0
    assert records and {r["sentiment"]["source"] for r in records} == {"adapted"}
    assert {r["category"] for r in records} == {"films"}
    assert all("+adapter-" in r["model"]["sentiment"] for r in records)
    hits = sum((r["sentiment"]["probs"]["positive"] > r["sentiment"]["probs"]["negative"])
               == (truth[r["review_id"]] == "positive") for r in records)
    assert hits / len(records) >= 0.85, (hits, len(records))


def test_ratings_that_are_noise_never_make_the_adapter_take_over(
        kafka: Settings, triton: Settings, stack_environment: dict[str, str], tmp_path: Path):
    reviews, heldout, _ = _reviews(4, noise=True, rated=300)
    env = {**stack_environment, "STREAMSENSE_SENTIMENT_ADAPTER_ALPHA": "0.001"}
    samples, records = _run("ad2.", reviews, heldout, kafka, env, tmp_path)
    assert samples["streamsense_sentiment_adapter_serving"] == 0.0
    assert samples['streamsense_sentiment_adapter_categories{state="served"}'] == 0.0
    assert samples["streamsense_sentiment_adapter_learned"] == len(reviews)
    assert records and {r["sentiment"]["source"] for r in records} == {"base"}
