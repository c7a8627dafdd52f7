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

Each row names the model version that answered (``model``). When the served version changes
(``streamsense model load``, the background learner), the first row of the new version starts a
fresh adapter, and category adapters with it (:func:`models.online.sentiment.following`): weights
learned on one encoder's embeddings mean nothing on another's. Until then, texts of the new
version are served its own label (an adapter is applied only to its own model's outputs).

Feedback rows all carry one key, so they land in one partition and one worker learns from all of
them, in log order. Learning since the last stored state is lost if that worker dies (its rows'
offsets may be committed); the next owner continues from the stored state.

A rated review with a ``category`` also trains that category's adapter, on top of the
deployment's (:mod:`streams.core.adaptation`). The table holds at most ``max_categories`` of them,
and their names under ``CATEGORIES_KEY`` (with the rated review each last learned from, so the
next owner of the feedback partition knows them too). When it is full, a new category gets an
adapter only in place of one that has had no rating for ``10 * max_categories`` rated reviews
(deleted from the table); otherwise its reviews are served by the deployment's adapter. So
categories that keep coming keep their adapters, however many others pass by.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from models.online.sentiment import SentimentAdapter, following
from streams.adapters.metrics import Metrics
from streams.agents.outputs import send_dead_letter
from streams.core.adaptation import (
    ADAPTER_KEY,
    CATEGORIES_KEY,
    RatingScale,
    category_key,
    decode_embedding,
    decode_feedback,
    dump_adapter,
    dump_categories,
    feedback_row,
    load_adapter,
    load_categories,
)
from streams.core.ports import OutputTopic, Table
from streams.core.state import StateSeal
from streams.errors import ForgedState
from streams.records import DecodeError
from streams.runtime import as_current_event

__all__ = ["FEEDBACK_KEY", "SentimentAdaptation"]

log = logging.getLogger(__name__)
FEEDBACK_KEY = b"sentiment-feedback"  # one key: every row in one partition, learned in order


def _context(key: str) -> str:
    """What a stored value is sealed to: the table and its key."""
    return "sentiment-adapter/" + key


class SentimentAdaptation:
    def __init__(self, *, table: Table, feedback: OutputTopic, deadletter: OutputTopic, metrics: Metrics,
                 seal: StateSeal, scale: RatingScale = RatingScale(),
                 template: SentimentAdapter | None = None, checkpoint_s: float = 5.0,
                 per_category: bool = True, max_categories: int = 100) -> None:
        self.table = table
        self.feedback = feedback
        self.deadletter = deadletter
        self.metrics = metrics
        self.seal = seal
        self.scale = scale
        self.template = template or SentimentAdapter()
        self.checkpoint_s = checkpoint_s
        self.per_category = per_category
        self.max_categories = max_categories
        self._served: dict[str, tuple[str, SentimentAdapter | None]] = {}  # key: (stored, decoded)
        self._learners: dict[str, SentimentAdapter] = {}  # key: the adapter this worker learns
        # Category: the rated review (counted over the deployment) it last learned from, least
        # recently rated first; None until read from the table.
        self._categories: OrderedDict[str, int] | None = None
        self._written: dict[str, str | None] = {}  # key: what this worker stored (or loaded) last
        self._dirty: set[str] = set()
        self._stored_at = 0.0
        self._last_event: Any = None

    def current(self) -> SentimentAdapter | None:
        """The deployment's stored adapter (decoded once per change), or None before there is one."""
        return self._stored(ADAPTER_KEY, report=True)

    def for_category(self, category: str | None) -> SentimentAdapter | None:
        """The stored adapter of a category, or None (no category, none learned, or turned off)."""
        if not category or not self.per_category:
            return None
        return self._stored(category_key(category))

    def _stored(self, key: str, *, report: bool = False) -> SentimentAdapter | None:
        stored, cached = self.table.get(key), self._served.get(key)
        if stored is None:  # none yet, or deleted (a category that made room for another)
            self._served.pop(key, None)
            return None
        if cached is not None and stored == cached[0]:
            return cached[1]
        adapter = self._load(stored, key)
        self._served.pop(key, None)
        self._served[key] = (stored, adapter)
        if len(self._served) > self.max_categories + 1:  # bounded: drop the longest unchanged one
            oldest = next(k for k in self._served if k != ADAPTER_KEY)
            del self._served[oldest]
        if report and adapter is not None:
            self._report(adapter)
        return adapter

    async def send_feedback(self, review_id: str, rating: float | None, base_probs: dict[str, float],
                            embedding: np.ndarray | None, *, category: str | None = None,
                            model: str | None = None) -> bool:
        """Send the review's feedback row when it has a rating (call inside its event's context);
        ``model``: the model version that gave ``base_probs`` and ``embedding``."""
        row = feedback_row(review_id, rating, base_probs, embedding, self.scale,
                           category=category if self.per_category else None, model=model)
        if row is None:
            return False
        await self.feedback.send(key=FEEDBACK_KEY, value=row.model_dump_json().encode("utf-8"))
        self.metrics.feedback_rows.inc()
        return True

    async def learn(self, events: Sequence) -> None:
        """One batch of ``sentiment-feedback`` rows: score and learn each, then store if due."""
        adapter = self._learning(ADAPTER_KEY)
        now = datetime.now(UTC)
        before, changed = adapter.serving, False
        for event in events:
            row = decode_feedback(event.message.value)
            if isinstance(row, DecodeError):
                with as_current_event(event):
                    await send_dead_letter(self.deadletter, event.message, row.reason, now=now)
                self.metrics.deadlettered.labels(source_topic="sentiment-feedback").inc()
                continue
            if (fresh := following(adapter, row.model)) is not adapter:
                log.info("sentiment adapter: the served model changed from %s to %s; a fresh adapter "
                         "learns the new one's outputs (%s)", adapter.model, row.model, adapter.report())
                adapter = self._learners[ADAPTER_KEY] = fresh
                changed = True
                self.metrics.adapter_restarts.inc()
            embedding, base = decode_embedding(row.embedding), np.array(row.base_probs)
            fallback, _ = adapter.serve(embedding, base)  # what is served without a category's adapter
            adapter.observe(embedding, base, row.label)
            self._dirty.add(ADAPTER_KEY)
            if row.category is not None and self.per_category:
                self._learn_category(row.category, embedding, fallback, row.label, event, row.model)
        if events:
            self._last_event = events[-1]
        self._report(adapter)
        if adapter.serving != before:
            log.info("sentiment adapter: now serving the %s label (%s)", adapter.serving, adapter.report())
        self.store(force=changed or adapter.serving != before)

    def _learn_category(self, category: str, embedding: np.ndarray, fallback: np.ndarray, label: int,
                        event, model: str | None) -> None:
        order, now = self._category_order(), self._learners[ADAPTER_KEY].learned
        if category not in order and len(order) >= self.max_categories and not self._evict_idle(now, event):
            return  # full of categories rated lately: the deployment's adapter serves this one
        key = category_key(category)
        adapter = self._learners[key] = following(self._learning(key), model)
        before = adapter.serving
        adapter.observe(embedding, fallback, label)
        order[category] = now
        order.move_to_end(category)
        self._dirty.update((category_key(category), CATEGORIES_KEY))
        if adapter.serving != before:
            log.info("sentiment adapter of category %r: now serving the %s label (%s)", category,
                     adapter.serving, adapter.report())
            self._stored_at = 0.0  # store at the end of this batch
        self.metrics.adapter_categories.labels(state="learned").set(len(order))

    def _evict_idle(self, now: int, event) -> bool:
        """Delete the least recently rated category's adapter if it has had no rating for
        ``10 * max_categories`` rated reviews; whether one was deleted."""
        order = self._category_order()
        oldest, last = next(iter(order.items()))
        if 0 <= now - last < 10 * self.max_categories:  # (negative: the deployment's count restarted)
            return False
        del order[oldest]
        key = category_key(oldest)
        self._learners.pop(key, None)
        self._written.pop(key, None)
        self._dirty.discard(key)
        self._dirty.add(CATEGORIES_KEY)
        with as_current_event(event):
            if self.table.get(key) is not None:
                del self.table[key]
        log.info("sentiment adapter of category %r deleted to make room (no rating for %d rated reviews)",
                 oldest, now - last)
        return True

    def store(self, *, force: bool = False) -> None:
        """Write what the learner changed to the table if ``checkpoint_s`` passed since the last
        write (or ``force``); a timer also calls this, so nothing learned waits long after the
        stream goes quiet."""
        if not self._dirty or self._last_event is None:
            return
        if not force and time.monotonic() - self._stored_at < self.checkpoint_s:
            return
        with as_current_event(self._last_event):  # the changelog writes join the row's transaction
            for key in sorted(self._dirty):
                if key == CATEGORIES_KEY:
                    stored = dump_categories(list(self._category_order().items()), self.seal,
                                             context=_context(key))
                else:
                    stored = dump_adapter(self._learners[key], self.seal, context=_context(key))
                self.table[key] = stored
                self._written[key] = stored
        self._stored_at, self._dirty = time.monotonic(), set()
        served = sum(1 for key, adapter in self._learners.items()
                     if key != ADAPTER_KEY and adapter.serving == "adapted")
        self.metrics.adapter_categories.labels(state="served").set(served)

    def forget(self) -> None:
        """The feedback partition was revoked: its next owner continues from the stored state
        (what this worker learned since its last store is lost, as documented)."""
        self._learners, self._categories, self._written = {}, None, {}
        self._last_event, self._dirty = None, set()

    def _learning(self, key: str) -> SentimentAdapter:
        stored, learner = self.table.get(key), self._learners.get(key)
        if learner is None or (stored is not None and stored != self._written.get(key)):
            # First row here, or another worker learned since (the partition moved): continue
            # from what is stored.
            loaded = self._load(stored, key) if stored is not None else None
            learner = self._learners[key] = loaded or self.template.clone()
            self._written[key] = stored
        return learner

    def _category_order(self) -> OrderedDict[str, int]:
        stored = self.table.get(CATEGORIES_KEY)
        if self._categories is None or (stored is not None and stored != self._written.get(CATEGORIES_KEY)):
            pairs: list[tuple[str, int]] = []
            if stored is not None:
                try:
                    pairs = load_categories(stored, self.seal, context=_context(CATEGORIES_KEY),
                                            limit=self.max_categories)
                except (ForgedState, ValueError, TypeError) as exc:
                    self.metrics.state_rejected.labels(table="sentiment-adapter").inc()
                    log.warning("discarded the stored list of adapted categories: %s", exc)
            self._categories = OrderedDict(pairs)
            self._written[CATEGORIES_KEY] = stored
        return self._categories

    def _load(self, stored: str, key: str) -> SentimentAdapter | None:
        try:
            return load_adapter(stored, self.seal, self.template, context=_context(key))
        except (ForgedState, ValueError, KeyError, TypeError) as exc:
            self.metrics.state_rejected.labels(table="sentiment-adapter").inc()
            log.warning("discarded the stored sentiment adapter %r: %s; serving without it", key, exc)
            return None

    def _report(self, adapter: SentimentAdapter) -> None:
        report = adapter.report()
        self.metrics.adapter_serving.set(1.0 if report["serving"] == "adapted" else 0.0)
        self.metrics.adapter_learned.set(report["learned"])
        for labeller in ("base", "adapted", "served"):
            value = report[f"{labeller}_accuracy"]
            if value is not None:
                self.metrics.rated_accuracy.labels(labeller=labeller).set(value)
