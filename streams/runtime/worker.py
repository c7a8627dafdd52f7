"""The worker process: Faust's worker with a deadline on stopping."""

from __future__ import annotations

import signal
import threading

import faust

from streams.runtime.process import note_stop, stop_overdue

__all__ = ["Worker"]


class Worker(faust.Worker):
    """Faust's worker with a deadline on stopping. Its stop can hang for up to the group's
    rebalance timeout (60 s) when the Kafka client is blocked in a group join, waiting for a
    killed member's session to expire; process managers then escalate to SIGKILL anyway.
    ``stop_timeout_s`` after SIGTERM or SIGINT the process exits: what was not committed is
    processed again (at-least-once) or its transaction aborted (exactly-once), as after a kill."""

    def __init__(self, *args, stop_timeout_s: float = 20.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stop_timeout_s = stop_timeout_s

    def _schedule_shutdown(self, signal_: signal.Signals) -> None:
        note_stop(signal_)  # no restart in place from here on (streams.runtime.process)
        if not self._signal_stop_time:
            deadline = threading.Timer(self.stop_timeout_s, stop_overdue,
                                       args=(signal_, self.stop_timeout_s))
            deadline.daemon = True
            deadline.start()
        super()._schedule_shutdown(signal_)
