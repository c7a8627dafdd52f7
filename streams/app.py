"""Composition root: Settings -> faust.App with its topics, adapters and agents.

Agents are thin: ``take_events`` a batch, call the pure core (``streams.core.text``), call
Triton through the :class:`~streams.adapters.triton_client.Inferencer`, send the outputs.

No data is lost because (1) Faust acks a ``take_events`` batch only after the loop body has
finished with it, and commits offsets only after flushing the producer (or inside the Kafka
transaction in ``exactly_once`` mode); and (2) the body never raises: Triton failures are
retried until they succeed (which also stops the stream pulling: backpressure), and a record
whose processing keeps failing is dead-lettered with the error after ``_ATTEMPTS`` tries;
(3) should anything still escape a batch, the worker exits before committing it (``_Batches``):
Faust itself would ack the batch and restart the agent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import faust

from models.sequential import text_features
from streams.adapters import faust_fixes
from streams.adapters.kafka_admin import consumer_lag
from streams.adapters.metrics import Metrics
from streams.adapters.state_key import load_or_create_key
from streams.adapters.triton_client import Inferencer, TritonInferencer
from streams.agents.alerts import send_alerts
from streams.agents.clicks import ClickProcessor
from streams.agents.journal import CrashJournal
from streams.agents.outputs import SourceRevoked, SourceTransactionTopic, send_dead_letter, transactional_id
from streams.agents.tables import as_current_event
from streams.core.clicks import item_signal_update, signal_item
from streams.core.eventtime import EventTimeWindow, record_time_ms
from streams.core.flow import CommitGate, StallDetector, cancelling
from streams.core.monitoring import (
    EntityMention,
    MonitorConfig,
    StreamMonitor,
    SubjectMonitor,
    observe_enriched,
)
from streams.core.rules import InputRules
from streams.core.state import StateSeal
from streams.core.text import Analysis, RawRecord, decode_batch, enrich
from streams.errors import ForgedState
from streams.records import encode
from streams.settings import Settings
from streams.topics import TopicNames

__all__ = ["Worker", "create_app"]

log = logging.getLogger(__name__)
_ATTEMPTS = 3


def _credentials(settings: Settings):
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    ssl_context = settings.kafka_client_kwargs().get("ssl_context")
    if settings.kafka_security_protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None
        return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                     password=settings.kafka_sasl_password.get_secret_value(),
                                     mechanism=settings.kafka_sasl_mechanism, ssl_context=ssl_context)
    return faust.SSLCredentials(ssl_context)


def create_app(settings: Settings, *, worker_index: int = 0, inferencer: Inferencer | None = None,
               metrics: Metrics | None = None) -> faust.App:
    faust_fixes.apply()
    metrics = metrics or Metrics()
    inferencer = inferencer or TritonInferencer(
        url=settings.triton_url, timeout_s=settings.triton_request_timeout_s,
        max_chunk=settings.batch_max, latency_target_s=settings.triton_latency_target_s, metrics=metrics,
        tls=settings.triton_tls())
    datadir = settings.home / "workers" / f"worker-{worker_index}"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    seal = state_seal(settings)
    rules = input_rules(settings)
    app = faust.App(
        settings.consumer_group,
        broker=[f"kafka://{s}" for s in settings.kafka_bootstrap_servers],
        broker_credentials=_credentials(settings),
        processing_guarantee=settings.processing_guarantee,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        topic_allow_declare=True,
        web_enabled=settings.web_enabled, web_host=settings.web_host, web_bind=settings.web_host,
        web_port=settings.web_port + worker_index,
        datadir=str(datadir),
        store="memory://",
        producer_acks=-1,
        # Faust's default (0) sends a produce request per record; 5 ms lets records of a batch
        # share requests (measured in `make bench`: the send path was a quarter of the loop).
        producer_linger=0.005,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=max(256, 4 * settings.batch_max),
    )
    names = TopicNames(prefix=settings.topic_prefix)

    def topic(name: str) -> faust.TopicT:
        return app.topic(name, key_serializer="raw", value_serializer="raw")

    exactly_once = settings.processing_guarantee == "exactly_once"

    def output(name: str) -> SourceTransactionTopic:
        return SourceTransactionTopic(app, topic(name), exactly_once=exactly_once)

    deadletter = output(names.deadletter)
    config = MonitorConfig(arl0=settings.detector_arl0, warmup=settings.detector_warmup,
                           cooldown_s=settings.alert_cooldown_s, surge_bucket_s=settings.surge_bucket_s)

    def monitors(subject_type: str, *, with_surge: bool = False) -> KeyedMonitors:
        # Changelog-backed: a restarted or rebalanced worker resumes every detector.
        # Keys and values are JSON strings (the value: base64 of the pickled monitor), because
        # Faust's table recovery decodes with the serializer of the key/value *type*, not a schema.
        table = app.Table(f"{settings.topic_prefix}{subject_type}-monitors", key_type=str, value_type=str,
                          partitions=settings.topic_partitions)
        return KeyedMonitors(table, subject_type, config, with_surge=with_surge, metrics=metrics, seal=seal)

    def table(name: str, *, global_: bool = False):
        # Keys and values are strings (JSON or base64) for the reason given in monitors().
        make = app.GlobalTable if global_ else app.Table
        extra = {"synchronize_all_active_partitions": True} if global_ else {}
        return make(f"{settings.topic_prefix}{name}", key_type=str, value_type=str,
                    partitions=settings.topic_partitions, **extra)

    item_signals = table("item-signals", global_=True)
    detectors = Detectors(
        alerts=output(names.alerts), mentions=output(names.entity_mentions), metrics=metrics,
        subjects={"reviews": monitors("product"), "news": monitors("source")},
        streams={"reviews": StreamMonitor("reviews", config), "news": StreamMonitor("news", config)},
        entities=monitors("entity", with_surge=True), item_signals=item_signals)
    clicks = ClickProcessor(
        users=table("click-users"), models=table("click-models"), signals=item_signals,
        recommendations=output(names.recommendations), alerts=output(names.alerts), deadletter=deadletter,
        metrics=metrics, config=config, checkpoint_s=settings.click_checkpoint_s,
        checkpoint_events=settings.click_checkpoint_events, seal=seal, rules=rules)

    # Batches hold the gate; under exactly-once every commit waits for the batches in flight.
    gate = CommitGate()
    if exactly_once:
        _commit_between_batches(app, gate)
    batches = _Batches(gate, journal=CrashJournal(datadir / "crash-journal.json"), deadletter=deadletter,
                       metrics=metrics)

    def text_agent(base: str, enriched: SourceTransactionTopic):
        async def agent(stream):
            async def process(events):
                await process_text_events(base, events, inferencer=inferencer, output=enriched,
                                          deadletter=deadletter, metrics=metrics, detectors=detectors,
                                          rules=rules)
            async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
                await batches.run(base, process, events)
        agent.__name__ = f"{base}_agent"
        return agent

    @app.agent(topic(names.entity_mentions), name="entities")
    async def entities_agent(stream):
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            await batches.run("entities", detectors.on_mentions, events)

    @app.agent(topic(names.clicks), name="clicks")
    async def clicks_agent(stream):
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            await batches.run("clicks", clicks.process, events)

    @app.timer(settings.click_checkpoint_s)
    async def checkpoint_click_models() -> None:
        clicks.checkpoint_idle()

    @app.on_partitions_assigned.connect
    async def note_log_starts(sender, assigned, **kwargs) -> None:
        # Before the first commit of a partition the group never committed: where it starts.
        tps = [tp for tp in assigned if tp.topic in inputs]
        if tps:
            with contextlib.suppress(Exception):  # the stall-check timer reads them again
                faust_fixes.note_log_start(app.consumer, await app.consumer.earliest_offsets(*tps))

    @app.on_partitions_revoked.connect
    async def forget_click_models(sender, revoked, **kwargs) -> None:
        clicks.forget({tp.partition for tp in revoked if tp.topic == names.clicks})

    if exactly_once:
        # Sent after Faust has ended (or left to be aborted) every transaction of the revoked
        # partitions: what the ledger held for them is gone with them.
        faust_fixes.LEDGER.on_unsafe = _restart_in_place

        @app.on_partitions_revoked.connect
        async def forget_open_transactions(sender, revoked, **kwargs) -> None:
            for tp in revoked:
                with contextlib.suppress(KeyError):  # a topic outside Faust's topic groups
                    faust_fixes.LEDGER.closed(transactional_id(app, tp))

    @app.timer(1.0)
    async def heartbeat() -> None:
        # Read by /healthz on the metrics server's thread: it answers even when this loop is stuck.
        metrics.beat()

    @app.task
    async def dump_tasks_on_sigusr1() -> None:
        # `kill -USR1 <worker pid>` logs where every coroutine waits: for a stalled worker.
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, lambda: _log_task_stacks(app))

    # A transaction marker follows the last record of each transaction under exactly-once.
    stalls = StallDetector(checks=2, min_gap=2 if settings.processing_guarantee == "exactly_once" else 1)
    inputs = {names.reviews, names.news, names.clicks, names.entity_mentions}

    @app.timer(settings.stall_check_s)
    async def unstall_partitions() -> None:
        consumer = app.consumer
        assigned = [tp for tp in consumer.assignment() if tp.topic in inputs]
        if not assigned:
            return
        try:
            ends = await consumer.highwaters(*assigned)
            faust_fixes.note_log_start(consumer, await consumer.earliest_offsets(*assigned))
        except Exception:
            log.debug("reading log end offsets failed", exc_info=True)
            ends = {}
        offsets = {tp: (consumer._read_offset.get(tp), consumer._committed_offset.get(tp), ends.get(tp))
                   for tp in assigned}
        # Faust pauses the inputs while it recovers tables: no progress then is not a stall.
        stalled = stalls.check(offsets, busy=batches.value > 0 or bool(getattr(app, "in_recovery", False)))
        if stalled:
            metrics.errors.labels(kind="stalled_partition").inc(len(stalled))
            # A fresh Kafka client cures it. Under exactly-once a restart is the clean cure from
            # the start: the open transaction is aborted and the tables are rebuilt from what was
            # committed, where a seek would redo records inside the open transaction. Otherwise
            # only once the seek did not help (a partition never fetched since a rebalance). No
            # batch is in flight, so nothing is lost.
            restart = bool(stalls.stuck) or exactly_once
            log.log(logging.ERROR if restart else logging.WARNING,
                    "partitions with records to process made no progress: %s (read, committed, end offsets "
                    "%s); %s\n%s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in stalled),
                    [offsets[tp] for tp in stalled],
                    "the worker restarts itself in place (same process id, new Kafka client)" if restart
                    else "seeking back to the committed offsets", _fetch_states(consumer, stalled))
            if restart:
                _restart_in_place()
            # All partitions, as Faust does after a rebalance: seeking only the stalled ones
            # left some records unprocessed in our trials.
            await consumer.perform_seek()

    @app.timer(15.0)
    async def report_consumer_lag() -> None:
        try:
            for row in await consumer_lag(settings):
                if row.group == app.conf.id and row.topic in names.all():
                    metrics.consumer_lag.labels(topic=names.base(row.topic)).set(row.lag)
        except Exception:
            metrics.errors.labels(kind="lag_probe").inc()
            log.debug("reading consumer lag failed", exc_info=True)

    app.agent(topic(names.reviews), name="reviews")(text_agent("reviews", output(names.reviews_enriched)))
    app.agent(topic(names.news), name="news")(text_agent("news", output(names.news_enriched)))
    return app


def state_seal(settings: Settings) -> StateSeal:
    """The seal for table state, with the deployment's key (created locally on first use)."""
    key, origin = load_or_create_key(
        key=settings.state_key.get_secret_value() if settings.state_key else None,
        key_file=settings.state_key_file, default_file=settings.home / "state.key")
    log.info("table state is authenticated with the key from %s", origin)
    return StateSeal(key, max_bytes=settings.max_state_bytes)


