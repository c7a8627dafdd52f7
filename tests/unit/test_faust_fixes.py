"""The exactly-once fixes to faust-streaming (streams/adapters/faust_fixes.py), on fakes; the
chaos suite checks them on the real stack (workers SIGKILLed under exactly-once)."""

import asyncio
from collections import defaultdict

from aiokafka.errors import ProducerFenced

from streams.adapters import faust_fixes
from streams.adapters.faust_fixes import LEDGER, _commit_transactions, _highwaters, _maybe_begin_transaction


class _Txn:
    def __init__(self, open_):
        self.open = open_

    def is_in_transaction(self):
        return self.open


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


class _Producer:
    def __init__(self, **producers):
        self._transaction_producers = dict(producers)
        self._trn_locks = defaultdict(asyncio.Lock)
        self.begun = []

    async def begin_transaction(self, transactional_id):
        self.begun.append(transactional_id)


def test_a_commit_after_the_final_one_opens_its_own_transaction():
    # Faust's stop commits with start_new_transaction=False; a later commit found no open
    # transaction and raised IllegalOperation (the worker then hung on SIGTERM).
    txn = _TxnProducer()
    producer = _Producer(a=txn)
    asyncio.run(_commit_transactions(producer, {"a": {"tp": 5}}, "group", start_new_transaction=False))
    asyncio.run(_commit_transactions(producer, {"a": {"tp": 9}}, "group", start_new_transaction=False))
    assert txn.calls == [("offsets", {"tp": 5}), "commit", "begin", ("offsets", {"tp": 9}), "commit"]


def test_nothing_to_commit_outside_a_transaction_is_skipped_and_new_ones_start_when_asked():
    txn = _TxnProducer(open_=False)
    producer = _Producer(a=txn)
    asyncio.run(_commit_transactions(producer, {"a": {}}, "group"))
    assert txn.calls == []
    asyncio.run(_commit_transactions(producer, {"a": {"tp": 1}}, "group"))
    assert txn.calls == ["begin", ("offsets", {"tp": 1}), "commit", "begin"]


def test_a_fenced_producer_is_dropped_and_the_others_still_commit():
    fenced, fine = _TxnProducer(fenced=True), _TxnProducer()
    producer = _Producer(a=fenced, b=fine)
    asyncio.run(_commit_transactions(producer, {"a": {"tp": 1}, "b": {"tp": 2}}, "group"))
    assert fenced.stopped and "a" not in producer._transaction_producers
    assert fine.calls == [("offsets", {"tp": 2}), "commit", "begin"]


def test_maybe_begin_transaction_leaves_an_open_one_alone():
    producer = _Producer(a=_TxnProducer(open_=True), b=_TxnProducer(open_=False))
    for tid in ("a", "b", "c"):
        asyncio.run(_maybe_begin_transaction(producer, tid))
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

    assert asyncio.run(_highwaters(Thread(), ["fresh", "unanswered"])) == {"fresh": 354, "unanswered": 7}


def test_apply_patches_faust_once():
    from faust.transport.drivers import aiokafka as driver
    faust_fixes.apply()
    faust_fixes.apply()
    assert driver.AIOKafkaConsumerThread._highwaters is _highwaters
    assert driver.Producer.commit_transactions is _commit_transactions


def test_a_commit_that_would_not_cover_its_outputs_inputs_is_aborted_and_the_worker_restarted(monkeypatch):
    # Faust stops advancing a partition's offset at a hole in what was acknowledged; committing
    # the outputs sent since then would make them visible without their inputs' offsets, and
    # the next owner would make them again (duplicates under exactly-once).
    restarts = []
    monkeypatch.setattr(LEDGER, "on_unsafe", lambda: restarts.append(True))
    monkeypatch.setattr(LEDGER, "open", {})
    txn, fine = _TxnProducer(), _TxnProducer()
    producer = _Producer(a=txn, b=fine)
    LEDGER.sent("a", "reviews-2", 57)
    LEDGER.sent("b", "news-1", 9)
    asyncio.run(_commit_transactions(producer, {"a": {"reviews-2": 50, "clicks-2": 80}, "b": {"news-1": 10}},
                                     "group"))
    assert txn.calls == ["abort"] and restarts == [True]
    assert fine.calls == [("offsets", {"news-1": 10}), "commit", "begin"]
    assert LEDGER.open == {}
