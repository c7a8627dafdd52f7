"""Leaving the process: restarting in place, exiting without committing, a stop deadline."""

from __future__ import annotations

import logging
import os
import signal
import sys

__all__ = ["exit_worker_now", "note_stop", "restart_in_place", "stop_overdue", "stopping"]

log = logging.getLogger(__name__)

_stop_signal: signal.Signals | None = None  # set on the event loop's thread, by the signal handler


def note_stop(signal_: signal.Signals) -> None:
    """The worker was told to stop (SIGTERM, SIGINT): from now on it never restarts in place."""
    global _stop_signal
    if _stop_signal is None:
        _stop_signal = signal_


def stopping() -> bool:
    """Whether the worker was told to stop."""
    return _stop_signal is not None


def restart_in_place() -> None:
    """Replace this process with a fresh run of the same command (``exec``: same PID, so pid
    files and process managers keep tracking it; sockets close, the new run binds them again).

    Once the worker was told to stop it exits instead, without committing, as when its stop
    deadline passes: a fresh run would forget the signal and the process would keep running
    (a stall check during a stop restarted a worker that then outlived its broker)."""
    if _stop_signal is not None:
        log.warning("the worker is stopping (%s): exiting instead of restarting in place; what it "
                    "did not commit is processed again after its next start", _stop_signal.name)
        _leave(128 + int(_stop_signal))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)


def exit_worker_now() -> None:
    _leave(70)  # EX_SOFTWARE; no atexit, no Faust stop: nothing is committed on the way out


def stop_overdue(signal_: signal.Signals, seconds: float) -> None:
    log.error("the worker did not stop within %.0f s of %s; exiting now", seconds, signal_.name)
    _leave(128 + int(signal_))


def _leave(status: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
