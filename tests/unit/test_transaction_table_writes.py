"""Under exactly-once a commit ends the transaction only after the table writes Faust queued
for it were handed on (item 11 of streams.runtime.faust_patches)."""

import asyncio
from collections import defaultdict
from types import SimpleNamespace

from faust.transport.producer import ProducerBuffer

from streams.runtime import faust_patches, producer_patches
from streams.runtime.producer_patches import commit_transactions, drain_buffer, track_buffer_sends
from streams.runtime.transactions import ledger_for


class _Buffer:
    """Faust's buffer as the drain sees it: queued messages, and the one being handed on."""

    def __init__(self, queued: int, calls: list) -> None:
        self.queued = queued
        self.calls = calls  # what reached the transaction, in order

    @property
    def size(self) -> int:
        return self.queued

    async def _send_pending(self, fut) -> None:
        await asyncio.sleep(0.01)  # the broker's round trip: the message is out of the queue meanwhile
        self.calls.append(fut)

    async def run(self) -> None:  # ProducerBuffer._handle_pending
        send = track_buffer_sends(type(self)._send_pending)
        n = 0
        while self.queued:
            self.queued -= 1
            await send(self, f"write {n}")
            n += 1


class _Transaction:
    def __init__(self, calls: list) -> None:
        self.calls = calls
        self._txn_manager = SimpleNamespace(is_in_transaction=lambda: True, is_fatal_error=lambda: False)

    async def send_offsets_to_transaction(self, offsets, group_id):
        self.calls.append("offsets")

    async def commit_transaction(self):
        self.calls.append("commit")


class _App:
    """The Faust app the producer belongs to (its ledger is keyed by it)."""


def _producer(queued: int) -> SimpleNamespace:
    calls: list = []
    return SimpleNamespace(app=_App(), buffer=_Buffer(queued, calls), calls=calls,
                           _transaction_producers={"t": _Transaction(calls)},
                           _trn_locks=defaultdict(asyncio.Lock))


def test_a_commit_waits_for_every_queued_table_write_including_the_one_being_sent():
    producer = _producer(queued=5)

    async def scenario():
        sending = asyncio.create_task(producer.buffer.run())
        await asyncio.sleep(0.035)  # part of the queue sent, one on its way
        await commit_transactions(producer, {"t": {"tp": 1}}, "group", start_new_transaction=False)
        await sending

    asyncio.run(scenario())
    # All five in the committed transaction, before its offsets and its commit.
    assert producer.calls == [f"write {n}" for n in range(5)] + ["offsets", "commit"]


def test_writes_that_cannot_be_handed_on_are_not_committed_and_the_worker_restarts(monkeypatch):
    monkeypatch.setattr(producer_patches, "DRAIN_TIMEOUT_S", 0.05)
    producer, unsafe = _producer(queued=3), []  # nothing sends them: the buffer crashed or the broker is gone
    ledger_for(producer.app).on_unsafe = lambda _cause: unsafe.append(1)
    asyncio.run(commit_transactions(producer, {"t": {"tp": 1}}, "group"))
    assert producer.calls == [] and unsafe == [1]


def test_a_producer_fenced_with_writes_queued_restarts_the_worker_at_once_committing_nothing(caplog):
    # The broker aborted a transaction left open past Kafka's timeout (Triton down): its writes
    # can never be sent, and Faust's buffer stops at the first that fails. CI, 2026-12-07: the
    # commit waited the whole drain timeout for them.
    producer, unsafe = _producer(queued=3), []
    fenced_producer = _Transaction(producer.calls)
    fenced_producer._txn_manager = SimpleNamespace(is_in_transaction=lambda: False, is_fatal_error=lambda: True)
    producer._transaction_producers["fenced"] = fenced_producer
    ledger_for(producer.app).on_unsafe = lambda _cause: unsafe.append(1)

    async def scenario():
        loop = asyncio.get_running_loop()
        started = loop.time()
        await commit_transactions(producer, {"t": {"tp": 1}, "fenced": {"tp2": 4}}, "group")
        return loop.time() - started

    assert asyncio.run(scenario()) < 1.0
    assert producer.calls == [] and unsafe == [1]  # not even the healthy transaction: all is redone
    assert "outlived Kafka's transaction timeout" in caplog.text


def test_the_patched_buffer_counts_the_send_under_way():
    faust_patches.apply()
    seen = []

    class Channel:
        async def publish_message(self, fut, wait):
            seen.append(getattr(buffer, "_streamsense_sending", 0))

    buffer = ProducerBuffer.__new__(ProducerBuffer)
    fut = SimpleNamespace(message=SimpleNamespace(channel=Channel()))
    asyncio.run(ProducerBuffer._send_pending(buffer, fut))
    assert seen == [1] and buffer._streamsense_sending == 0
    empty = SimpleNamespace(size=0)
    assert asyncio.run(drain_buffer(empty, timeout_s=0.01)) is True
