"""Fixes to faust-streaming, applied by :func:`apply` (idempotent). With the rest of
``streams.runtime`` the only code that touches Faust's private names.

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
   partition moved to another worker) is dropped as Faust does elsewhere, not raised. One
   fenced while its partition is still assigned was fenced by the broker (a transaction open
   past Kafka's timeout): dropping it crashed the batch's next send and would let a fresh
   producer commit the offsets of records whose outputs were aborted, so the worker restarts.
3. **Outputs committed without their inputs' offsets** (duplicates after a restart). Faust
   commits a partition's offset only up to the first hole in what was acknowledged, and after
   some rebalances records are dropped unprocessed (a hole that stays): from then on the
   transactions of that partition committed our outputs while its offset stood still, and the
   next owner made them again. The app's
   :class:`~streams.runtime.transactions.TransactionLedger` records, per transaction, the highest
   input offset whose outputs went into it; a commit that would not cover them is aborted
   instead, and :attr:`~streams.runtime.transactions.TransactionLedger.on_unsafe` restarts the worker
   (the records are then processed again from the committed offset, once). The same at a
   revocation, after Faust's own commit of what was acknowledged: a transaction still holding
   outputs is aborted and the worker restarts (:func:`abort_uncommitted`), since Faust keeps it
   open for the partitions the worker keeps and the seek after the rebalance reads their
   inputs again.
4. **A warning per partition on every rebalance** (``Exception in begin_transaction ...
   Invalid state transition IN_TRANSACTION -> IN_TRANSACTION``): Faust's
   ``maybe_begin_transaction`` begins a transaction even when one is open. It now does what
   its name says.
5. **Records committed that were never processed** (at-least-once lost 1 of 1,500 records
   in 2 of 4 chaos runs with workers SIGKILLed). Three Faust habits together let a commit
   pass records no agent had handled:

   * a stream *skips* a record it takes off its queue once a rebalance has started (flow
     control off, or fetched in an older generation) and **acknowledges it** so that lag does
     not grow. The rebalance then commits what was acknowledged: with the skipped record, so
     it is never processed (one record lost, as in the chaos runs), and acks recorded before a
     seek back to the committed offsets made later commits run past copies not yet processed.
     Acks of records the stream never tracked (skipped) or of an older generation are now not
     recorded, and a seek to the committed offsets forgets what was acked before it. Acks of
     records processed while a rebalance or a stop waits for them still count;
   * ``Consumer._new_offset`` checked nothing when the committed offset was 0 or unknown (a
     partition never committed starts at its log start, read on assignment and on the stall
     check: :func:`note_log_start`; until one of them has read it, such a partition commits
     nothing, since Faust alone would commit past records skipped at its head: the likely path
     of 61 records lost in 1 of 7 chaos runs on 2026-11-30), counted acks below the committed
     offset, and stalled for good on records deleted by retention;
   * a partition with nothing committed is not sought at a rebalance (Kafka's client seeks only
     to a committed offset above 0), so records fetched and dropped then (Faust drops the rest
     of a fetch when the generation changes) were never read again: the partition stalled, and
     two workers restarting in place kept re-creating the rebalance (a make test run on
     2026-11-30; under exactly-once two workers restarted each other 12 times in one run).
     Such partitions are now sought to their log start at every rebalance, under both
     guarantees (under exactly-once safe only with items 3 and 9: no transaction carries
     outputs across a rebalance, and nothing is handed on while the seek runs).
   * a seek back to the committed offsets while the fetcher was still handing on records of an
     earlier fetch made those look like a jump (Faust records the skipped offsets as a *gap*,
     done): the re-read records were committed before they were processed (15 lost in one
     chaos run). The stall check no longer seeks: it restarts the worker (see
     :mod:`streams.runtime.stalls`).

6. **Offsets without a record told apart from records not processed** (at-least-once lost
   offset 0 of a partition in a make test on 2026-11-30, and offset 39 of another with a seek
   fix in 1 of 8 runs). Faust counts offsets as done that it never saw a record for in two
   ways: a jump between two records it hands on (``_add_gap``), and one missing offset at the
   head of a commit (meant for a transaction marker where the last commit ended). Both also
   pass records that were fetched and then dropped: a partition never committed is not sought
   at a rebalance, so its position stays past what was dropped (offset 0 was one missing at
   the head); a record fetched before a seek and handed on after it looks like a jump.
   Kafka's client knows which offsets hold no record for the application (transaction
   markers, aborted or compacted records): it read past them. :mod:`streams.runtime.fetched`
   notes them on the records it returns and adds them to Faust's gaps, and only those count:
   Faust's own gap inference and the head allowance are gone under at-least-once. A record
   dropped anywhere now holds the commit until it is read again. (Under exactly-once Faust's
   bookkeeping stays, :func:`_for_at_least_once`, with one fix: ``fetched.gap_before_record``.)
7. **Records committed already handed on again**: a record below its partition's committed
   offset (read from a stale position) is not handed on: under exactly-once its outputs
   would be committed twice. (Dropping records returned before their partition was sought
   was tried too and taken out: see :mod:`streams.runtime.fetched`.)
8. **No transaction timeout setting**: Faust's transactional producers take aiokafka's 60 s.
   A Triton outage longer than that has the broker abort the open transaction and fence its
   producer (the worker then restarts and redoes the records since its last commit). The
   producers now take the app's ``transaction_timeout_s`` (:func:`set_transaction_timeout`).
9. **Records handed on while a seek runs** (exactly-once duplicated 59 articles and 239
   clicks in a chaos run on 2026-11-30, with item 5's log-start seek then on under
   exactly-once too). Faust's table recovery resumes the input partitions and then seeks them,
   one partition's committed offset at a time (1.5 s for 23 partitions there), while the
   agents already run: records read from the old position were processed into the open
   transaction, then the seek set the position back and they were processed again into the
   same transaction. Faust's own seek back to a committed offset has the same window. The
   seek now takes the partitions out of what Faust hands on until it is done (records fetched
   meanwhile stay in Kafka's client, or are read again after the seek).
10. **Four tasks per record handed on** (throughput, not a bug): Faust's consumer loop races
   each record's hand-off against a rebalance with ``wait_first``, a task per waiter. The
   hand-off now runs inline and only one that has to wait races (:mod:`streams.runtime.handoff`).
11. **Table writes left out of the transaction that commits their inputs** (exactly-once). A
   table's changelog writes wait on Faust's producer buffer (``send_soon``), and Faust's
   transactional commit does not flush it first (its at-least-once commit does): a commit
   could end the transaction with the offsets of records whose table writes were still queued,
   and they went into the next one, lost with it if the worker died before that committed. At
   a stop the commit ends the transactions for good, so the queued writes crashed the buffer
   (``IllegalOperation: Can't send messages while not in transaction``) and the worker exited
   with status 1 (a rolling-restart chaos run). Every transactional commit now first waits
   until the buffer has handed everything on (:func:`commit_transactions`; the buffer counts
   the send under way, which its ``size`` leaves out); when it cannot within 30 s nothing is
   committed and the worker restarts, as after an unsafe commit. A producer fenced meanwhile
   (item 2) can never send them: the worker then restarts at once.
12. **Records processed before a rebalance or a stop, never committed** (at-least-once
   duplicates: a rolling restart of two workers processed 600 of 907 records twice, and in
   runs of two SIGTERMs 113 to 1,213 records, 2026-12-07). At a revocation Faust's consumer
   first forgets the revoked partitions' acknowledgements and committed offsets and only then
   lets the app wait for the records in flight and commit: everything acknowledged since the
   last timer commit (up to 2.8 s of input) was never committed, and the acks of the batch in
   flight landed on a forgotten partition whose head was missing, so nothing of it committed
   until the seek after the rebalance. The partitions' next owner (this worker, or another)
   processed all of it again. Under exactly-once the open transactions then held outputs whose
   inputs' offsets were gone, and the worker aborted them and restarted (item 3; one restart
   in a rolling-restart run, its partitions idle for a session). And that wait
   (``Consumer.wait_empty``, also at a stop) commits only while records are still
   unacknowledged: the acks that end it were not committed. Now the revocation first stops the
   flow, waits for the records in flight and commits (under exactly-once: the transactions,
   with their offsets), as Faust's own revocation does next but with the acks still there; and
   the wait ends with a commit (:func:`_commit_before_revocation`).
"""