def input_rules(settings: Settings) -> InputRules:
    return InputRules(window=EventTimeWindow(behind_s=settings.event_time_behind_s,
                                             ahead_s=settings.event_time_ahead_s),
                      max_input_bytes=settings.max_input_bytes)


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
        if not self._signal_stop_time:
            deadline = threading.Timer(self.stop_timeout_s, _stop_overdue,
                                       args=(signal_, self.stop_timeout_s))
            deadline.daemon = True
            deadline.start()
        super()._schedule_shutdown(signal_)


def _stop_overdue(signal_: signal.Signals, seconds: float) -> None:
    log.error("the worker did not stop within %.0f s of %s; exiting now", seconds, signal_.name)
    logging.shutdown()
    os._exit(128 + int(signal_))


class _Batches:
    """Runs the agents' batches: counts those in progress (for the stall check), stops the
    worker when one escapes the agent's own error handling, and keeps records that took the
    worker down from doing it forever (:mod:`streams.agents.journal`).

    ``take_events`` acks a batch in its ``finally`` even when the agent body raised, and Faust
    then restarts the agent and commits: the batch would be lost. Every agent body handles its
    records' errors itself (retry, then dead-letter); anything that still escapes is a bug or
    an outage we did not foresee, and the only safe answer is to exit before anything is
    committed, so the restarted worker (or the partition's next owner) processes it again. The
    journal counts that exit against the batch's offsets; after ``max_crashes`` a record is
    dead-lettered instead of processed.
    """

    def __init__(self, gate: CommitGate, *, journal: CrashJournal | None = None, deadletter=None,
                 metrics: Metrics | None = None, max_crashes: int = 3, exit_worker=None) -> None:
        self.gate = gate
        self.journal = journal
        self.deadletter = deadletter
        self.metrics = metrics
        self.max_crashes = max_crashes
        self._exit = exit_worker or _exit_worker

    @property
    def value(self) -> int:
        return self.gate.active

    async def run(self, agent: str, process, events: Sequence) -> None:
        async with self.gate.batch():
            if self.journal is None or not self.journal.suspects(events):
                await self._journaled(agent, process, events)
                return
            log.warning("a %s batch holds records that were in flight when the worker died; processing "
                        "it one record at a time", agent)
            for event in events:
                crashes = self.journal.crashes(event)
                if crashes >= self.max_crashes:
                    await self._dead_letter(agent, event, crashes)
                    self.journal.end(agent, [event])
                else:
                    await self._journaled(agent, process, [event])

    async def _journaled(self, agent: str, process, events: Sequence) -> None:
        if self.journal is None:
            await self._run(agent, process, events)
            return
        self.journal.begin(agent, events)
        try:
            done = await self._run(agent, process, events)
        except asyncio.CancelledError:
            self.journal.abandon(agent)  # stopping or rebalancing: not the records' doing
            raise
        # Not reached when the worker exits (or dies): the journal then keeps the batch.
        if done:
            self.journal.end(agent, events)
        else:
            self.journal.abandon(agent)

    async def _run(self, agent: str, process, events: Sequence) -> bool:
        """True when the batch was processed; False when it was left to another worker."""
        try:
            await process(events)
            return True
        except SourceRevoked as exc:
            # Exactly-once: the input partition was revoked mid-batch; its open transaction is
            # aborted when the next owner takes the partition over, and that owner redoes it.
            log.info("left a %s batch to the partition's next owner: %s", agent, exc)
            return False
        except asyncio.CancelledError:
            if cancelling():
                raise  # the worker is stopping or rebalancing: Faust redelivers from the commit
            log.critical("a %s batch was cancelled from inside (not by the worker); exiting without "
                         "committing it so that it is processed again", agent, exc_info=True)
        except Exception:
            log.critical("a %s batch failed outside the per-record error handling; exiting without "
                         "committing it so that it is processed again", agent, exc_info=True)
        self._exit()
        return False

    async def _dead_letter(self, agent: str, event, crashes: int) -> None:
        msg = event.message
        log.error("dead-lettering %s[%d] offset %d: the worker died %d times while it was being processed",
                  msg.topic, msg.partition, msg.offset, crashes)
        reason = (f"processing took the worker down {crashes} times (crash, kill or exit while this "
                  "record was in flight); not processed again")
        with as_current_event(event):  # exactly-once: the transaction of its partition
            await send_dead_letter(self.deadletter, msg, reason, now=datetime.now(UTC))
        if self.metrics is not None:
            self.metrics.deadlettered.labels(source_topic=agent).inc()


