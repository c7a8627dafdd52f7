"""The worker's life, and the only package that touches Faust's private names.

:func:`install` is the single entry point: it patches Faust (:mod:`.faust_patches`), owns
commits and transactions (:mod:`.transactions`: one gate and one ledger per app), runs the
agents' batches (:mod:`.take` takes them off Faust's streams, :mod:`.batches` runs
them, with the crash journal), watches for stalled partitions
(:mod:`.stalls`), beats the heartbeat that ``/healthz`` reads, and dumps every task's stack on
SIGUSR1. Agents get their output topics and their batch runner from the :class:`Runtime` it
returns; nothing outside this package imports a private Faust name.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

import faust

from streams.adapters.metrics import Metrics
from streams.runtime import faust_patches, producer_patches
from streams.runtime.batches import BatchRunner
from streams.runtime.consumer import gate_commits, leave_group, log_task_stacks
from streams.runtime.journal import CrashJournal
from streams.runtime.pipeline import run_pipelined
from streams.runtime.process import RestartLoop, restart_in_place
from streams.runtime.stalls import StallWatch
from streams.runtime.tables import WriteBehind, as_current_event
from streams.runtime.take import ack_batch, take_batches
from streams.runtime.transactions import (
    CommitGate,
    SourceRevoked,
    SourceTransactionTopic,
    ledger_for,
)
from streams.runtime.worker import Worker

__all__ = ["BatchRunner", "Runtime", "SourceRevoked", "SourceTransactionTopic", "Worker", "WriteBehind",
           "ack_batch", "as_current_event", "install", "run_pipelined", "take_batches"]

log = logging.getLogger(__name__)


class Runtime:
    """What the agents get from the runtime: output topics that keep exactly-once, and the
    runner their batches go through."""

    def __init__(self, app: faust.App, *, exactly_once: bool, datadir: Path, metrics: Metrics,
                 deadletter: str) -> None:
        self.app = app
        self.exactly_once = exactly_once
        self.restart = restart_in_place  # install() makes it leave the group first
        self.ledger = ledger_for(app)
        self.gate = CommitGate()
        self.deadletter = self.output(deadletter)
        self.batches = BatchRunner(self.gate, journal=CrashJournal(datadir / "crash-journal.json"),
                                   deadletter=self.deadletter, metrics=metrics, restart_fenced=self._fenced)
        self._before_commit: list[Callable[[], int]] = []

    def before_commit(self, write: Callable[[], int]) -> None:
        """Have ``write()`` run at the start of every commit: state kept in memory and written
        behind (its table writes, returning how many) goes out with the offsets it belongs to."""
        self._before_commit.append(write)

    async def write_behind(self) -> None:
        """What :meth:`before_commit` registered, then (at-least-once) until Faust's producer
        buffer has handed the writes to Kafka's client; every commit starts with it."""
        written = sum(write() for write in self._before_commit)
        # Faust's at-least-once commit flushes its producer buffer only until no message went
        # out for 0.1 s; these writes must be handed on before the offsets commit. (Under
        # exactly-once the commit waits for them: faust_patches item 11.)
        if written and not self.exactly_once and not await producer_patches.drain_buffer(
                self.app.producer.buffer):
            log.warning("%d table writes were not handed to Kafka's client within %.0f s of a commit",
                        written, producer_patches.DRAIN_TIMEOUT_S)

    def _fenced(self, transactional_id: str) -> None:
        producer_patches.fenced_for_good(self.ledger, transactional_id)  # restarts the worker

    def topic(self, name: str) -> faust.TopicT:
        """A topic of raw bytes (the agents decode and encode themselves)."""
        return self.app.topic(name, key_serializer="raw", value_serializer="raw")

    def output(self, name: str) -> SourceTransactionTopic:
        return SourceTransactionTopic(self.app, self.topic(name), exactly_once=self.exactly_once,
                                      ledger=self.ledger, on_lost=None if self.exactly_once else self.lost)

    def lost(self, topic: str, error: BaseException) -> None:
        """A record for ``topic`` was never delivered (at-least-once): restart before a commit
        passes its input, which is then processed again. (Under exactly-once its transaction
        cannot commit: the broker refuses it.)"""
        log.critical("a record for %s was not delivered (%r); the worker restarts without committing, "
                     "and processes its input again", topic, error)
        self.restart()


def install(app: faust.App, *, exactly_once: bool, datadir: Path, metrics: Metrics, deadletter: str,
            inputs: set[str], stall_check_s: float, transaction_timeout_s: float = 60.0) -> Runtime:
    """Patch Faust and register the runtime's hooks, timers and tasks on ``app``."""
    faust_patches.apply()
    faust_patches.set_transaction_timeout(app, transaction_timeout_s)
    runtime = Runtime(app, exactly_once=exactly_once, datadir=datadir, metrics=metrics, deadletter=deadletter)

    loop = RestartLoop(datadir / "restarts.json")

    def restart(cause: str | None = None) -> None:  # leave the group first: the others take over at once
        loop.exit_if_looping(cause)  # the same unsafe commit again and again: exit, loudly
        leave_group(app)
        restart_in_place()

    runtime.restart = restart
    if not exactly_once:  # Faust's own sends (table changelogs): the same as the agents' outputs
        producer_patches.report_lost_sends(app, runtime.lost)

    # Under exactly-once batches hold the gate, and every commit waits for the batches in flight.
    gate_commits(app, runtime.gate if exactly_once else None, before=runtime.write_behind)
    if exactly_once:
        runtime.ledger.on_unsafe = restart

        @app.on_partitions_revoked.connect
        async def end_uncommitted_transactions(sender, revoked, **kwargs) -> None:
            # Sent after Faust committed (and ended) the transactions of what was acknowledged:
            # one still holding outputs would be committed later with a second copy of them,
            # after the rebalance's seek reads their inputs again (faust_patches.abort_uncommitted).
            await faust_patches.abort_uncommitted(app)  # and restarts the worker if it aborted one

    @app.on_partitions_assigned.connect
    async def note_log_starts(sender, assigned, **kwargs) -> None:
        # Before the first commit of a partition the group never committed: where it starts.
        tps = [tp for tp in assigned if tp.topic in inputs]
        if tps:
            try:
                faust_patches.note_log_start(app.consumer, await app.consumer.earliest_offsets(*tps))
            except Exception as exc:
                log.warning("could not read the log start of the assigned partitions (%r); those never "
                            "committed commit nothing until the stall check reads it", exc)

    watch = StallWatch(app, inputs=inputs, batches=runtime.batches, metrics=metrics,
                       exactly_once=exactly_once, restart=restart)

    @app.timer(stall_check_s)
    async def unstall_partitions() -> None:
        await watch.check()

    @app.timer(1.0)
    async def heartbeat() -> None:
        # Read by /healthz on the metrics server's thread: it answers even when this loop is stuck.
        metrics.beat()

    @app.task
    async def dump_tasks_on_sigusr1() -> None:
        # `kill -USR1 <worker pid>` logs where every coroutine waits: for a stalled worker.
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, lambda: log_task_stacks(app))

    return runtime
