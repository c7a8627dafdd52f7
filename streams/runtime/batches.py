"""Running the agents' batches so that none is acked unprocessed, and no record takes the
worker down forever."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from streams.adapters.metrics import Metrics
from streams.agents.outputs import send_dead_letter
from streams.core.flow import cancelling
from streams.runtime.journal import CrashJournal
from streams.runtime.process import exit_worker_now
from streams.runtime.tables import as_current_event
from streams.runtime.transactions import CommitGate, SourceRevoked, TransactionFenced

__all__ = ["BatchRunner"]

log = logging.getLogger(__name__)


class BatchRunner:
    """Runs the agents' batches: counts those in progress (for the stall check), stops the
    worker when one escapes the agent's own error handling, and keeps records that took the
    worker down from doing it forever (:mod:`streams.runtime.journal`).

    A batch whose body raised is never acked (:func:`~streams.runtime.take_batches`), but Faust
    restarts the agent and goes on: its records would hold their partitions' commits for good,
    and Faust's own ``take_events`` acked them in a ``finally`` (lost). Every agent body handles its
    records' errors itself (retry, then dead-letter); anything that still escapes is a bug or
    an outage we did not foresee, and the only safe answer is to exit before anything is
    committed, so the restarted worker (or the partition's next owner) processes it again. The
    journal counts that exit against the batch's offsets; after ``max_crashes`` a record is
    dead-lettered instead of processed.
    """

    def __init__(self, gate: CommitGate, *, journal: CrashJournal | None = None, deadletter=None,
                 metrics: Metrics | None = None, max_crashes: int = 3, exit_worker=None,
                 restart_fenced=None) -> None:
        self.gate = gate
        self.journal = journal
        self.deadletter = deadletter
        self.metrics = metrics
        self.max_crashes = max_crashes
        self._exit = exit_worker or exit_worker_now
        # Called with the transactional id when a batch finds its transaction aborted by the
        # broker: a fresh process (a new producer) redoes the records since the last commit.
        self._restart_fenced = restart_fenced

    @property
    def in_flight(self) -> int:
        """Batches being processed now (the stall check waits for none)."""
        return self.gate.active

    async def run(self, agent: str, process, events: Sequence) -> None:
        try:
            async with self.gate.batch():
                await self._run_batch(agent, process, events)
        except TransactionFenced as exc:
            # Not the records' doing (the journal does not count it against them): the broker
            # ended the transaction under the batch, so nothing of it can commit. A fresh
            # producer, in a fresh process, processes them again from the last commit.
            log.error("a %s batch found its transaction ended by the broker (%s); the worker restarts "
                      "and processes the batch again", agent, exc)
            if self._restart_fenced is None:
                self._exit()
            else:
                self._restart_fenced(exc.transactional_id)

    async def _run_batch(self, agent: str, process, events: Sequence) -> None:
        if self.journal is None or not self.journal.suspects(events):
            await self._journaled(agent, process, events)
            return
        log.warning("a %s batch holds records that were in flight when the worker died; processing "
                    "it one record at a time", agent)
        for event in events:
            crashes = self.journal.crashes(event)
            if crashes >= self.max_crashes:
                await self._dead_letter(agent, event, crashes)
                self.journal.end(agent, [event])
            else:
                await self._journaled(agent, process, [event])

    async def _journaled(self, agent: str, process, events: Sequence) -> None:
        if self.journal is None:
            await self._run(agent, process, events)
            return
        self.journal.begin(agent, events)
        try:
            done = await self._run(agent, process, events)
        except (asyncio.CancelledError, TransactionFenced):
            self.journal.abandon(agent)  # stopping, rebalancing or fenced: not the records' doing
            raise
        # Not reached when the worker exits (or dies): the journal then keeps the batch.
        if done:
            self.journal.end(agent, events)
        else:
            self.journal.abandon(agent)

    async def _run(self, agent: str, process, events: Sequence) -> bool:
        """True when the batch was processed; False when it was left to another worker."""
        try:
            await process(events)
            return True
        except TransactionFenced:
            raise  # the worker restarts (run)
        except SourceRevoked as exc:
            # Exactly-once: the input partition was revoked mid-batch; its open transaction is
            # aborted when the next owner takes the partition over, and that owner redoes it.
            log.info("left a %s batch to the partition's next owner: %s", agent, exc)
            return False
        except asyncio.CancelledError:
            if cancelling():
                raise  # the worker is stopping or rebalancing: Faust redelivers from the commit
            log.critical("a %s batch was cancelled from inside (not by the worker); exiting without "
                         "committing it so that it is processed again", agent, exc_info=True)
        except Exception:
            log.critical("a %s batch failed outside the per-record error handling; exiting without "
                         "committing it so that it is processed again", agent, exc_info=True)
        self._exit()
        return False

    async def _dead_letter(self, agent: str, event, crashes: int) -> None:
        msg = event.message
        log.error("dead-lettering %s[%d] offset %d: the worker died %d times while it was being processed",
                  msg.topic, msg.partition, msg.offset, crashes)
        reason = (f"processing took the worker down {crashes} times (crash, kill or exit while this "
                  "record was in flight); not processed again")
        with as_current_event(event):  # exactly-once: the transaction of its partition
            await send_dead_letter(self.deadletter, msg, reason, now=datetime.now(UTC))
        if self.metrics is not None:
            self.metrics.deadlettered.labels(source_topic=agent).inc()
