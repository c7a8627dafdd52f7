"""The exactly-once fixes to faust-streaming (streams/runtime/faust_patches.py), on fakes; the
chaos suite checks them on the real stack (workers SIGKILLed under exactly-once)."""

import asyncio
from collections import defaultdict
from types import SimpleNamespace

import pytest
from aiokafka.errors import ProducerFenced
from aiokafka.structs import ConsumerRecord
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP as FaustTP

from streams.runtime import faust_patches, fetched
from streams.runtime.faust_patches import commit_transactions, highwaters, maybe_begin_transaction
from streams.runtime.transactions import ledger_for


class _Txn:
    def __init__(self, open_):
        self.open = open_

    def is_in_transaction(self):
        return self.open

    def is_fatal_error(self):
        return False


class _TxnProducer:
    def __init__(self, *, open_=True, fenced=False):
        self._txn_manager = _Txn(open_)
        self.calls, self.fenced, self.stopped = [], fenced, False

    async def begin_transaction(self):
        assert not self._txn_manager.open, "IllegalOperation: a transaction is already open"
        self.calls.append("begin")
        self._txn_manager.open = True

    async def send_offsets_to_transaction(self, offsets, group_id):
        assert self._txn_manager.open, "IllegalOperation: Not in the middle of a transaction"
        if self.fenced:
            raise ProducerFenced()
        self.calls.append(("offsets", dict(offsets)))

    async def commit_transaction(self):
        assert self._txn_manager.open, "IllegalOperation: Not in the middle of a transaction"
        self.calls.append("commit")
        self._txn_manager.open = False

    async def abort_transaction(self):
        assert self._txn_manager.open
        self.calls.append("abort")
        self._txn_manager.open = False

    async def stop(self):
        self.stopped = True


class _App:
    """Stands in for the Faust app the producer belongs to (its ledger is keyed by it)."""


class _Producer:
    def __init__(self, **producers):
        self.app = _App()
        self._transaction_producers = dict(producers)
        self._trn_locks = defaultdict(asyncio.Lock)
        self.buffer = SimpleNamespace(size=0)  # Faust's producer buffer: no table writes queued
        self.begun = []

    async def begin_transaction(self, transactional_id):
        self.begun.append(transactional_id)


def test_a_commit_after_the_final_one_opens_its_own_transaction():
    # Faust's stop commits with start_new_transaction=False; a later commit found no open
    # transaction and raised IllegalOperation (the worker then hung on SIGTERM).
    txn = _TxnProducer()
    producer = _Producer(a=txn)
    asyncio.run(commit_transactions(producer, {"a": {"tp": 5}}, "group", start_new_transaction=False))
    asyncio.run(commit_transactions(producer, {"a": {"tp": 9}}, "group", start_new_transaction=False))
    assert txn.calls == [("offsets", {"tp": 5}), "commit", "begin", ("offsets", {"tp": 9}), "commit"]


def test_nothing_to_commit_outside_a_transaction_is_skipped_and_new_ones_start_when_asked():
    txn = _TxnProducer(open_=False)
    producer = _Producer(a=txn)
    asyncio.run(commit_transactions(producer, {"a": {}}, "group"))
    assert txn.calls == []
    asyncio.run(commit_transactions(producer, {"a": {"tp": 1}}, "group"))
    assert txn.calls == ["begin", ("offsets", {"tp": 1}), "commit", "begin"]


def test_a_fenced_producer_is_dropped_and_the_others_still_commit():
    fenced, fine = _TxnProducer(fenced=True), _TxnProducer()
    producer = _Producer(a=fenced, b=fine)
    asyncio.run(commit_transactions(producer, {"a": {"tp": 1}, "b": {"tp": 2}}, "group"))
    assert fenced.stopped and "a" not in producer._transaction_producers
    assert fine.calls == [("offsets", {"tp": 2}), "commit", "begin"]


