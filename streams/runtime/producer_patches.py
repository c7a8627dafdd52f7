"""Fixes to faust-streaming's producer: the transactional one (exactly-once), applied by
:func:`streams.runtime.faust_patches.apply`, which documents each (items 2, 3, 4 and 8), and
sends that failed for good under at-least-once (:func:`report_lost_sends`)."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Mapping

from aiokafka.errors import ProducerFenced
from faust import topics as faust_topics

from streams.runtime.transactions import TransactionLedger, ledger_for, send_error
from streams.runtime.transactions import transactional_id as tid_of

__all__ = ["abort_uncommitted", "commit_transactions", "drain_buffer", "fenced_for_good",
           "make_settings_extra", "maybe_begin_transaction", "report_lost_sends", "set_transaction_timeout",
           "track_buffer_sends"]

log = logging.getLogger(__name__)
_SENDING = "_streamsense_sending"  # the buffer's sends under way (track_buffer_sends)
DRAIN_TIMEOUT_S = 30.0  # then the worker restarts: the records since the last commit are redone


def set_transaction_timeout(app, seconds: float) -> None:
    """Kafka aborts a transaction of ``app``'s producers left open this long (aiokafka's default
    is 60 s); set before the producers start."""
    _TRANSACTION_TIMEOUT_MS[app] = int(seconds * 1000)


_TRANSACTION_TIMEOUT_MS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def make_settings_extra(faust_settings_extra):
    def settings_extra(self) -> Mapping:
        extra = dict(faust_settings_extra(self))
        timeout_ms = _TRANSACTION_TIMEOUT_MS.get(self.app)
        if self.app.in_transaction and timeout_ms is not None:
            extra["transaction_timeout_ms"] = timeout_ms
        return extra
    return settings_extra


async def commit_transactions(self, tid_to_offset_map, group_id: str,
                              start_new_transaction: bool = True) -> None:
    ledger = ledger_for(self.app)

    def fenced() -> list[str]:
        return [tid for tid in tid_to_offset_map
                if (producer := self._transaction_producers.get(tid)) is not None
                and producer._txn_manager.is_fatal_error()]

    # Table writes wait on Faust's buffer (item 11): into these transactions before they end.
    # The commit gate holds the batches back meanwhile, so no new ones are queued. A fenced
    # producer sends nothing more (its writes fail, and Faust's buffer stops at the first): no
    # waiting for them, and nothing committed, since the worker restarts anyway.
    drained = await drain_buffer(self.buffer, timeout_s=DRAIN_TIMEOUT_S, give_up=lambda: bool(fenced()))
    if gone := fenced():
        for transactional_id in gone:
            fenced_for_good(ledger, transactional_id)
        return
    if not drained:
        log.error("table writes queued for the transactions were not handed on within %.0f s (%d "
                  "queued); not committing", DRAIN_TIMEOUT_S, self.buffer.size)
        _restart(ledger, "a commit whose table writes could not be handed on")
        return
    for transactional_id, offsets in tid_to_offset_map.items():
        async with self._trn_locks[transactional_id]:
            transaction_producer = self._transaction_producers.get(transactional_id)
            if transaction_producer is None:
                log.warning("commit invoked for unknown transaction %s", transactional_id)
                continue
            if transaction_producer._txn_manager.is_fatal_error():
                fenced_for_good(ledger, transactional_id)
                continue
            try:
                uncovered = ledger.uncovered(transactional_id, offsets)
                if uncovered:
                    await _abort_unsafe(ledger, transaction_producer, transactional_id, uncovered)
                    continue
                if not transaction_producer._txn_manager.is_in_transaction():
                    if not offsets:
                        continue
                    await transaction_producer.begin_transaction()
                if offsets:
                    await transaction_producer.send_offsets_to_transaction(offsets, group_id)
                await transaction_producer.commit_transaction()
                ledger.closed(transactional_id)
                if start_new_transaction:
                    await transaction_producer.begin_transaction()
            except ProducerFenced:
                if _still_ours(self.app, transactional_id):
                    # Not a new owner: the broker aborted the transaction (open past Kafka's
                    # timeout). Its outputs are gone while their inputs are acknowledged: a
                    # fresh producer would commit those offsets next and lose the records.
                    fenced_for_good(ledger, transactional_id)
                    continue
                # The partition's new owner started a producer with this id: its transaction is
                # aborted and the new owner processes those records again. Faust's own handling.
                log.info("transaction %s was fenced by the partition's new owner", transactional_id)
                ledger.closed(transactional_id)
                self._transaction_producers.pop(transactional_id, None)
                await transaction_producer.stop()


def _still_ours(app, tid: str) -> bool:
    """Whether an input partition of transaction ``tid`` is still assigned to this worker."""
    try:
        return any(tid_of(app, tp) == tid for tp in app.consumer.assignment())
    except Exception:  # no consumer (stopping): nothing of it is ours any more
        return False


async def _abort_unsafe(ledger: TransactionLedger, transaction_producer, transactional_id: str,
                        uncovered: dict) -> None:
    log.error("transaction %s holds outputs of input records whose offsets it would not commit "
              "(partition: highest input offset sent, offset to commit: %s); aborting it, the worker "
              "restarts and processes them again from the committed offset", transactional_id,
              {f"{tp[0]}[{tp[1]}]": v for tp, v in uncovered.items()})
    if transaction_producer._txn_manager.is_in_transaction():
        await transaction_producer.abort_transaction()
    ledger.closed(transactional_id)
    # The same commit refused again after a restart is a loop (one cause: a transaction whose
    # commit stops at the same offsets; nothing in between made progress).
    stuck = sorted((f"{tp[0]}[{tp[1]}]", offset) for tp, (_, offset) in uncovered.items())
    _restart(ledger, f"unsafe commit of {transactional_id} aborted",
             cause=f"unsafe commit of {transactional_id} at {stuck}")


async def abort_uncommitted(app) -> bool:
    """At a revocation, after Faust's own commit of what was acknowledged: abort every open
    transaction that still holds outputs (the ledger's), and say whether there was one.

    Such a transaction was not committed with its inputs' offsets (Faust commits a partition only
    up to the first hole in what was acknowledged). Faust keeps it open for the partitions this
    worker keeps, and the seek after the rebalance reads those inputs again from the committed
    offset (or the log start): the next commit of the transaction then held both copies of
    their outputs (an exactly-once kill run on 2026-11-30: 70 reviews of a never-committed
    partition twice; the likely path of earlier unexplained duplicates of one transaction's
    partitions). Then the worker restarts, as after an unsafe commit (item 3)."""
    ledger = ledger_for(app)
    held = {tid: dict(parts) for tid, parts in ledger.open.items() if parts}
    if not held:
        return False
    log.error("at the rebalance, transactions hold outputs of input records whose offsets were not "
              "committed (transaction: partition: highest input offset sent): %s; aborting them, the "
              "worker restarts and processes them again from the committed offset",
              {tid: {f"{tp[0]}[{tp[1]}]": high for tp, high in parts.items()} for tid, parts in held.items()})
    producers = app.consumer.transactions.producer._transaction_producers
    for tid in held:
        producer = producers.get(tid)
        try:
            if producer is not None and producer._txn_manager.is_in_transaction():
                await asyncio.wait_for(producer.abort_transaction(), 5.0)
        except Exception as exc:  # the restart's new producer aborts it anyway (fencing)
            log.warning("could not abort transaction %s (%r); the partition's next producer will", tid, exc)
        ledger.closed(tid)
    _restart(ledger, f"transactions {sorted(held)} aborted at a rebalance")
    return True


async def maybe_begin_transaction(self, transactional_id: str) -> None:
    transaction_producer = self._transaction_producers.get(transactional_id)
    if transaction_producer is not None and transaction_producer._txn_manager.is_in_transaction():
        return
    if transaction_producer is not None and transaction_producer._txn_manager.is_fatal_error():
        fenced_for_good(ledger_for(self.app), transactional_id)
        return
    await self.begin_transaction(transactional_id)


def fenced_for_good(ledger: TransactionLedger, transactional_id: str) -> None:
    """The broker aborted the transaction (open past Kafka's transaction timeout, e.g. while
    Triton was down) and fenced its producer: it can never begin another, and Faust's consumer
    would crash on the attempt (``FATAL_ERROR -> IN_TRANSACTION``). The worker restarts itself
    instead, as after an unsafe commit: a fresh producer, the records since the last commit
    processed again, once."""
    log.error("the producer of transaction %s was fenced (its transaction outlived Kafka's "
              "transaction timeout); the worker restarts itself", transactional_id)
    ledger.closed(transactional_id)
    _restart(ledger, f"transaction {transactional_id} fenced")


def _restart(ledger: TransactionLedger, what: str, *, cause: str | None = None) -> None:
    """Restart the worker (the ledger's ``on_unsafe``): the records since the last commit are
    processed again by a fresh process, once. ``cause``: what would make the restart a loop
    if it came again (the same for each time)."""
    if ledger.on_unsafe is None:
        raise RuntimeError(f"{what}; nothing set to restart the worker")
    ledger.on_unsafe(cause)


def track_buffer_sends(send_pending):
    """Faust's ``ProducerBuffer._send_pending``, counting the sends under way: the buffer's
    ``size`` leaves out the message it has taken off its queue and is still handing on."""
    async def _send_pending(self, fut) -> None:
        setattr(self, _SENDING, getattr(self, _SENDING, 0) + 1)
        try:
            await send_pending(self, fut)
        finally:
            setattr(self, _SENDING, getattr(self, _SENDING) - 1)
    return _send_pending


async def drain_buffer(buffer, *, timeout_s: float = DRAIN_TIMEOUT_S, poll_s: float = 0.002,
                       give_up=lambda: False) -> bool:
    """Until every message queued on Faust's producer buffer (table changelog writes: a table's
    ``__setitem__`` cannot await, so Faust queues them) has been handed to its producer; False
    if that did not happen within ``timeout_s`` (the buffer stopped, or the broker is gone) or
    ``give_up()`` turned true first.

    Faust's own ``flush`` is no such wait: it returns when no message went out for 0.1 s, and
    does not count the one being handed on."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while buffer.size or getattr(buffer, _SENDING, 0):
        if loop.time() > deadline or give_up():
            return False
        await asyncio.sleep(poll_s)
    return True


# What report_lost_sends replaces, for faust_patches' check that it is still there.
PATCHED = ((faust_topics.Topic, "_on_published"),)
_LOST: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # app -> what report_lost_sends set


def report_lost_sends(app, on_lost: Callable[[str, BaseException], None]) -> None:
    """Call ``on_lost(topic, error)`` when one of Faust's own sends for ``app`` fails for good
    (a table's changelog write: a batch expired after ``producer_request_timeout``, 20 minutes by
    default). Faust only logs it (``Topic._on_published``), and an at-least-once commit then
    passes the records whose state it held: the state would be lost at the next restore."""
    published = faust_topics.Topic._on_published
    if not getattr(published, "_streamsense", False):
        faust_topics.Topic._on_published = _make_on_published(published)
    _LOST[app] = on_lost


def _make_on_published(faust_on_published):
    def _on_published(self, fut, message, producer, state) -> None:
        error = send_error(fut)
        if not fut.cancelled():
            faust_on_published(self, fut, message, producer, state)
        on_lost = _LOST.get(self.app)
        if error is not None and on_lost is not None:
            on_lost(self.get_topic_name(), error)
    _on_published._streamsense = True
    return _on_published
