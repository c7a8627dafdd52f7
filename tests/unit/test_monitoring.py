import random
from datetime import UTC, datetime, timedelta

import pytest

from streams.core.monitoring import MonitorConfig, Observation, StreamMonitor, SubjectMonitor
from streams.core.state import StateSeal
from streams.errors import ForgedState

T0 = datetime(2026, 11, 22, tzinfo=UTC)


def obs(i: int, negative: bool, minutes: float = 1.0) -> Observation:
    return Observation(f"e{i}", f"text {i} " + ("awful" if negative else "fine"),
                       "negative" if negative else "positive", 0.5 + 0.5 * negative * (i % 7) / 7,
                       T0 + timedelta(minutes=i * minutes))


def test_stable_products_give_no_alert_and_a_shift_gives_exactly_one_then_recovery():
    rng = random.Random(5)
    monitor = SubjectMonitor("product", "p1", MonitorConfig())
    alerts = []
    for i in range(1500):
        rate = 0.45 if 400 <= i < 800 else 0.08
        alerts += monitor.observe(obs(i, rng.random() < rate))
    statuses = [a.status for a in alerts]
    assert statuses[0] == "open" and statuses[-1] == "recovered"
    assert statuses.count("open") == 1 and statuses.count("recovered") == 1
    opened = alerts[0]
    assert int(opened.evidence[0]["id"][1:]) >= 400 and all(e["sentiment"] == "negative" for e in opened.evidence)
    assert opened.detector["guarantee"].startswith("ARL0 >= 10000")
    assert opened.statistic >= opened.threshold
    # The recovery says what it saw: the share of the outcomes it was detected in, back near the
    # baseline and well below the share at the alarm (it said NaN over 0 events before).
    recovered = alerts[-1]
    assert recovered.current["events"] > 0 and recovered.current["rate"] < 0.25 < opened.current["rate"]
    lo, hi = opened.current["interval"]
    assert opened.baseline["rate"] < lo <= opened.current["rate"] <= hi
    # Evidence is ordered by how negative the text was.
    scores = [e["score"] for e in opened.evidence]
    assert scores == sorted(scores, reverse=True)

    quiet = 0
    for seed in range(40):
        rng = random.Random(100 + seed)
        m = SubjectMonitor("product", f"q{seed}", MonitorConfig())
        quiet += sum(len(m.observe(obs(i, rng.random() < 0.15))) for i in range(800))
    assert quiet == 0


def test_entity_surge_alert_and_recovery_use_event_time():
    monitor = SubjectMonitor("entity", "apple", MonitorConfig(surge_warmup=30), with_surge=True)
    alerts, t = [], 0
    for minute in range(120):
        per_minute = 12 if 60 <= minute < 80 else 2
        for k in range(per_minute):
            o = Observation(f"n{t}", "Apple news", "neutral", 0.1,
                            T0 + timedelta(minutes=minute, seconds=k * 60 / per_minute))
            alerts += monitor.observe(o)
            t += 1
    surges = [a for a in alerts if a.kind == "volume_surge"]
    statuses = [a.status for a in surges]  # a surge may escalate from warning to critical
    assert statuses[0] == "open" and statuses[-1] == "recovered" and set(statuses[1:-1]) <= {"escalated"}
    opened = surges[0]
    assert opened.detected_at - T0 <= timedelta(minutes=63)  # the surge began at minute 60
    assert "Mentions per 60s of entity apple rose from" in opened.message
    assert "95% CI" in opened.message and opened.baseline["unit"] == "count"
    assert surges[-1].detected_at >= T0 + timedelta(minutes=80)


def test_state_round_trips_and_stays_small():
    rng = random.Random(9)
    monitor = SubjectMonitor("entity", "e", MonitorConfig(), with_surge=True)
    for i in range(5000):
        monitor.observe(obs(i, rng.random() < 0.3, minutes=0.2))
    seal = StateSeal(b"k" * 32)
    blob = monitor.dumps(seal, context="entity-monitors/e")
    assert len(blob) < 8_000  # thousands of keys fit in a few MB of table memory
    again = SubjectMonitor.loads(blob, seal, context="entity-monitors/e")
    assert again is not None and again.shift.state == monitor.shift.state
    assert again.shift.baseline_rate == monitor.shift.baseline_rate
    assert SubjectMonitor.loads(None, seal, context="entity-monitors/e") is None
    with pytest.raises(ForgedState):
        SubjectMonitor.loads(b"not a pickle", seal, context="entity-monitors/e")