def test_a_producer_fenced_while_its_partition_is_still_ours_restarts_the_worker():
    # No new owner fenced it: the broker aborted the transaction (open past Kafka's timeout
    # while Triton was down). Dropping the producer let the batch's next send crash the worker
    # (chaos CI run, 2026-12-01), and a fresh producer would have committed the offsets of
    # records whose outputs were aborted.
    class _Assigned(_App):
        conf = SimpleNamespace(id="app")
        assignor = SimpleNamespace(group_for_topic=lambda topic: 0)
        consumer = SimpleNamespace(assignment=lambda: {FaustTP("news", 2)})

    restarts = []
    fenced = _TxnProducer(fenced=True)
    producer = _Producer(**{"app-0-2": fenced})
    producer.app = _Assigned()
    ledger_for(producer.app).on_unsafe = lambda _cause: restarts.append(True)
    asyncio.run(commit_transactions(producer, {"app-0-2": {"tp": 1}}, "group"))
    assert restarts == [True] and "app-0-2" in producer._transaction_producers and not fenced.stopped


def test_maybe_begin_transaction_leaves_an_open_one_alone():
    producer = _Producer(a=_TxnProducer(open_=True), b=_TxnProducer(open_=False))
    for tid in ("a", "b", "c"):
        asyncio.run(maybe_begin_transaction(producer, tid))
    assert producer.begun == ["b", "c"]


def test_highwaters_under_transactions_ask_the_broker_not_the_fetch_cache():
    # The cache (last_stable_offset) is None for a partition not fetched yet; Faust made that
    # -1 and its recovery check then raised ConsistencyError for every partition read before.
    class Consumer:
        async def end_offsets(self, partitions):
            return {tp: 354 for tp in partitions if tp != "unanswered"}

        def last_stable_offset(self, tp):
            return None if tp == "fresh" else 7

    class Thread:
        consumer = type("FaustConsumer", (), {"in_transaction": True})()

        def _ensure_consumer(self):
            return Consumer()

    assert asyncio.run(highwaters(Thread(), ["fresh", "unanswered"])) == {"fresh": 354, "unanswered": 7}


def test_apply_patches_faust_once():
    from faust.transport.drivers import aiokafka as driver
    faust_patches.apply()
    faust_patches.apply()
    assert driver.AIOKafkaConsumerThread._highwaters is highwaters
    assert driver.Producer.commit_transactions is commit_transactions


def test_a_commit_that_would_not_cover_its_outputs_inputs_is_aborted_and_the_worker_restarted(monkeypatch):
    # Faust stops advancing a partition's offset at a hole in what was acknowledged; committing
    # the outputs sent since then would make them visible without their inputs' offsets, and
    # the next owner would make them again (duplicates under exactly-once).
    restarts = []
    txn, fine = _TxnProducer(), _TxnProducer()
    producer = _Producer(a=txn, b=fine)
    ledger = ledger_for(producer.app)
    ledger.on_unsafe = restarts.append
    ledger.sent("a", ("reviews", 2), 57)
    ledger.sent("b", "news-1", 9)
    asyncio.run(commit_transactions(producer, {"a": {("reviews", 2): 50, "clicks-2": 80}, "b": {"news-1": 10}},
                                     "group"))
    assert txn.calls == ["abort"] and len(restarts) == 1
    assert fine.calls == [("offsets", {"news-1": 10}), "commit", "begin"]
    assert ledger.open == {}
    # The restart's cause names the offsets the commit stopped at: the same after a restart
    # that got further past them (a loop: RestartLoop), another once the commit moved on.
    for sent, commit in ((63, 50), (60, 55)):
        txn.calls.clear()
        txn._txn_manager.open = True  # the restarted worker's transaction
        ledger.sent("a", ("reviews", 2), sent)
        asyncio.run(commit_transactions(producer, {"a": {("reviews", 2): commit}}, "group"))
        assert txn.calls == ["abort"]
    assert restarts[0] == restarts[1] == "unsafe commit of a at [('reviews[2]', 50)]" != restarts[2]


class _FlowControl:
    def __init__(self, active=True):
        self.active = active

    def is_active(self):
        return self.active


