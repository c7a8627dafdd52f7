"""Records that take the worker down: counted across restarts, dead-lettered after a bound.

A record whose processing raises is handled inside the agent (retried, then dead-lettered with
the error). One that takes the whole process down (an error escaping an agent, which exits the
worker so that nothing is committed past it; the kernel killing it for memory; a native crash)
is redelivered after every restart and would block its partition for good.

So before each batch the worker writes the offsets it is about to process to a small journal
file in its data directory, and clears them once the batch is done (or cancelled by a stop). A
restarted worker finds the batches that were in flight when it died and counts a crash against
their offsets. A batch holding offsets that were in flight during a crash is processed one
record at a time, and a record with ``max_crashes`` crashes against it is dead-lettered without
being processed again. Only this worker's restarts are counted (the journal lives in its data
directory): a partition that moves to another worker starts from zero there.

>>> import tempfile, types
>>> path = Path(tempfile.mkdtemp()) / "journal.json"
>>> def ev(offset):
...     message = types.SimpleNamespace(topic="reviews", partition=0, offset=offset)
...     return types.SimpleNamespace(message=message)
>>> journal = CrashJournal(path)
>>> journal.begin("reviews", [ev(10), ev(11), ev(12)])   # ... and the process dies here
>>> journal = CrashJournal(path)                           # the restarted worker
>>> journal.crashes(ev(11)), journal.crashes(ev(13))
(1, 0)
>>> journal.begin("reviews", [ev(11)]); journal.end("reviews", [ev(11)])
>>> journal.crashes(ev(11)), journal.crashes(ev(12))      # done: resolved up to offset 11
(0, 1)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["CrashJournal"]

log = logging.getLogger(__name__)


def _tp(event) -> str:
    return f"{event.message.topic}:{event.message.partition}"


class CrashJournal:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.in_flight: dict[str, dict[str, list[int]]] = {}   # agent -> tp -> [first, last]
        self.crashed: dict[str, list[list[int]]] = {}          # tp -> [[first, last, crashes], ...]
        self._fd: int | None = None
        self._load()

    def _load(self) -> None:
        try:
            # raw_decode: a kill between the write and the truncate of _save leaves the previous
            # state's tail after the new JSON; it is ignored.
            state, _ = json.JSONDecoder().raw_decode(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            log.warning("crash journal %s is unreadable; starting a new one", self.path, exc_info=True)
            return
        self.crashed = {tp: [list(map(int, r)) for r in ranges]
                        for tp, ranges in state.get("crashed", {}).items()}
        died = state.get("in_flight", {})
        for agent, ranges in died.items():
            for tp, (first, last) in ranges.items():
                log.warning("the worker stopped without finishing %s offsets %d..%d of %s (a crash or "
                            "a kill); they are processed one at a time now", agent, first, last, tp)
                self.crashed.setdefault(tp, []).append([int(first), int(last), 1])
        if died:
            self._save()

    def _save(self) -> None:
        # Twice per batch, so in place (6 us) rather than a new file and a rename (400 us). A
        # killed process never leaves a write half done; only the machine failing could.
        data = json.dumps({"in_flight": self.in_flight, "crashed": self.crashed}).encode()
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))

    def crashes(self, event) -> int:
        """Crashes counted against this record's offset."""
        offset = event.message.offset
        return sum(n for first, last, n in self.crashed.get(_tp(event), ()) if first <= offset <= last)

    def suspects(self, events: Sequence) -> bool:
        return bool(self.crashed) and any(self.crashes(e) for e in events)

    def begin(self, agent: str, events: Sequence) -> None:
        ranges: dict[str, list[int]] = {}
        for event in events:
            tp, offset = _tp(event), event.message.offset
            first, last = ranges.get(tp, (offset, offset))
            ranges[tp] = [min(first, offset), max(last, offset)]
        self.in_flight[agent] = ranges
        self._save()

    def end(self, agent: str, events: Sequence) -> None:
        """The batch is done (processed or dead-lettered): its offsets are no longer suspect, and
        neither is anything before them in the same partition."""
        self.in_flight.pop(agent, None)
        for event in events:
            tp = _tp(event)
            if tp in self.crashed:
                for r in self.crashed[tp]:
                    r[0] = max(r[0], event.message.offset + 1)
                self.crashed[tp] = [r for r in self.crashed[tp] if r[0] <= r[1]]
                if not self.crashed[tp]:
                    del self.crashed[tp]
        self._save()

    def abandon(self, agent: str) -> None:
        """The batch was cancelled (the worker is stopping or rebalancing): not the records' fault."""
        if self.in_flight.pop(agent, None) is not None:
            self._save()
