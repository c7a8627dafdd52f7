"""Exactly-once, owned in one place: the commit gate, the transaction ledger and the output
topics that send into the transaction of the input partition they came from.

Faust (faust-streaming 0.11 on) picks a record's transaction by the *output's* own topic and
partition, which is the input's transaction only when the output is co-partitioned with the
input and its topic is one the app consumes. Ours are not: enriched records, alerts,
recommendations and dead letters go to topics no agent reads (Faust then sent them outside
any transaction, visible at once), and entity mentions are re-keyed by entity (the transaction
of some other partition, committed on its own schedule). A worker killed between two commits
then left outputs committed whose inputs were processed again by the next owner: duplicates
under ``exactly_once`` (114 of 2,000 records with five kills in the chaos suite; none with
this and :class:`CommitGate`).

:class:`SourceTransactionTopic` sends into the transaction of Faust's *current event*, which
the agents set to the record being handled (:func:`~streams.runtime.tables.as_current_event`),
so an output commits or aborts with its input's offset. Under at-least-once it is a plain send,
straight to the producer: Faust's ``Topic.send`` cost as much again per record, and a send that
failed for good (a batch expired after ``producer_request_timeout``) was only logged, so the next
commit passed its input with the output lost. Here such a send calls ``on_lost`` (the runtime
restarts the worker before anything more is committed).
Each send is entered in the app's :class:`TransactionLedger`, which refuses a commit that
would not cover the input offsets of the outputs it holds (the producer's commit, patched in
:mod:`streams.runtime.faust_patches`, asks it).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable, Mapping

import faust
from aiokafka.errors import IllegalOperation
from faust.exceptions import ProducerSendError
from faust.streams import current_event

from streams.core.rules import MAX_OUTPUT_BYTES
from streams.errors import OutputRejected, OutputTooLarge, StreamSenseError

__all__ = ["CommitGate", "SourceRevoked", "SourceTransactionTopic", "TransactionFenced", "TransactionLedger",
           "ledger_for", "send_error", "transactional_id"]


class TransactionLedger:
    """Per open transaction (transactional id): the highest input offset per input partition
    whose outputs were sent in it. A commit must cover them all.

    >>> ledger = TransactionLedger()
    >>> ledger.sent("app-0-2", ("reviews", 2), 57); ledger.sent("app-0-2", ("news", 2), 9)
    >>> ledger.uncovered("app-0-2", {("reviews", 2): 58, ("news", 2): 9})
    {('news', 2): (9, 9)}
    >>> ledger.closed("app-0-2"); ledger.uncovered("app-0-2", {})
    {}
    """

    def __init__(self) -> None:
        self.open: dict[str, dict] = {}
        # Called after an unsafe commit was aborted, with what would make a repeat of it a loop
        # (None: nothing does)
        self.on_unsafe = None

    def sent(self, transactional_id: str, tp, offset: int) -> None:
        held = self.open.setdefault(transactional_id, {})
        held[tp] = max(held.get(tp, -1), offset)

    def uncovered(self, transactional_id: str, offsets: Mapping) -> dict:
        """Input partitions whose outputs are in the transaction but whose offset to commit (the
        next one to read) would not pass them: partition -> (highest sent, offset to commit)."""
        return {tp: (high, offsets.get(tp)) for tp, high in self.open.get(transactional_id, {}).items()
                if offsets.get(tp, -1) <= high}

    def closed(self, transactional_id: str) -> None:
        self.open.pop(transactional_id, None)


# One ledger per app: the producer's patched commit finds its app's ledger here.
_LEDGERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def ledger_for(app) -> TransactionLedger:
    """The transaction ledger of ``app`` (made on first use)."""
    ledger = _LEDGERS.get(app)
    if ledger is None:
        ledger = _LEDGERS[app] = TransactionLedger()
    return ledger


def transactional_id(app: faust.App, tp) -> str:
    """The Kafka transaction Faust keeps for an input partition (its ``TransactionManager``
    names them the same way)."""
    return f"{app.conf.id}-{app.assignor.group_for_topic(tp.topic)}-{tp.partition}"



class SourceRevoked(StreamSenseError):
    """The input partition of the record being handled was revoked (its transaction is gone):
    its next owner processes the record again from the last committed offset."""


class TransactionFenced(SourceRevoked):
    """The transaction of the record's input partition ended under it: the broker aborts a
    transaction left open past Kafka's transaction timeout (a batch waiting out a Triton outage)
    and fences its producer, which then refuses every send. Nothing sent in it can commit; the
    worker restarts with a fresh producer and processes the records again from the last commit
    (:class:`~streams.runtime.batches.BatchRunner` does, without blaming the records)."""

    def __init__(self, transactional_id: str, message: str) -> None:
        super().__init__(message)
        self.transactional_id = transactional_id


class SourceTransactionTopic:
    """An output topic whose sends go into the transaction of the record being handled.
    ``on_lost(topic, error)``: called when an at-least-once send fails for good."""

    def __init__(self, app: faust.App, topic: faust.TopicT, *, exactly_once: bool,
                 ledger: TransactionLedger | None = None, max_bytes: int = MAX_OUTPUT_BYTES,
                 on_lost: Callable[[str, BaseException], None] | None = None) -> None:
        self.app = app
        self.on_lost = on_lost
        self.ledger = ledger if ledger is not None else ledger_for(app)
        self.topic = topic
        self.exactly_once = exactly_once
        self.max_bytes = max_bytes
        self.name = topic.get_topic_name()

    async def send(self, *, key: bytes | None, value: bytes):
        if len(value) > self.max_bytes:  # Kafka would refuse it; callers check first, this is the net
            raise OutputTooLarge(f"a {len(value)}-byte record for {self.name} is over the "
                                 f"{self.max_bytes}-byte output limit")
        if not self.exactly_once:
            sent = await self.app.producer.send(self.name, key, value, None, None, None)
            if self.on_lost is not None:
                sent.add_done_callback(self._delivered)
            return sent
        event = current_event()
        if event is None:
            return await self.topic.send(key=key, value=value)
        tp = event.message.tp
        tid = transactional_id(self.app, tp)
        try:
            sent = await self.app.producer.send(self.name, key, value, None, None, None, transactional_id=tid)
        except IllegalOperation as exc:  # aiokafka: "Can't send messages while not in transaction"
            raise TransactionFenced(tid, f"transaction {tid} of {tp.topic}[{tp.partition}] is no longer "
                                         f"open: {exc}") from exc
        except ProducerSendError as exc:
            # Faust raises this when the partition's transaction is gone (revoked), but also for
            # a record Kafka refused. Only the first may be left to the next owner: the second,
            # taken for a revocation, would ack the record with neither output nor dead letter.
            if tp in self.app.consumer.assignment():
                producers = getattr(self.app.producer, "_transaction_producers", None)
                if producers is not None and tid not in producers:
                    # Still ours but its producer was dropped: fenced by the broker (a commit
                    # found the transaction aborted past Kafka's timeout; the chaos outage run).
                    raise TransactionFenced(tid, f"transaction {tid} of {tp.topic}[{tp.partition}] "
                                                 f"lost its producer (fenced): {exc}") from exc
                raise OutputRejected(f"Kafka refused a record for {self.name} while "
                                     f"{tp.topic}[{tp.partition}] is still assigned: {exc}") from exc
            raise SourceRevoked(f"{tp.topic}[{tp.partition}] was revoked: {exc}") from exc
        self.ledger.sent(tid, tp, event.message.offset)  # its commit must cover this offset
        return sent

    def _delivered(self, sent: asyncio.Future) -> None:
        # Runs before a commit's producer flush returns: aiokafka resolves a batch's records
        # before the flush that waits for the batch resumes.
        if (error := send_error(sent)) is not None:
            self.on_lost(self.name, error)


def send_error(sent: asyncio.Future) -> BaseException | None:
    """Why a finished send delivered nothing (cancelled, or its exception); None if it did."""
    return asyncio.CancelledError() if sent.cancelled() else sent.exception()


class CommitGate:
    """Commits happen between batches, never in the middle of one (exactly-once).

    Under exactly-once a commit ends the Kafka transaction with the offsets of the records
    acknowledged so far *and every output sent so far*. Faust commits on a timer and while a
    rebalance waits for in-flight work, so a commit in the middle of a batch put the outputs of
    its first records in a committed transaction while their offsets were not: a worker killed
    before the next commit left them to be processed again by the next owner, and read
    committed, they were duplicates (see :class:`SourceTransactionTopic` for the other half of
    the fix and the chaos suite's numbers).

    Batches hold the gate shared (:meth:`batch`); a commit (:meth:`commit`) waits until none
    is in flight, and batches that start meanwhile wait for the commit. Faust acknowledges a
    batch's records right after the batch body returns, with no await in between, so no commit
    can fall between the body and the acks. ``active`` is how many batches are in flight.

    >>> gate, log = CommitGate(), []
    >>> async def work(name, seconds):
    ...     async with gate.batch():
    ...         log.append(f"{name} starts")
    ...         await asyncio.sleep(seconds)
    ...         log.append(f"{name} ends")
    >>> async def commit():
    ...     await asyncio.sleep(0.01)
    ...     async with gate.commit():
    ...         log.append("commit")
    >>> async def scenario():
    ...     await asyncio.gather(work("a", 0.05), commit(), work("b", 0.0), _later(work("c", 0), 0.02))
    >>> async def _later(coro, seconds):
    ...     await asyncio.sleep(seconds)
    ...     await coro
    >>> asyncio.run(scenario())
    >>> log
    ['a starts', 'b starts', 'b ends', 'a ends', 'commit', 'c starts', 'c ends']
    """

    def __init__(self) -> None:
        self.active = 0
        self._idle: asyncio.Event | None = None
        self._open: asyncio.Event | None = None
        self._committing = 0

    def _events(self) -> tuple[asyncio.Event, asyncio.Event]:
        # Created on first use, inside the running loop.
        if self._idle is None or self._open is None:
            self._idle, self._open = asyncio.Event(), asyncio.Event()
            self._idle.set()
            self._open.set()
        return self._idle, self._open

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        idle, open_ = self._events()
        while self._committing:
            await open_.wait()
        self.active += 1
        idle.clear()
        try:
            yield
        finally:
            self.active -= 1
            if self.active == 0:
                idle.set()

    @contextlib.asynccontextmanager
    async def commit(self) -> AsyncIterator[None]:
        idle, open_ = self._events()
        self._committing += 1
        open_.clear()
        try:
            await idle.wait()
            yield
        finally:
            self._committing -= 1
            if not self._committing:
                open_.set()
