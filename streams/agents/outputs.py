"""Output topics that keep exactly-once: every output goes into the Kafka transaction of the
input partition it came from.

Faust (faust-streaming 0.11) picks a record's transaction by the *output's* own topic and
partition, which is the input's transaction only when the output is co-partitioned with the
input and its topic is one the app consumes. Ours are not: enriched records, alerts,
recommendations and dead letters go to topics no agent reads (Faust then sent them outside
any transaction, visible at once), and entity mentions are re-keyed by entity (the transaction
of some other partition, committed on its own schedule). A worker killed between two commits
then left outputs committed whose inputs were processed again by the next owner: duplicates
under ``exactly_once`` (114 of 2,000 records with five kills in the chaos suite; none with this
and :class:`~streams.core.flow.CommitGate`).

:class:`SourceTransactionTopic` sends into the transaction of Faust's *current event*, which
the agents set to the record being handled (:func:`~streams.agents.tables.as_current_event`),
so an output commits or aborts with its input's offset. Under at-least-once it is a plain send.
Each send is entered in :data:`~streams.adapters.faust_fixes.LEDGER`, which refuses a commit that
would not cover the input offsets of the outputs it holds.
"""

from __future__ import annotations

from datetime import datetime

import faust
from faust.exceptions import ProducerSendError
from faust.streams import current_event

from streams.adapters.faust_fixes import LEDGER
from streams.core.rules import MAX_OUTPUT_BYTES
from streams.errors import OutputRejected, OutputTooLarge, StreamSenseError
from streams.records import dead_letter, encode

__all__ = ["SourceRevoked", "SourceTransactionTopic", "send_dead_letter", "transactional_id"]


def transactional_id(app: faust.App, tp) -> str:
    """The Kafka transaction Faust keeps for an input partition (its ``TransactionManager``
    names them the same way)."""
    return f"{app.conf.id}-{app.assignor.group_for_topic(tp.topic)}-{tp.partition}"


async def send_dead_letter(deadletter, message, reason: str, *, now: datetime) -> None:
    """Dead-letter one consumed record (the raw bytes, where they came from, and why)."""
    record = dead_letter(source_topic=message.topic, partition=message.partition, offset=message.offset,
                         raw=message.value, error=reason, now=now)
    await deadletter.send(key=message.key, value=encode(record))


class SourceRevoked(StreamSenseError):
    """The input partition of the record being handled was revoked (its transaction is gone):
    its next owner processes the record again from the last committed offset."""


class SourceTransactionTopic:
    def __init__(self, app: faust.App, topic: faust.TopicT, *, exactly_once: bool,
                 max_bytes: int = MAX_OUTPUT_BYTES) -> None:
        self.app = app
        self.topic = topic
        self.exactly_once = exactly_once
        self.max_bytes = max_bytes
        self.name = topic.get_topic_name()

    async def send(self, *, key: bytes | None, value: bytes):
        if len(value) > self.max_bytes:  # Kafka would refuse it; callers check first, this is the net
            raise OutputTooLarge(f"a {len(value)}-byte record for {self.name} is over the "
                                 f"{self.max_bytes}-byte output limit")
        event = current_event() if self.exactly_once else None
        if event is None:
            return await self.topic.send(key=key, value=value)
        tp = event.message.tp
        tid = transactional_id(self.app, tp)
        try:
            sent = await self.app.producer.send(self.name, key, value, None, None, None, transactional_id=tid)
        except ProducerSendError as exc:
            # Faust raises this when the partition's transaction is gone (revoked), but also for
            # a record Kafka refused. Only the first may be left to the next owner: the second,
            # taken for a revocation, would ack the record with neither output nor dead letter.
            if tp in self.app.consumer.assignment():
                raise OutputRejected(f"Kafka refused a record for {self.name} while "
                                     f"{tp.topic}[{tp.partition}] is still assigned: {exc}") from exc
            raise SourceRevoked(f"{tp.topic}[{tp.partition}] was revoked: {exc}") from exc
        LEDGER.sent(tid, tp, event.message.offset)  # its commit must cover this offset
        return sent