def test_stream_monitor_flags_a_label_mix_drift_once():
    rng = random.Random(2)
    monitor = StreamMonitor("reviews", MonitorConfig())
    alerts = []
    for i in range(6000):
        negative = rng.random() < (0.15 if i < 3000 else 0.5)
        label = "negative" if negative else "positive"
        alerts += monitor.observe({"text_length": 4.0 + rng.random()}, label, T0 + timedelta(seconds=i))
    channels = sorted({a.subject.id for a in alerts})
    assert channels and set(channels) <= {"reviews:label_negative", "reviews:label_positive"}
    assert len(alerts) == len(channels)  # one alert per drifting channel (cooldown 1 h)
    first = alerts[0]
    # ADWIN cuts on its own split; the alert reports the dropped points against the last 50.
    assert first.kind == "drift" and first.statistic > 0.25 and first.threshold > 0
    assert "rose from 14% to 54%" in first.message
    assert T0 + timedelta(seconds=3000) < first.detected_at < T0 + timedelta(seconds=3400)


def _labels(monitor, rng, share, n, *, epoch, start):
    alerts = []
    for i in range(n):
        label = "negative" if rng.random() < share else "positive"
        ts = start + timedelta(minutes=i)
        alerts += monitor.observe(Observation(f"r{i}", "text", label, 0.9 if label == "negative" else 0.1, ts,
                                              epoch))
    return alerts


def test_a_new_labeller_is_a_new_baseline_not_a_sentiment_shift():
    """The sentiment adapter takes over and calls 40% negative where the model called 10%: no
    alert for that, but one for a real shift after it; without the switch, the same labels alert."""
    config = MonitorConfig(arl0=1000, warmup=50)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    switched, same = SubjectMonitor("product", "p1", config), SubjectMonitor("product", "p2", config)
    assert _labels(switched, random.Random(1), 0.1, 200, epoch=0, start=start) == []
    assert _labels(switched, random.Random(2), 0.4, 400, epoch=1, start=start + timedelta(days=1)) == []
    assert switched.labeller_epoch == 1
    later = _labels(switched, random.Random(3), 0.9, 200, epoch=1, start=start + timedelta(days=2))
    assert [a.kind for a in later][:1] == ["sentiment_shift"]
    _labels(same, random.Random(1), 0.1, 200, epoch=0, start=start)
    assert _labels(same, random.Random(2), 0.4, 400, epoch=0, start=start + timedelta(days=1))


def test_stream_label_channels_restart_with_a_new_labeller():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    alerts = {}
    for new_epoch in (0, 1):  # 0: the same labeller, whose labels really changed
        monitor, rng = StreamMonitor("reviews", MonitorConfig()), random.Random(4)
        for _ in range(600):
            assert monitor.observe({}, "negative" if rng.random() < 0.1 else "positive", now, epoch=0) == []
        alerts[new_epoch] = [a for _ in range(600) for a in monitor.observe(
            {}, "negative" if rng.random() < 0.6 else "positive", now, epoch=new_epoch)]
    assert alerts[1] == [] and {a.kind for a in alerts[0]} == {"drift"}


def test_monitors_stored_before_labeller_epochs_still_load_and_run():
    seal = StateSeal(b"k" * 32)
    monitor = SubjectMonitor("product", "p1", MonitorConfig())
    state = monitor.dumps(seal, context="t/p1")
    restored = SubjectMonitor.loads(state, seal, context="t/p1")
    del restored.__dict__["labeller_epoch"]  # as a monitor stored by the version before
    assert restored.labeller_epoch == 0
    restored.observe(Observation("r1", "fine", "positive", 0.1, datetime(2026, 1, 1, tzinfo=UTC), 2))
    assert restored.labeller_epoch == 2


def test_the_detectors_read_the_sentiment_they_are_given_not_the_served_one():
    # The adapter serves its own label; the detectors read the model's (streams.agents.text).
    from streams.core.mentions import observe_enriched
    from streams.records import EnrichedReview

    record = EnrichedReview(review_id="r1", product_id="p1", text="fine", model={}, entities=[], processed_at=T0,
                            sentiment={"label": "negative", "score": 0.8, "source": "adapted",
                                       "probs": {"negative": 0.8, "neutral": 0.1, "positive": 0.1}})
    base = {"label": "positive", "score": 0.7, "probs": {"negative": 0.2, "neutral": 0.1, "positive": 0.7}}
    _, served, _ = observe_enriched(record, T0)
    _, read, _ = observe_enriched(record, T0, sentiment=base)
    assert (served.label, served.negative_prob) == ("negative", 0.8)
    assert (read.label, read.negative_prob) == ("positive", 0.2)
