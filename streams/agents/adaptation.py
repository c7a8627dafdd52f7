"""The sentiment adapter in the worker: serve it (every worker), learn it (one worker).

Logic lives in :mod:`models.online.sentiment` and :mod:`streams.core.adaptation`; this module
only moves rows and state in and out of Kafka:

* the text path serves :meth:`SentimentAdaptation.current`'s labels
  (:func:`~streams.core.adaptation.adapted_sentiment`: the adapted label while the adapter beats
  the base model with confidence, else the base label) and calls
  :meth:`SentimentAdaptation.send_feedback` for each rated review;
* the ``sentiment-feedback`` agent calls :meth:`SentimentAdaptation.learn`: every row scores,
  then trains, the adapter, which is stored sealed in the global ``sentiment-adapter`` table at
  most every ``checkpoint_s`` seconds (and when what is served changes) for every worker to read.

Feedback rows all carry one key, so they land in one partition and one worker learns from all of
them, in log order. Learning since the last stored state is lost if that worker dies (its rows'
offsets may be committed); the next owner continues from the stored state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from models.online.sentiment import SentimentAdapter
from streams.adapters.metrics import Metrics
from streams.agents.outputs import send_dead_letter
from streams.core.adaptation import (
    ADAPTER_KEY,
    RatingScale,
    decode_embedding,
    decode_feedback,
    dump_adapter,
    feedback_row,
    load_adapter,
)
from streams.core.ports import OutputTopic, Table
from streams.core.state import StateSeal
from streams.errors import ForgedState
from streams.records import DecodeError
from streams.runtime import as_current_event

__all__ = ["FEEDBACK_KEY", "SentimentAdaptation"]

log = logging.getLogger(__name__)
FEEDBACK_KEY = b"sentiment-feedback"  # one key: every row in one partition, learned in order
_CONTEXT = "sentiment-adapter/" + ADAPTER_KEY


class SentimentAdaptation:
    def __init__(self, *, table: Table, feedback: OutputTopic, deadletter: OutputTopic, metrics: Metrics,
                 seal: StateSeal, scale: RatingScale = RatingScale(),
                 template: SentimentAdapter | None = None, checkpoint_s: float = 5.0) -> None:
        self.table = table
        self.feedback = feedback
        self.deadletter = deadletter
        self.metrics = metrics
        self.seal = seal
        self.scale = scale
        self.template = template or SentimentAdapter()
        self.checkpoint_s = checkpoint_s
        self._served: tuple[str | None, SentimentAdapter | None] = (None, None)  # (stored, decoded)
        self._learner: SentimentAdapter | None = None
        self._written: str | None = None  # what this worker stored last
        self._stored_at = 0.0
        self._dirty = False
        self._last_event: Any = None

    def current(self) -> SentimentAdapter | None:
        """The stored adapter (decoded once per change), or None before there is one."""
        stored = self.table.get(ADAPTER_KEY)
        if stored is None or stored == self._served[0]:
            return self._served[1]
        adapter = self._load(stored)
        self._served = (stored, adapter)
        if adapter is not None:
            self._report(adapter)
        return adapter

    async def send_feedback(self, review_id: str, rating: float | None, base_probs: dict[str, float],
                            embedding: np.ndarray | None) -> bool:
        """Send the review's feedback row when it has a rating (call inside its event's context)."""
        row = feedback_row(review_id, rating, base_probs, embedding, self.scale)
        if row is None:
            return False
        await self.feedback.send(key=FEEDBACK_KEY, value=row.model_dump_json().encode("utf-8"))
        self.metrics.feedback_rows.inc()
        return True

    async def learn(self, events: Sequence) -> None:
        """One batch of ``sentiment-feedback`` rows: score and learn each, then store if due."""
        adapter = self._learning_adapter()
        now = datetime.now(UTC)
        before = adapter.serving
        for event in events:
            row = decode_feedback(event.message.value)
            if isinstance(row, DecodeError):
                with as_current_event(event):
                    await send_dead_letter(self.deadletter, event.message, row.reason, now=now)
                self.metrics.deadlettered.labels(source_topic="sentiment-feedback").inc()
                continue
            adapter.observe(decode_embedding(row.embedding), np.array(row.base_probs), row.label)
            self._dirty = True
        if events:
            self._last_event = events[-1]
        self._report(adapter)
        if adapter.serving != before:
            log.info("sentiment adapter: now serving the %s label (%s)", adapter.serving, adapter.report())
        self.store(force=adapter.serving != before)

    def store(self, *, force: bool = False) -> None:
        """Write the learner's adapter to the table if it learned since the last write and
        ``checkpoint_s`` passed (or ``force``); a timer also calls this, so nothing learned
        waits long after the stream goes quiet."""
        if self._learner is None or not self._dirty or self._last_event is None:
            return
        if not force and time.monotonic() - self._stored_at < self.checkpoint_s:
            return
        stored = dump_adapter(self._learner, self.seal, context=_CONTEXT)
        with as_current_event(self._last_event):  # the changelog write joins the row's transaction
            self.table[ADAPTER_KEY] = stored
        self._written, self._stored_at, self._dirty = stored, time.monotonic(), False

    def forget(self) -> None:
        """The feedback partition was revoked: its next owner continues from the stored state
        (what this worker learned since its last store is lost, as documented)."""
        self._learner, self._last_event, self._dirty = None, None, False

    def _learning_adapter(self) -> SentimentAdapter:
        stored = self.table.get(ADAPTER_KEY)
        if self._learner is None or (stored is not None and stored != self._written):
            # First batch here, or another worker learned since (the partition moved): continue
            # from what is stored.
            loaded = self._load(stored) if stored is not None else None
            self._learner = loaded or self.template.clone()
            self._written = stored
        return self._learner

    def _load(self, stored: str) -> SentimentAdapter | None:
        try:
            return load_adapter(stored, self.seal, self.template, context=_CONTEXT)
        except (ForgedState, ValueError, KeyError, TypeError) as exc:
            self.metrics.state_rejected.labels(table="sentiment-adapter").inc()
            log.warning("discarded the stored sentiment adapter: %s; serving the base model", exc)
            return None

    def _report(self, adapter: SentimentAdapter) -> None:
        report = adapter.report()
        self.metrics.adapter_serving.set(1.0 if report["serving"] == "adapted" else 0.0)
        self.metrics.adapter_learned.set(report["learned"])
        for labeller in ("base", "adapted", "served"):
            value = report[f"{labeller}_accuracy"]
            if value is not None:
                self.metrics.rated_accuracy.labels(labeller=labeller).set(value)
