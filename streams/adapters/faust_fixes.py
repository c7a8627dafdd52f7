"""Fixes for faust-streaming's exactly-once mode, applied by :func:`apply` (idempotent).

Each one is a bug the chaos suite (``tests/chaos``) hit with workers SIGKILLed mid-stream under
``processing_guarantee="exactly_once"``; each names the Faust code it replaces. They replace
whole methods of faust-streaming 0.15.3: :func:`apply` fails loudly when one of them is gone,
but a Faust upgrade that changes them otherwise needs these fixes reviewed by hand.

1. **Table recovery crash-loop** (``ConsistencyError: persisted offset N > highwater -1``).
   Under transactions Faust reads a changelog's highwater from the consumer's cached *last
   stable offset*, which is ``None`` for a partition not fetched yet; Faust turns that into
   ``-1`` and its consistency check then fails for every partition this process had read
   before (a rebalance after another worker was killed). The fix asks the broker: a
   ``read_committed`` consumer's end-offset request returns the last stable offset.
2. **Commits outside a transaction** (``IllegalOperation: Not in the middle of a transaction``).
   Faust's final commit on stop (or on revocation) commits without starting a new transaction;
   a commit that follows (a second stop path, a rebalance, the commit timer) found no open
   transaction and raised, which left the worker hanging on SIGTERM. A commit now opens the
   transaction it needs, one with nothing to commit is skipped, and a fenced producer (its
   partition moved to another worker) is dropped as Faust does elsewhere, not raised.
3. **Outputs committed without their inputs' offsets** (duplicates after a restart). Faust
   commits a partition's offset only up to the first hole in what was acknowledged, and after
   some rebalances records are dropped unprocessed (a hole that stays): from then on the
   transactions of that partition committed our outputs while its offset stood still, and the
   next owner made them again. :data:`LEDGER` records, per transaction, the highest input
   offset whose outputs went into it (``streams.agents.outputs``); a commit that would not
   cover them is aborted instead, and :attr:`TransactionLedger.on_unsafe` restarts the worker
   (the records are then processed again from the committed offset, once).
4. **A warning per partition on every rebalance** (``Exception in begin_transaction ...
   Invalid state transition IN_TRANSACTION -> IN_TRANSACTION``): Faust's
   ``maybe_begin_transaction`` begins a transaction even when one is open. It now does what
   its name says.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiokafka.errors import ProducerFenced
from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["LEDGER", "TransactionLedger", "apply"]

log = logging.getLogger(__name__)
_APPLIED = "_streamsense_fixed"


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
        self.on_unsafe = None  # called (no arguments) after an unsafe commit was aborted

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


LEDGER = TransactionLedger()


def apply() -> None:
    thread = faust_aiokafka.AIOKafkaConsumerThread
    producer = faust_aiokafka.Producer
    if getattr(thread, _APPLIED, False):
        return
    for cls, name in ((thread, "_highwaters"), (producer, "commit_transactions"),
                      (producer, "maybe_begin_transaction")):
        if not callable(getattr(cls, name, None)):
            raise RuntimeError(f"faust-streaming changed: {cls.__name__}.{name} is gone; "
                               "review streams/adapters/faust_fixes.py against the new version")
    thread._highwaters = _highwaters
    producer.commit_transactions = _commit_transactions
    producer.maybe_begin_transaction = _maybe_begin_transaction
    setattr(thread, _APPLIED, True)


async def _highwaters(self, partitions) -> Mapping:
    consumer = self._ensure_consumer()
    ends = await consumer.end_offsets(partitions)
    if self.consumer.in_transaction:  # an unanswered partition: the cached value, as before
        return {tp: ends.get(tp, consumer.last_stable_offset(tp)) for tp in partitions}
    return ends


async def _commit_transactions(self, tid_to_offset_map, group_id: str,
                               start_new_transaction: bool = True) -> None:
    for transactional_id, offsets in tid_to_offset_map.items():
        async with self._trn_locks[transactional_id]:
            transaction_producer = self._transaction_producers.get(transactional_id)
            if transaction_producer is None:
                log.warning("commit invoked for unknown transaction %s", transactional_id)
                continue
            try:
                uncovered = LEDGER.uncovered(transactional_id, offsets)
                if uncovered:
                    await _abort_unsafe(transaction_producer, transactional_id, uncovered)
                    continue
                if not transaction_producer._txn_manager.is_in_transaction():
                    if not offsets:
                        continue
                    await transaction_producer.begin_transaction()
                if offsets:
                    await transaction_producer.send_offsets_to_transaction(offsets, group_id)
                await transaction_producer.commit_transaction()
                LEDGER.closed(transactional_id)
                if start_new_transaction:
                    await transaction_producer.begin_transaction()
            except ProducerFenced:
                # The partition's new owner started a producer with this id: its transaction is
                # aborted and the new owner processes those records again. Faust's own handling.
                log.info("transaction %s was fenced by the partition's new owner", transactional_id)
                LEDGER.closed(transactional_id)
                self._transaction_producers.pop(transactional_id, None)
                await transaction_producer.stop()


async def _abort_unsafe(transaction_producer, transactional_id: str, uncovered: dict) -> None:
    log.error("transaction %s holds outputs of input records whose offsets it would not commit "
              "(partition: highest input offset sent, offset to commit: %s); aborting it, the worker "
              "restarts and processes them again from the committed offset", transactional_id,
              {f"{tp[0]}[{tp[1]}]": v for tp, v in uncovered.items()})
    if transaction_producer._txn_manager.is_in_transaction():
        await transaction_producer.abort_transaction()
    LEDGER.closed(transactional_id)
    if LEDGER.on_unsafe is None:
        raise RuntimeError(f"unsafe commit of {transactional_id} aborted; nothing set to restart the worker")
    LEDGER.on_unsafe()


async def _maybe_begin_transaction(self, transactional_id: str) -> None:
    transaction_producer = self._transaction_producers.get(transactional_id)
    if transaction_producer is not None and transaction_producer._txn_manager.is_in_transaction():
        return
    await self.begin_transaction(transactional_id)
