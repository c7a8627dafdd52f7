"""streams/core/text.py and streams/core/flow.py: text hygiene, enrichment, flow control."""

import asyncio
import json
from datetime import UTC, datetime

import numpy as np
import pytest

from streams.core.flow import AdaptiveLimiter, CircuitBreaker, backoff_s
from streams.core.text import (
    EMBEDDING_DIM,
    MAX_CHARS,
    Analysis,
    RawRecord,
    decode_batch,
    decode_embedding,
    enrich,
)
from streams.records import EnrichedNews, EnrichedReview, encode

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def raw(value: bytes | None, offset: int = 0, topic: str = "reviews") -> RawRecord:
    return RawRecord(topic, 1, offset, b"k", value, 1_700_000_000_000)


def review(text: str, rid: str = "r1") -> bytes:
    return json.dumps({"review_id": rid, "product_id": "p1", "text": text}).encode()


def fake_analysis(text: str) -> Analysis:
    start = text.find("Berlin")
    ents = [{"text": "Berlin", "type": "LOC", "start": start, "end": start + 6, "score": 0.9}] if start >= 0 else []
    return Analysis(sentiment={"label": "positive", "score": 0.9,
                               "probs": {"negative": 0.05, "neutral": 0.05, "positive": 0.9}},
                    entities=ents, truncated=False, model="m@1")


def test_hygiene_cases_have_defined_outcomes():
    batch = decode_batch("reviews", [
        raw(review("   ", "empty")), raw(review("x" * (MAX_CHARS + 5), "huge")),
        raw(review("bad\x00byte", "ctrl")), raw(review("Très bien, 非常好", "mixed")),
        raw(b"\xc3\x28", 9)], now=NOW)
    by_id = {i.record.review_id: i for i in batch.items}
    assert by_id["empty"].model_text == "" and by_id["empty"].flags == ("empty",)
    assert len(by_id["huge"].model_text) == MAX_CHARS and by_id["huge"].flags == ("truncated",)
    assert by_id["ctrl"].model_text == "bad byte" and by_id["ctrl"].flags == ("control_characters",)
    assert by_id["mixed"].model_text == "Très bien, 非常好" and by_id["mixed"].flags == ()
    [dead] = batch.dead
    assert dead.offset == 9 and dead.partition == 1 and dead.raw_encoding == "base64"
    assert dead.error.startswith("value is not valid UTF-8")


def test_enrich_keeps_the_record_order_and_fields():
    batch = decode_batch("reviews", [raw(review("Nice shop in Berlin", "a")), raw(review("", "b"))], now=NOW)
    analyses = [fake_analysis(batch.items[0].model_text), None]
    a, b = enrich(batch.items, analyses, now=NOW)
    assert isinstance(a, EnrichedReview) and a.review_id == "a" and a.sentiment.label == "positive"
    assert [(e.text, e.start, e.field) for e in a.entities] == [("Berlin", 13, "text")]
    assert a.model == {"sentiment": "m@1", "ner": "m@1"}
    assert b.sentiment.label == "neutral" and b.text_flags == ["empty"] and b.entities == []


def test_enriched_records_carry_the_embedding_only_when_asked():
    batch = decode_batch("reviews", [raw(review("Nice shop", "a")), raw(review("", "b"))], now=NOW)
    vector = np.linspace(-1, 1, EMBEDDING_DIM)
    analyses = [fake_analysis("Nice shop").with_embedding(vector), None]
    plain, _ = enrich(batch.items, analyses, now=NOW)
    asked, empty = enrich(batch.items, analyses, now=NOW, embeddings=True)
    assert plain.embedding is None and empty.embedding is None  # an empty text has no embedding
    assert np.allclose(decode_embedding(json.loads(encode(asked))["embedding"]), vector, atol=1e-3)


def test_news_entity_offsets_point_into_title_or_body():
    value = json.dumps({"article_id": "n1", "source": "wire", "title": "Berlin news",
                        "body": "Rain in Berlin."}).encode()
    batch = decode_batch("news", [raw(value, topic="news")], now=NOW)
    item = batch.items[0]
    assert item.model_text == "Berlin news\n\nRain in Berlin."
    analysis = Analysis(sentiment=fake_analysis("").sentiment, model="m@1", truncated=True, entities=[
        {"text": "Berlin", "type": "LOC", "start": 0, "end": 6, "score": 0.9},
        {"text": "Berlin", "type": "LOC", "start": 21, "end": 27, "score": 0.8}])
    [out] = enrich([item], [analysis], now=NOW)
    assert isinstance(out, EnrichedNews) and out.text_flags == ["truncated"]
    title, body = out.entities
    assert (title.field, title.start, title.end) == ("title", 0, 6)
    assert (body.field, "Rain in Berlin."[body.start:body.end]) == ("body", "Berlin")


def test_adaptive_limiter_bounds_in_flight_and_backs_off_on_slow_calls():
    limiter = AdaptiveLimiter(initial=2, maximum=4)
    peak = 0

    async def call():
        nonlocal peak
        async with limiter.slot():
            peak = max(peak, limiter.in_flight)
            await asyncio.sleep(0.01)

    async def run():
        await asyncio.gather(*(call() for _ in range(20)))

    asyncio.run(run())
    assert peak == 2
    for _ in range(20):
        limiter.observe(0.01)
    assert limiter.limit == 4  # additive increase up to the maximum
    limiter.observe(0.5)  # latency far above the best seen
    assert limiter.limit == 2


def test_circuit_breaker_opens_after_failures_and_recovers():
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=1.0, clock=lambda: now[0])
    for _ in range(3):
        breaker.failure()
    assert breaker.state == "open"
    now[0] = 1.5
    assert breaker.state == "half_open"
    breaker.failure()  # the probe failed: open again, for twice as long
    now[0] = 3.0
    assert breaker.state == "open"
    now[0] = 3.6
    breaker.success()
    assert breaker.state == "closed"


@pytest.mark.parametrize("attempt", [0, 1, 5, 20])
def test_backoff_is_bounded(attempt):
    assert 0 <= backoff_s(attempt) <= min(10.0, 0.1 * 2 ** attempt)


def test_adaptive_batch_size_grows_when_fast_and_shrinks_when_slow():
    from streams.core.flow import AdaptiveBatchSize

    size = AdaptiveBatchSize(initial=8, minimum=2, maximum=64, target_s=1.0)
    for _ in range(10):
        size.observe(latency_s=0.2, items=size.value)
    assert size.value == 64
    size.observe(latency_s=0.2, items=3)  # a partly filled request says nothing about capacity
    assert size.value == 64
    for _ in range(10):
        size.observe(latency_s=3.0, items=size.value)
    assert size.value == 2


def test_analysis_reads_the_unknown_token_share_when_the_model_sends_it():
    body = {"sentiment": {"label": "neutral", "score": 1.0, "probs": {}}, "entities": [], "model": "m@1"}
    assert Analysis.from_json(json.dumps(body)).unknown_token_share is None
    assert Analysis.from_json(json.dumps({**body, "unknown_token_share": 0.25})).unknown_token_share == 0.25
