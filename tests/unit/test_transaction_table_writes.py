"""Under exactly-once a commit ends the transaction only after the table writes Faust queued
for it were handed on (item 11 of streams.runtime.faust_patches)."""

import asyncio
from types import SimpleNamespace

from faust.transport.producer import ProducerBuffer

from streams.runtime import faust_patches
from streams.runtime.consumer import gate_commits
from streams.runtime.producer_patches import drain_buffer, track_buffer_sends
from streams.runtime.transactions import CommitGate


class _Buffer:
    """Faust's buffer as the drain sees it: queued messages, and the one being handed on."""

    def __init__(self, queued: int) -> None:
        self.queued = queued
        self.sent: list[int] = []

    @property
    def size(self) -> int:
        return self.queued

    async def _send_pending(self, fut) -> None:
        await asyncio.sleep(0.01)  # the broker's round trip: the message is out of the queue meanwhile
        self.sent.append(fut)

    async def run(self) -> None:  # ProducerBuffer._handle_pending
        send = track_buffer_sends(type(self)._send_pending)
        while self.queued:
            self.queued -= 1
            await send(self, len(self.sent))


def _app(buffer) -> SimpleNamespace:
    handlers = []
    consumer = SimpleNamespace(in_transaction=True, commits=[])

    async def commit(*args, **kwargs):
        consumer.commits.append(list(buffer.sent))
        return True

    consumer.commit = commit
    return SimpleNamespace(consumer=consumer, producer=SimpleNamespace(buffer=buffer), handlers=handlers,
                           on_partitions_assigned=SimpleNamespace(connect=handlers.append))


def test_a_commit_waits_for_every_queued_table_write_including_the_one_being_sent():
    buffer = _Buffer(queued=5)
    app = _app(buffer)
    gate_commits(app, CommitGate())

    async def scenario():
        await app.handlers[0](None, set())
        sending = asyncio.create_task(buffer.run())
        await asyncio.sleep(0.035)  # part of the queue sent, one on its way
        assert await app.consumer.commit() is True
        await sending

    asyncio.run(scenario())
    assert app.consumer.commits == [[0, 1, 2, 3, 4]]  # all five in the committed transaction


def test_writes_that_cannot_be_handed_on_are_not_committed_and_the_worker_restarts():
    buffer = _Buffer(queued=3)  # nothing sends them: the buffer crashed or the broker is gone
    app, unsafe = _app(buffer), []
    gate_commits(app, CommitGate(), on_unsafe=lambda: unsafe.append(1), drain_timeout_s=0.05)

    async def scenario():
        await app.handlers[0](None, set())
        return await app.consumer.commit()

    assert asyncio.run(scenario()) is False
    assert app.consumer.commits == [] and unsafe == [1]


def test_at_least_once_commits_are_left_to_faust():
    buffer = _Buffer(queued=3)
    app = _app(buffer)
    app.consumer.in_transaction = False  # Faust's own commit flushes the producer first
    gate_commits(app, CommitGate(), drain_timeout_s=0.05)

    async def scenario():
        await app.handlers[0](None, set())
        return await app.consumer.commit()

    assert asyncio.run(scenario()) is True and app.consumer.commits == [[]]


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
