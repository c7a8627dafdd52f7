"""The sentiment adapter in the worker, with fakes: feedback rows, learning, stored state,
serving, and hostile rows and state."""

import asyncio
import base64
import json

import numpy as np
import pytest

from models.online.sentiment import SentimentAdapter
from streams.adapters.metrics import Metrics
from streams.agents.adaptation import FEEDBACK_KEY, SentimentAdaptation
from streams.agents.text import TextProcessor
from streams.core.adaptation import (
    ADAPTER_KEY,
    FeedbackRow,
    RatingScale,
    decode_feedback,
    encode_embedding,
    feedback_row,
)
from streams.core.state import StateSeal
from streams.core.text import Analysis
from streams.records import DecodeError
from streams.testing import FakeEvent, FakeTable, FakeTopic, fake_events

SEAL = StateSeal(b"k" * 32)
PROBS = {"negative": 0.3, "neutral": 0.3, "positive": 0.4}  # the base model: mildly positive always


def _embedding(direction: float, rng) -> np.ndarray:
    x = rng.normal(size=384) * 0.3
    x[:8] += direction
    return x / np.linalg.norm(x)


def _adaptation(**kwargs) -> tuple[SentimentAdaptation, FakeTable, FakeTopic, FakeTopic, Metrics]:
    table, feedback, deadletter, metrics = FakeTable(), FakeTopic(), FakeTopic(), Metrics()
    adaptation = SentimentAdaptation(table=table, feedback=feedback, deadletter=deadletter, metrics=metrics,
                                     seal=SEAL, checkpoint_s=0.0, **kwargs)
    return adaptation, table, feedback, deadletter, metrics