class _Consumer:
    """The bookkeeping of Faust's Consumer that ack/_new_offset use, nothing else."""

    def __init__(self, *, committed=None, generation=2, flow_active=True, in_transaction=False):
        from intervaltree import IntervalTree
        self.app = SimpleNamespace(consumer_generation_id=generation, flow_control=_FlowControl(flow_active),
                                   topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
        self._acked, self._acked_index = defaultdict(list), defaultdict(set)
        self._gap = defaultdict(IntervalTree)
        self._committed_offset = defaultdict(lambda: None, {TP: committed})
        self._unacked_messages = set()
        self._n_acked = 0
        self._waiting_for_ack = None
        self.in_transaction = in_transaction

    def ack(self, message):
        return faust_consumer.Consumer.ack(self, message)

    async def _add_gap(self, tp, offset_from, offset_to):
        return await faust_consumer.Consumer._add_gap(self, tp, offset_from, offset_to)

    def new_offset(self):
        """The offset a commit would write now; the commit succeeds, as Faust then records."""
        offset = faust_consumer.Consumer._new_offset(self, TP)
        if offset is not None:
            self._committed_offset[TP] = offset
        return offset


TP = ("reviews", 0)
TP_ = FaustTP(*TP)


class _Message:
    def __init__(self, offset, generation, tracked):
        self.tp, self.topic, self.offset, self.acked = TP, "reviews", offset, False
        self.generation_id, self.tracked = generation, tracked


def _message(offset, generation=2, tracked=True):
    """A record a stream handed on (``tracked``) or skipped (not tracked), fetched in ``generation``."""
    return _Message(offset, generation, tracked)


def test_records_skipped_at_a_rebalance_are_not_counted_as_processed():
    faust_patches.apply()
    consumer = _Consumer(committed=100)
    for offset in range(100, 105):  # processed and acked while the rebalance waits for them
        consumer.ack(_message(offset))
    consumer.ack(_message(105, tracked=False))  # taken off the queue after flow control went off: skipped
    assert consumer.new_offset() == 105  # not 106: the skipped record is read again after the seek
    for offset in range(110, 120):  # processed in the old generation, acked after the new one began
        consumer.ack(_message(offset, generation=1))
    for offset in range(105, 110):
        consumer.ack(_message(offset))
    assert consumer.new_offset() == 110  # not 120: 110..119 are read again, not yet processed


def test_records_processed_while_a_stop_waits_for_them_are_committed():
    faust_patches.apply()
    consumer = _Consumer(committed=100)
    consumer.app.flow_control.active = False  # Faust's stop (and a rebalance) suspend the flow first
    for offset in range(100, 110):
        consumer.ack(_message(offset))
    assert consumer.new_offset() == 110


def test_records_missing_at_the_head_hold_the_commit_and_a_marker_counts_once_read_past():
    faust_patches.apply()
    consumer = _Consumer(committed=100)
    for offset in range(102, 106):
        consumer.ack(_message(offset))
    assert consumer.new_offset() is None  # 100 and 101 not processed yet
    consumer.ack(_message(100))
    consumer.ack(_message(101))
    assert consumer.new_offset() == 106
    for offset in range(107, 110):
        consumer.ack(_message(offset))
    assert consumer.new_offset() is None  # 106 may be a record dropped on the way: not done
    _hand_on(consumer, _fetched(106, [107, 108, 109], 111))  # the fetcher read past it: a marker
    assert consumer.new_offset() == 111  # and past the marker after 109


def test_a_jump_between_records_handed_on_is_not_taken_for_records_without_data():
    # A record fetched before a seek back to 39 and handed on after it: Faust took 40..45 as a gap.
    faust_patches.apply()
    consumer = _Consumer(committed=39)
    asyncio.run(consumer._add_gap(TP, 40, 45))
    consumer.ack(_message(45))
    assert consumer.new_offset() is None  # 39..44 never processed: not committed past


def test_offsets_a_fetch_found_no_record_at_are_noted_on_its_records():
    records = _fetched(10, [12, 13, 17], 20)
    consumer = _Consumer(committed=10)
    _hand_on(consumer, records)
    assert sorted((gap.begin, gap.end) for gap in consumer._gap[TP]) == [(10, 12), (14, 17), (18, 20)]
    late = _Consumer(committed=15)  # committed past part of them already: only from there on
    _hand_on(late, _fetched(10, [12, 13, 17], 17))
    assert sorted((gap.begin, gap.end) for gap in late._gap[TP]) == [(15, 17)]


def test_a_span_read_with_no_record_returned_goes_with_the_next_record():
    consumer = _Consumer(committed=10)
    _hand_on(consumer, _fetched(10, [10, 11], 12))  # returned at the maximum, before the marker
    _hand_on(consumer, _fetched(12, [], 13))  # the marker read on the next call, nothing returned
    assert not consumer._gap[TP]
    _hand_on(consumer, _fetched(13, [13], 14))
    assert sorted((gap.begin, gap.end) for gap in consumer._gap[TP]) == [(12, 13)]


def test_a_record_below_the_committed_offset_is_not_handed_on_again():
    consumer = _Consumer(committed=57)
    assert not fetched.to_hand_on(consumer, _message(0))  # committed with its outputs already
    assert fetched.to_hand_on(consumer, _message(57))
    assert fetched.to_hand_on(_Consumer(committed=None), _message(0))


def _fetched(start, offsets, end):
    """Records as Kafka's client returns them from a fetch that read ``start`` to ``end``."""
    records = [ConsumerRecord(TP[0], TP[1], offset, 0, 0, None, b"v", None, 0, 1, ()) for offset in offsets]
    fetched.mark_no_records(TP, records, start, end)
    return records


def _hand_on(consumer, records):
    for record in records:
        faust_aiokafka.Consumer._to_message(consumer, TP_, record)


def test_records_deleted_by_retention_do_not_hold_the_commit():
    faust_patches.apply()
    consumer = _Consumer(committed=100)
    for offset in range(150, 155):
        consumer.ack(_message(offset))
    assert consumer.new_offset() is None
    faust_patches.note_log_start(consumer, {TP: 150})
    assert consumer.new_offset() == 155


def test_a_partition_never_committed_starts_at_its_log_start():
    faust_patches.apply()
    consumer = _Consumer(committed=None)
    faust_patches.note_log_start(consumer, {TP: 0})
    for offset in range(2, 5):
        consumer.ack(_message(offset))
    assert consumer.new_offset() is None  # offsets 0 and 1 not processed yet
    for offset in (0, 1, 2):
        consumer.ack(_message(offset))
    assert consumer.new_offset() == 5


def test_a_partition_never_committed_commits_nothing_until_its_log_start_is_known():
    """Records at the head skipped at a rebalance (never acked) must hold the commit even when
    the read of the log start on assignment failed (61 records lost in one chaos run)."""
    faust_patches.apply()
    consumer = _Consumer(committed=None)
    consumer.ack(_message(0, tracked=False))  # skipped: flow control went off at a rebalance
    for offset in range(5, 9):
        consumer.ack(_message(offset))
    assert consumer.new_offset() is None  # Faust alone would commit 9: offsets 0-4 never processed
    faust_patches.note_log_start(consumer, {TP: 0})  # the stall check reads it
    assert consumer.new_offset() is None
    for offset in range(0, 5):
        consumer.ack(_message(offset))
    assert consumer.new_offset() == 9


def test_exactly_once_keeps_fausts_bookkeeping():
    """Under exactly-once the strict commit met duplicates in the kill scenario; Faust's own
    (one missing offset allowed at the head, for the marker of the last commit) stays there."""
    faust_patches.apply()
    consumer = _Consumer(committed=100, in_transaction=True)
    for offset in range(101, 105):  # offset 100 is the marker of the last commit
        consumer.ack(_message(offset))
    assert consumer.new_offset() == 105
    at_least_once = _Consumer(committed=100)
    for offset in range(101, 105):
        at_least_once.ack(_message(offset))
    assert at_least_once.new_offset() is None  # 100 may be a record dropped on the way


def test_under_exactly_once_markers_after_the_committed_offset_do_not_cut_the_commit_short():
    """Restarted at committed offset 50 with transaction markers at 50-52 and the first record at
    53: Faust's gap for the jump took in record 53 itself, 53 was counted twice, and the commit
    stopped at 54 while the transaction held the outputs of 53..70. The ledger aborted it as
    unsafe and the worker restarted into the same records: a crash loop of both workers over
    an entity-mentions partition (chaos kill scenario, 2026-12-07)."""
    faust_patches.apply()
    consumer = _Consumer(committed=50, in_transaction=True)
    asyncio.run(consumer._add_gap(TP, 51, 53))  # Faust's drain: read offset 50, then record 53
    for offset in range(53, 71):
        consumer.ack(_message(offset))
    assert consumer.new_offset() == 71
    asyncio.run(consumer._add_gap(TP, 71, 74))  # mid-stream: record 70 read, then record 74
    consumer.ack(_message(74))
    assert consumer.new_offset() == 75


def test_a_producer_fenced_for_good_restarts_the_worker_instead_of_crashing():
    # A transaction open past Kafka's timeout (Triton down for minutes) is aborted by the broker
    # and its producer fenced: beginning another raised inside Faust's consumer and crashed it.
    class _Fatal(_TxnProducer):
        def __init__(self):
            super().__init__(open_=False)
            self._txn_manager.is_fatal_error = lambda: True

    restarts = []
    producer = _Producer(a=_Fatal())
    ledger_for(producer.app).on_unsafe = lambda _cause: restarts.append(True)
    asyncio.run(maybe_begin_transaction(producer, "a"))
    asyncio.run(commit_transactions(producer, {"a": {"tp": 5}}, "group"))
    assert restarts == [True, True] and producer.begun == []


def test_a_stall_report_says_which_partitions_faust_treats_as_inactive():
    """Records of a partition Faust does not count as active are fetched and dropped: the
    stall report names those, with Faust's flow and generation state."""
    from faust.types import TP

    from streams.runtime.consumer import flow_states

    mine, other = TP("t", 0), TP("t", 1)
    app = SimpleNamespace(consumer=SimpleNamespace(_active_partitions={mine}, flow_active=False),
                          flow_control=SimpleNamespace(is_active=lambda: True), consumer_generation_id=7,
                          in_recovery=False)
    report = flow_states(app, [mine, other])
    assert "flow_active=False" in report and "generation=7" in report and "not active: ['t[1]']" in report
    assert "unavailable" in flow_states(SimpleNamespace(), [mine])


def test_a_rebalance_reads_partitions_with_nothing_committed_from_their_log_start():
    """Kafka's client seeks only to a committed offset above 0: a partition with nothing
    committed kept its position past records Faust had fetched and dropped at the rebalance, and
    never read them again. After the patched seek it is read from its log start; a partition
    with a committed offset is left where the committed offset put it, a changelog to Faust's
    table recovery."""
    from faust.types import TP

    faust_patches.apply()
    committed, never, zero, changelog = TP("in", 0), TP("in", 1), TP("in", 2), TP("app-table-changelog", 0)
    sought = []

    class Thread:
        async def seek_to_beginning(self, *partitions):
            sought.extend((p.topic, p.partition) for p in partitions)

    class Fake:
        app = SimpleNamespace(tables=SimpleNamespace(changelog_topics={"app-table-changelog"}), consumer_generation_id=4)
        _thread = Thread()
        in_transaction = False

        def __init__(self):
            self._read_offset, self._committed_offset = defaultdict(lambda: None), defaultdict(lambda: None)
            self._acked, self._acked_index, self._gap = {never: [5, 6]}, {}, {}
            self._read_offset[never] = 812  # read before the rebalance; nothing committed
            self._active_partitions, self._buffered_partitions, self._paused_partitions = set(), set(), set()

        def _get_active_partitions(self):
            return self._active_partitions

        def assignment(self):
            return {committed, never, zero, changelog}

        async def seek_to_committed(self):
            return {committed: 40, never: None, zero: 0, changelog: None}

    fake = Fake()
    asyncio.run(faust_consumer.Consumer.perform_seek(fake))
    assert sorted(sought) == [("in", 1), ("in", 2)]
    assert fake._read_offset[never] is None and fake._read_offset[committed] == 40
    assert fake._acked == {}
    # Under exactly-once too (no transaction carries outputs across a rebalance: items 3 and 9),
    # but not once another rebalance has begun.
    sought.clear()
    exactly_once = Fake()
    exactly_once.in_transaction = True
    asyncio.run(faust_consumer.Consumer.perform_seek(exactly_once))
    assert sorted(sought) == [("in", 1), ("in", 2)]

    class Rebalanced(Fake):
        async def seek_to_committed(self):
            self.app.consumer_generation_id += 1
            return await super().seek_to_committed()

    sought.clear()
    asyncio.run(faust_consumer.Consumer.perform_seek(Rebalanced()))
    assert sought == []


def test_a_worker_waiting_in_a_rebalance_is_not_restarted_until_the_rebalance_outlasts_the_group():
    """Between a revocation and the next assignment Faust's flow is stopped while the Kafka
    client still lists the old partitions: a worker waiting there for its group is not stalled.
    A rebalance that never ends is, once it outlasts the session and rebalance timeouts. And a
    partition whose last offsets Kafka's client read past and found only markers in has nothing
    left to process."""
    from faust.types import TP

    from streams.adapters.metrics import Metrics
    from streams.runtime.stalls import StallWatch

    tp, now, restarts = TP("reviews", 3), [0.0], []

    class Consumer:
        _read_offset, _committed_offset = {}, {}

        def assignment(self):
            return {tp}

        async def highwaters(self, *partitions):
            return {tp: 402}

        async def earliest_offsets(self, *partitions):
            return {tp: 0}

    app = SimpleNamespace(consumer=Consumer(), in_recovery=False, rebalancing=True,
                          conf=SimpleNamespace(broker_session_timeout=60.0, broker_rebalance_timeout=60.0),
                          flow_control=SimpleNamespace(is_active=lambda: False), consumer_generation_id=3)
    watch = StallWatch(app, inputs={"reviews"}, batches=SimpleNamespace(in_flight=0), metrics=Metrics(),
                       exactly_once=True, restart=lambda: restarts.append(now[0]), clock=lambda: now[0])
    for now[0] in (0.0, 10.0, 20.0, 110.0):
        asyncio.run(watch.check())
    assert restarts == []
    for now[0] in (125.0, 135.0):  # still rebalancing after 2 minutes: stuck, restarted
        asyncio.run(watch.check())
    assert restarts == [135.0]
    # Rebalance over: read 1806, committed 1807, log end 1809; the client read 1807-1808, markers.
    feedback = TP("sentiment-feedback", 0)
    app.rebalancing, restarts[:] = False, []
    Consumer.assignment = lambda self: {feedback}
    Consumer._read_offset, Consumer._committed_offset = {feedback: 1806}, {feedback: 1807}

    async def ends(self, *partitions):
        return {feedback: 1809}

    Consumer.highwaters = ends
    fetched.mark_no_records(feedback, [], 1807, 1809)
    for now[0] in (140.0, 150.0, 160.0):
        asyncio.run(watch.check())
    assert restarts == []


def test_committed_offsets_are_asked_for_stable_and_a_pending_one_is_asked_again():
    """OffsetFetch v7 carries KIP-447's require_stable; the broker's UNSTABLE_OFFSET_COMMIT for a
    partition whose offset is in an unfinished transaction is a retriable error (Kafka's client
    asks again after its backoff), never an answer of "nothing committed"."""
    from aiokafka.errors import KafkaError, NotCoordinatorForGroupError
    from aiokafka.protocol.commit import OffsetFetchRequest_v3, OffsetFetchResponse_v3
    from aiokafka.structs import OffsetAndMetadata, TopicPartition

    from streams.runtime.offsets import (
        OffsetFetchResponse_v7,
        StableOffsetFetchRequest,
        UnstableOffsetCommit,
        committed_offsets,
    )

    request = StableOffsetFetchRequest("g", [("t", [0, 1])])
    newest = request.prepare({9: (1, 9)})
    assert newest.API_VERSION == 7 and newest.FLEXIBLE_VERSION
    assert newest.encode()[-2:] == b"\x01\x00"  # require_stable true, no tagged fields
    assert newest.to_object()["topics"][0]["partition_indexes"] == [0, 1]
    assert isinstance(request.prepare({9: (0, 3)}), OffsetFetchRequest_v3)

    def v7(*partitions, error_code=0):
        raw = OffsetFetchResponse_v7(0, [("t", list(partitions), {})], error_code, {}).encode()
        return OffsetFetchResponse_v7.decode(raw)

    answer = v7((0, 42, -1, "m", 0, {}), (1, -1, -1, None, 0, {}))
    assert committed_offsets(answer) == {TopicPartition("t", 0): OffsetAndMetadata(42, "m")}
    with pytest.raises(UnstableOffsetCommit) as pending:
        committed_offsets(v7((0, 40, -1, "", 88, {})))
    assert pending.value.retriable

    class Coordinator:
        group_id, dead = "g", False

        def coordinator_dead(self):
            self.dead = True

    coordinator = Coordinator()
    with pytest.raises(NotCoordinatorForGroupError):
        committed_offsets(v7(error_code=NotCoordinatorForGroupError.errno), coordinator)
    assert coordinator.dead
    with pytest.raises(KafkaError):
        committed_offsets(v7((0, 1, -1, "", 999, {})))
    old = OffsetFetchResponse_v3(0, [("t", [(3, 7, "", 0)])], 0)
    assert committed_offsets(old) == {TopicPartition("t", 3): OffsetAndMetadata(7, "")}


def test_transactional_producers_take_the_apps_transaction_timeout():
    """Kafka aborts a transaction open past the producer's transaction timeout: the worker's
    setting reaches every producer Faust makes for the app under exactly-once, none otherwise."""
    class App:
        def __init__(self, in_transaction: bool):
            self.in_transaction = in_transaction

    faust_patches.apply()
    exactly_once, plain = App(True), App(False)
    faust_patches.set_transaction_timeout(exactly_once, 20.0)
    faust_patches.set_transaction_timeout(plain, 20.0)
    extra = faust_aiokafka.Producer._settings_extra(SimpleNamespace(app=exactly_once))
    assert extra == {"acks": "all", "enable_idempotence": True, "transaction_timeout_ms": 20_000}
    assert faust_aiokafka.Producer._settings_extra(SimpleNamespace(app=plain)) == {}


def test_a_transaction_left_holding_outputs_at_a_rebalance_is_aborted():
    """After Faust's revocation commit a transaction that still holds outputs was not committed
    with their inputs' offsets; the seek after the rebalance reads those inputs again, so it is
    aborted (the caller restarts the worker). Nothing held: nothing to do."""
    class Producer:
        aborted = 0
        _txn_manager = SimpleNamespace(is_in_transaction=lambda: True)

        async def abort_transaction(self):
            Producer.aborted += 1

    class App:
        consumer = SimpleNamespace(transactions=SimpleNamespace(
            producer=SimpleNamespace(_transaction_producers={"app-1-2": Producer()})))

    app = App()
    ledger = ledger_for(app)
    restarts = []
    ledger.on_unsafe = lambda _cause: restarts.append(1)
    assert asyncio.run(faust_patches.abort_uncommitted(app)) is False
    ledger.sent("app-1-2", ("reviews", 2), 69)
    ledger.sent("app-1-2", ("clicks", 2), 12)
    assert asyncio.run(faust_patches.abort_uncommitted(app)) is True
    assert Producer.aborted == 1 and ledger.open == {}
    assert restarts == [1]


def test_nothing_is_handed_on_from_a_partition_while_it_is_sought():
    """Faust's recovery resumes the input partitions just before it seeks them, one committed
    offset at a time: records handed on meanwhile were processed, then read again after the
    seek. The patched seek takes them out of Faust's active (and buffered) partitions until it
    is done, and gives back only what it took, unless a rebalance began meanwhile."""
    from faust.types import TP

    faust_patches.apply()
    reviews, clicks, paused, changelog = TP("in", 0), TP("in", 1), TP("in", 2), TP("app-t-changelog", 0)
    seen_during = []

    class Thread:
        async def seek_to_beginning(self, *partitions):
            pass

    class Fake:
        _thread = Thread()
        in_transaction = True

        def __init__(self, generation_moves=False):
            self.app = SimpleNamespace(tables=SimpleNamespace(changelog_topics={"app-t-changelog"}),
                                       consumer_generation_id=4)
            self._active_partitions = {reviews, changelog}
            self._buffered_partitions = {clicks}
            self._paused_partitions = {paused}
            self._read_offset, self._committed_offset = defaultdict(lambda: None), defaultdict(lambda: None)
            self._acked, self._acked_index, self._gap = {}, {}, {}
            self.generation_moves = generation_moves

        def assignment(self):
            return {reviews, clicks, paused, changelog}

        def _get_active_partitions(self):
            return self._active_partitions

        async def seek_to_committed(self):
            seen_during.append((set(self._active_partitions), set(self._buffered_partitions)))
            if self.generation_moves:
                self.app.consumer_generation_id += 1
            return {reviews: 40, clicks: 7, paused: 3, changelog: None}

    fake = Fake()
    asyncio.run(faust_consumer.Consumer.perform_seek(fake))
    assert seen_during == [({changelog}, set())]
    assert fake._active_partitions == {reviews, changelog} and fake._buffered_partitions == {clicks}
    moved = Fake(generation_moves=True)
    asyncio.run(faust_consumer.Consumer.perform_seek(moved))
    assert moved._active_partitions == {changelog}  # the new rebalance resumes what it assigns


def test_leaving_the_group_when_the_consumers_loop_is_gone_only_warns(caplog):
    # A restart after the consumer's thread ended (CI, 2026-12-07): the LeaveGroup coroutine was
    # never run nor closed, and Python warned "coroutine 'GroupCoordinator.close' was never awaited".
    import inspect

    from streams.runtime.consumer import leave_group

    made = []

    async def never_run() -> None:
        raise AssertionError("cannot run: its loop is closed")

    def close():
        made.append(never_run())
        return made[-1]

    gone = asyncio.new_event_loop()
    gone.close()
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(
        thread_loop=gone, _consumer=SimpleNamespace(_coordinator=SimpleNamespace(close=close)))))
    leave_group(app)
    assert "could not leave the consumer group" in caplog.text
    assert inspect.getcoroutinestate(made[0]) == inspect.CORO_CLOSED


