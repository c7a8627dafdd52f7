"""What the runtime needs from Faust's consumer beyond its public API: commits through the
gate, the offsets it keeps per partition, and its Kafka client's view (for diagnosis)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging

import faust

from streams.runtime.transactions import CommitGate

__all__ = ["fetch_states", "flow_states", "gate_commits", "leave_group", "log_task_stacks",
           "partition_offsets"]

log = logging.getLogger(__name__)


def gate_commits(app: faust.App, gate: CommitGate | None, before=None) -> None:
    """Every commit of the app's consumer (Faust's timer, rebalances, shutdown) goes through
    the gate (None: no gate; under exactly-once a commit ends the transaction, see
    :class:`CommitGate`), and then awaits ``before()`` (state written behind: its table writes
    must go out with the offsets they belong to) before it commits.

    The consumer is wrapped once it exists, at the first assignment (before any record is
    processed): creating it earlier, before the worker has started, makes Faust build it
    without transactions (``Consumer.in_transaction`` is read from the app at construction,
    and the app is only "in a worker" once the worker starts)."""

    @app.on_partitions_assigned.connect
    async def gate_first_consumer(sender, assigned, **kwargs) -> None:
        consumer = app.consumer
        if getattr(consumer, "_streamsense_gated", False):
            return
        commit = consumer.commit

        async def gated_commit(*args, **kwargs):
            async with gate.commit() if gate is not None else contextlib.nullcontext():
                if before is not None:
                    await before()
                return await commit(*args, **kwargs)

        consumer.commit = gated_commit
        consumer._streamsense_gated = True


def partition_offsets(consumer, partitions, ends) -> dict:
    """Per partition: (last read offset, committed offset, log end offset) as Faust keeps them."""
    return {tp: (consumer._read_offset.get(tp), consumer._committed_offset.get(tp), ends.get(tp))
            for tp in partitions}


def leave_group(app: faust.App, *, timeout_s: float = 3.0) -> None:
    """Leave the consumer group now, before this process goes (a restart in place): the group
    rebalances at once instead of waiting out this member's session (60 s), during which its
    partitions were processed by no one. Kafka's client stops its group coordination (no
    commit: Faust turns auto-commit off) and sends LeaveGroup, on the consumer's own thread.
    Best effort: blocks this thread at most ``timeout_s``; nothing is committed meanwhile."""
    closing = None
    try:
        thread = app.consumer._thread
        closing = thread._consumer._coordinator.close()
        future = asyncio.run_coroutine_threadsafe(closing, thread.thread_loop)
        closing = None  # the consumer's loop owns it now
        future.result(timeout=timeout_s)
    except Exception as exc:  # the session timeout ends the membership anyway
        if closing is not None:  # the consumer's loop is gone: never started, so close it here
            closing.close()
        log.warning("could not leave the consumer group before restarting (%r): its partitions "
                    "wait for the session timeout", exc)


def log_task_stacks(app: faust.App) -> None:
    out = io.StringIO()
    consumer = app.consumer
    for name in ("_active_partitions", "_paused_partitions", "_buffered_partitions"):
        out.write(f"consumer.{name}: {sorted(getattr(consumer, name, None) or ())}\n")
    out.write(f"in_recovery: {app.in_recovery}; flow_control active: {app.flow_control.is_active()}\n")
    out.write(f"read offsets: {dict(consumer._read_offset)}\n")
    out.write(fetch_states(consumer))
    for task in asyncio.all_tasks():
        out.write(f"--- {task.get_name()}\n")
        coro = task.get_coro()
        while coro is not None:  # follow the await chain down to where the task waits
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
            if frame is not None:
                out.write(f"    {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}\n")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
            if coro is not None and not (hasattr(coro, "cr_frame") or hasattr(coro, "ag_frame")):
                out.write(f"    awaiting {coro!r}\n"[:300])
                break
    log.warning("asyncio tasks on SIGUSR1:\n%s", out.getvalue())


def flow_states(app: faust.App, only) -> str:
    """Faust's side of a stall: whether its flow is active, which of ``only`` it treats as active
    (records of other partitions are fetched and dropped), its generation and recovery state."""
    try:
        consumer = app.consumer
        active = getattr(consumer, "_active_partitions", None)
        inactive = [f"{tp.topic}[{tp.partition}]" for tp in only if active is not None and tp not in active]
        return (f"faust: flow_active={consumer.flow_active} flow_control={app.flow_control.is_active()} "
                f"generation={app.consumer_generation_id} in_recovery={app.in_recovery} "
                f"not active: {inactive or 'none'}\n")
    except Exception as exc:  # a debugging aid: never let it fail the report
        return f"faust flow state unavailable: {exc!r}\n"


def fetch_states(consumer, only=None) -> str:
    """What Kafka's own client (in Faust's consumer thread) holds per assigned partition: paused,
    position status, position, last highwater and last stable offset seen in a fetch."""
    try:
        assignment = consumer._thread._consumer._subscription.subscription.assignment
        wanted = None if only is None else {(t.topic, t.partition) for t in only}
        lines = []
        for tp in sorted(assignment.tps):
            if wanted is not None and (tp.topic, tp.partition) not in wanted:
                continue
            state = assignment.state_value(tp)
            position = state.position if state.has_valid_position else None
            lines.append(f"  {tp.topic}[{tp.partition}]: paused={state.paused} status={state._status.name} "
                         f"position={position} highwater={state.highwater} lso={state.lso}")
        return "kafka client partition states:\n" + "\n".join(lines) + "\n"
    except Exception as exc:  # a debugging aid: never let it fail the dump
        return f"kafka client partition states unavailable: {exc!r}\n"
