"""The test kit shipped with the code: fakes of what the agents write to and read from, and
the synthetic inputs (:mod:`streams.synthetic`). :mod:`streams.testing.stack` runs the real
thing (worker processes, output checks, certificates).

>>> import asyncio
>>> topic = FakeTopic()
>>> asyncio.run(topic.send(key=b"p1", value=b'{"ok": true}'))
>>> topic.values(), fake_events("reviews", [{"review_id": "r1"}])[0].message.offset
([{'ok': True}], 0)
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

from streams.synthetic import (
    bombing_reviews,
    click_record,
    domain_reviews,
    malformed_records,
    planted_reviews,
    recent_clicks,
    synthetic_events,
    themed_reviews,
)

__all__ = ["FakeEvent", "FakeTable", "FakeTopic", "bombing_reviews", "click_record", "domain_reviews",
           "fake_events", "malformed_records", "planted_reviews", "recent_clicks", "synthetic_events",
           "themed_reviews"]


class FakeTopic:
    """An output topic that keeps what was sent: ``sent`` holds (key, value) pairs and
    :meth:`values` the JSON values."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []

    async def send(self, *, key: bytes | None, value: bytes) -> None:
        self.sent.append((key, value))

    def values(self) -> list[Any]:
        return [json.loads(value) for _, value in self.sent]


class FakeTable(dict):
    """A table: a dict (Faust's tables are mutable mappings of strings here). ``deleted``:
    each deleted key with the partition of the event it was deleted under (the changelog
    partition its tombstone goes to)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.deleted: list[tuple[str, int | None]] = []

    def __delitem__(self, key) -> None:
        from faust.streams import current_event
        event = current_event()
        self.deleted.append((key, event.message.partition if event is not None else None))
        super().__delitem__(key)


class FakeEvent:
    """A consumed record as the agents see a Faust event (``event.message`` with topic,
    partition, offset, key, value, timestamp and ``tp``); weak-referenceable, as Faust's current
    event is."""

    def __init__(self, *, topic: str, partition: int = 0, offset: int = 0, value: bytes | None = None,
                 key: bytes | None = None, timestamp: float | None = None) -> None:
        self.message = SimpleNamespace(topic=topic, partition=partition, offset=offset, key=key, value=value,
                                       timestamp=time.time() if timestamp is None else timestamp,
                                       tp=(topic, partition))


def fake_events(topic: str, values: list[dict[str, Any] | bytes], *, partition: int = 0,
                timestamp: float | None = None) -> list[FakeEvent]:
    """One :class:`FakeEvent` per value (a dict is encoded as JSON), at offsets 0, 1, ..."""
    return [FakeEvent(topic=topic, partition=partition, offset=i, timestamp=timestamp,
                      value=v if isinstance(v, bytes) else json.dumps(v).encode())
            for i, v in enumerate(values)]
