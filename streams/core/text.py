r"""The text path's pure logic: raw records -> (texts to analyse, dead letters) -> enriched records.

No faust, no I/O: agents call these with plain lists, tests too.

Text hygiene, each case with a defined outcome (``text_flags`` on the enriched record):

* non-UTF-8 or invalid JSON -> dead letter with the reason (decoding);
* empty or whitespace-only text -> not sent to the model; neutral with probability 1, flag ``empty``;
* control characters -> replaced by spaces for the model (the record keeps the original),
  flag ``control_characters``;
* longer than ``MAX_CHARS`` -> only the first ``MAX_CHARS`` characters are sent, flag
  ``truncated``; the model also truncates at its token limit and says so (same flag);
* mixed languages -> analysed as they are (the encoder is English; drift monitors watch the
  non-ASCII share).

>>> from datetime import UTC, datetime
>>> value = b'{"review_id": "r1", "product_id": "p1", "text": "Great\\u0007 phone"}'
>>> raw = RawRecord("reviews", 0, 7, b"p1", value, 0)
>>> batch = decode_batch("reviews", [raw], now=datetime(2026, 1, 1, tzinfo=UTC))
>>> [item.model_text for item in batch.items], batch.items[0].flags, batch.dead
(['Great  phone'], ('control_characters',), [])
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from streams.core.eventtime import EventTimeWindow
from streams.records import (
    MAX_INPUT_BYTES,
    DeadLetter,
    DecodeError,
    EnrichedNews,
    EnrichedReview,
    Entity,
    News,
    Review,
    Sentiment,
    dead_letter,
    decode_input,
)

__all__ = ["EMBEDDING_DIM", "MAX_CHARS", "Analysis", "DecodedBatch", "Item", "RawRecord", "decode_batch",
           "decode_embedding", "encode_embedding", "enrich"]

# Far beyond the model's 256 tokens (~1,500 characters of English); keeps requests small.
MAX_CHARS = 8192
EMBEDDING_DIM = 384  # text_analysis's EMBEDDING output
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_NEWS_SEPARATOR = "\n\n"


@dataclass(frozen=True, slots=True)
class RawRecord:
    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None


@dataclass(frozen=True, slots=True)
class Item:
    """A decoded record and the text the model will see."""

    raw: RawRecord
    record: Review | News
    model_text: str  # "" means: do not send, the text is empty
    flags: tuple[str, ...]
    title_length: int = 0  # news: where the body starts in model_text (offset mapping)
    # The event time detectors see (streams.core.eventtime) and why it is not the record's own.
    event_time: datetime | None = None
    time_flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    items: list[Item]
    dead: list[DeadLetter]


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the model says about one text (one element of Triton's ANALYSIS output)."""

    sentiment: dict[str, Any]
    entities: list[dict[str, Any]]
    truncated: bool
    model: str
    unknown_token_share: float | None = None  # None: the model did not say
    # The sentence embedding (float16, L2-normalised) when it was asked for.
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)
    sentiment_model: str | None = None  # set when the sentiment is not the model's own (adapted)

    def with_embedding(self, embedding: np.ndarray) -> Analysis:
        return replace(self, embedding=embedding)

    @classmethod
    def from_json(cls, text: str) -> Analysis:
        body = json.loads(text)
        unknown = body.get("unknown_token_share")
        return cls(sentiment=body["sentiment"], entities=body["entities"],
                   truncated=bool(body.get("truncated")), model=body.get("model", "unknown"),
                   unknown_token_share=float(unknown) if unknown is not None else None)


def decode_batch(topic: str, raws: list[RawRecord], *, now: datetime,
                 window: EventTimeWindow = EventTimeWindow(), max_bytes: int = MAX_INPUT_BYTES
                 ) -> DecodedBatch:
    """Split raw records of ``topic`` (``reviews`` or ``news``) into items and dead letters;
    each item's event time is checked against its Kafka record time (``window``)."""
    items, dead = [], []
    for raw in raws:
        result = decode_input(topic, raw.value, max_bytes=max_bytes)
        if isinstance(result, DecodeError):
            dead.append(dead_letter(source_topic=raw.topic, partition=raw.partition, offset=raw.offset,
                                    raw=raw.value, error=result.reason, now=now))
            continue
        if isinstance(result, Review):
            text, title_length = result.text, 0
        else:
            assert isinstance(result, News)
            text = result.title + (_NEWS_SEPARATOR + result.body if result.body else "")
            title_length = len(result.title)
        event_time = window.resolve(result.ts, broker_ms=raw.timestamp_ms, now=now)
        items.append(_item(raw, result, text, title_length, event_time.ts, event_time.flags))
    return DecodedBatch(items, dead)