from __future__ import annotations

import bisect
import importlib.metadata
import logging
from collections.abc import Mapping

from faust.app import base as faust_app
from faust.transport import consumer as faust_consumer
from faust.transport import producer as faust_producer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types.tuples import ack_lock
from faust.utils.functional import consecutive_numbers

from streams.runtime import fetched, handoff, producer_patches
from streams.runtime import offsets as stable_offsets
from streams.runtime.producer_patches import (
    abort_uncommitted,
    commit_transactions,
    make_settings_extra,
    maybe_begin_transaction,
    set_transaction_timeout,
    track_buffer_sends,
)

__all__ = ["FAUST_VERSION", "abort_uncommitted", "apply", "commit_transactions", "highwaters",
           "maybe_begin_transaction", "note_log_start", "set_transaction_timeout"]

log = logging.getLogger(__name__)
_APPLIED = "_streamsense_fixed"

FAUST_VERSION = "0.15.3"  # the version these fixes were written against and tested with


def apply() -> None:
    installed = importlib.metadata.version("faust-streaming")
    if installed != FAUST_VERSION:
        raise RuntimeError(f"faust-streaming {installed} is installed; StreamSense's fixes to it "
                           f"(streams/runtime/faust_patches.py) were written for {FAUST_VERSION}: "
                           f"install faust-streaming=={FAUST_VERSION}")
    thread = faust_aiokafka.AIOKafkaConsumerThread
    producer = faust_aiokafka.Producer
    consumer = faust_consumer.Consumer
    if getattr(thread, _APPLIED, False):
        return
    for cls, name in ((thread, "_highwaters"), (producer, "commit_transactions"),
                      (producer, "maybe_begin_transaction"), (producer, "_settings_extra"),
                      (consumer, "ack"), (consumer, "perform_seek"),
                      (consumer, "_new_offset"), (consumer, "_add_gap"),
                      (faust_producer.ProducerBuffer, "_send_pending"),
                      (faust_app.App, "_consumer_wait_empty"), (consumer, "on_partitions_revoked"),
                      *fetched.PATCHED,
                      *stable_offsets.PATCHED, *handoff.PATCHED, *producer_patches.PATCHED):
        if not callable(getattr(cls, name, None)):
            raise RuntimeError(f"faust-streaming changed: {cls.__name__}.{name} is gone; "
                               "review streams/runtime/faust_patches.py against the new version")
    thread._highwaters = highwaters
    producer.commit_transactions = commit_transactions
    producer.maybe_begin_transaction = maybe_begin_transaction
    producer._settings_extra = make_settings_extra(producer._settings_extra)
    consumer.ack = _make_ack(consumer.ack)
    consumer.perform_seek = _make_perform_seek(consumer.perform_seek)
    consumer._new_offset = _for_at_least_once(_new_offset, consumer._new_offset)
    consumer._add_gap = _for_at_least_once(fetched.add_no_gap, fetched.gap_before_record(consumer._add_gap))
    buffer = faust_producer.ProducerBuffer
    buffer._send_pending = track_buffer_sends(buffer._send_pending)
    faust_app.App._consumer_wait_empty = _make_wait_empty(faust_app.App._consumer_wait_empty)
    consumer.on_partitions_revoked = _make_on_partitions_revoked(consumer.on_partitions_revoked)
    fetched.apply()
    stable_offsets.apply()
    handoff.apply()
    setattr(thread, _APPLIED, True)


