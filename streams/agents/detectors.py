"""The detectors behind the text path: per-subject monitors kept in changelog-backed tables,
the stream monitors, entity mentions repartitioned by entity, and the alerts they raise."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from models.online import TextBackground, words_of
from models.sequential import text_features
from streams.adapters.metrics import Metrics
from streams.agents.alerts import send_alerts
from streams.core.clicks import item_signal_update, signal_item
from streams.core.expiry import Sweep, idle_keys
from streams.core.mentions import EntityMention, Served, observe_enriched
from streams.core.monitoring import MonitorConfig, Observation, StreamMonitor, SubjectMonitor
from streams.core.ports import OutputTopic, Table
from streams.core.state import StateSeal
from streams.core.windows import SentimentWindows, stats_records, window_label
from streams.errors import ForgedState
from streams.records import EnrichedNews, EnrichedReview, EntityMentionRecord, SentimentStats, encode
from streams.runtime import WriteBehind, as_current_event

__all__ = ["Detectors", "EnrichedText", "KeyedMonitors", "MonitorBatch", "Screening"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EnrichedText:
    """What the text path hands the detectors for one record."""

    event: Any  # the Faust event it came from: table writes and sends go to its partition
    record: EnrichedReview | EnrichedNews
    event_time: datetime  # inside the sanity window (streams.core.eventtime)
    model_text: str
    unknown_token_share: float | None  # None: the model did not say
    labeller_epoch: int = 0  # a new labeller restarts the label detectors (streams.core.monitoring)
    embedding: np.ndarray | None = None  # the text's sentence embedding, when the model served one
    coordinated: bool = False  # flagged by Detectors.screen
    # What the detectors read: the served model's own sentiment, not the adapter's (which keeps
    # learning, so its labels drift by themselves). None: the record's (an empty text).
    sentiment: dict[str, Any] | None = None


class KeyedMonitors:
    """One :class:`SubjectMonitor` per key in a Faust table (plain JSON, sealed: see
    :mod:`streams.core.plainstate` and :mod:`streams.core.state`), loaded once and written
    behind: a batch marks the monitors it changed, and :meth:`flush` writes each of them once at
    the start of the next commit (the runtime calls it: ``Runtime.before_commit``), so the table
    holds what the committed offsets say was observed. Sealing a monitor (encode, compress,
    authenticate) was most of the detectors' cost when every batch wrote each monitor it
    touched; a subject seen in many batches between two commits is now sealed once. A worker
    that dies before the commit loses the writes with the offsets: the records are processed
    again. A stored value that fails authentication is discarded, counted and logged; the key
    starts fresh. The monitors of the last ``cache_keys`` keys stored are kept decoded: while
    the table still holds what was stored, loading one decodes nothing.

    A stored value is ``{"partition": p, "last_ts": t, "state": base64(sealed)}`` (a bare
    base64 string before 2026-12-01, read as such): the partition whose changelog holds the key
    and the newest event time the subject has seen, which is what idle-key expiry reads
    (``ttl_s``, :mod:`streams.core.expiry`; 0 keeps every subject)."""

    def __init__(self, table: Table, subject_type: str, config: MonitorConfig, *, with_surge: bool,
                 metrics: Metrics, seal: StateSeal, cache_keys: int = 1_000, ttl_s: float = 0.0,
                 sweep_s: float = 0.0) -> None:
        self.table = table
        self.subject_type = subject_type
        self.config = config
        self.with_surge = with_surge
        self.metrics = metrics
        self.seal = seal
        self.table_name = f"{subject_type}-monitors"
        self.cache_keys = cache_keys
        self.ttl_s = ttl_s
        self.sweep = Sweep(period_s=sweep_s)
        self.newest: dict[int, float] = {}  # per partition: the newest event time stored
        # key -> (the table value this worker stored, the monitor it encodes), oldest first.
        self._cache: dict[str, tuple[str, SubjectMonitor]] = {}
        # Changed since the last flush: key -> (monitor, its last event time), with its event.
        self._unwritten = WriteBehind(table, write=self._write_behind)

    def load(self, key: str) -> SubjectMonitor | None:
        return self._read(key)[0]

    def _read(self, key: str) -> tuple[SubjectMonitor | None, float | None]:
        """The monitor of ``key`` (not written yet, or stored) and its last event time."""
        pending = self._unwritten.pending(key)
        if pending is not None:
            return pending[0]
        stored = self.table.get(key)
        if not stored:
            return None, None
        cached = self._cache.pop(key, None)
        if cached is not None and cached[0] == stored:
            # The monitor this worker stored last, and the table still holds exactly that: no
            # decoding. Popped, so a batch that fails before saving reads the table next time.
            return cached[1], _where(stored)[1]
        context = f"{self.table_name}/{key}"
        try:
            state, last_ts = _unwrap(stored)
            monitor = SubjectMonitor.loads(base64.b64decode(state, validate=True), self.seal, context=context)
            return monitor, last_ts
        except (ForgedState, ValueError) as exc:  # ValueError: not even JSON or base64
            self.metrics.state_rejected.labels(table=self.table_name).inc()
            log.warning("discarded the stored state of %s (table %s, key %r): %s; the detector starts "
                        "afresh", self.subject_type, self.table_name, key, exc)
            return None, None

    def store(self, key: str, monitor: SubjectMonitor, *, partition: int | None = None,
              last_ts: float | None = None) -> None:
        sealed = base64.b64encode(monitor.dumps(self.seal, context=f"{self.table_name}/{key}")).decode()
        stored = self.table[key] = json.dumps({"partition": partition, "last_ts": last_ts, "state": sealed},
                                              separators=(",", ":"))
        self._cache[key] = (stored, monitor)
        if len(self._cache) > self.cache_keys:
            del self._cache[next(iter(self._cache))]  # the least recently stored
        self._note_newest(partition, last_ts)

    def changed(self, key: str, monitor: SubjectMonitor, *, event, last_ts: float | None) -> None:
        """``monitor`` changed under ``event`` (the last record of it): written at the next
        :meth:`flush`, to the changelog partition of the event's partition."""
        self._unwritten.set(key, (monitor, last_ts), event=event)
        self._note_newest(event.message.partition, last_ts)

    def _note_newest(self, partition: int | None, last_ts: float | None) -> None:
        if partition is not None and last_ts is not None and last_ts > self.newest.get(partition, 0.0):
            self.newest[partition] = last_ts

    def flush(self) -> int:
        """Write every monitor changed since the last flush, each under its last record's event
        (exactly-once: into that partition's transaction); how many."""
        return self._unwritten.flush()

    def _write_behind(self, key: str, changed: tuple[SubjectMonitor, float | None], event) -> None:
        self.store(key, changed[0], partition=event.message.partition, last_ts=changed[1])

    def forget(self, partitions: set[int]) -> None:
        """Drop what was not written of revoked ``partitions`` (a commit wrote it before the
        revocation; whatever is left was not committed and goes to the next owner's replay)."""
        self._unwritten.forget(lambda event: event.message.partition in partitions)

    def expire(self, batch: dict[int, Any]) -> None:
        """Delete the subjects of ``batch``'s partitions (partition -> an event of it) idle for
        ``ttl_s``, among the sweep's next keys; each deletion goes with the batch."""
        if self.ttl_s <= 0 or not batch:
            return
        idle = idle_keys(self.sweep.next(self.table.keys), self._where, batch, self.newest, self.ttl_s)
        for key, event in idle:
            with as_current_event(event):
                del self.table[key]
            self._cache.pop(key, None)
            self._unwritten.drop(key)
        if idle:
            self.metrics.state_expired.labels(table=self.table_name).inc(len(idle))

    def _where(self, key: str) -> tuple[int | None, float | None]:
        if (pending := self._unwritten.pending(key)) is None:
            return _where(self.table.get(key))
        return pending[1].message.partition, pending[0][1]

    def report(self) -> None:
        """The subjects gauge (from a timer, not per batch: counting a RocksDB table's keys
        reads them all)."""
        self.metrics.monitored_subjects.labels(type=self.subject_type).set(len(self.table))

    def batch(self) -> MonitorBatch:
        return MonitorBatch(self)