def _item(raw: RawRecord, record: Review | News, text: str, title_length: int, event_time: datetime,
          time_flags: tuple[str, ...]) -> Item:
    flags = []
    cleaned = _CONTROL.sub(" ", text)
    if cleaned != text:
        flags.append("control_characters")
    if not cleaned.strip():
        return Item(raw, record, "", (*flags, "empty"), title_length, event_time, time_flags)
    if len(cleaned) > MAX_CHARS:
        cleaned = cleaned[:MAX_CHARS]
        flags.append("truncated")
    return Item(raw, record, cleaned, tuple(flags), title_length, event_time, time_flags)


_EMPTY = Analysis(sentiment={"label": "neutral", "score": 1.0,
                             "probs": {"negative": 0.0, "neutral": 1.0, "positive": 0.0}},
                  entities=[], truncated=False, model="none")


def enrich(items: list[Item], analyses: list[Analysis | None], *, now: datetime, embeddings: bool = False
           ) -> list[EnrichedReview | EnrichedNews]:
    """Enriched records in input order; ``None`` analyses belong to empty texts. ``embeddings``:
    put each text's sentence embedding in its record (when the model served one)."""
    out: list[EnrichedReview | EnrichedNews] = []
    for item, analysis in zip(items, analyses, strict=True):
        analysis = analysis or _EMPTY
        flags = list(item.flags)
        if analysis.truncated and "truncated" not in flags:
            flags.append("truncated")
        entities = [_entity(e, item) for e in analysis.entities]
        model = {"sentiment": analysis.sentiment_model or analysis.model, "ner": analysis.model}
        fields = {**item.record.model_dump(), "sentiment": Sentiment(**analysis.sentiment),
                  "entities": entities, "model": model,
                  "processed_at": now, "text_flags": flags}
        if embeddings and analysis.embedding is not None:
            fields.update(embedding=encode_embedding(analysis.embedding))
        if item.time_flags:
            fields.update(time_flags=list(item.time_flags))
            if item.record.ts != item.event_time and item.record.ts is not None:
                fields.update(ts=item.event_time, ts_original=item.record.ts)
        cls = EnrichedReview if isinstance(item.record, Review) else EnrichedNews
        out.append(cls(**fields))
    return out


def _entity(e: dict[str, Any], item: Item) -> Entity:
    if isinstance(item.record, News):
        body_start = item.title_length + len(_NEWS_SEPARATOR)
        if e["start"] >= body_start:
            return Entity(text=e["text"], type=e["type"], start=e["start"] - body_start,
                          end=e["end"] - body_start, score=e["score"], field="body")
        return Entity(text=e["text"], type=e["type"], start=e["start"], end=min(e["end"], item.title_length),
                      score=e["score"], field="title")
    return Entity(text=e["text"], type=e["type"], start=e["start"], end=e["end"], score=e["score"],
                  field="text")


def encode_embedding(vector: np.ndarray) -> str:
    """An embedding on the wire: base64 of little-endian float16 (768 bytes for 384 values)."""
    return base64.b64encode(np.asarray(vector, dtype="<f2").reshape(-1).tobytes()).decode("ascii")


def decode_embedding(text: str) -> np.ndarray:
    raw = base64.b64decode(text, validate=True)
    if len(raw) != 2 * EMBEDDING_DIM:
        raise ValueError(f"an embedding is {2 * EMBEDDING_DIM} bytes, not {len(raw)}")
    vector = np.frombuffer(raw, dtype="<f2").astype(np.float64)
    if not np.isfinite(vector).all():
        raise ValueError("the embedding is not finite")
    return vector
