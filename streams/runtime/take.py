"""An agent's batches taken off its stream's queue in bulk, not a record at a time.

Faust's ``Stream.take_events`` fills its buffer from a second task that iterates the stream a
record at a time: per record a turn of the event loop (``sleep(0)``), the stream's sensors and
processors, then its own buffer's bookkeeping. On the click path that was about a tenth of a
worker's event loop (py-spy, ``make bench``). :func:`take_batches` takes the same records off
the same queue in the agent's own task, keeping what Faust does per record that the rest of
the worker relies on:

* a record taken while a rebalance has begun (flow control off) or fetched in an older
  generation is skipped, neither tracked nor acked (Faust's Cython path, which the worker ran;
  :mod:`.faust_patches` item 5 makes the consumer ignore acks of such records);
* a record taken is *tracked*: in the consumer's unacknowledged set, with the ``on_message_in``
  sensor, so a rebalance or a stop waits for it (``wait_empty``);
* each record is acked (``Stream.ack``: the consumer's ack, then ``on_message_out``) once the
  batch's body has returned: the commit covers it only then. Faust's ``take_events`` acks in a
  ``finally``, so a batch cancelled half way (a stop) was acked when its generator was closed,
  and a later commit could pass records never processed; here a batch that did not finish is
  never acked: its records are read again from the last commit.

What is left out is Faust's per-event statistics (the stream sensors' ``events_active`` and
run times, read only by Faust's own web views, which the worker does not serve). A batch is
``max_`` records, or what came within ``within`` seconds of its first record; the loop turns
once per batch, so the consumer's fetch, the producer's sends and the timers run between
batches as they ran between records.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["ack_batch", "take_batches"]


async def take_batches(stream: Any, max_: int, within: float, *,
                       ack: bool = True) -> AsyncIterator[list[Any]]:
    """Yield lists of at most ``max_`` events of ``stream`` (an agent's), acking each list's
    events when the caller asks for the next one; ``ack=False``: the caller acks each list
    itself once it is done with it (:func:`ack_batch`), as a pipeline does."""
    if stream._processors:
        raise RuntimeError("take_batches: the stream has processors, which it would not run")
    started = await stream.maybe_start()  # as iterating the stream would
    stream._finalized = True
    queue = stream.channel.queue
    take = _Taker(stream)
    loop = asyncio.get_running_loop()
    try:
        while not stream.should_stop:
            events: list[Any] = []
            take(await queue.get(), events)  # the first: as long as it takes
            deadline = loop.time() + within
            while len(events) < max_:
                if not queue.empty():
                    take(queue.get_nowait(), events)
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    take(await asyncio.wait_for(queue.get(), remaining), events)
                except TimeoutError:
                    break
            if not events:
                continue
            stream.events_total += len(events)
            yield events
            if ack:  # reached only when the caller finished the batch
                await ack_batch(stream, events)
            await asyncio.sleep(0)  # one turn of the loop per batch (the rest of the worker)
    except StopAsyncIteration:
        # Faust ends an agent's channel at a stop by throwing this into its queue; its own
        # iterator ends there, and so does this (raised on, it crashed the agent, and the stop
        # waited for the worker's stop deadline). Records taken and not yet handed on are
        # neither processed nor acked: read again after the restart.
        return
    finally:
        stream._channel_stop_iteration(stream.channel)
        if started:
            await stream.stop()
            stream.service_reset()


async def ack_batch(stream: Any, events: list[Any]) -> None:
    """Ack a batch :func:`take_batches` gave with ``ack=False``, once it was processed."""
    for event in events:
        await stream.ack(event)


class _Taker:
    """What Faust's stream iterator does to a record it hands on (``StreamIterator._prepare_event``)."""

    __slots__ = ("acking", "app", "on_message_in", "unacked")

    def __init__(self, stream: Any) -> None:
        self.app = stream.app
        self.acking = self.app.topics._acking_topics
        self.unacked = self.app.consumer._unacked_messages
        self.on_message_in = stream._on_message_in

    def __call__(self, item: Any, events: list[Any]) -> None:
        message = getattr(item, "message", None)
        if message is None:
            raise TypeError(f"take_batches: an agent's queue held {type(item).__name__}, not an event")
        app = self.app
        if not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id:
            return  # skipped: read again after the rebalance's seek
        if message.topic in self.acking and not message.tracked:
            message.tracked = True
            self.unacked.add(message)
            self.on_message_in(message.tp, message.offset, message)
        events.append(item)
