"""Faust's consumer hands each record on inline; only a hand-off that has to wait races a
rebalance, as Faust's own ``wait_first`` did for every record."""

import asyncio

import mode
import pytest

from streams.runtime.handoff import Started, make_wait_first


class _Consumer(mode.Service):
    wait_first = make_wait_first(mode.Service.wait_first)

    def __init__(self, callback):
        super().__init__()
        self.callback = callback
        self.suspend_flow = asyncio.Event()


def _run(scenario):
    return asyncio.run(scenario())


def test_a_hand_off_that_does_not_wait_runs_inline_without_a_task():
    handed = []

    async def callback(message):
        handed.append(message)
        return "put"

    async def scenario():
        consumer = _Consumer(callback)
        tasks = len(asyncio.all_tasks())
        result = await consumer.wait_first(callback("r1"), consumer.suspend_flow.wait())
        return result, len(asyncio.all_tasks()) - tasks

    result, new_tasks = _run(scenario)
    assert handed == ["r1"] and result.results == ["put"] and not result.stopped and new_tasks == 0


def test_a_hand_off_that_waits_is_continued_where_it_stopped():
    steps = []

    async def callback(message):
        steps.append("decoded")
        await asyncio.sleep(0.01)  # the producer's buffer ebbing
        steps.append("put")
        return message

    async def scenario():
        consumer = _Consumer(callback)
        return await consumer.wait_first(callback("r2"), consumer.suspend_flow.wait())

    result = _run(scenario)
    assert steps == ["decoded", "put"] and result.results == ["r2"]


def test_a_rebalance_suspending_the_flow_cancels_a_waiting_hand_off():
    seen = []

    async def callback(message):
        try:
            await asyncio.sleep(10)  # flow control off: waits for the rebalance
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def scenario():
        consumer = _Consumer(callback)
        asyncio.get_running_loop().call_later(0.02, consumer.suspend_flow.set)
        return await consumer.wait_first(callback("r3"), consumer.suspend_flow.wait())

    result = _run(scenario)
    assert seen == ["cancelled"] and result.results == [True]


def test_an_error_in_the_hand_off_reaches_the_consumer_loop():
    async def callback(message):
        raise ValueError("bad record")

    async def scenario():
        consumer = _Consumer(callback)
        await consumer.wait_first(callback("r4"), consumer.suspend_flow.wait())

    with pytest.raises(ValueError, match="bad record"):
        _run(scenario)


def test_other_waits_of_the_consumer_are_faust_s_own():
    async def callback(message):
        return message

    async def elsewhere():
        return "other"

    async def scenario():
        consumer = _Consumer(callback)
        return await consumer.wait_first(elsewhere(), consumer.suspend_flow.wait())

    assert _run(scenario).results == ["other"]


def test_a_started_coroutine_passes_results_and_exceptions_through():
    async def inner(future):
        try:
            return await future
        except KeyError:
            return "recovered"

    async def scenario():
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        coro = inner(future)
        pending = coro.send(None)
        loop.call_soon(future.set_exception, KeyError("k"))
        return await Started(coro, pending)

    assert _run(scenario) == "recovered"
