"""Leaving the process: restarting in place, exiting without committing, a stop deadline."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["RestartLoop", "exit_worker_now", "note_stop", "restart_in_place", "stop_overdue", "stopping"]

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


class RestartLoop:
    """The restarts in place of one cause, remembered across them (in a file: each restart is a
    new process). A restart that meets its cause again at once would restart forever while the
    worker looks alive; :meth:`note` counts them so that the caller can stop instead, loudly.

    >>> import tempfile; path = Path(tempfile.mkdtemp()) / "restarts.json"
    >>> now = [0.0]; loop = RestartLoop(path, within_s=600, clock=lambda: now[0])
    >>> loop.note("x"), loop.note("y"), RestartLoop(path, clock=lambda: now[0]).note("x")
    (1, 1, 2)
    >>> now[0] = 700.0; loop.note("x")  # the first two are out of the window
    1
    """

    def __init__(self, path: Path, *, limit: int = 3, within_s: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.limit = limit  # this many restarts of one cause within `within_s` make a loop
        self.within_s = within_s
        self._clock = clock

    def note(self, cause: str) -> int:
        """Record a restart for ``cause`` now; how many it had within the window, this one too."""
        now = self._clock()
        seen = {c: [t for t in times if now - t < self.within_s] for c, times in self._read().items()}
        seen = {c: times for c, times in seen.items() if times}
        seen.setdefault(cause, []).append(now)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(seen))
            os.replace(tmp, self.path)
        except OSError as exc:  # a read-only data directory: this restart is not counted
            log.warning("could not record a restart in %s (%r)", self.path, exc)
        return len(seen[cause])

    def exit_if_looping(self, cause: str | None) -> None:
        """Before a restart for ``cause`` (None: one that cannot loop): record it, and once
        ``limit`` restarts of it fall within the window, exit (status 70) with the reason."""
        if cause is None or (times := self.note(cause)) < self.limit:
            return
        log.critical("the worker restarted %d times within %.0f s for the same cause (%s) and would "
                     "restart into it forever; it exits instead (status 70). Nothing past the last "
                     "commit was committed, so nothing is lost; this is a bug: please report it with "
                     "this log", times, self.within_s, cause)
        exit_worker_now()

    def _read(self) -> dict[str, list[float]]:
        try:
            stored = json.loads(self.path.read_text())
            return {str(c): [float(t) for t in times] for c, times in stored.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError, TypeError):
            log.warning("restart record %s is unreadable; starting a new one", self.path)
            return {}
