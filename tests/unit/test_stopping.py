"""A worker told to stop stops: no stall check or in-place restart brings it back."""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from faust.types import TP

from streams.adapters.metrics import Metrics
from streams.runtime import process
from streams.runtime.stalls import StallWatch
from streams.runtime.worker import Worker

REPO = Path(__file__).resolve().parents[2]


def _watch(restarts: list, *, should_stop: bool = False) -> StallWatch:
    """A worker whose feedback partition was never read while its log has 5,952 records (what a
    worker being stopped looked like: its stop had paused every partition)."""
    feedback = TP("sentiment-feedback", 0)

    class Consumer:
        _read_offset, _committed_offset = {}, {}

        def assignment(self):
            return {feedback}

        async def highwaters(self, *partitions):
            return {feedback: 5952}

        async def earliest_offsets(self, *partitions):
            return {feedback: 0}

    app = SimpleNamespace(consumer=Consumer(), in_recovery=False, rebalancing=False, should_stop=should_stop,
                          conf=SimpleNamespace(broker_session_timeout=60.0, broker_rebalance_timeout=60.0),
                          flow_control=SimpleNamespace(is_active=lambda: False), consumer_generation_id=1)
    return StallWatch(app, inputs={"sentiment-feedback"}, batches=SimpleNamespace(in_flight=0),
                      metrics=Metrics(), exactly_once=False, restart=lambda: restarts.append(1))


def _checks(watch: StallWatch, n: int = 3) -> None:
    for _ in range(n):
        asyncio.run(watch.check())


def test_the_stall_check_restarts_a_running_worker_but_not_a_stopping_one(monkeypatch):
    monkeypatch.setattr(process, "_stop_signal", None)
    restarts = []
    _checks(_watch(restarts))
    assert restarts == [1]  # running: the partition never read is a stall, cured by a restart
    restarts.clear()
    _checks(_watch(restarts, should_stop=True))
    assert restarts == []  # Faust's stop has begun
    process.note_stop(signal.SIGTERM)
    _checks(_watch(restarts))
    assert restarts == [] and process.stopping()  # the signal came, Faust's stop not yet


def test_the_signal_is_noted_before_the_worker_stops(monkeypatch):
    monkeypatch.setattr(process, "_stop_signal", None)
    worker = Worker.__new__(Worker)
    worker._signal_stop_time, worker.stop_timeout_s = 1.0, 20.0  # a second signal: no new deadline
    worker._schedule_shutdown(signal.SIGTERM)
    assert process.stopping()


def test_a_restart_asked_for_during_a_stop_exits_instead():
    """The first run restarts in place (exec: the second run prints again); the second is told to
    stop first, so its restart exits with the signal's status instead of running a third time."""
    code = ("import os, signal\n"
            "from streams.runtime import process\n"
            "print('run', flush=True)\n"
            "if os.environ.get('TOLD_TO_STOP'):\n"
            "    process.note_stop(signal.SIGTERM)\n"
            "os.environ['TOLD_TO_STOP'] = '1'\n"
            "process.restart_in_place()\n"
            "print('not reached', flush=True)\n")
    env = {k: v for k, v in os.environ.items() if k != "TOLD_TO_STOP"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split() == ["run", "run"], done.stderr
    assert done.returncode == 128 + signal.SIGTERM
    assert "exiting instead of restarting in place" in done.stderr


def test_restarts_in_place_for_the_same_cause_end_in_an_exit_not_a_loop(tmp_path):
    """Each restart is a new process (exec), so the count lives in a file: the third restart
    for the same cause within the window exits with status 70 and says why."""
    code = ("import sys\n"
            "from pathlib import Path\n"
            "from streams.runtime import process\n"
            "print('run', flush=True)\n"
            "process.RestartLoop(Path(sys.argv[1]), limit=3).exit_if_looping('commit stuck at 50')\n"
            "process.restart_in_place()\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "restarts.json")], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["run", "run", "run"], done.stderr
    assert done.returncode == 70
    assert "restarted 3 times" in done.stderr and "commit stuck at 50" in done.stderr
