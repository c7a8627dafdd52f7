"""Users idle for their time to live leave the click-users table (and its changelog) from a
batch of their own partition; everyone else stays."""

import asyncio
import json
import time

from streams.adapters.metrics import Metrics
from streams.agents.clicks import ClickProcessor
from streams.core.monitoring import MonitorConfig
from streams.core.state import StateSeal
from streams.testing import FakeEvent, FakeTable, FakeTopic

HOUR = 3600.0


def _processor(users, ttl_s):
    return ClickProcessor(users=users, models=FakeTable(), signals=FakeTable(), recommendations=FakeTopic(),
                          alerts=FakeTopic(), deadletter=FakeTopic(), metrics=Metrics(), config=MonitorConfig(),
                          checkpoint_s=30.0, checkpoint_events=100_000, seal=StateSeal(b"expiry" * 8),
                          user_ttl_s=ttl_s)


_offsets = iter(range(10**6))


def _click(user, partition, ts):
    value = {"event_id": f"e{next(_offsets)}", "user_id": user, "item_id": "i1", "action": "click",
             "ts": int(ts * 1000)}
    return FakeEvent(topic="clicks", partition=partition, offset=next(_offsets), value=json.dumps(value).encode())


def _commit_after(processor, events):
    asyncio.run(processor.process(events))
    processor.flush()  # a commit: users are written behind


def test_idle_users_are_deleted_in_their_own_partition_and_come_back_fresh():
    now = time.time()
    users = FakeTable()
    processor = _processor(users, ttl_s=HOUR)
    _commit_after(processor, [_click("old", 0, now - 3 * HOUR), _click("quiet", 1, now - 3 * HOUR)])
    assert set(users) == {"old", "quiet"} and json.loads(users["old"])["partition"] == 0
    _commit_after(processor, [_click("recent", 0, now - 0.5 * HOUR), _click("new", 0, now)])
    # Partition 0 is now 3 h past "old": it goes, from a batch of partition 0. "quiet" is idle
    # too, but no batch of partition 1 came: it waits. "recent" is within its hour.
    assert users.deleted == [("old", 0)] and set(users) == {"quiet", "recent", "new"}
    assert processor.metrics.state_expired.labels(table="click-users")._value.get() == 1
    _commit_after(processor, [_click("old", 0, now)])
    assert json.loads(users["old"])["recent"] == ["i1"]  # a fresh state, not the deleted one


def test_a_ttl_of_zero_keeps_every_user():
    now = time.time()
    users = FakeTable()
    processor = _processor(users, ttl_s=0)
    _commit_after(processor, [_click("old", 0, now - 1000 * HOUR)])
    _commit_after(processor, [_click("new", 0, now)])
    assert set(users) == {"old", "new"} and not users.deleted


class _Writes(FakeTable):
    def __init__(self):
        super().__init__()
        self.writes = []

    def __setitem__(self, key, value):
        self.writes.append(key)
        super().__setitem__(key, value)


def test_a_user_seen_in_many_batches_is_written_once_at_the_commit_and_read_back_before():
    now = time.time()
    users = _Writes()
    processor = _processor(users, ttl_s=HOUR)
    for k in range(3):
        asyncio.run(processor.process([_click("u1", 0, now + k), _click("u2", 1, now + k)]))
    assert users.writes == []  # nothing until the commit; each batch read the last one's state
    assert processor.flush() == 2 and sorted(users.writes) == ["u1", "u2"]
    stored = json.loads(users["u1"])
    assert stored["partition"] == 0 and abs(stored["last_ts"] - (now + 2)) < 0.01
    asyncio.run(processor.process([_click("u1", 0, now + 3), _click("u2", 1, now + 3)]))
    processor.forget({1})  # revoked before the next commit: its user is left to the next owner
    assert processor.flush() == 1 and users.writes[-1] == "u1"
