"""Partitions with records to process that make no progress, found and cured."""

from __future__ import annotations

import logging
import time

from streams.adapters.metrics import Metrics
from streams.runtime import faust_patches, fetched
from streams.runtime.consumer import fetch_states, flow_states, partition_offsets
from streams.runtime.process import restart_in_place, stopping

__all__ = ["StallDetector", "StallWatch"]

log = logging.getLogger(__name__)


class StallDetector:
    """Finds partitions that have records to process but make no progress. Two kinds seen with
    faust-streaming on our stack:

    * records read but never processed: records in flight when a rebalance or table recovery
      suspended the flow are dropped while the read offset stays advanced, so they are neither
      processed nor committed until the worker restarts (a worker restarted while its input grew
      stopped at offset 292 of 480 of one partition): read offset > committed offset;
    * records never read: a partition assigned after a restart on a broker holding older state
      was never fetched (read offset == committed offset, the log end beyond both);
    * a hole: records dropped unprocessed while later ones are processed. Faust commits a
      partition only up to the first hole in what was acknowledged, so its committed offset
      stands still while the read offset moves on (``commit_checks`` checks in a row).

    A partition is stalled when, at ``checks`` consecutive checks with no batch in progress, it
    is behind in either way and neither its read nor its committed offset has moved. The log
    end may move meanwhile (producers go on writing). ``min_gap``: how far the log end must be
    beyond the read position; 2 under exactly-once, where a transaction marker follows the last
    record of each transaction and is never delivered, unless Kafka's client says it read past
    them (``empty``): a partition read 2 markers short of its end restarted a worker for
    nothing, and that restart's rebalance left another stalled (chaos, CI of 798f5a7). The cure
    is a restart of the worker (:class:`StallWatch`).

    Offsets as Faust keeps them: ``read`` and ``committed`` are offsets of the last record read
    and processed (None before the first), ``end`` the offset the next record will get.

    >>> d = StallDetector(checks=2)
    >>> d.check({"p3": (479, 291, 480)}, busy=False), d.check({"p3": (479, 291, 495)}, busy=False)
    ([], ['p3'])
    >>> d.check({"p3": (479, 291, 480)}, busy=True), d.check({"p3": (479, 300, 480)}, busy=False)
    ([], [])
    >>> d.check({"p1": (None, None, 40)}, busy=False), d.check({"p1": (None, None, 41)}, busy=False)
    ([], ['p1'])
    >>> d.check({"p1": (None, None, 41)}, busy=False), d.check({"p1": (None, None, 42)}, busy=False)
    ([], ['p1'])
    >>> d.check({"p2": (99, 99, 100)}, busy=False), d.check({"p2": (99, 99, 100)}, busy=False)
    ([], [])
    >>> x = StallDetector(checks=2, min_gap=2)  # exactly-once: read 1078, then two markers, all committed
    >>> x.check({"p5": (1078, 1081, 1081)}, busy=False), x.check({"p5": (1078, 1081, 1081)}, busy=False)
    ([], [])
    >>> tail = {"p6": (1807, 1809)}  # read 1806, committed 1807; the client read 1807-1808: markers
    >>> [x.check({"p6": (1806, 1807, 1809)}, busy=False, empty=e) for e in (tail, tail, {}, {})]
    [[], [], [], ['p6']]
    >>> [d.check({"p4": (read, 200, read + 10)}, busy=read == 350) for read in (300, 350, 400, 450, 500)]
    [[], [], [], ['p4'], []]
    """

    def __init__(self, *, checks: int = 2, min_gap: int = 1, commit_checks: int = 3) -> None:
        self.checks = checks
        self.min_gap = min_gap
        self.commit_checks = commit_checks
        self._commits: dict[object, tuple[int | None, int | None, int]] = {}  # committed, read, count
        self._seen: dict[object, tuple[tuple[int | None, int | None], int]] = {}

    def _behind(self, read: int | None, committed: int | None, end: int | None,
                empty: tuple[int, int] | None) -> bool:
        if read is not None and (committed is None or read > committed):
            return True
        # Faust's committed offset is the next one to read: a commit that passed the markers
        # after the last record read reaches the end before the read offset does.
        position = max((read if read is not None else -1) + 1, committed or 0)
        if empty is not None and empty[0] <= position:  # Kafka's client read on and found none
            position = max(position, empty[1])
        return end is not None and end - position >= self.min_gap

    def check(self, offsets: dict, *, busy: bool, empty: dict | None = None) -> list:
        """``offsets``: partition -> (read offset, committed offset, log end offset or None);
        ``empty``: partition -> offsets [begin, end) that Kafka's client read last and found
        no record at (:func:`streams.runtime.fetched.empty_tail`). Returns the stalled ones."""
        stalled = []
        for tp, (read, committed, end) in offsets.items():
            if not busy and self._hole(tp, read, committed):
                stalled.append(tp)
                continue
            if busy or not self._behind(read, committed, end, (empty or {}).get(tp)):
                self._seen.pop(tp, None)
                continue
            state = (read, committed)
            previous, count = self._seen.get(tp, (None, 0))
            count = count + 1 if previous == state else 1
            self._seen[tp] = (state, count)
            if count >= self.checks:
                stalled.append(tp)
                self._seen.pop(tp, None)
        for tp in set(self._seen) - set(offsets):
            del self._seen[tp]
        for tp in set(self._commits) - set(offsets):
            del self._commits[tp]
        return stalled

    def _hole(self, tp, read: int | None, committed: int | None) -> bool:
        """The committed offset stood still for ``commit_checks`` checks while reads went on.
        Checks during a batch neither count nor reset: a batch waiting on Triton holds commits
        back while the consumer reads ahead, and that is not a hole."""
        if read is None or (committed is not None and read <= committed):
            self._commits.pop(tp, None)
            return False
        last_committed, last_read, count = self._commits.get(tp, (None, None, 0))
        if last_committed != committed or last_read is None:
            count = 1
        elif read != last_read:
            count += 1
        self._commits[tp] = (committed, read, count)
        if count >= self.commit_checks:
            del self._commits[tp]
            return True
        return False


