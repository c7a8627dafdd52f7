"""Themes of a subject's texts, and sentiment alerts that say what the negative texts are about.

Embeddings here are synthetic (a planted complaint is one direction plus noise, ordinary texts
are spread out); tests/integration/test_alert_explanations.py runs the real encoder."""

import json
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from models.online import TextBackground, ThemeTracker, characteristic_words, words_of
from models.sequential import BernoulliCUSUM
from streams.core import plainstate
from streams.core.monitoring import MonitorConfig, Observation, SubjectMonitor
from streams.core.state import StateSeal

T0 = datetime(2026, 11, 22, tzinfo=UTC)
_ORDINARY = ["the lid squeaks", "colour is nice", "arrived late", "instructions unclear", "cable too short",
             "fits my desk", "smells of plastic", "good price", "heavy to carry", "noisy fan", "sturdy legs",
             "buttons are stiff", "looks cheap", "great gift", "easy setup", "box was crushed"]
_BATTERY = ["battery dies after an hour", "battery will not hold a charge", "the battery drains overnight",
            "battery swollen after a month", "battery needs charging twice a day"]


_AXIS = np.random.default_rng(99).standard_normal(384)
_MOOD = {"negative": _AXIS, "positive": -_AXIS}  # one sentiment direction, as a sentiment-tuned encoder has


class Stream:
    """Texts of one product: ordinary ones (spread-out embeddings, a tenth negative), then from
    ``change`` on half of them planted battery complaints (one direction plus noise). Every
    text leans towards its label's mood direction, shared by all products: the encoder puts
    every complaint near every other."""

    def __init__(self, seed: int, *, change: int | None = 200, planted_share: float = 0.5) -> None:
        self.rng = np.random.default_rng(seed)
        self.random = random.Random(seed)
        self.change, self.planted_share = change, planted_share
        self.battery = self.rng.standard_normal(384)

    def text(self, i: int) -> tuple[str, str, np.ndarray, bool]:
        planted = self.change is not None and i >= self.change and self.random.random() < self.planted_share
        if planted:
            text, label, x = self.random.choice(_BATTERY), "negative", self.battery + 0.6 * self.rng.standard_normal(384)
        else:
            label = "negative" if self.random.random() < 0.1 else "positive"
            text, x = f"{self.random.choice(_ORDINARY)} {i % 13}", self.rng.standard_normal(384)
        x = x + _MOOD[label]
        return text, label, x / np.linalg.norm(x), planted


def worker(seed: int, n: int, *, change: int | None = 200, others: int = 5, followed: type[Stream] = Stream):
    """A worker's texts, one round per step: the product followed (``followed(seed)``) and
    ``others`` stable ones, all teaching the shared background. Yields the followed product's
    texts after the background has seen them."""
    background = TextBackground()
    streams = [followed(seed, change=change), *(Stream(1000 * seed + k, change=None) for k in range(others))]
    for i in range(n):
        for k, stream in enumerate(streams):
            text, label, x, planted = stream.text(i)
            background.learn_one(words_of(text), x, label)
            if k == 0:
                yield background, (i, text, label, x, planted)


@pytest.mark.parametrize("seed", range(10))
def test_a_planted_complaint_is_the_top_new_theme_with_its_word(seed: int):
    tracker = ThemeTracker()
    planted_now = negatives_now = 0
    for background, (i, text, label, x, planted) in worker(seed, 300):
        tracker.learn_one(x, text, label=label, background=background)
        if i >= 200 and label == "negative":
            negatives_now, planted_now = negatives_now + 1, planted_now + planted
    top = tracker.explain(100, background=background)[0]
    assert "battery" in top.words and top.new
    truth = planted_now / negatives_now
    assert top.interval[0] <= truth + 0.05 and top.share_now >= 0.6 * truth


def test_stable_texts_explain_no_large_growing_theme():
    # Without a change no theme should claim a large share of the negatives (ordinary negatives
    # are varied): what an explanation shows on a false alarm is a scatter, not a story.
    grown = []
    for seed in range(10):
        tracker = ThemeTracker()
        for background, (_, text, label, x, _) in worker(seed, 300, change=None):
            tracker.learn_one(x, text, label=label, background=background)
        grown += [t.share_now for t in tracker.explain(100, background=background)]
    assert max(grown, default=0.0) < 0.35


def test_memory_per_subject_stays_bounded():
    rng = np.random.default_rng(1)
    tracker = ThemeTracker()
    vocabulary = [f"word{i}" for i in range(5000)]
    sizes = []
    for i in range(5000):
        text = " ".join(rng.choice(vocabulary, 8))
        tracker.learn_one(rng.standard_normal(384), text, label="negative" if i % 3 else "positive")
        if i % 1000 == 999:
            sizes.append(len(plainstate.dumps(tracker, {"ThemeTracker": ThemeTracker, "BernoulliCUSUM": BernoulliCUSUM})))
    assert tracker.n_themes <= tracker.max_themes
    assert max(sizes) < 9_000 and sizes[-1] <= 1.1 * sizes[0]