def _rows(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        rating = [1, 2, 4, 5][i % 4]
        emb = _embedding(1.0 if rating >= 4 else -1.0, rng)
        out.append(feedback_row(f"r{i}", rating, PROBS, emb, RatingScale()).model_dump_json().encode())
    return out


def test_feedback_rows_only_for_rated_reviews_with_embeddings():
    emb = np.full(384, 0.05)
    assert feedback_row("r1", None, PROBS, emb, RatingScale()) is None
    assert feedback_row("r1", 5, PROBS, None, RatingScale()) is None
    row = feedback_row("r1", 3, PROBS, emb, RatingScale())
    assert row.label == 1 and row.base_probs == [0.3, 0.3, 0.4]
    assert feedback_row("r1", 7, PROBS, emb, RatingScale(negative_max=4, positive_min=7)).label == 2


@pytest.mark.parametrize("raw", [
    None, b"x" * 5000, b"not json", b'{"review_id": "r", "label": 7, "base_probs": [0, 0, 1], "embedding": "AA=="}',
    FeedbackRow(review_id="r", label=0, base_probs=[0.1, 0.1, 0.8],
                embedding=base64.b64encode(b"\0" * 10).decode()).model_dump_json().encode(),
    FeedbackRow(review_id="r", label=0, base_probs=[0.1, 0.1, 0.8],
                embedding=encode_embedding(np.full(384, np.inf))).model_dump_json().encode(),
    b'{"review_id": "r", "label": 0, "base_probs": [NaN, 0, 1], "embedding": "AA=="}',
    b'{"review_id": "r", "label": 0, "base_probs": [0, 0, 1], "embedding": "AA==", "code": "os.system"}',
])
def test_hostile_feedback_rows_are_refused_with_a_reason(raw):
    result = decode_feedback(raw)
    assert isinstance(result, DecodeError) and result.reason


def test_learning_stores_sealed_plain_state_that_every_worker_serves():
    adaptation, table, _, deadletter, metrics = _adaptation()
    rows = _rows(400)
    events = [FakeEvent(topic="sentiment-feedback", offset=i, value=v) for i, v in enumerate(rows)]
    for start in range(0, len(events), 50):
        asyncio.run(adaptation.learn(events[start:start + 50]))
    assert deadletter.sent == []
    stored = table[ADAPTER_KEY]
    assert b"pickle" not in base64.b64decode(stored)
    # Another worker (same table, same key) reads what was learned and serves it.
    other, *_ = _adaptation()
    other.table = table
    adapter = other.current()
    assert adapter is not None and adapter.learned == 400 and adapter.serving == "adapted"
    assert metrics.adapter_serving._value.get() == 1.0
    assert metrics.rated_accuracy.labels(labeller="adapted")._value.get() > 0.9


def test_forged_adapter_state_is_discarded_and_counted():
    adaptation, table, *_ = _adaptation()
    forged = SentimentAdapter().to_dict()
    forged["serving"] = "adapted"
    table[ADAPTER_KEY] = base64.b64encode(json.dumps(forged).encode()).decode()
    assert adaptation.current() is None
    assert adaptation.metrics.state_rejected.labels(table="sentiment-adapter")._value.get() == 1
    # The learner starts fresh rather than continuing from it.
    asyncio.run(adaptation.learn([FakeEvent(topic="sentiment-feedback", value=_rows(1)[0])]))
    assert adaptation.current().learned == 1


def test_bad_rows_go_to_the_dead_letter_topic():
    adaptation, _, _, deadletter, _ = _adaptation()
    asyncio.run(adaptation.learn([FakeEvent(topic="sentiment-feedback", offset=3, value=b"{}")]))
    [letter] = deadletter.values()
    assert letter["source_topic"] == "sentiment-feedback" and letter["offset"] == 3
    assert "invalid feedback row" in letter["error"]


class _Inferencer:
    """Triton's answer for each text: the base model's mildly positive call, and an embedding
    that points the way the text's first word says."""

    async def analyse(self, texts):
        rng = np.random.default_rng(0)
        return [Analysis(sentiment={"label": "positive", "score": 0.4, "probs": PROBS}, entities=[],
                         truncated=False, model="base-1",
                         embedding=_embedding(1.0 if t.startswith("good") else -1.0, rng).astype(np.float16))
                for t in texts]


def test_the_text_path_sends_rated_reviews_and_serves_the_adapted_label_once_it_wins():
    adaptation, _, feedback, _, _ = _adaptation()
    output, deadletter = FakeTopic(), FakeTopic()
    processor = TextProcessor("reviews", inferencer=_Inferencer(), output=output, deadletter=deadletter,
                              metrics=adaptation.metrics, adaptation=adaptation)
    reviews = [{"review_id": f"r{i}", "product_id": "p1", "text": ("good" if i % 2 else "bad") + " kettle",
                "rating": 5 if i % 2 else 1} for i in range(300)]
    reviews.append({"review_id": "unrated", "product_id": "p1", "text": "bad kettle"})
    asyncio.run(processor.process(fake_events("reviews", reviews)))
    assert len(feedback.sent) == 300 and {k for k, _ in feedback.sent} == {FEEDBACK_KEY}
    assert [r["sentiment"]["source"] for r in output.values()] == ["base"] * 301
    asyncio.run(adaptation.learn([FakeEvent(topic="sentiment-feedback", offset=i, value=v)
                                  for i, (_, v) in enumerate(feedback.sent)]))
    output.sent.clear()
    asyncio.run(processor.process(fake_events("reviews", reviews[-3:])))
    served = output.values()
    assert [r["sentiment"]["source"] for r in served] == ["adapted"] * 3
    assert [r["sentiment"]["label"] for r in served] == ["negative", "positive", "negative"]
    assert served[0]["model"]["sentiment"] == "base-1+adapter-300" and served[0]["model"]["ner"] == "base-1"


def test_a_learner_that_regains_the_partition_continues_from_what_another_stored():
    first, table, *_ = _adaptation()
    rows = [FakeEvent(topic="sentiment-feedback", offset=i, value=v) for i, v in enumerate(_rows(60))]
    asyncio.run(first.learn(rows[:20]))
    second, *_ = _adaptation()
    second.table = table
    asyncio.run(second.learn(rows[20:50]))  # the partition moved to another worker
    first.forget()
    asyncio.run(first.learn(rows[50:]))  # and back
    assert first.current().learned == 60
