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

    async def analyse(self, texts, *, domain=None):
        rng = np.random.default_rng(0)
        return [Analysis(sentiment={"label": "positive", "score": 0.4, "probs": PROBS}, entities=[],
                         truncated=False, model="base-1",
                         embedding=_embedding(1.0 if t.startswith("good") else -1.0, rng).astype(np.float16))
                for t in texts]


def _kettles() -> tuple[SentimentAdaptation, TextProcessor, FakeTopic, FakeTopic, list[dict]]:
    """The text path with an adapter, and 300 rated kettle reviews ("good" ones 5 stars)."""
    adaptation, _, feedback, _, _ = _adaptation()
    output = FakeTopic()
    processor = TextProcessor("reviews", inferencer=_Inferencer(), output=output, deadletter=FakeTopic(),
                              metrics=adaptation.metrics, adaptation=adaptation)
    reviews = [{"review_id": f"r{i}", "product_id": "p1", "text": ("good" if i % 2 else "bad") + " kettle",
                "rating": 5 if i % 2 else 1} for i in range(300)]
    return adaptation, processor, output, feedback, reviews


def test_the_text_path_sends_rated_reviews_and_serves_the_adapted_label_once_it_wins():
    adaptation, processor, output, feedback, reviews = _kettles()
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


class _Switched(_Inferencer):
    """The same answers from another model version (a fine-tune just loaded)."""

    async def analyse(self, texts, *, domain=None):
        from dataclasses import replace

        return [replace(a, model="base-2") for a in await super().analyse(texts)]


def test_a_model_version_switch_starts_a_fresh_adapter_and_never_serves_the_old_one_on_it():
    """The adapter learned base-1's embeddings; texts base-2 answers are served base-2's own
    label at once, and base-2's first rated review starts a fresh adapter that names it."""
    adaptation, processor, output, feedback, reviews = _kettles()
    asyncio.run(processor.process(fake_events("reviews", reviews)))
    assert {json.loads(v)["model"] for _, v in feedback.sent} == {"base-1"}
    events = [FakeEvent(topic="sentiment-feedback", offset=i, value=v) for i, (_, v) in enumerate(feedback.sent)]
    asyncio.run(adaptation.learn(events))
    assert adaptation.current().serving == "adapted" and adaptation.current().model == "base-1"

    processor.inferencer = _Switched()
    output.sent.clear()
    feedback.sent.clear()
    asyncio.run(processor.process(fake_events("reviews", reviews[:4])))
    assert [r["sentiment"]["source"] for r in output.values()] == ["base"] * 4  # not base-1's adapter
    assert {r["model"]["sentiment"] for r in output.values()} == {"base-2"}
    asyncio.run(adaptation.learn([FakeEvent(topic="sentiment-feedback", offset=300 + i, value=v)
                                  for i, (_, v) in enumerate(feedback.sent)]))
    fresh = adaptation.current()  # as every worker reads it from the table
    assert (fresh.model, fresh.learned, fresh.serving) == ("base-2", 4, "base")
    assert adaptation.metrics.adapter_restarts._value.get() == 1
    # Rows from before adapters named their model keep learning whichever adapter there is.
    old = FeedbackRow(**{**json.loads(feedback.sent[0][1]), "model": None})
    asyncio.run(adaptation.learn([FakeEvent(topic="sentiment-feedback", offset=400,
                                            value=old.model_dump_json(exclude_none=True).encode())]))
    assert (adaptation.current().model, adaptation.current().learned) == ("base-2", 5)


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


