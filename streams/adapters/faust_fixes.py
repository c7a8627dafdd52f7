"""Fixes for faust-streaming's exactly-once mode, applied by :func:`apply` (idempotent).

Each one is a bug the chaos suite (``tests/chaos``) hit with workers SIGKILLed mid-stream under
``processing_guarantee="exactly_once"``; each names the Faust code it replaces. They are checked
against the installed version: a Faust upgrade that changes the patched code fails loudly here
instead of silently running unpatched.

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
3. **A warning per partition on every rebalance** (``Exception in begin_transaction ...
   Invalid state transition IN_TRANSACTION -> IN_TRANSACTION``): Faust's
   ``maybe_begin_transaction`` begins a transaction even when one is open. It now does what
   its name says.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiokafka.errors import ProducerFenced
from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["apply"]

log = logging.getLogger(__name__)
_APPLIED = "_streamsense_fixed"


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
                if not transaction_producer._txn_manager.is_in_transaction():
                    if not offsets:
                        continue
                    await transaction_producer.begin_transaction()
                if offsets:
                    await transaction_producer.send_offsets_to_transaction(offsets, group_id)
                await transaction_producer.commit_transaction()
                if start_new_transaction:
                    await transaction_producer.begin_transaction()
            except ProducerFenced:
                # The partition's new owner started a producer with this id: its transaction is
                # aborted and the new owner processes those records again. Faust's own handling.
                log.info("transaction %s was fenced by the partition's new owner", transactional_id)
                self._transaction_producers.pop(transactional_id, None)
                await transaction_producer.stop()


async def _maybe_begin_transaction(self, transactional_id: str) -> None:
    transaction_producer = self._transaction_producers.get(transactional_id)
    if transaction_producer is not None and transaction_producer._txn_manager.is_in_transaction():
        return
    await self.begin_transaction(transactional_id)