def _make_wait_empty(faust_wait_empty):
    async def _consumer_wait_empty(self, consumer, logger) -> None:
        await faust_wait_empty(self, consumer, logger)
        await _commit_acked(consumer)
    return _consumer_wait_empty


async def _commit_acked(consumer) -> None:
    """Commit what was acknowledged. A commit already under way (the timer's)
    makes Faust's ``commit`` wait for it and return False, and that one may have read the acks
    before the last ones: then once more."""
    if not await consumer.commit():
        await consumer.commit()


def _make_on_partitions_revoked(faust_on_partitions_revoked):
    async def on_partitions_revoked(self, revoked) -> None:
        if revoked and not self.app.should_stop:
            await _commit_before_revocation(self)
        await faust_on_partitions_revoked(self, revoked)  # forgets the partitions' acks
    return on_partitions_revoked


async def _commit_before_revocation(consumer) -> None:
    """What Faust's revocation (``App._on_partitions_revoked``) does right after the consumer
    forgot the revoked partitions' acks, done before: nothing more handed on, the records in
    flight awaited, and a commit of what was acknowledged."""
    app = consumer.app
    consumer.stop_flow()
    app.flow_control.suspend()
    consumer.pause_partitions(consumer.assignment())
    app.flow_control.clear()  # the agents' queued records: never processed, read again
    await app._consumer_wait_empty(consumer, consumer.log)  # and commits (above)


