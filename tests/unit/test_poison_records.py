"""A record that makes processing fail every time is dead-lettered with the error after bounded
attempts; the rest of its batch is processed (``streams.agents.text.TextProcessor``), on fakes."""

import asyncio
import json

from streams.adapters.metrics import Metrics
from streams.adapters.triton_client import InferenceRejected
from streams.agents.text import TextProcessor
from streams.core.text import Analysis
from streams.testing import FakeTopic, fake_events

ANALYSIS = {"sentiment": {"label": "positive", "score": 0.9,
                          "probs": {"negative": 0.05, "neutral": 0.05, "positive": 0.9}},
            "entities": [], "model": "fake"}


class _Inferencer:
    """Rejects any batch holding the poison text, as Triton does when its model fails on it."""

    def __init__(self):
        self.calls = 0
        self.domains = set()

    async def analyse(self, texts, *, domain=None):
        self.calls += 1
        self.domains.add(domain)
        if any("POISON" in t for t in texts):
            raise InferenceRejected("Triton text_analysis failed this batch 3 times while ready: ValueError()")
        return [Analysis.from_json(json.dumps(ANALYSIS)) for _ in texts]


def _events(texts):
    return fake_events("reviews", [{"review_id": f"r{i}", "product_id": "p1", "text": t}
                                   for i, t in enumerate(texts)])


def test_a_poison_text_is_dead_lettered_and_the_rest_of_the_batch_enriched():
    texts = ["great phone", "battery died", "POISON text the model fails on", "works fine"]
    output, deadletter, inferencer = FakeTopic(), FakeTopic(), _Inferencer()
    processor = TextProcessor("reviews", inferencer=inferencer, output=output, deadletter=deadletter,
                              metrics=Metrics())
    asyncio.run(processor.process(_events(texts)))
    assert sorted(r["review_id"] for r in output.values()) == ["r0", "r1", "r3"]
    [dead] = deadletter.values()
    assert dead["offset"] == 2 and dead["source_topic"] == "reviews"
    assert "processing failed" in dead["error"] and "while ready" in dead["error"]
    assert inferencer.calls <= 3 + len(texts)  # bounded: whole-batch tries, then one at a time
    assert inferencer.domains == {"reviews"}  # every call names its texts (Triton's reviews calibration)