def test_characteristic_words_weigh_the_theme_against_the_rest_and_the_background():
    background = TextBackground()
    for _ in range(1000):
        background.learn_one(["great", "price"])
    # "great" is frequent in the theme, but more frequent everywhere: it does not label the theme.
    words = characteristic_words({"battery": 5, "great": 8, "charge": 3}, {"great": 40, "price": 9, "charge": 1},
                                 background=background)
    assert words[:2] == ["battery", "charge"] and "great" not in words


def obs(i: int, text: str, label: str, x: np.ndarray) -> Observation:
    return Observation(f"e{i}", text, label, 0.9 if label == "negative" else 0.1, T0 + timedelta(minutes=i),
                       embedding=x)


def test_a_sentiment_shift_alert_explains_itself_with_the_planted_theme_and_its_quotes():
    monitor, planted_ids, alerts = SubjectMonitor("product", "p42", MonitorConfig(warmup=50)), set(), []
    for background, (i, text, label, x, planted) in worker(3, 500, change=300):
        planted_ids |= {f"e{i}"} if planted else set()
        alerts += monitor.observe(obs(i, text, label, x), background=background)
    opened = next(a for a in alerts if a.kind == "sentiment_shift" and a.status == "open")
    top = opened.explanation.themes[0]
    assert "battery" in top.words and top.new and top.count >= 5
    assert top.quotes and {q["id"] for q in top.quotes} <= planted_ids
    assert "Mostly '" in opened.message and "battery" in opened.explanation.summary
    json.loads(opened.model_dump_json())  # the wire form


def test_a_monitor_without_embeddings_alerts_without_an_explanation():
    monitor = SubjectMonitor("product", "p1", MonitorConfig(warmup=20))
    alerts = []
    for i in range(200):
        negative = (i % 10 == 0) if i < 100 else (i % 10 < 6)
        alerts += monitor.observe(Observation(f"r{i}", "meh", "negative" if negative else "positive",
                                              0.9 if negative else 0.1, T0 + timedelta(minutes=i)))
    assert alerts and alerts[0].explanation is None and monitor.themes is None


def test_themes_survive_the_state_round_trip_and_older_state_reads_without_them():
    seal, stream = StateSeal(b"0123456789abcdef"), Stream(0)
    monitor = SubjectMonitor("product", "p1", MonitorConfig())
    for i in range(250):
        text, label, x, _ = stream.text(i)
        monitor.observe(obs(i, text, label, x))
    restored = SubjectMonitor.loads(monitor.dumps(seal, context="k"), seal, context="k")
    probe = stream.battery / np.linalg.norm(stream.battery)
    assert restored.themes.predict_one(probe, label="negative") == monitor.themes.predict_one(probe, label="negative")
    assert restored.themes.explain(50) == monitor.themes.explain(50)
    # State written before themes existed has no "themes" attribute (nor has a monitor that has
    # seen no embedding): it reads back as None, and themes start with the next embedding.
    fresh = SubjectMonitor("product", "p2", MonitorConfig())
    assert "themes" not in vars(fresh)
    old = SubjectMonitor.loads(fresh.dumps(seal, context="k"), seal, context="k")
    assert old.themes is None
    text, label, x, _ = stream.text(0)
    old.observe(obs(0, text, label, x))
    assert old.themes is not None and old.themes.n_themes == 1


class SteadyStream(Stream):
    """A fifth of the texts negative throughout; from ``change`` on, 70% of the negative ones are
    battery complaints: the negative share does not move, what it is about does."""

    def text(self, i: int) -> tuple[str, str, np.ndarray, bool]:
        negative = self.random.random() < 0.2
        planted = negative and self.change is not None and i >= self.change and self.random.random() < 0.7
        label = "negative" if negative else "positive"
        if planted:
            text, x = self.random.choice(_BATTERY), self.battery + 0.6 * self.rng.standard_normal(384)
        else:
            text, x = f"{self.random.choice(_ORDINARY)} {i % 13}", self.rng.standard_normal(384)
        x = x + _MOOD[label]
        return text, label, x / np.linalg.norm(x), planted


@pytest.mark.parametrize("seed", range(5))
def test_a_new_complaint_emerges_while_the_negative_share_stays_put(seed: int):
    monitor, alerts, planted_ids = SubjectMonitor("product", "p", MonitorConfig()), [], set()
    for background, (i, text, label, x, planted) in worker(seed, 900, change=400, followed=SteadyStream):
        planted_ids |= {f"e{i}"} if planted else set()
        alerts += monitor.observe(obs(i, text, label, x), background=background)
    kinds = [a.kind for a in alerts]
    assert kinds == ["emerging_theme"], [a.message for a in alerts]
    alert = alerts[0]
    assert alert.detected_at >= T0 + timedelta(minutes=400)
    theme = alert.explanation.themes[0]
    assert "battery" in theme.words and theme.share_now > 0.3 and theme.quotes
    assert {q["id"] for q in theme.quotes} <= planted_ids
    assert "A new theme in the negative texts of product p: '" in alert.message


def test_no_theme_emerges_from_stable_texts():
    false = 0
    for seed in range(10):
        monitor = SubjectMonitor("product", "p", MonitorConfig())
        for background, (i, text, label, x, _) in worker(seed, 900, change=None, followed=SteadyStream):
            false += sum(a.kind == "emerging_theme" for a in monitor.observe(obs(i, text, label, x),
                                                                             background=background))
    assert false == 0