class _RevokedConsumer(_Consumer):
    """A consumer at a revocation: the flow control, the wait for records in flight (``in_flight``
    acked while Faust's ``wait_empty`` waits, which commits nothing at its end) and commits as
    Faust's (the first ``busy`` of them find the timer's commit under way: they commit nothing)."""

    def __init__(self, *, in_flight=(), busy=0, **kwargs):
        super().__init__(**kwargs)
        self.steps, self.commits, self.in_flight, self.busy = [], [], list(in_flight), busy
        self.log = None

        async def faust_wait_empty(app, consumer, logger):
            self.steps.append("wait")
            for offset in self.in_flight:
                consumer.ack(_message(offset))

        self.app.should_stop = False
        self.app.flow_control.suspend = lambda: self.steps.append("suspend")
        self.app.flow_control.clear = lambda: self.steps.append("clear")
        self.app.in_transaction = self.in_transaction
        wait_empty = faust_patches._make_wait_empty(faust_wait_empty)
        self.app._consumer_wait_empty = lambda consumer, logger: wait_empty(self.app, consumer, logger)

    def stop_flow(self):
        self.steps.append("stop flow")

    def assignment(self):
        return {TP}

    def pause_partitions(self, tps):
        self.steps.append("pause")

    async def commit(self):
        if self.busy:
            self.busy -= 1
            return False
        offset = self.new_offset()
        self.commits.append(offset)
        return offset is not None