class StallWatch:
    """What the worker does every ``stall_check_s``: find stalled input partitions
    (:class:`StallDetector`) and cure them by restarting the worker in place: a fresh Kafka
    client reads them again from the committed offsets. No batch is in flight then, so nothing
    is lost; under exactly-once the open transaction is aborted and the tables are rebuilt from
    what was committed. It never seeks back instead: Faust's fetcher may still be handing on
    records of an earlier fetch, which Faust then takes for a jump over the re-read records and
    commits past them (15 records lost in a chaos run), and under exactly-once a seek would redo
    records inside the open transaction. Once the worker is stopping it checks nothing: the stop
    pauses every partition, and a restart then would outlive the stop (a worker told to stop
    while its feedback topic was behind came back as a fresh run and kept running).
    """

    def __init__(self, app, *, inputs: set[str], batches, metrics: Metrics, exactly_once: bool,
                 restart=restart_in_place, clock=time.monotonic) -> None:
        self.app = app
        self.inputs = inputs
        self.batches = batches
        self.metrics = metrics
        self.exactly_once = exactly_once
        self.restart = restart
        self.clock = clock
        # A rebalance may wait out the session of a member that vanished, then the joins.
        self.rebalance_grace_s = app.conf.broker_session_timeout + app.conf.broker_rebalance_timeout
        self._rebalancing_since: float | None = None
        # A transaction marker follows the last record of each transaction under exactly-once.
        self.detector = StallDetector(checks=2, min_gap=2 if exactly_once else 1)

    async def check(self) -> None:
        if self._stopping():
            return  # a stop pauses every partition on purpose: not a stall
        consumer = self.app.consumer
        assigned = [tp for tp in consumer.assignment() if tp.topic in self.inputs]
        if not assigned:
            return
        try:
            ends = await consumer.highwaters(*assigned)
            faust_patches.note_log_start(consumer, await consumer.earliest_offsets(*assigned))
        except Exception:
            log.debug("reading log end offsets failed", exc_info=True)
            ends = {}
        offsets = partition_offsets(consumer, assigned, ends)
        # Faust pauses the inputs while it recovers tables: no progress then is not a stall.
        busy = (self.batches.in_flight > 0 or bool(getattr(self.app, "in_recovery", False))
                or self._rebalancing())
        empty = {tp: fetched.empty_tail(tp) for tp in assigned}
        stalled = self.detector.check(offsets, busy=busy, empty=empty)
        if not stalled or self._stopping():  # the stop may have begun while offsets were read
            return
        self.metrics.errors.labels(kind="stalled_partition").inc(len(stalled))
        log.error("partitions with records to process made no progress: %s (read, committed, end offsets "
                  "%s); the worker restarts itself in place (same process id, new Kafka client)\n%s%s",
                  ", ".join(f"{tp.topic}[{tp.partition}]" for tp in stalled), [offsets[tp] for tp in stalled],
                  fetch_states(consumer, stalled), flow_states(self.app, stalled))
        self.restart()

    def _stopping(self) -> bool:
        return stopping() or bool(getattr(self.app, "should_stop", False))

    def _rebalancing(self) -> bool:
        """Whether a rebalance is under way, for at most ``rebalance_grace_s``. Between the
        revocation and the next assignment Faust's flow is stopped while the Kafka client still
        lists the old partitions: a worker waiting there for its group (a member restarted
        without leaving, its session not yet expired) was taken for stalled and restarted, which
        held the group up again (CI of 798f5a7: three restarts, 319 records of one partition
        left unprocessed). Past the grace, a rebalance that never ended is checked as usual."""
        if not getattr(self.app, "rebalancing", False):
            self._rebalancing_since = None
            return False
        now = self.clock()
        if self._rebalancing_since is None:
            self._rebalancing_since = now
        return now - self._rebalancing_since < self.rebalance_grace_s
