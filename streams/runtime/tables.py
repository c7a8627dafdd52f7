"""Helpers for writing Faust tables from an agent's batches (:mod:`.take`)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from faust.streams import _current_event  # Faust has no public setter; see as_current_event

__all__ = ["WriteBehind", "as_current_event"]


@contextmanager
def as_current_event(event) -> Iterator[None]:
    """Make ``event`` Faust's current event, so a table write goes to the changelog partition of
    the event's own partition (in a batch Faust's current event is not the one being
    handled). Tables are keyed like their source topics, so state follows the partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class WriteBehind:
    """A table written behind: :meth:`set` keeps a key's newest value with the event it came
    from, reads see it at once, and :meth:`flush` (at the start of each commit:
    ``Runtime.before_commit``) writes each key once, under its last event, so the changelog
    partition (and under exactly-once the transaction) is that event's partition's, as a write
    at the time would have been. A key set by every record of a batch is one changelog record
    per commit, not one per record. A worker that dies before the commit loses the writes with
    the offsets, and the records are processed again; :meth:`forget` drops what revoked
    partitions set (the revocation's commit wrote what was committed).

    ``write(key, value, event)``: how a value is written (under its event), for values that
    are not the table's own (a detector to seal, a user's state to encode); by default
    ``table[key] = value``."""

    def __init__(self, table: Any, *, write: Callable[[Any, Any, Any], None] | None = None) -> None:
        self.table = table
        self._write = write
        self._pending: dict[Any, tuple[Any, Any]] = {}  # key -> (value, the event of its last set)

    def pending(self, key: Any) -> tuple[Any, Any] | None:
        """(value, event) of a key set since the last flush, else None."""
        return self._pending.get(key)

    def get(self, key: Any, default: Any = None) -> Any:
        pending = self._pending.get(key)
        return pending[0] if pending is not None else self.table.get(key, default)

    def set(self, key: Any, value: Any, *, event: Any) -> None:
        self._pending[key] = (value, event)

    def drop(self, key: Any) -> None:
        """Forget a key's unwritten value (the key was deleted)."""
        self._pending.pop(key, None)

    def __len__(self) -> int:
        return len(self.table) + sum(1 for key in self._pending if key not in self.table)

    def flush(self) -> int:
        """Write what was set since the last flush; how many keys."""
        pending, self._pending = self._pending, {}
        for key, (value, event) in pending.items():
            with as_current_event(event):
                if self._write is None:
                    self.table[key] = value
                else:
                    self._write(key, value, event)
        return len(pending)

    def forget(self, revoked: Callable[[Any], bool]) -> None:
        """Drop what was set under the events ``revoked(event)`` says are of revoked partitions."""
        self._pending = {k: (v, e) for k, (v, e) in self._pending.items() if not revoked(e)}