def _make_ack(faust_ack):
    def ack(self, message) -> bool:
        # A stream tracks a record when it hands it on; one acked untracked was skipped (flow
        # control off at a rebalance, or an older generation) and never processed. One from an
        # older generation is read again after the seek to the committed offsets, and that copy
        # is acked when it is processed.
        if message.tracked and message.generation_id == self.app.consumer_generation_id:
            return faust_ack(self, message)
        with ack_lock:
            message.acked = True
            self._unacked_messages.discard(message)
        return False
    return ack


def _make_perform_seek(faust_perform_seek):
    async def perform_seek(self) -> None:
        generation = self.app.consumer_generation_id
        # Nothing of the partitions being sought is handed on until their seek is done (item 9).
        held = _hold_partitions(self)
        try:
            await faust_perform_seek(self)
            # Kafka's client seeks only partitions with a committed offset above 0; the others
            # keep their position, past any records fetched and dropped at the rebalance (Faust
            # drops a fetch's remaining records when the generation changes). Those were never
            # processed and, with nothing committed, are never read again: the partition stalls.
            # Read them from the log start, under both guarantees: so every input partition is
            # sought here, and records a fetch in flight returned while they were held are read
            # again. Under exactly-once without it, two workers restarted each other 12 times
            # over such partitions in one kill run (2026-11-30) and the stream never finished;
            # with it, but without the hold above and the abort of transactions left holding
            # outputs at the revocation (abort_uncommitted), two kill series met duplicates.
            # Not when a rebalance began meanwhile: its own seek decides.
            if generation == self.app.consumer_generation_id:
                changelogs = self.app.tables.changelog_topics
                unsought = [tp for tp in self.assignment()
                            if tp.topic not in changelogs and not self._committed_offset.get(tp)]
                if unsought:
                    await self._thread.seek_to_beginning(*faust_aiokafka.ensure_aiokafka_TPset(unsought))
                    for tp in unsought:
                        self._read_offset[tp] = None
            # Every record from the committed offsets on is read again: an ack recorded before
            # the seek is no evidence that the copy about to be read was processed.
            with ack_lock:
                for tp in self.assignment():
                    self._acked.pop(tp, None)
                    self._acked_index.pop(tp, None)
                    self._gap.pop(tp, None)
        finally:
            if generation == self.app.consumer_generation_id:  # else the new rebalance decides
                _release_partitions(self, held)
    return perform_seek