_HEAD = re.compile(r'\{"partition":(-?\d+|null),"last_ts":(-?[0-9.eE+-]+|null),')


def _where(stored: str | None) -> tuple[int | None, float | None]:
    """A stored value's partition and last event time, read from its head (both None: a value
    from before they were stored, or not ours)."""
    m = _HEAD.match(stored or "")
    if m is None:
        return None, None
    partition, last_ts = m.groups()
    return (None if partition == "null" else int(partition)), (None if last_ts == "null" else float(last_ts))


def _unwrap(stored: str) -> tuple[str, float | None]:
    """The base64 sealed state of a stored value, and its last event time."""
    if not stored.startswith("{"):
        return stored, None  # stored before 2026-12-01: the base64 alone
    value = json.loads(stored)
    state = value.get("state") if isinstance(value, dict) else None
    if not isinstance(state, str):
        raise ValueError("a stored value without its state")
    last_ts = value.get("last_ts")
    return state, (float(last_ts) if isinstance(last_ts, int | float) else None)


class MonitorBatch:
    """The monitors one batch touches: each loaded once, and written back once by :meth:`save`,
    with the newest event time each has seen; then idle subjects of the batch's partitions go."""

    def __init__(self, owner: KeyedMonitors) -> None:
        self.owner = owner
        self.loaded: dict[str, SubjectMonitor] = {}
        self.last_event: dict[str, object] = {}
        self.last_ts: dict[str, float | None] = {}

    def get(self, key: str, subject_id: str, event, ts: datetime | None = None) -> SubjectMonitor:
        monitor = self.loaded.get(key)
        if monitor is None:
            o = self.owner
            monitor, self.last_ts[key] = o._read(key)
            if monitor is None:
                monitor = SubjectMonitor(o.subject_type, subject_id, o.config, with_surge=o.with_surge)
            self.loaded[key] = monitor
        self.last_event[key] = event
        if ts is not None:
            seen = self.last_ts.get(key)
            self.last_ts[key] = ts.timestamp() if seen is None else max(seen, ts.timestamp())
        return monitor

    def save(self) -> None:
        """Mark the batch's monitors changed (written at the next commit), then let idle
        subjects of the batch's partitions go."""
        partitions: dict[int, Any] = {}
        for key, monitor in self.loaded.items():
            event = self.last_event[key]
            partitions[event.message.partition] = event
            self.owner.changed(key, monitor, event=event, last_ts=self.last_ts.get(key))
        self.owner.expire(partitions)


