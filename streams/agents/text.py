"""The text path's agent body: reviews and news through decoding, Triton and the detectors.

No data is lost because (1) a batch's records are acked only after the loop body has finished
with it (:func:`~streams.runtime.take_batches`), and Faust commits offsets only after flushing
the producer (or inside the Kafka transaction in ``exactly_once`` mode); (2) the body never
raises: Triton failures are retried until they succeed (which also stops the stream pulling:
backpressure), and a record whose processing keeps failing is dead-lettered with the error
after ``ATTEMPTS`` tries; and (3) should anything still escape a batch, the runtime's batch
runner exits the worker before it is committed (:class:`~streams.runtime.BatchRunner`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams.adapters.metrics import Metrics
from streams.adapters.triton_client import Inferencer
from streams.agents.adaptation import SentimentAdaptation
from streams.agents.detectors import Detectors, EnrichedText, Screening
from streams.agents.outputs import send_dead_letter
from streams.agents.shadow import ShadowComparison
from streams.core.adaptation import adapt_analyses
from streams.core.eventtime import record_time_ms
from streams.core.flow import cancelling
from streams.core.ports import OutputTopic
from streams.core.rules import InputRules
from streams.core.text import Analysis, RawRecord, decode_batch, enrich
from streams.records import Review, encode
from streams.runtime import SourceRevoked, as_current_event

__all__ = ["ATTEMPTS", "Started", "TextProcessor"]

log = logging.getLogger(__name__)
ATTEMPTS = 3  # tries of a failing batch before its records are tried one by one


@dataclass(frozen=True, slots=True)
class Started:
    """A batch :meth:`TextProcessor.start` decoded, with its Triton request under way."""

    events: Sequence
    raws: list[RawRecord]
    batch: Any  # streams.core.text's decoded batch (None: decoding failed, finish() tries again)
    analyses: asyncio.Future | None  # -> list[Analysis | None]

    def cancel(self) -> None:
        if self.analyses is not None:
            self.analyses.cancel()


class TextProcessor:
    """The ``reviews`` and ``news`` agents' body: decode, analyse with Triton, send the enriched
    records (or dead letters), run the detectors. :meth:`process` never raises: Triton outages
    are waited out, and a record whose processing keeps failing is dead-lettered with the error
    after ``ATTEMPTS`` tries of its batch and one of its own."""

    def __init__(self, base: str, *, inferencer: Inferencer, output: OutputTopic,
                 deadletter: OutputTopic, metrics: Metrics,
                 detectors: Detectors | None = None, rules: InputRules = InputRules(),
                 adaptation: SentimentAdaptation | None = None, shadow: ShadowComparison | None = None
                 ) -> None:
        self.base = base
        self.inferencer = inferencer
        self.output = output
        self.deadletter = deadletter
        self.metrics = metrics
        self.detectors = detectors
        self.rules = rules
        self.adaptation = adaptation  # reviews: serve the adapted label, send rated reviews to learn
        self.shadow = shadow  # compares a shadow model version's answers on a sample (when one is set)

    def start(self, events: Sequence) -> Started:
        """Decode a batch and ask Triton about its texts, without waiting for the answer: the
        agent starts the next batch while :meth:`finish` sends this one's outputs."""
        base, metrics = self.base, self.metrics
        raws = [RawRecord(e.message.topic, e.message.partition, e.message.offset, e.message.key,
                          e.message.value, record_time_ms(e.message.timestamp)) for e in events]
        metrics.events_in.labels(topic=base).inc(len(raws))
        metrics.batch_size.labels(topic=base).observe(len(raws))
        try:
            batch = self._decode(raws)
        except Exception:  # finish() decodes it again, inside its error handling
            log.exception("decoding a %s batch failed", base)
            return Started(events, raws, None, None)
        return Started(events, raws, batch, asyncio.ensure_future(self._analyse(batch.items)))

    async def process(self, events: Sequence) -> None:
        """One batch of ``reviews`` or ``news`` events: decode, analyse, send. Never raises."""
        await self.finish(self.start(events))

    async def finish(self, started: Started) -> None:
        """The rest of :meth:`process` for a batch :meth:`start` began: its first attempt uses
        the answer already asked for. Never raises."""
        base, metrics, raws, events = self.base, self.metrics, started.raws, started.events
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await self._process(raws, events, started if attempt == 1 else None)
                return
            except SourceRevoked:
                raise
            except asyncio.CancelledError:
                if cancelling():
                    raise
                metrics.errors.labels(kind="batch_failed").inc()
                log.warning("a %s batch was cancelled from inside (attempt %d/%d)", base, attempt, ATTEMPTS,
                            exc_info=True)
            except Exception:
                # The batch must not crash the agent: Faust would ack it anyway (data loss).
                metrics.errors.labels(kind="batch_failed").inc()
                log.exception("processing a %s batch failed (attempt %d/%d)", base, attempt, ATTEMPTS)
        # The batch keeps failing: process records one at a time so only the culprits are dead-lettered.
        for raw, event in zip(raws, events, strict=True):
            try:
                await self._process([raw], [event])
            except (asyncio.CancelledError, SourceRevoked):
                raise
            except Exception as exc:
                reason = f"processing failed: {exc!r}"[:1000]
                with as_current_event(event):
                    await send_dead_letter(self.deadletter, event.message, reason, now=datetime.now(UTC))
                metrics.deadlettered.labels(source_topic=base).inc()

    async def _process(self, raws: list[RawRecord], events: Sequence, started: Started | None = None) -> None:
        base, metrics, rules, adaptation = self.base, self.metrics, self.rules, self.adaptation
        if started is not None and started.analyses is not None:
            batch, analyses = started.batch, await started.analyses
        else:
            batch = self._decode(raws)
            analyses = await self._analyse(batch.items)
        served = self._adapt(batch.items, analyses)
        now = datetime.now(UTC)
        event_of = {(e.message.partition, e.message.offset): e for e in events}
        observed, sent = [], 0
        records = enrich(batch.items, served, now=now, embeddings=rules.enriched_embeddings)
        item_events = [event_of[item.raw.partition, item.raw.offset] for item in batch.items]
        screening = self._screen(records, item_events, [item.event_time or now for item in batch.items])
        if screening is not None:  # review bombing: the records say so
            records = [r.model_copy(update={"text_flags": [*r.text_flags, "coordinated"]}) if flagged else r
                       for r, flagged in zip(records, screening.flags, strict=True)]
        for item, enriched, analysis, event in zip(batch.items, records, analyses, item_events, strict=True):
            value = encode(enriched)
            with as_current_event(event):  # exactly-once: into the transaction of its input partition
                if len(value) > rules.max_output_bytes:
                    await send_dead_letter(self.deadletter, event.message, (
                        f"the enriched record would be {len(value)} bytes, over the output limit of "
                        f"{rules.max_output_bytes} bytes (Kafka's producer limit)"), now=now)
                    metrics.deadlettered.labels(source_topic=base).inc()
                    continue
                await self.output.send(key=item.raw.key, value=value)
                if adaptation is not None and analysis is not None:
                    await _send_feedback(adaptation, item, analysis)
            sent += 1
            self._count(item, enriched, now)
            observed.append(EnrichedText(event, enriched, item.event_time or now, item.model_text,
                                         analysis.unknown_token_share if analysis else None,
                                         embedding=analysis.embedding if analysis else None,
                                         coordinated="coordinated" in enriched.text_flags,
                                         sentiment=analysis.sentiment if analysis else None))
        metrics.events_out.labels(topic=f"{base}.enriched").inc(sent)
        await self._detect(observed, screening)
        for record in batch.dead:
            with as_current_event(event_of[record.partition, record.offset]):
                await self.deadletter.send(key=None, value=encode(record))
        metrics.deadlettered.labels(source_topic=base).inc(len(batch.dead))

    def _decode(self, raws: list[RawRecord]):
        return decode_batch(self.base, raws, now=datetime.now(UTC), window=self.rules.window,
                            max_bytes=self.rules.max_input_bytes)

    def _adapt(self, items: list, analyses: list[Analysis | None]) -> list[Analysis | None]:
        """The sentiment to serve: adapted by the deployment's adapter, and by the review's
        category's on top of it, where either beats what it stands on with confidence."""
        if self.adaptation is None:
            return analyses
        categories = []
        for item in items:
            category = getattr(item.record, "category", None)
            adapter = self.adaptation.for_category(category)
            categories.append((category, adapter) if adapter is not None else None)
        return adapt_analyses(analyses, self.adaptation.current(), categories)

    async def _analyse(self, items: list) -> list[Analysis | None]:
        """The served model's analysis of each item with text (None for the others)."""
        asked = [item for item in items if item.model_text]
        texts = [item.model_text for item in asked]
        results = await self.inferencer.analyse(texts, domain=self.base)
        if self.shadow is not None and results:
            self.shadow.launch(texts, results, [item.record for item in asked], domain=self.base)
        found = iter(results)
        return [next(found) if item.model_text else None for item in items]

    def _count(self, item, enriched, now: datetime) -> None:
        base, metrics = self.base, self.metrics
        for flag in item.time_flags:
            metrics.event_time_replaced.labels(topic=base, flag=flag).inc()
        metrics.sentiment.labels(topic=base, label=enriched.sentiment.label).inc()
        metrics.sentiment_sources.labels(topic=base, source=enriched.sentiment.source).inc()
        event_time = item.event_time or now
        metrics.end_to_end_seconds.labels(topic=base).observe(max(0.0, (now - event_time).total_seconds()))

    def _screen(self, records: list, events: list, times: list[datetime]) -> Screening | None:
        if self.detectors is None:
            return None
        try:
            return self.detectors.screen(self.base, records, events, times)
        except Exception:
            # Screening only adds a flag: its failure must not hold back the records.
            self.metrics.errors.labels(kind="detector_failed").inc()
            log.exception("screening a %s batch for review bombing failed; its records go out unflagged",
                          self.base)
            return None

    async def _detect(self, observed: list[EnrichedText], screening: Screening | None) -> None:
        if self.detectors is None or not observed:
            return
        try:
            await self.detectors.on_enriched(self.base, observed, screening)
        except (asyncio.CancelledError, SourceRevoked):
            raise
        except Exception:
            # Detection is downstream of enrichment: its failure must not dead-letter good records.
            self.metrics.errors.labels(kind="detector_failed").inc()
            log.exception("detectors failed on a %s batch; enriched records were sent", self.base)


async def _send_feedback(adaptation: SentimentAdaptation, item, analysis: Analysis) -> None:
    """A rated review teaches the adapter: the base model's answer, not the served one."""
    record = item.record
    if isinstance(record, Review) and record.rating is not None:
        await adaptation.send_feedback(record.review_id, record.rating, analysis.sentiment["probs"],
                                       analysis.embedding, category=record.category,
                                       model=analysis.model)
