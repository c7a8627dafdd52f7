"""The sentiment adapter and its sequential test: the guarantees, checked by seeded simulation."""

import json
import math
import random

import numpy as np
import pytest

from models.online.sentiment import SentimentAdapter, rating_label
from models.sequential.paired import PairedBettingTest


def test_betting_test_false_alarms_stay_under_alpha_even_when_the_rate_moves():
    """Null: the challenger is right in at most half of the disagreements at every step (here
    the chance wanders between 0.35 and 0.5). Rejections over 2,000 discordant items, 1,000 runs."""
    alpha, runs, rejected = 0.05, 1000, 0
    for seed in range(runs):
        rng = random.Random(seed)
        test = PairedBettingTest(alpha=alpha)
        for i in range(2000):
            p = 0.425 + 0.075 * math.sin(i / 50)
            test.update(1 if rng.random() < p else -1)
            if test.rejected:
                rejected += 1
                break
    # The bound is alpha; 3 standard errors of slack for the simulation's own noise.
    assert rejected / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def test_betting_test_finds_a_better_challenger():
    found = []
    for seed in range(100):
        rng = random.Random(seed)
        test = PairedBettingTest(alpha=0.01)
        for _ in range(1000):
            test.update(1 if rng.random() < 0.65 else -1)
        found.append(test.rejected)
    assert sum(found) >= 95


def test_betting_test_rejects_bad_input():
    with pytest.raises(ValueError):
        PairedBettingTest().update(2)
    with pytest.raises(ValueError):
        PairedBettingTest(alpha=1.5)


def _stream(rng, n, *, dim, informative):
    """Rated reviews: embeddings carry the sentiment (informative) or the ratings are noise.
    The base model calls everything slightly positive, so it is right on half the polar ones."""
    for _ in range(n):
        rating = int(rng.integers(1, 6))
        label = rating_label(rating)
        direction = {0: -1.0, 1: 0.0, 2: 1.0}[label] if informative else float(rng.choice([-1.0, 1.0]))
        x = rng.normal(size=dim) * 0.5
        x[0] += direction
        yield x / np.linalg.norm(x), np.array([0.3, 0.3, 0.4]), label


def test_random_ratings_never_make_the_adapter_take_over():
    """Ratings that are noise (independent of the text): the adapter may serve only with
    probability <= alpha over the whole stream. 200 seeded streams of 500 rated reviews."""
    alpha, runs, took_over = 0.05, 200, 0
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        adapter = SentimentAdapter(dim=8, alpha=alpha)
        for x, base, label in _stream(rng, 500, dim=8, informative=False):
            adapter.observe(x, base, label)
            if adapter.serving == "adapted":
                took_over += 1
                break
    assert took_over / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def test_the_adapter_takes_over_where_the_base_model_errs_and_serves_better_labels():
    rng = np.random.default_rng(1)
    adapter = SentimentAdapter(dim=8, alpha=0.01)
    served_right = []
    for i, (x, base, label) in enumerate(_stream(rng, 800, dim=8, informative=True)):
        probs, _ = adapter.serve(x, base)
        if label != 1 and i >= 400:
            served_right.append((2 if probs[2] > probs[0] else 0) == label)
        adapter.observe(x, base, label)
    report = adapter.report()
    assert adapter.serving == "adapted" and report["switches"] == 1
    assert np.mean(served_right) > 0.85
    assert report["served_accuracy"] > report["base_accuracy"] + 0.3


def test_state_round_trips_through_json_and_bad_state_is_refused():
    rng = np.random.default_rng(2)
    adapter = SentimentAdapter(dim=8)
    for x, base, label in _stream(rng, 300, dim=8, informative=True):
        adapter.observe(x, base, label)
    state = json.loads(json.dumps(adapter.to_dict()))
    restored = SentimentAdapter(dim=8).load_dict(state)
    x, base, _ = next(_stream(rng, 1, dim=8, informative=True))
    assert restored.predict_proba_one(x, base) == pytest.approx(adapter.predict_proba_one(x, base))
    assert restored.report() == adapter.report()
    for bad in ({**state, "weights": [[1.0]]}, {**state, "serving": "os.system"}, {**state, "version": 99},
                {**state, "weights": [[float("nan")] * 12] * 3}):
        with pytest.raises(ValueError):
            SentimentAdapter(dim=8).load_dict(bad)


def test_a_new_adapter_serves_exactly_the_base_model():
    adapter = SentimentAdapter(dim=4)
    base = np.array([0.1, 0.3, 0.6])
    probs, source = adapter.serve(np.ones(4) / 2, base)
    assert source == "base" and probs.tolist() == base.tolist()
    assert adapter.predict_proba_one(np.ones(4) / 2, base) == pytest.approx(base, abs=1e-5)


def test_rating_scale_is_configurable():
    assert [rating_label(r, negative_max=4, positive_min=7) for r in (1, 4, 5, 7, 10)] == [0, 0, 1, 2, 2]
    assert rating_label(float("nan")) is None
