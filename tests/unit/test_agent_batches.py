"""An agent batch that raises must stop the worker uncommitted, never reach Faust (which acks it)."""

import asyncio

import pytest

from streams.app import _Batches


class _Exited(Exception):
    pass


def _batches():
    exits = []

    def exit_worker():
        exits.append(True)
        raise _Exited  # stands in for os._exit: nothing after it runs
    return _Batches(exit_worker=exit_worker), exits


@pytest.mark.parametrize("error", [RuntimeError("bug"), asyncio.CancelledError()])
def test_an_escaping_error_exits_the_worker(error):
    batches, exits = _batches()

    async def process(events):
        assert batches.value == 1
        raise error

    with pytest.raises(_Exited):
        asyncio.run(batches.run("reviews", process, ["e"]))
    assert exits == [True] and batches.value == 0


def test_the_workers_own_cancellation_propagates_without_exit():
    batches, exits = _batches()

    async def process(events):
        await asyncio.sleep(10)

    async def run():
        task = asyncio.ensure_future(batches.run("clicks", process, ["e"]))
        await asyncio.sleep(0.05)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(run())
    assert exits == [] and batches.value == 0


def test_a_good_batch_runs_once():
    batches, exits = _batches()
    seen = []

    async def process(events):
        seen.extend(events)

    asyncio.run(batches.run("news", process, [1, 2]))
    assert seen == [1, 2] and exits == []