@dataclass
class Screening:
    """What :meth:`Detectors.screen` found in a batch before its records were sent: which are
    part of a burst of near-duplicates, the alerts new bursts raised (with the event each goes
    out under), and the monitors it loaded, which :meth:`Detectors.on_enriched` goes on with."""

    batch: MonitorBatch
    flags: list[bool]
    alerts: list[tuple[Any, list]]


class Detectors:
    """Runs the detectors on enriched records and entity mentions; sends the alerts."""

    def __init__(self, *, alerts: OutputTopic, mentions: OutputTopic, metrics: Metrics,
                 subjects: dict[str, KeyedMonitors],
                 streams: dict[str, StreamMonitor], entities: KeyedMonitors, item_signals=None,
                 stats: OutputTopic | None = None, windows: tuple[tuple[int, ...], float] = ((60, 3600), 60.),
                 entity_stats: bool = True) -> None:
        self.alerts = alerts
        self.stats = stats  # sentiment.stats: each product's and source's closed windows
        self.windows = windows  # (sizes in seconds, grace period in seconds)
        self.entity_stats = entity_stats  # the entities' windows too (off under exactly-once)
        self._busiest: dict[tuple[str, str], int] = {}  # the subjects with a negative-share gauge
        self.item_signals = item_signals
        self.mentions = mentions
        self.metrics = metrics
        self.subjects = subjects
        self.streams = streams
        self.entities = entities
        # Every text's words, in this worker's memory: what a theme's words are weighed against.
        self.background = TextBackground()

    def screen(self, base: str, records: Sequence[EnrichedReview | EnrichedNews], events: Sequence,
               times: Sequence[datetime]) -> Screening:
        """Before a batch's enriched records are sent: which reviews belong to a burst of
        near-duplicate reviews from many users (``SubjectMonitor.screen``). News is not screened
        (no users). ``events`` and ``times``: each record's event and event time."""
        batch = self.subjects[base].batch()
        flags, alerts = [False] * len(records), []
        for i, (record, event, ts) in enumerate(zip(records, events, times, strict=True)):
            if not isinstance(record, EnrichedReview):
                continue
            monitor = batch.get(record.product_id, record.product_id, event, ts)
            flags[i], raised = monitor.screen(record.review_id, record.text, user=record.user_id, ts=ts)
            if raised:
                alerts.append((event, raised))
        self.metrics.coordinated.labels(topic=base).inc(sum(flags))
        return Screening(batch, flags, alerts)

    async def on_enriched(self, base: str, texts: Sequence[EnrichedText], screening: Screening | None = None
                          ) -> None:
        """``texts``: the batch's enriched records of input ``base``, in input order (after
        ``screening``, when :meth:`screen` ran for them)."""
        batch = screening.batch if screening is not None else self.subjects[base].batch()
        for event, alerts in screening.alerts if screening is not None else []:
            with as_current_event(event):
                await send_alerts(self.alerts, alerts, self.metrics)
        for text in texts:
            event, record, ts = text.event, text.record, text.event_time
            subject_id, observation, mentions = observe_enriched(record, ts, epoch=text.labeller_epoch,
                                                                 embedding=text.embedding,
                                                                 coordinated=text.coordinated,
                                                                 sentiment=text.sentiment)
            self.background.learn_one(words_of(observation.text), text.embedding, observation.label)
            features = text_features(text.model_text)
            if text.unknown_token_share is not None:
                features["unknown_token_share"] = text.unknown_token_share
            alerts = self.streams[base].observe(features, observation.label, ts, epoch=text.labeller_epoch)
            monitor = batch.get(subject_id, subject_id, event, ts)
            alerts += monitor.observe(observation, background=self.background)
            served = Served.of(text.record.sentiment.label, text.record.sentiment.probs)
            stats = self._window(monitor, observation, served)
            # Under the record's own event: table writes go to its partition's changelog and
            # sends into its partition's transaction (exactly-once).
            with as_current_event(event):
                if self.item_signals is not None:  # item features for the click model, written behind
                    item, value = item_signal_update(record, self.item_signals.get(signal_item(record)))
                    self.item_signals.set(item, value, event=event)
                for mention in mentions:
                    await self.mentions.send(key=mention.key.encode(), value=encode(mention.to_record()))
                await send_alerts(self.alerts, alerts, self.metrics)
                await self._send_stats(stats)
        batch.save()

    def _window(self, monitor: SubjectMonitor, obs: Observation, served: Served) -> list[SentimentStats]:
        """The sentiment.stats records the event time of ``obs`` (just observed by ``monitor``)
        closes. ``served``: what its enriched record says (the aggregates describe the enriched
        records downstream sees). A text the subject's themes learned from counts in its theme."""
        if self.stats is None:
            return []
        if monitor.windows is None:
            monitor.windows = SentimentWindows(sizes=self.windows[0], grace_s=self.windows[1])
        themes = monitor.themes
        learned = themes is not None and obs.embedding is not None and not obs.coordinated
        closed = monitor.windows.observe(obs.ts.timestamp(), served.label, served.polarity,
                                         themes.last_theme if learned else None)
        if themes is None:
            return stats_records(monitor.subject, closed)
        return stats_records(monitor.subject, closed,
                             theme_words=lambda t: themes.words_of_theme(t, background=self.background))

    async def _send_stats(self, stats: list[SentimentStats]) -> None:
        """Under the current event (its partition's transaction under exactly-once)."""
        for record in stats:
            key = f"{record.subject.type}:{record.subject.id}"
            await self.stats.send(key=key.encode(), value=encode(record))
        if stats:
            self.metrics.events_out.labels(topic="sentiment.stats").inc(len(stats))
            self._gauge(stats)

    def _gauge(self, stats: list[SentimentStats], *, top: int = 20) -> None:
        """Prometheus sees the negative share of the busiest subjects only (bounded cardinality):
        a subject whose last shortest window counted more texts than the quietest watched one
        takes its place."""
        shortest = window_label(min(self.windows[0]))
        for record in stats:
            if record.window.size != shortest or record.count == 0:
                continue
            key = (record.subject.type, record.subject.id)
            if key not in self._busiest and len(self._busiest) >= top:
                quietest = min(self._busiest, key=self._busiest.__getitem__)
                if self._busiest[quietest] >= record.count:
                    continue
                del self._busiest[quietest]
                self.metrics.subject_negative_share.remove(*quietest)
            self._busiest[key] = record.count
            self.metrics.subject_negative_share.labels(*key).set(record.labels["negative"] / record.count)

    async def on_mentions(self, events: Sequence) -> None:
        self.metrics.events_in.labels(topic="entity-mentions").inc(len(events))
        batch = self.entities.batch()
        for event in events:
            try:
                record = EntityMentionRecord.model_validate_json(event.message.value)
                mention = EntityMention.from_record(record)
            except Exception:  # internal topic: only our own writes; never block on one
                self.metrics.errors.labels(kind="bad_entity_mention").inc()
                log.warning("skipping an unreadable entity mention at offset %s", event.message.offset)
                continue
            monitor = batch.get(mention.key, mention.name, event, mention.observation.ts)
            o, alerts = mention.observation, []
            if mention.user is not None and not o.coordinated:
                # A campaign spread over many products, each too small to see, names one entity.
                flagged, alerts = monitor.screen(o.event_id, o.text, user=mention.user or None, ts=o.ts)
                o = dataclasses.replace(o, coordinated=flagged)
            alerts += monitor.observe(o, background=self.background)
            stats = self._window(monitor, o, mention.counted()) if self.entity_stats else []
            with as_current_event(event):
                await send_alerts(self.alerts, alerts, self.metrics)
                await self._send_stats(stats)
        batch.save()
