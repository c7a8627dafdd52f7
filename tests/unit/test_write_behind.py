"""Detector state is written behind: a batch marks the monitors it changed, and each is sealed
and written once at the next commit (KeyedMonitors.flush, which the runtime calls first thing
in every commit), under the event of its last record. The item signals likewise (WriteBehind)."""

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

from faust.streams import current_event

from streams.adapters.metrics import Metrics
from streams.agents.detectors import KeyedMonitors
from streams.core.monitoring import MonitorConfig, Observation
from streams.core.state import StateSeal
from streams.runtime import WriteBehind
from streams.runtime.consumer import gate_commits
from streams.runtime.transactions import CommitGate
from streams.testing import FakeEvent, FakeTable

SEAL = StateSeal(b"behind!!" * 4)
T0 = datetime(2026, 6, 1, tzinfo=UTC).timestamp()


class _Table(FakeTable):
    """Keeps each write with the partition of the event it was made under (its changelog's)."""

    def __init__(self):
        super().__init__()
        self.writes: list[tuple[str, int]] = []

    def __setitem__(self, key, value):
        self.writes.append((key, current_event().message.partition))
        super().__setitem__(key, value)


def _batch(monitors: KeyedMonitors, texts: list[tuple[str, int, int]]) -> None:
    """One batch: (subject, partition, offset) per text."""
    batch = monitors.batch()
    for subject, partition, offset in texts:
        when = datetime.fromtimestamp(T0 + offset, UTC)
        event = FakeEvent(topic="reviews", partition=partition, offset=offset)
        batch.get(subject, subject, event, when).observe(Observation(f"{subject}-{offset}", "bad", "negative",
                                                                      -0.8, when))
    batch.save()


def _monitors(table, ttl_s=0.0):
    return KeyedMonitors(table, "product", MonitorConfig(), with_surge=False, metrics=Metrics(), seal=SEAL,
                         ttl_s=ttl_s)


def test_a_subject_changed_in_many_batches_is_written_once_at_the_commit_with_all_it_saw():
    table = _Table()
    monitors = _monitors(table)
    for offset in range(0, 9, 3):
        _batch(monitors, [("p1", 0, offset), ("p2", 1, offset + 1), ("p1", 0, offset + 2)])
    assert table.writes == [] and len(monitors.load("p1").negatives) == 6  # read before it is written
    assert monitors.flush() == 2
    assert sorted(table.writes) == [("p1", 0), ("p2", 1)]  # once each, in its own partition
    fresh = _monitors(table)  # what another worker (or a restart) reads from the table
    assert len(fresh.load("p1").negatives) == 6 and len(fresh.load("p2").negatives) == 3
    assert monitors.flush() == 0 and len(table.writes) == 2  # nothing changed since


def test_what_was_not_written_of_a_revoked_partition_is_never_written():
    table = _Table()
    monitors = _monitors(table)
    _batch(monitors, [("p1", 0, 1), ("p2", 1, 2)])
    monitors.forget({1})
    assert monitors.flush() == 1 and table.writes == [("p1", 0)]


def test_item_signals_are_read_at_once_and_written_once_per_commit_under_their_last_event():
    table = _Table()
    FakeTable.__setitem__(table, "old", "stored")
    signals = WriteBehind(table)
    for offset, (key, partition) in enumerate([("p1", 0), ("a1", 2), ("p1", 0)]):
        signals.set(key, f"{key}@{offset}", event=FakeEvent(topic="reviews", partition=partition, offset=offset))
    signals.set("n1", "x", event=FakeEvent(topic="news", partition=0, offset=9))
    assert signals.get("p1") == "p1@2" and signals.get("old") == "stored" and signals.get("nope", 1) == 1
    assert table.writes == [] and len(signals) == 4
    signals.forget(lambda event: event.message.topic == "news")  # revoked: the next owner replays it
    assert signals.flush() == 2 and sorted(table.writes) == [("a1", 2), ("p1", 0)]
    assert table["p1"] == "p1@2" and "n1" not in table and signals.flush() == 0


def test_expiry_judges_a_subject_by_what_it_saw_not_by_its_stale_stored_value():
    table = _Table()
    monitors = _monitors(table, ttl_s=3600)
    _batch(monitors, [("p1", 0, 0)])
    monitors.flush()
    _batch(monitors, [("p1", 0, 7000)])  # seen again, not written yet: its stored time is stale
    _batch(monitors, [("p2", 0, 7200)])  # partition 0 is now 2 h past p1's stored time
    assert "p1" in table and table.deleted == []


def test_every_commit_starts_with_the_state_written_behind_inside_the_gate():
    log = []

    class _Consumer:
        async def commit(self, *args, **kwargs):
            log.append(("commit", gate.active))
            return True

    async def before():
        log.append(("written", gate.active))

    async def run():
        handlers = []
        app = SimpleNamespace(consumer=_Consumer(),
                              on_partitions_assigned=SimpleNamespace(connect=lambda f: handlers.append(f) or f))
        gate_commits(app, gate, before=before)
        await handlers[0](None, set())  # the first assignment wraps the consumer
        async with gate.batch():
            committing = asyncio.ensure_future(app.consumer.commit())
            await asyncio.sleep(0.01)
            assert log == []  # a batch in flight: the commit waits, and so do the writes
        await committing
        await app.consumer.commit()
    gate = CommitGate()
    asyncio.run(run())
    assert log == [("written", 0), ("commit", 0)] * 2
