"""Leaving the process: restarting in place, exiting without committing, a stop deadline."""

from __future__ import annotations

import logging
import os
import signal
import sys

__all__ = ["exit_worker_now", "restart_in_place", "stop_overdue"]

log = logging.getLogger(__name__)


def restart_in_place() -> None:
    """Replace this process with a fresh run of the same command (``exec``: same PID, so pid
    files and process managers keep tracking it; sockets close, the new run binds them again)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)


def exit_worker_now() -> None:
    logging.shutdown()
    os._exit(70)  # EX_SOFTWARE; no atexit, no Faust stop: nothing is committed on the way out


def stop_overdue(signal_: signal.Signals, seconds: float) -> None:
    log.error("the worker did not stop within %.0f s of %s; exiting now", seconds, signal_.name)
    logging.shutdown()
    os._exit(128 + int(signal_))