async def _faust_forgets_the_revoked(consumer, revoked):
    """Faust's Consumer.on_partitions_revoked: the revoked partitions' acks and committed offsets go."""
    consumer.steps.append(("forget", consumer._committed_offset[TP]))
    for tp in revoked:
        consumer._acked.pop(tp, None)
        consumer._acked_index.pop(tp, None)
        consumer._committed_offset.pop(tp, None)


@pytest.mark.parametrize("in_transaction", [False, True])
@pytest.mark.parametrize("busy", [0, 1])
def test_what_was_processed_before_a_revocation_is_committed_before_faust_forgets_it(busy, in_transaction):
    # A rolling restart of two workers processed 113 to 1,213 records twice in runs of two
    # SIGTERMs (at-least-once): Faust forgot the acks first, then waited and committed nothing.
    # Under exactly-once the ledger then aborted the transactions and the worker restarted.
    faust_patches.apply()
    consumer = _RevokedConsumer(committed=100, in_flight=range(105, 110), busy=busy, in_transaction=in_transaction)
    for offset in range(100, 105):  # acked since the last timer commit
        consumer.ack(_message(offset))
    revoke = faust_patches._make_on_partitions_revoked(_faust_forgets_the_revoked)
    asyncio.run(revoke(consumer, {TP}))
    # The batch in flight finished and everything up to it was committed, before the acks went.
    assert consumer.steps == ["stop flow", "suspend", "pause", "clear", "wait", ("forget", 110)]
    assert consumer.commits == [110]


def test_a_revocation_at_a_stop_is_left_to_faust():
    # The stop waits for the records in flight and commits on its own (App._stop_consumer).
    faust_patches.apply()
    revoke = faust_patches._make_on_partitions_revoked(_faust_forgets_the_revoked)
    consumer = _RevokedConsumer(committed=100)
    consumer.app.should_stop = True
    consumer.ack(_message(100))
    asyncio.run(revoke(consumer, {TP}))
    assert consumer.steps == [("forget", 100)] and consumer.commits == []


def test_the_wait_for_records_in_flight_at_a_stop_ends_with_a_commit():
    faust_patches.apply()
    consumer = _RevokedConsumer(committed=100, in_flight=range(100, 104))
    asyncio.run(consumer.app._consumer_wait_empty(consumer, None))
    assert consumer.steps == ["wait"] and consumer.commits == [104]