def _category_rows(n: int, *, seed: int = 0, flipped: frozenset = frozenset(), noisy: frozenset = frozenset(),
                   categories=("kettles", "toasters", "horror")) -> list[bytes]:
    """Rated reviews of several categories: the embedding's direction says the rating, except in
    ``flipped`` categories (there the same words mean the opposite) and ``noisy`` ones (ratings
    at random)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        category = categories[i % len(categories)]
        rating = [1, 2, 4, 5][int(rng.integers(0, 4))]
        direction = 1.0 if rating >= 4 else -1.0
        if category in flipped:
            direction = -direction
        if category in noisy:
            direction = float(rng.choice([-1.0, 1.0]))
        emb = _embedding(direction, rng)
        row = feedback_row(f"r{i}", rating, PROBS, emb, RatingScale(), category=category)
        out.append(row.model_dump_json().encode())
    return out


def _served_right(adaptation: SentimentAdaptation, category: str, *, flipped: bool, seed: int = 99) -> float:
    """How often the label served for fresh reviews of ``category`` matches their rating."""
    from streams.core.adaptation import adapted_sentiment

    rng, right = np.random.default_rng(seed), 0
    for i in range(200):
        positive = i % 2 == 0
        emb = _embedding((1.0 if positive else -1.0) * (-1.0 if flipped else 1.0), rng)
        served = adapted_sentiment(adaptation.current(), {"label": "positive", "score": 0.4, "probs": PROBS},
                                   emb, adaptation.for_category(category))
        right += (served.label == "positive") == positive
    return right / 200


def test_a_category_whose_words_mean_the_opposite_gets_an_adapter_of_its_own():
    """Horror reviews praise with the words kettle reviews complain with: the deployment's
    adapter learns the majority's meaning, and the horror category's adapter, stacked on it,
    takes over for horror reviews only."""
    adaptation, table, *_ = _adaptation()
    events = [FakeEvent(topic="sentiment-feedback", offset=i, value=v)
              for i, v in enumerate(_category_rows(1200, flipped=frozenset({"horror"})))]
    for start in range(0, len(events), 100):
        asyncio.run(adaptation.learn(events[start:start + 100]))
    assert adaptation.current().serving == "adapted"
    assert adaptation.for_category("horror").serving == "adapted"
    assert _served_right(adaptation, "horror", flipped=True) > 0.9
    assert _served_right(adaptation, "kettles", flipped=False) > 0.9
    assert _served_right(adaptation, "unknown-category", flipped=False) > 0.9  # the deployment's
    metrics = adaptation.metrics
    assert metrics.adapter_categories.labels(state="learned")._value.get() == 3
    assert metrics.adapter_categories.labels(state="served")._value.get() >= 1
    # Every worker serves it from the table.
    other, *_ = _adaptation()
    other.table = table
    assert _served_right(other, "horror", flipped=True) > 0.9


@pytest.mark.parametrize("seed", range(5))
def test_a_category_whose_ratings_are_noise_never_takes_over(seed):
    adaptation, *_ = _adaptation()
    events = [FakeEvent(topic="sentiment-feedback", offset=i, value=v)
              for i, v in enumerate(_category_rows(900, seed=seed, noisy=frozenset({"horror"})))]
    for start in range(0, len(events), 100):
        asyncio.run(adaptation.learn(events[start:start + 100]))
    assert adaptation.for_category("horror").serving == "base"  # what stands under it is served
    assert adaptation.for_category("kettles").serving == "base"  # nothing to add to the deployment's


def test_category_adapters_are_bounded_and_survive_a_takeover():
    """At most ``max_categories`` adapters: a category that keeps coming keeps its adapter, a new
    one takes the place of one idle for 10 x max_categories rated reviews, and the next owner of
    the feedback partition continues with the same ones."""
    def events(rows, start=0):
        return [FakeEvent(topic="sentiment-feedback", offset=start + i, value=v) for i, v in enumerate(rows)]

    adaptation, table, *_ = _adaptation(max_categories=2)
    asyncio.run(adaptation.learn(events(_category_rows(90, categories=("a", "b", "c")))))
    # a and b came first and kept coming: c is served by the deployment's adapter.
    assert sorted(k for k in table if k.startswith("category/")) == ["category/a", "category/b"]
    assert adaptation.for_category("a").learned == 30 and adaptation.for_category("c") is None
    second, *_ = _adaptation(max_categories=2)
    second.table = table  # the partition moved
    asyncio.run(second.learn(events(_category_rows(17, seed=3, categories=("b", "d")), start=100)))
    assert sorted(k for k in table if k.startswith("category/")) == ["category/a", "category/b"]
    asyncio.run(second.learn(events(_category_rows(10, seed=4, categories=("b", "d")), start=200)))
    # a had no rating for 20 rated reviews: d took its place; b went on learning where it was.
    assert sorted(k for k in table if k.startswith("category/")) == ["category/b", "category/d"]
    assert second.for_category("b").learned == 30 + 9 + 5
    off, *_ = _adaptation(per_category=False)
    off.table = table
    assert off.for_category("b") is None


def test_a_stored_category_adapter_is_small():
    adaptation, table, *_ = _adaptation()
    asyncio.run(adaptation.learn([FakeEvent(topic="sentiment-feedback", offset=i, value=v)
                                  for i, v in enumerate(_category_rows(30, categories=("a",)))]))
    assert len(table["category/a"]) < 40_000


def test_a_deleted_category_adapter_is_no_longer_served():
    adaptation, table, *_ = _adaptation()
    asyncio.run(adaptation.learn([FakeEvent(topic="sentiment-feedback", offset=i, value=v)
                                  for i, v in enumerate(_category_rows(30, categories=("a",)))]))
    server, *_ = _adaptation()
    server.table = table
    assert server.for_category("a") is not None
    del table["category/a"]  # the learner made room for another category
    assert server.for_category("a") is None
