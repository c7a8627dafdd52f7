"""The clicks agent's body: decode, run each partition's online model, send recommendations,
keep user state and model checkpoints in Faust tables. Logic lives in ``streams.core.clicks``
and ``models.online``; this module only moves state in and out of tables and sends.

Tables (all changelog-backed, so a restarted or rebalanced worker resumes them):

* ``click-users``: the :class:`~models.online.UserState` of each user (JSON, with the input
  partition it belongs to), keyed by user like the clicks topic, written behind: once per user
  per commit (:meth:`ClickProcessor.flush`, which the runtime calls as each commit starts), and
  deleted once idle for ``user_ttl_s`` (:mod:`streams.core.expiry`);
* ``click-models``: the checkpoints of each partition's model (chunked, see
  ``streams.core.clicks.checkpoint_chunks``), written every ``checkpoint_s`` seconds or
  ``checkpoint_events`` events of that partition, whichever comes first;
* ``item-signals`` (a global table: every worker reads all of it): each item's review
  sentiment and article entities, written by the text agents, read here as item features.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from models.online import UserState
from streams.adapters.metrics import Metrics
from streams.agents.alerts import send_alerts
from streams.agents.outputs import send_dead_letter
from streams.core.clicks import (
    PartitionModel,
    checkpoint_chunks,
    decode_click,
    recommendation,
    restore_checkpoint,
    segment_change,
)
from streams.core.eventtime import record_time_ms
from streams.core.expiry import Sweep, idle_keys
from streams.core.monitoring import MonitorConfig
from streams.core.ports import OutputTopic, Table
from streams.core.rules import InputRules
from streams.core.state import StateSeal
from streams.errors import ForgedState
from streams.records import DecodeError, encode
from streams.runtime import SourceRevoked, WriteBehind, as_current_event

__all__ = ["ClickProcessor", "ItemSignals"]

log = logging.getLogger(__name__)


class ItemSignals:
    """Read side of the item-signals table for the model: ``get(item)`` -> dict or None.

    ``batch()`` gives a view that reads each item once per batch: the model asks for the same
    candidates' signals several times per click, and a read of a Faust table goes through its
    sensors (6% of a worker's event loop on the click path before this). The text agents'
    writes land between batches, as before between records."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def get(self, item: str, default: Any = None) -> dict[str, Any] | None:
        raw = self.table.get(item)
        return _parse(raw) if raw else default

    def batch(self) -> _BatchSignals:
        return _BatchSignals(self)


class _BatchSignals:
    __slots__ = ("read", "source")

    def __init__(self, source: ItemSignals) -> None:
        self.source, self.read = source, {}

    def get(self, item: str, default: Any = None) -> dict[str, Any] | None:
        try:
            value = self.read[item]
        except KeyError:
            value = self.read[item] = self.source.get(item)
        return default if value is None else value


@lru_cache(maxsize=65536)
def _parse(raw: str) -> dict[str, Any]:
    return json.loads(raw)


@dataclass
class _Held:
    model: PartitionModel
    generation: int
    events_at_checkpoint: int
    checkpointed_at: float  # time.monotonic()


class ClickProcessor:
    def __init__(self, *, users: Table, models: Table, signals: Table, recommendations: OutputTopic,
                 alerts: OutputTopic, deadletter: OutputTopic, metrics: Metrics,
                 config: MonitorConfig, checkpoint_s: float, checkpoint_events: int, seal: StateSeal,
                 rules: InputRules = InputRules(), segments: OutputTopic | None = None,
                 user_ttl_s: float = 0.0, sweep_s: float = 0.0) -> None:
        self.users = users
        self.user_ttl_s = user_ttl_s  # 0: users are kept for good
        self.sweep = Sweep(period_s=sweep_s)
        self.newest: dict[int, float] = {}  # per partition: the newest click's event time
        self.segments = segments  # user-segments: a record when a user's segment changes
        self.models = models
        self.signals = ItemSignals(signals)
        self.recommendations = recommendations
        self.alerts = alerts
        self.deadletter = deadletter
        self.metrics = metrics
        self.config = config
        self.checkpoint_s = checkpoint_s
        self.checkpoint_events = checkpoint_events
        self.seal = seal
        self.rules = rules
        self.held: dict[int, _Held] = {}
        self.unwritten = WriteBehind(users, write=self._write_user)  # user -> state, with its last event
        self.last_event: dict[int, Any] = {}  # per partition: the context for checkpoint writes
        # Per-click series, looked up once (a labels() call per click was 4% of the click path).
        self._latency = metrics.end_to_end_seconds.labels(topic="clicks")
        self._segment_events: dict[int, Any] = {}

    def _model(self, partition: int) -> _Held:
        held = self.held.get(partition)
        if held is None:
            model, generation = None, 0
            try:
                restored = restore_checkpoint(self.models.get, partition)
                if restored is not None:
                    data, generation = restored
                    model = PartitionModel.loads(data, self.seal, context=_context(partition))
            except ForgedState as exc:
                self.metrics.state_rejected.labels(table="click-models").inc()
                log.warning("discarded the click model checkpoint of partition %d: %s; starting cold",
                            partition, exc)
            except ValueError as exc:  # not a checkpoint of this version (e.g. an old pickle): never run
                self.metrics.errors.labels(kind="checkpoint_unreadable").inc()
                log.warning("the click model checkpoint of partition %d is unreadable (%s); starting cold",
                            partition, exc)
            except Exception:
                # A checkpoint we cannot read must not stop the stream: start cold and say so.
                self.metrics.errors.labels(kind="checkpoint_unreadable").inc()
                log.exception("the click model checkpoint of partition %d is unreadable; starting cold",
                              partition)
            if model is None:
                model = PartitionModel(partition=partition, config=self.config)
            else:
                log.info("restored the click model of partition %d (%s)", partition, model.version)
            events = model.recommender.events
            held = self.held[partition] = _Held(model, generation, events, time.monotonic())
        return held

    def forget(self, partitions: set[int]) -> None:
        """Drop the models of revoked partitions, and their users' state not written (the
        revocation's commit wrote it): their next owner restores them."""
        self.unwritten.forget(lambda event: event.message.partition in partitions)
        for partition in partitions:
            self.last_event.pop(partition, None)
            if self.held.pop(partition, None) is not None:
                for gauge in (self.metrics.click_through_log_loss, self.metrics.click_through_auc,
                              self.metrics.recommendation_hit_rate, self.metrics.recommendation_mrr):
                    gauge.remove(str(partition))

    async def process(self, events: Sequence) -> None:
        """One batch of click events. Never raises: a record that fails is dead-lettered."""
        m = self.metrics
        m.events_in.labels(topic="clicks").inc(len(events))
        m.batch_size.labels(topic="clicks").observe(len(events))
        states: dict[str, tuple[UserState, Any]] = {}
        touched: dict[int, Any] = {}
        sent = 0
        signals = self.signals.batch()
        for event in events:
            msg = event.message
            now = datetime.now(UTC)
            try:  # every per-record step, decoding included: no record can fail the batch
                decoded = decode_click(msg.value, broker_ms=record_time_ms(msg.timestamp), now=now,
                                       rules=self.rules)
                if isinstance(decoded, DecodeError):
                    with as_current_event(event):  # exactly-once: the transaction of its partition
                        await self._dead_letter(msg, decoded.reason, now)
                    continue
                click, time_flags = decoded
                if click.ts > self.newest.get(msg.partition, 0.0):
                    self.newest[msg.partition] = click.ts
                for flag in time_flags:
                    m.event_time_replaced.labels(topic="clicks", flag=flag).inc()
                held = self._model(msg.partition)
                user = states.get(click.user_id, (None, None))[0] or self._load_user(click.user_id)
                states[click.user_id] = (user, event)
                before = user.segment
                step, alerts = held.model.observe(user, click, signals)
                moved = None if user.segment in (before, None) else segment_change(
                    click.user_id, click, partition=msg.partition, before=before, after=user.segment,
                    model=held.model.version, profile=held.model.recommender.segment_profile(user.segment))
            except (SourceRevoked, asyncio.CancelledError):
                raise
            except Exception as exc:
                log.exception("click %s could not be processed", msg.offset)
                with as_current_event(event):
                    await self._dead_letter(msg, f"processing failed: {exc!r}"[:1000], now)
                continue
            touched[msg.partition] = event
            self._record_step(step)
            with as_current_event(event):  # exactly-once: the transaction of its partition
                if step.items is not None:
                    out = recommendation(click.user_id, click.event_id, step.items,
                                         model=held.model.version, now=datetime.now(UTC))
                    await self.recommendations.send(key=click.user_id.encode(), value=encode(out))
                    sent += 1
                    self._latency.observe(max(0.0, time.time() - click.ts))
                await send_alerts(self.alerts, alerts, self.metrics)
                if moved is not None and self.segments is not None:
                    await self.segments.send(key=click.user_id.encode(), value=encode(moved))
                    m.events_out.labels(topic="user-segments").inc()
        m.events_out.labels(topic="recommendations").inc(sent)
        self._save_users(states, touched)
        for partition, event in touched.items():
            self.last_event[partition] = event
            self._report(partition)
            self._maybe_checkpoint(partition)

    def checkpoint_idle(self) -> None:
        """Checkpoint models whose partitions went quiet with learning not yet saved (a timer
        calls this every ``checkpoint_s``), so a stop after a burst loses nothing learned."""
        for partition in list(self.held):
            self._maybe_checkpoint(partition)

    def _save_users(self, states: dict[str, tuple[UserState, Any]], batch_events: dict[int, Any]) -> None:
        """Keep the batch's users to write at the next commit, then let go of users gone idle."""
        for user_id, (state, event) in states.items():
            self.unwritten.set(user_id, state, event=event)
        if self.user_ttl_s > 0 and batch_events:
            self._expire_users(batch_events)

    def flush(self) -> int:
        """Write each user changed since the last flush, once (with the partition it belongs
        to, under its last event: that partition's changelog); how many. A user seen in many
        batches between two commits was written after each of them."""
        return self.unwritten.flush()

    def _write_user(self, user_id: str, state: UserState, event) -> None:
        self.users[user_id] = json.dumps({**state.to_dict(), "partition": event.message.partition},
                                         separators=(",", ":"))

    def _expire_users(self, batch_events: dict[int, Any]) -> None:
        """Delete the users of this batch's partitions that are idle for ``user_ttl_s``, among
        the next keys of the sweep; each deletion goes with the batch (changelog, transaction)."""
        idle = idle_keys(self.sweep.next(self.users.keys), self._where, batch_events, self.newest,
                         self.user_ttl_s)
        for user_id, event in idle:
            with as_current_event(event):
                del self.users[user_id]
            self.unwritten.drop(user_id)
        if idle:
            self.metrics.state_expired.labels(table="click-users").inc(len(idle))

    def _where(self, user_id: str) -> tuple[Any, Any] | None:
        """A user's partition and last event time (None: absent or unreadable)."""
        unwritten = self.unwritten.pending(user_id)
        if unwritten is not None:
            return unwritten[1].message.partition, unwritten[0].last_ts
        raw = self.users.get(user_id)
        try:
            value = json.loads(raw) if raw else None
        except ValueError:
            return None
        return (value.get("partition"), value.get("last_ts")) if isinstance(value, dict) else None

    def _load_user(self, user_id: str) -> UserState:
        unwritten = self.unwritten.pending(user_id)
        if unwritten is not None:
            return unwritten[0]
        raw = self.users.get(user_id)
        return UserState.from_dict(json.loads(raw)) if raw else UserState()

    def _record_step(self, step) -> None:
        m = self.metrics
        if step.hit is not None:
            m.recommendation_evaluations.inc()
            if step.hit:
                m.recommendation_hits.inc()
        if step.items is not None and step.segment is not None:
            series = self._segment_events.get(step.segment)
            if series is None:
                series = m.user_segment_events.labels(segment=str(step.segment))
                self._segment_events[step.segment] = series
            series.inc()

    def _report(self, partition: int) -> None:
        report = self.held[partition].model.recommender.report()
        p = str(partition)
        self.metrics.click_through_log_loss.labels(partition=p).set(report["log_loss"])
        self.metrics.click_through_auc.labels(partition=p).set(report["auc"])
        self.metrics.recommendation_hit_rate.labels(partition=p).set(report["hit_rate"])
        self.metrics.recommendation_mrr.labels(partition=p).set(report["mrr"])

    def _maybe_checkpoint(self, partition: int) -> None:
        held, event = self.held[partition], self.last_event.get(partition)
        events = held.model.recommender.events
        due = (events - held.events_at_checkpoint >= self.checkpoint_events
               or time.monotonic() - held.checkpointed_at >= self.checkpoint_s)
        if not due or events == held.events_at_checkpoint or event is None:
            return
        started = time.perf_counter()
        data = held.model.dumps(self.seal, context=_context(partition))
        held.generation += 1
        with as_current_event(event):  # the changelog partition of the model's own partition
            for key, value in checkpoint_chunks(partition, held.generation, data, events=events).items():
                self.models[key] = value
        held.events_at_checkpoint, held.checkpointed_at = events, time.monotonic()
        self.metrics.model_checkpoints.inc()
        self.metrics.model_checkpoint_bytes.set(len(data))
        self.metrics.model_checkpoint_seconds.observe(time.perf_counter() - started)

    async def _dead_letter(self, msg, reason: str, now: datetime) -> None:
        await send_dead_letter(self.deadletter, msg, reason, now=now)
        self.metrics.deadlettered.labels(source_topic="clicks").inc()


def _context(partition: int) -> str:
    """What a partition's checkpoint is sealed under: it cannot be replayed into another."""
    return f"click-models/{partition}"
