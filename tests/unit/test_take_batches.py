"""take_batches (streams/runtime/take.py): an agent's batches off its stream's queue in bulk, with
what Faust's per-record iterator did to each record (tracking, skips at a rebalance, acks)."""

import asyncio
from types import SimpleNamespace

import pytest
from mode import Service
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from streams.runtime import take_batches


class _Message:
    def __init__(self, offset, *, generation=1, topic="clicks"):
        self.topic, self.offset, self.generation_id = topic, offset, generation
        self.tp = (topic, 0)
        self.tracked = False


class _Event:
    def __init__(self, message):
        self.message = message


class _Stream(Service):
    """The parts of a Faust stream (a mode service, as Faust's is) and its app that take_batches reads."""

    def __init__(self, *, maxsize=100):
        super().__init__()
        self.flow = FlowControlEvent(initially_suspended=False)
        self.unacked = set()
        self.app = SimpleNamespace(flow_control=self.flow, consumer_generation_id=1,
                                   consumer=SimpleNamespace(_unacked_messages=self.unacked),
                                   topics=SimpleNamespace(_acking_topics={"clicks"}))
        self.channel = SimpleNamespace(queue=ThrowableQueue(maxsize, flow_control=self.flow))
        self._processors = []
        self.events_total = 0
        self.acked, self.message_in, self.iteration_stopped = [], [], False

    def put(self, *offsets, **kwargs):
        for offset in offsets:
            self.channel.queue.put_nowait(_Event(_Message(offset, **kwargs)))

    async def maybe_start(self):
        return False

    def _on_message_in(self, tp, offset, message):
        self.message_in.append(offset)

    async def ack(self, event):
        self.acked.append(event.message.offset)
        self.unacked.discard(event.message)
        return True

    def _channel_stop_iteration(self, channel):
        self.iteration_stopped = True


def _offsets(events):
    return [e.message.offset for e in events]


def test_batches_are_taken_whole_tracked_and_acked_only_when_the_next_is_asked_for():
    async def run():
        stream = _Stream()
        stream.put(*range(10))
        batches = take_batches(stream, 4, within=0.05)
        first = await anext(batches)
        assert _offsets(first) == [0, 1, 2, 3]
        assert all(e.message.tracked for e in first) and len(stream.unacked) == 4
        assert stream.message_in == [0, 1, 2, 3] and stream.acked == []  # in flight: not acked
        second = await anext(batches)
        assert stream.acked == [0, 1, 2, 3] and _offsets(second) == [4, 5, 6, 7]
        third = await anext(batches)  # what came within the wait: a short batch
        assert _offsets(third) == [8, 9] and stream.events_total == 10
        await batches.aclose()
        assert stream.iteration_stopped
    asyncio.run(run())


def test_a_short_batch_waits_up_to_within_for_more():
    async def run():
        stream = _Stream()
        stream.put(0)
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, stream.put, 1)
        started = loop.time()
        batch = await anext(take_batches(stream, 10, within=0.3))
        return _offsets(batch), loop.time() - started
    offsets, waited = asyncio.run(run())
    assert offsets == [0, 1] and 0.25 <= waited < 2


def test_records_fetched_in_an_older_generation_are_skipped_untracked():
    async def run():
        stream = _Stream()
        stream.put(0, 1, generation=0)  # fetched before the rebalance: read again after its seek
        stream.put(2)
        batches = take_batches(stream, 10, within=0.01)
        assert _offsets(await anext(batches)) == [2]
        stream.put(3)
        assert _offsets(await anext(batches)) == [3]
        return stream
    stream = asyncio.run(run())
    assert stream.message_in == [2, 3] and stream.acked == [2]


def test_records_taken_while_flow_control_is_off_are_not_handed_on():
    async def run():
        stream = _Stream()
        stream.put(0, 1)
        skipped = [e.message for e in stream.channel.queue._queue]
        stream.flow.suspend()
        batches = take_batches(stream, 10, within=0.01)
        task = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0.1)
        assert not task.done()  # both skipped; waiting for a record to hand on
        stream.flow.resume()
        stream.put(2)
        return _offsets(await task), stream, skipped
    offsets, stream, skipped = asyncio.run(run())
    assert offsets == [2] and stream.message_in == [2] and not any(m.tracked for m in skipped)


def test_a_batch_whose_body_did_not_finish_is_never_acked():
    # Faust's take_events acked in a finally: a batch cancelled half way (a stop) was acked
    # when its generator was closed, and a later commit could pass records never processed.
    async def run():
        stream = _Stream()
        stream.put(0, 1, 2)
        batches = take_batches(stream, 10, within=0.01)
        await anext(batches)
        await batches.aclose()
        return stream
    stream = asyncio.run(run())
    assert stream.acked == [] and len(stream.unacked) == 3  # read again from the last commit


def test_an_error_thrown_to_the_agents_channel_is_raised():
    async def run():
        stream = _Stream()
        stream.put(0)
        stream.channel.queue._throw(KeyError("boom"))
        with pytest.raises(KeyError):
            await anext(take_batches(stream, 10, within=0.01))
    asyncio.run(run())


def test_a_stream_with_processors_is_refused():
    async def run():
        stream = _Stream()
        stream._processors.append(lambda value: value)
        with pytest.raises(RuntimeError, match="processors"):
            await anext(take_batches(stream, 10, within=0.01))
    asyncio.run(run())


def test_the_end_of_the_channel_ends_the_batches():
    # Faust throws StopAsyncIteration into an agent's queue when it stops the channel; raised on
    # out of an async generator it became a RuntimeError that crashed the agent at every stop.
    async def run():
        stream = _Stream()
        stream.put(0)
        batches = take_batches(stream, 10, within=0.01)
        assert _offsets(await anext(batches)) == [0]
        stream.channel.queue._throw(StopAsyncIteration())
        with pytest.raises(StopAsyncIteration):
            await anext(batches)
        return stream
    stream = asyncio.run(run())
    assert stream.acked == [0] and stream.iteration_stopped
