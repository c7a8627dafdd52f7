"""Products, sources and entities idle for their time to live leave their detector table (and its
changelog) from a batch of their own partition; a stored value from before expiry still loads."""

import base64
import json
from datetime import UTC, datetime

from streams.adapters.metrics import Metrics
from streams.agents.detectors import KeyedMonitors
from streams.core.monitoring import MonitorConfig, Observation, SubjectMonitor
from streams.core.state import StateSeal
from streams.testing import FakeEvent, FakeTable

SEAL = StateSeal(b"subjects" * 4)
HOUR = 3600.0
T0 = datetime(2026, 6, 1, tzinfo=UTC).timestamp()


def _observe(monitors: KeyedMonitors, texts: list[tuple[str, int, float]]) -> None:
    """One batch: (subject, partition, event time) per text."""
    batch = monitors.batch()
    for i, (subject, partition, ts) in enumerate(texts):
        when = datetime.fromtimestamp(ts, UTC)
        monitor = batch.get(subject, subject, FakeEvent(topic="reviews", partition=partition, offset=i), when)
        monitor.observe(Observation(f"{subject}-{ts}", "fine", "positive", 0.1, when))
    batch.save()
    monitors.flush()  # a commit


def _monitors(table, ttl_s):
    return KeyedMonitors(table, "product", MonitorConfig(), with_surge=False, metrics=Metrics(), seal=SEAL,
                         ttl_s=ttl_s)


def test_idle_subjects_are_deleted_in_their_own_partition_and_come_back_fresh():
    table = FakeTable()
    monitors = _monitors(table, ttl_s=HOUR)
    _observe(monitors, [("old", 0, T0), ("quiet", 1, T0), ("old", 0, T0 - 60)])
    stored = json.loads(table["old"])
    assert stored["partition"] == 0 and stored["last_ts"] == T0  # the newest, not the last seen
    _observe(monitors, [("recent", 0, T0 + 2.5 * HOUR), ("new", 0, T0 + 3 * HOUR)])
    # Partition 0 is now 3 h past "old": it goes, under an event of partition 0. "quiet" is idle
    # too, but no batch of partition 1 came: it waits. "recent" is within its hour.
    assert table.deleted == [("old", 0)] and set(table) == {"quiet", "recent", "new"}
    assert monitors.metrics.state_expired.labels(table="product-monitors")._value.get() == 1
    _observe(monitors, [("quiet", 1, T0 + 3 * HOUR)])  # its own partition moves on: it was seen
    assert set(table) == {"quiet", "recent", "new"}
    assert monitors.load("old") is None  # its cached monitor went with it


def test_a_zero_ttl_keeps_every_subject():
    table = FakeTable()
    monitors = _monitors(table, ttl_s=0)
    _observe(monitors, [("old", 0, T0)])
    _observe(monitors, [("new", 0, T0 + 365 * 86_400)])
    assert set(table) == {"old", "new"} and table.deleted == []


def test_a_value_stored_before_expiry_still_loads_and_is_never_judged_idle():
    table = FakeTable()
    before = SubjectMonitor("product", "p1", MonitorConfig())
    before.negatives.append({"id": "kept"})
    table["p1"] = base64.b64encode(before.dumps(SEAL, context="product-monitors/p1")).decode()
    monitors = _monitors(table, ttl_s=HOUR)
    assert monitors.load("p1").negatives == [{"id": "kept"}]
    _observe(monitors, [("p2", 0, T0 + 100 * HOUR)])
    assert "p1" in table and table.deleted == []
    _observe(monitors, [("p1", 0, T0 + 100 * HOUR)])  # stored again, now with its partition and time
    assert json.loads(table["p1"])["partition"] == 0


def test_a_stored_value_that_is_not_ours_is_discarded_and_counted():
    table = FakeTable()
    monitors = _monitors(table, ttl_s=HOUR)
    table["a"] = json.dumps({"partition": 0, "last_ts": T0, "state": 42})
    table["b"] = "{not json"
    table["c"] = json.dumps({"partition": 0, "last_ts": T0, "state": base64.b64encode(b"x" * 64).decode()})
    assert [monitors.load(k) for k in "abc"] == [None, None, None]
    assert monitors.metrics.state_rejected.labels(table="product-monitors")._value.get() == 3