def _restart_in_place() -> None:
    """Replace this process with a fresh run of the same command (``exec``: same PID, so pid
    files and process managers keep tracking it; sockets close, the new run binds them again)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)


def _exit_worker() -> None:
    logging.shutdown()
    os._exit(70)  # EX_SOFTWARE; no atexit, no Faust stop: nothing is committed on the way out


def _commit_between_batches(app: faust.App, gate: CommitGate) -> None:
    """Every commit of the app's consumer (Faust's timer, rebalances, shutdown) goes through
    the gate: under exactly-once a commit ends the transaction, see :class:`CommitGate`.

    The consumer is wrapped once it exists, at the first assignment (before any record is
    processed): creating it earlier, before the worker has started, makes Faust build it
    without transactions (``Consumer.in_transaction`` is read from the app at construction,
    and the app is only "in a worker" once the worker starts)."""

    @app.on_partitions_assigned.connect
    async def gate_commits(sender, assigned, **kwargs) -> None:
        consumer = app.consumer
        if getattr(consumer, "_streamsense_gated", False):
            return
        commit = consumer.commit

        async def gated_commit(*args, **kwargs):
            async with gate.commit():
                return await commit(*args, **kwargs)

        consumer.commit = gated_commit
        consumer._streamsense_gated = True


def _log_task_stacks(app: faust.App) -> None:
    out = io.StringIO()
    consumer = app.consumer
    for name in ("_active_partitions", "_paused_partitions", "_buffered_partitions"):
        out.write(f"consumer.{name}: {sorted(getattr(consumer, name, None) or ())}\n")
    out.write(f"in_recovery: {app.in_recovery}; flow_control active: {app.flow_control.is_active()}\n")
    out.write(f"read offsets: {dict(consumer._read_offset)}\n")
    out.write(_fetch_states(consumer))
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


def _fetch_states(consumer, only=None) -> str:
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


class KeyedMonitors:
    """One :class:`SubjectMonitor` per key in a Faust table (pickled and sealed: see
    :mod:`streams.core.state`), loaded once and written once per key per batch. A stored value
    that fails authentication is discarded, counted and logged; the key starts fresh."""

    def __init__(self, table, subject_type: str, config: MonitorConfig, *, with_surge: bool,
                 metrics: Metrics, seal: StateSeal) -> None:
        self.table = table
        self.subject_type = subject_type
        self.config = config
        self.with_surge = with_surge
        self.metrics = metrics
        self.seal = seal
        self.table_name = f"{subject_type}-monitors"

    def load(self, key: str) -> SubjectMonitor | None:
        stored = self.table.get(key)
        if not stored:
            return None
        context = f"{self.table_name}/{key}"
        try:
            return SubjectMonitor.loads(base64.b64decode(stored, validate=True), self.seal, context=context)
        except (ForgedState, ValueError) as exc:  # ValueError: not even base64
            self.metrics.state_rejected.labels(table=self.table_name).inc()
            log.warning("discarded the stored state of %s (table %s, key %r): %s; the detector starts "
                        "afresh", self.subject_type, self.table_name, key, exc)
            return None

    def store(self, key: str, monitor: SubjectMonitor) -> None:
        sealed = monitor.dumps(self.seal, context=f"{self.table_name}/{key}")
        self.table[key] = base64.b64encode(sealed).decode()

    def batch(self) -> _MonitorBatch:
        return _MonitorBatch(self)


class _MonitorBatch:
    def __init__(self, owner: KeyedMonitors) -> None:
        self.owner = owner
        self.loaded: dict[str, SubjectMonitor] = {}
        self.last_event: dict[str, object] = {}

    def get(self, key: str, subject_id: str, event) -> SubjectMonitor:
        monitor = self.loaded.get(key)
        if monitor is None:
            o = self.owner
            monitor = o.load(key) or SubjectMonitor(o.subject_type, subject_id, o.config,
                                                    with_surge=o.with_surge)
            self.loaded[key] = monitor
        self.last_event[key] = event
        return monitor

    def save(self) -> None:
        for key, monitor in self.loaded.items():
            with as_current_event(self.last_event[key]):
                self.owner.store(key, monitor)
        self.owner.metrics.monitored_subjects.labels(type=self.owner.subject_type).set(len(self.owner.table))


class Detectors:
    """Runs the detectors on enriched records and entity mentions; sends the alerts."""

    def __init__(self, *, alerts, mentions, metrics: Metrics, subjects: dict[str, KeyedMonitors],
                 streams: dict[str, StreamMonitor], entities: KeyedMonitors, item_signals=None) -> None:
        self.alerts = alerts
        self.item_signals = item_signals
        self.mentions = mentions
        self.metrics = metrics
        self.subjects = subjects
        self.streams = streams
        self.entities = entities

    async def on_enriched(self, base: str, pairs: Sequence[tuple[object, object, datetime, str, float | None]]
                          ) -> None:
        """``pairs``: (event, enriched record, event time, model text, unknown-token share) in
        input order."""
        batch = self.subjects[base].batch()
        for event, record, ts, text, unknown in pairs:
            subject_id, observation, mentions = observe_enriched(record, ts)
            features = text_features(text)
            if unknown is not None:
                features["unknown_token_share"] = unknown
            alerts = self.streams[base].observe(features, observation.label, ts)
            alerts += batch.get(subject_id, subject_id, event).observe(observation)
            # Under the record's own event: table writes go to its partition's changelog and
            # sends into its partition's transaction (exactly-once).
            with as_current_event(event):
                if self.item_signals is not None:  # item features for the click model
                    item, value = item_signal_update(record, self.item_signals.get(signal_item(record)))
                    self.item_signals[item] = value
                for mention in mentions:
                    await self.mentions.send(key=mention.key.encode(), value=mention.to_json())
                await send_alerts(self.alerts, alerts, self.metrics)
        batch.save()
        if self.item_signals is not None:
            self.metrics.item_signals.set(len(self.item_signals))

    async def on_mentions(self, events: Sequence) -> None:
        batch = self.entities.batch()
        for event in events:
            try:
                mention = EntityMention.from_json(event.message.value)
            except Exception:  # internal topic: only our own writes; never block on one
                self.metrics.errors.labels(kind="bad_entity_mention").inc()
                log.warning("skipping an unreadable entity mention at offset %s", event.message.offset)
                continue
            alerts = batch.get(mention.key, mention.name, event).observe(mention.observation)
            with as_current_event(event):
                await send_alerts(self.alerts, alerts, self.metrics)
        batch.save()


async def process_text_events(base: str, events: Sequence, *, inferencer: Inferencer, output,
                              deadletter, metrics: Metrics, detectors: Detectors | None = None,
                              rules: InputRules = InputRules()) -> None:
    """One batch of ``reviews`` or ``news`` events: decode, analyse, send. Never raises."""
    raws = [RawRecord(e.message.topic, e.message.partition, e.message.offset, e.message.key,
                      e.message.value, record_time_ms(e.message.timestamp)) for e in events]
    metrics.events_in.labels(topic=base).inc(len(raws))
    metrics.batch_size.labels(topic=base).observe(len(raws))
    kwargs = {"inferencer": inferencer, "output": output, "deadletter": deadletter, "metrics": metrics,
              "detectors": detectors, "rules": rules}
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            await _process(base, raws, events=events, **kwargs)
            return
        except SourceRevoked:
            raise
        except asyncio.CancelledError:
            if cancelling():
                raise
            metrics.errors.labels(kind="batch_failed").inc()
            log.warning("a %s batch was cancelled from inside (attempt %d/%d)", base, attempt, _ATTEMPTS,
                        exc_info=True)
        except Exception:
            # The batch must not crash the agent: Faust would ack it anyway (data loss).
            metrics.errors.labels(kind="batch_failed").inc()
            log.exception("processing a %s batch failed (attempt %d/%d)", base, attempt, _ATTEMPTS)
    # The batch keeps failing: process records one at a time so only the culprits are dead-lettered.
    for raw, event in zip(raws, events, strict=True):
        try:
            await _process(base, [raw], events=[event], **kwargs)
        except (asyncio.CancelledError, SourceRevoked):
            raise
        except Exception as exc:
            with as_current_event(event):
                await send_dead_letter(deadletter, event.message, f"processing failed: {exc!r}"[:1000],
                                       now=datetime.now(UTC))
            metrics.deadlettered.labels(source_topic=base).inc()


async def _process(base: str, raws: list[RawRecord], *, inferencer: Inferencer, output, deadletter,
                   metrics: Metrics, detectors: Detectors | None, events: Sequence,
                   rules: InputRules) -> None:
    now = datetime.now(UTC)
    batch = decode_batch(base, raws, now=now, window=rules.window, max_bytes=rules.max_input_bytes)
    texts = [item.model_text for item in batch.items if item.model_text]
    results = iter(await inferencer.analyse(texts))
    analyses: list[Analysis | None] = [next(results) if item.model_text else None for item in batch.items]
    now = datetime.now(UTC)
    event_of = {(e.message.partition, e.message.offset): e for e in events}
    observed, sent = [], 0
    for item, enriched, analysis in zip(batch.items, enrich(batch.items, analyses, now=now), analyses,
                                        strict=True):
        event = event_of[item.raw.partition, item.raw.offset]
        value = encode(enriched)
        with as_current_event(event):  # exactly-once: into the transaction of its input partition
            if len(value) > rules.max_output_bytes:
                await send_dead_letter(deadletter, event.message, (
                    f"the enriched record would be {len(value)} bytes, over the output limit of "
                    f"{rules.max_output_bytes} bytes (Kafka's producer limit)"), now=now)
                metrics.deadlettered.labels(source_topic=base).inc()
                continue
            await output.send(key=item.raw.key, value=value)
        sent += 1
        for flag in item.time_flags:
            metrics.event_time_replaced.labels(topic=base, flag=flag).inc()
        metrics.sentiment.labels(topic=base, label=enriched.sentiment.label).inc()
        event_time = item.event_time or now
        metrics.end_to_end_seconds.labels(topic=base).observe(max(0.0, (now - event_time).total_seconds()))
        observed.append((event, enriched, event_time, item.model_text,
                         analysis.unknown_token_share if analysis else None))
    metrics.events_out.labels(topic=f"{base}.enriched").inc(sent)
    if detectors is not None and observed:
        try:
            await detectors.on_enriched(base, observed)
        except (asyncio.CancelledError, SourceRevoked):
            raise
        except Exception:
            # Detection is downstream of enrichment: its failure must not dead-letter good records.
            metrics.errors.labels(kind="detector_failed").inc()
            log.exception("detectors failed on a %s batch; enriched records were sent", base)
    for record in batch.dead:
        with as_current_event(event_of[record.partition, record.offset]):
            await deadletter.send(key=None, value=encode(record))
    metrics.deadlettered.labels(source_topic=base).inc(len(batch.dead))
