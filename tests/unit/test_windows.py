"""sentiment.stats windows: every text counted in exactly the windows still open when it came."""

import math
import random
from collections import Counter

import pytest

from streams.core.windows import SentimentWindows, stats_records


@pytest.mark.parametrize("seed", range(5))
def test_windows_count_what_a_brute_force_count_says_and_stay_bounded(seed: int):
    rng, windows = random.Random(seed), SentimentWindows(sizes=(60, 3600), grace_s=90)
    expected, late, dropped, emitted, watermark = Counter(), Counter(), 0, {}, None
    t = 0.0
    for _ in range(5000):
        t += rng.expovariate(1 / 5)  # a text every 5 s on average, some out of order
        ts = t - (rng.uniform(0, 200) if rng.random() < 0.1 else 0.0)
        label = rng.choice(["negative", "neutral", "positive"])
        for size in (60, 3600):
            start = math.floor(ts / size) * size
            if watermark is not None and start + size + 90 <= watermark:
                dropped += 1
                continue
            expected[size, start, label] += 1
            late[size, start] += watermark is not None and ts < watermark
        watermark = ts if watermark is None else max(watermark, ts)
        for w in windows.observe(ts, label, 0.0, None):
            emitted[w["size"], w["start"]] = w
        assert windows.open_windows <= 2 + 4  # two hours and a few minutes open at most
    assert windows.dropped_late == dropped > 0
    assert emitted and all(
        w["labels"][label] == expected[key[0], key[1], label] and w["late"] == late[key]
        for key, w in emitted.items() for label in ("negative", "neutral", "positive"))
    closed = {(size, start) for size, start, _ in expected if start + size + 90 <= watermark}
    assert set(emitted) == closed


def test_stats_records_name_the_largest_live_themes():
    windows = SentimentWindows(sizes=(60,), grace_s=0)
    for ts, theme in ((1, 7), (2, 7), (3, 8), (4, 9), (5, None)):
        windows.observe(float(ts), "negative", -0.5, theme)
    closed = windows.observe(61.0, "positive", 0.5, None)
    [record] = stats_records(("product", "p1"), closed, theme_words={7: ["battery"], 8: ["lid"]}.get)
    assert record.window.size == "1m" and record.count == 5 and record.mean_score == -0.5
    assert [t.words for t in record.themes] == [["battery"], ["lid"]]  # theme 9 was recycled



def _mention_events(served: bool) -> list:
    """An entity named in a text every 20 s for 5 minutes, mentioned by two texts at a time:
    the model says "positive", the enriched records (an adapter serving) say "negative"."""
    from datetime import UTC, datetime, timedelta

    from streams.core.mentions import observe_enriched
    from streams.records import EnrichedReview, Entity, encode
    from streams.testing import FakeEvent

    t0, events = datetime(2026, 11, 30, 12, 0, tzinfo=UTC), []
    model = {"label": "positive", "score": 0.7, "probs": {"negative": 0.2, "neutral": 0.1, "positive": 0.7}}
    for i in range(15):
        record = EnrichedReview(
            review_id=f"r{i}", product_id=f"p{i % 2}", text="Acme did it again", model={}, processed_at=t0,
            entities=[Entity(text="Acme", type="ORG", start=0, end=4, score=0.9),
                      Entity(text="ACME ", type="ORG", start=0, end=4, score=0.9)],  # one entity, once
            sentiment={"label": "negative", "score": 0.8, "source": "adapted",
                       "probs": {"negative": 0.8, "neutral": 0.1, "positive": 0.1}})
        _, _, [mention] = observe_enriched(record, t0 + timedelta(seconds=20 * i), sentiment=model)
        value = mention.to_record()
        if not served:  # as a worker before served labels were carried wrote it
            value = value.model_copy(update={"served_label": None, "served_polarity": None})
        events.append(FakeEvent(topic="entity-mentions", offset=i, key=b"acme", value=encode(value)))
    return events


@pytest.mark.parametrize("served", [True, False])
def test_entity_windows_count_each_mention_once_with_the_served_label(served: bool):
    import asyncio

    from streams.adapters.metrics import Metrics
    from streams.agents.detectors import Detectors, KeyedMonitors
    from streams.core.monitoring import MonitorConfig
    from streams.core.state import StateSeal
    from streams.testing import FakeTable, FakeTopic

    metrics, stats = Metrics(), FakeTopic()
    entities = KeyedMonitors(FakeTable(), "entity", MonitorConfig(), with_surge=True, metrics=metrics,
                             seal=StateSeal(b"k" * 32))
    detectors = Detectors(alerts=FakeTopic(), mentions=FakeTopic(), metrics=metrics, subjects={}, streams={},
                          entities=entities, stats=stats, windows=((60,), 30.0))
    events = _mention_events(served)
    asyncio.run(detectors.on_mentions(events[:8]))
    asyncio.run(detectors.on_mentions(events[8:]))  # the windows' state went through the table
    minutes = stats.values()
    # 15 mentions at 0, 20, ..., 280 s; the watermark 280 closes the minutes ending by 250 s.
    assert [m["window"]["start"][11:19] for m in minutes] == ["12:00:00", "12:01:00", "12:02:00", "12:03:00"]
    assert all(m["subject"] == {"type": "entity", "id": "Acme"} and m["count"] == 3 for m in minutes)
    label = "negative" if served else "positive"
    assert all(m["labels"][label] == 3 and sum(m["labels"].values()) == 3 for m in minutes)
    assert all(m["mean_score"] == pytest.approx(-0.7 if served else -0.2) for m in minutes)
    assert [key for key, _ in stats.sent] == [b"entity:Acme"] * 4


def test_a_mention_from_a_newer_worker_still_reads():
    # In a rolling upgrade the workers not yet upgraded read what upgraded ones write.
    from datetime import UTC, datetime

    from streams.core.mentions import EntityMention
    from streams.core.monitoring import Observation
    from streams.records import EntityMentionRecord, encode

    mention = EntityMention("acme", "Acme", "ORG", Observation("r1", "Acme again", "negative", 0.8,
                                                               datetime(2026, 11, 30, tzinfo=UTC)))
    newer = encode(mention.to_record())[:-1] + b', "a_field_from_the_future": [1, 2]}'
    read = EntityMention.from_record(EntityMentionRecord.model_validate_json(newer))
    assert read == mention
