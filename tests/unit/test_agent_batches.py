"""An agent batch that raises must stop the worker uncommitted, never reach Faust (which acks it)."""

import asyncio
import json
import types

import pytest
from aiokafka.errors import IllegalOperation
from faust.exceptions import ProducerSendError
from faust.types import TP

from streams.runtime import BatchRunner, SourceTransactionTopic, as_current_event
from streams.runtime.journal import CrashJournal
from streams.runtime.transactions import CommitGate, TransactionLedger


class _Exited(Exception):
    pass


def _batches(**kwargs):
    exits = []

    def exit_worker():
        exits.append(True)
        raise _Exited  # stands in for os._exit: nothing after it runs
    return BatchRunner(CommitGate(), exit_worker=exit_worker, **kwargs), exits


@pytest.mark.parametrize("error", [RuntimeError("bug"), asyncio.CancelledError()])
def test_an_escaping_error_exits_the_worker(error):
    batches, exits = _batches()

    async def process(events):
        assert batches.in_flight == 1
        raise error

    with pytest.raises(_Exited):
        asyncio.run(batches.run("reviews", process, ["e"]))
    assert exits == [True] and batches.in_flight == 0


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
    assert exits == [] and batches.in_flight == 0


def test_a_good_batch_runs_once():
    batches, exits = _batches()
    seen = []

    async def process(events):
        seen.extend(events)

    asyncio.run(batches.run("news", process, [1, 2]))
    assert seen == [1, 2] and exits == []


class _Event(types.SimpleNamespace):
    __slots__ = ("__weakref__",)  # Faust's current-event context holds a weak reference


def _event(offset, text):
    return _Event(message=types.SimpleNamespace(topic="reviews", partition=0, offset=offset,
                                                key=b"k", value=text.encode()))


class _DeadLetters:
    def __init__(self):
        self.sent = []

    async def send(self, *, key, value):
        self.sent.append(json.loads(value))


def test_a_record_that_keeps_taking_the_worker_down_is_dead_lettered_after_three_crashes(tmp_path):
    events = [_event(i, "POISON" if i == 2 else f"fine {i}") for i in range(4)]
    processed, dead = [], _DeadLetters()

    async def process(batch):
        if any(e.message.value == b"POISON" for e in batch):
            raise RuntimeError("a bug this record triggers")
        processed.extend(e.message.offset for e in batch)

    def restart():  # a new worker process: a fresh journal read from the same file
        batches, _ = _batches()
        batches.journal = CrashJournal(tmp_path / "journal.json")
        batches.deadletter = dead
        return batches

    redelivered = events
    for _ in range(4):
        batches = restart()
        try:
            asyncio.run(batches.run("reviews", process, redelivered))
            break
        except _Exited:  # nothing committed: the next worker gets the records from the failed one on
            redelivered = [e for e in events if e.message.offset not in processed]
    assert processed == [0, 1, 3]
    [letter] = dead.sent
    assert letter["offset"] == 2 and "took the worker down 3 times" in letter["error"]
    assert not CrashJournal(tmp_path / "journal.json").crashed  # all resolved


def test_a_cancelled_batch_is_not_counted_against_its_records(tmp_path):
    batches, exits = _batches()
    batches.journal = CrashJournal(tmp_path / "journal.json")

    async def process(events):
        await asyncio.sleep(10)

    async def run():
        task = asyncio.ensure_future(batches.run("reviews", process, [_event(0, "x")]))
        await asyncio.sleep(0.05)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(run())
    assert not exits and not CrashJournal(tmp_path / "journal.json").crashed


def test_the_worker_restarts_itself_in_place_with_the_same_command_and_pid(tmp_path):
    # What the stall handler does when a seek does not unstick a partition.
    import subprocess
    import sys
    marker = tmp_path / "first-pid"
    code = ("import os, sys, pathlib\n"
            "from streams.runtime.process import restart_in_place\n"
            "marker = pathlib.Path(sys.argv[1])\n"
            "if not marker.exists():\n"
            "    marker.write_text(str(os.getpid()))\n"
            "    restart_in_place()\n"
            "print(marker.read_text(), os.getpid(), sys.argv[1:])\n")
    done = subprocess.run([sys.executable, "-c", code, str(marker), "--index", "3"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    first, second, args = done.stdout.split(" ", 2)
    assert first == second and args.strip() == repr([str(marker), "--index", "3"])


class _FencedApp:
    """A Faust app whose partition transaction the broker aborted (open past Kafka's
    transaction timeout): aiokafka refuses every send into it."""

    def __init__(self):
        self.conf = types.SimpleNamespace(id="streamsense")
        self.assignor = types.SimpleNamespace(group_for_topic=lambda topic: 0)
        self.producer = self

    async def send(self, *args, transactional_id):
        raise IllegalOperation("Can't send messages while not in transaction")


class _DroppedApp(_FencedApp):
    """The other way it shows (chaos CI run, 2026-12-01): a commit found the transaction fenced
    and dropped its producer while the partition is still assigned; Faust refuses the send."""

    def __init__(self):
        super().__init__()
        self._transaction_producers = {}
        self.consumer = types.SimpleNamespace(assignment=lambda: {TP("reviews", 0)})

    async def send(self, *args, transactional_id):
        raise ProducerSendError(f"No transaction producer found for : {transactional_id}")


@pytest.mark.parametrize("fenced_app", [_FencedApp, _DroppedApp])
def test_a_batch_whose_transaction_the_broker_aborted_restarts_the_worker_without_blaming_it(tmp_path, fenced_app):
    app = fenced_app()
    topic = types.SimpleNamespace(get_topic_name=lambda: "reviews.enriched")
    output = SourceTransactionTopic(app, topic, exactly_once=True, ledger=TransactionLedger())
    restarted = []
    batches, exits = _batches(journal=CrashJournal(tmp_path / "journal.json"), restart_fenced=restarted.append)
    event = _event(7, "fine")
    event.message.tp = TP("reviews", 0)

    async def process(events):
        with as_current_event(events[0]):
            await output.send(key=b"k", value=b"{}")

    asyncio.run(batches.run("reviews", process, [event]))
    assert restarted == ["streamsense-0-0"] and not exits
    assert not CrashJournal(tmp_path / "journal.json").crashed  # the restart does not count against it