def _hold_partitions(consumer) -> tuple[set, set]:
    """Take the assigned input partitions out of what Faust hands on (its active and buffered
    partitions); returns what was taken, for :func:`_release_partitions`. Synchronous: Faust's
    table recovery resumes the partitions just before it seeks, with no await in between."""
    changelogs = consumer.app.tables.changelog_topics
    inputs = {tp for tp in consumer.assignment() if tp.topic not in changelogs}
    active, buffered = consumer._get_active_partitions(), consumer._buffered_partitions
    taken = (inputs & active, inputs & buffered)
    active.difference_update(inputs)
    buffered.difference_update(inputs)
    return taken


def _release_partitions(consumer, held: tuple[set, set]) -> None:
    active, buffered = held
    assigned = set(consumer.assignment())
    consumer._get_active_partitions().update(active & assigned - consumer._paused_partitions)
    consumer._buffered_partitions.update(buffered & assigned)


def note_log_start(consumer, offsets: Mapping) -> None:
    """Remember the partitions' log start offsets (``consumer.earliest_offsets``): records
    below them are gone (retention) and can never be acked, so a commit may pass them."""
    starts = consumer.__dict__.setdefault("_streamsense_log_start", {})
    starts.update({tp: offset for tp, offset in offsets.items() if isinstance(offset, int)})


def _for_at_least_once(ours, fausts):
    """Item 6 applies under at-least-once only: under exactly-once its strict commits met
    duplicates in the kill scenario (1 run in 5 on 2026-11-30; cause not found), where Faust's
    own bookkeeping had passed 20 runs in a row. There Faust's stays, with the transaction
    ledger (item 3) against commits that fall short."""
    def choose(self, *args):
        return (fausts if self.in_transaction else ours)(self, *args)
    return choose


def _new_offset(self, tp):
    acked = self._acked[tp]
    if not acked:
        return None
    with ack_lock:
        _merge_gaps(acked, self._gap[tp])
        expected = _next_to_read(self, tp)
        if expected is None:
            # Never committed and its log start not read yet (the read on assignment failed):
            # where the partition's records begin is unknown, so no commit can tell whether
            # records at the head were skipped. Wait for the stall check to read it.
            return None
        stale = bisect.bisect_left(acked, expected)  # committed already
        if stale:
            self._acked_index[tp].difference_update(acked[:stale])
            del acked[:stale]
        if not acked or acked[0] > expected:
            return None  # records at the head are not done: commit nothing yet
        batch = next(consecutive_numbers(acked))
        del acked[:len(batch)]
        self._acked_index[tp].difference_update(batch)
        return batch[-1] + 1


def _merge_gaps(acked: list[int], gaps) -> None:
    """As Faust does: offsets without a record, up to just past the highest acked one (a marker
    after the last record), count as acked. Leaves ``acked`` sorted, without repeats."""
    top = max(acked)
    spans = sorted(gaps.overlap(0, top + 2), key=lambda interval: interval.begin) if gaps else []
    extra = [offset for interval in spans for offset in range(interval.begin, interval.end)]
    if extra:
        gaps.chop(0, max(extra[-1], top + 1))
    acked[:] = sorted({*acked, *extra})


def _next_to_read(consumer, tp) -> int | None:
    """The partition's committed offset (Kafka's: the next record to read), moved up to its log
    start when retention deleted what lay before; None when neither is known."""
    committed = consumer._committed_offset[tp]
    log_start = consumer.__dict__.get("_streamsense_log_start", {}).get(tp)
    if committed is None:
        return log_start
    return committed if log_start is None else max(committed, log_start)


async def highwaters(self, partitions) -> Mapping:
    consumer = self._ensure_consumer()
    ends = await consumer.end_offsets(partitions)
    if self.consumer.in_transaction:  # an unanswered partition: the cached value, as before
        return {tp: ends.get(tp, consumer.last_stable_offset(tp)) for tp in partitions}
    return ends
