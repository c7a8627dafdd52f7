"""A record that makes processing fail every time is dead-lettered with the error after bounded
attempts; the rest of its batch is processed (``streams.app.process_text_events``), on fakes."""

import asyncio
import json
from types import SimpleNamespace

from streams.adapters.metrics import Metrics
from streams.adapters.triton_client import InferenceRejected
from streams.app import process_text_events
from streams.core.text import Analysis

ANALYSIS = {"sentiment": {"label": "positive", "score": 0.9,
                          "probs": {"negative": 0.05, "neutral": 0.05, "positive": 0.9}},
            "entities": [], "model": "fake"}


class _Topic:
    def __init__(self):
        self.sent = []

    async def send(self, *, key, value):
        self.sent.append(json.loads(value))


class _Inferencer:
    """Rejects any batch holding the poison text, as Triton does when its model fails on it."""

    def __init__(self):
        self.calls = 0

    async def analyse(self, texts):
        self.calls += 1
        if any("POISON" in t for t in texts):
            raise InferenceRejected("Triton text_analysis failed this batch 3 times while ready: ValueError()")
        return [Analysis.from_json(json.dumps(ANALYSIS)) for _ in texts]


class _Event(SimpleNamespace):
    """Stands in for a Faust event (weak-referenceable, as the current-event context needs)."""

    __slots__ = ("__weakref__",)


def _events(texts):
    return [_Event(message=SimpleNamespace(
        topic="reviews", partition=0, offset=i, key=f"r{i}".encode(), timestamp=1_763_805_600.0,
        value=json.dumps({"review_id": f"r{i}", "product_id": "p1", "text": t}).encode()))
        for i, t in enumerate(texts)]


def test_a_poison_text_is_dead_lettered_and_the_rest_of_the_batch_enriched():
    texts = ["great phone", "battery died", "POISON text the model fails on", "works fine"]
    output, deadletter, inferencer = _Topic(), _Topic(), _Inferencer()
    asyncio.run(process_text_events("reviews", _events(texts), inferencer=inferencer, output=output,
                                    deadletter=deadletter, metrics=Metrics()))
    assert sorted(r["review_id"] for r in output.sent) == ["r0", "r1", "r3"]
    [dead] = deadletter.sent
    assert dead["offset"] == 2 and dead["source_topic"] == "reviews"
    assert "processing failed" in dead["error"] and "while ready" in dead["error"]
    assert inferencer.calls <= 3 + len(texts)  # bounded: whole-batch tries, then one at a time
