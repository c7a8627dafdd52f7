"""Wire schemas for every topic (shared/INTERFACE.md), and the decoder for input records.

Inputs keep unknown extra fields. Decoding never raises: it returns the record or one clear,
human-readable reason, which is what goes to the dead-letter topic.

>>> decode_input("reviews", b'{"review_id": "r1", "product_id": "p42", "text": "Great", "ts": 0}')
Review(review_id='r1', product_id='p42', text='Great', user_id=None, rating=None, category=None, ts=datetime.datetime(1970, 1, 1, 0, 0, tzinfo=datetime.timezone.utc))
>>> decode_input("reviews", b'{"review_id": "r1", "product_id": "p42"}')
DecodeError(reason='text: field required')
>>> decode_input("clicks", b'{"event_id": "c1", "user_id": "u7", "item_id": "p1", "action": "buy"}').reason
"action: must be one of 'impression', 'click', 'add_to_cart', 'purchase' (got 'buy')"
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

from streams.decoding import MAX_JSON_DEPTH, DecodeError, decode, parse
from streams.timestamps import Id, Timestamp

__all__ = ["INPUT_MODELS", "MAX_JSON_DEPTH", "MIN_ENTITY_SCORE", "OUTPUT_MODELS", "SCHEMA_VERSION", "Alert",
           "AlertTheme", "Click", "DeadLetter", "DecodeError", "EnrichedNews", "EnrichedReview",
           "Entity", "EntityMentionRecord", "Explanation", "News", "Recommendation", "Review",
           "Sentiment", "SentimentStats", "StatsTheme", "StatsWindow", "Subject", "UserSegment",
           "dead_letter", "decode_input", "encode", "json_schemas", "parse_input"]

SCHEMA_VERSION = 1
# Dead-letter records carry the raw bytes; beyond this they are cut so that the dead-letter
# record itself stays under Kafka's default 1 MB message limit.
DEADLETTER_RAW_LIMIT = 256 * 1024
# Inputs larger than this go to the dead-letter topic unparsed (Settings.max_input_bytes): the
# enriched record carries the input, so this keeps every output under the producer's 1 MB.
MAX_INPUT_BYTES = 512 * 1024


class _Input(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, strict=False, coerce_numbers_to_str=False)


class Review(_Input):
    review_id: Id
    product_id: Id
    text: str
    user_id: Id | None = None
    rating: float | None = Field(default=None, ge=0, le=10)
    # The product's category (or any domain name): rated reviews of it also train an adapter of
    # its own (streams.core.adaptation). Optional and lenient: a number is read as its text; an
    # empty, overlong (over 256 characters) or non-text one counts as none, never as bad input.
    category: str | None = None
    ts: Timestamp | None = None

    @field_validator("rating", mode="before")
    @classmethod
    def _rating(cls, value: Any) -> Any:
        # pydantic reads true as 1: a one-star review the sentiment adapter would learn from.
        if isinstance(value, bool):
            raise ValueError("must be a number of stars, not a boolean")
        return value

    @field_validator("category", mode="before")
    @classmethod
    def _category(cls, value: Any) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        elif isinstance(value, float) and value.is_integer():
            value = str(int(value))
        if not isinstance(value, str) or not value.strip() or len(value) > 256:
            return None
        return value.strip()


class Click(_Input):
    event_id: Id
    user_id: Id
    item_id: Id
    action: Literal["impression", "click", "add_to_cart", "purchase"]
    session_id: Id | None = None
    ts: Timestamp | None = None


class News(_Input):
    article_id: Id
    source: Id
    title: str
    body: str | None = None
    ts: Timestamp | None = None


INPUT_MODELS: dict[str, type[_Input]] = {"reviews": Review, "clicks": Click, "news": News}


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sentiment(_Output):
    label: Literal["negative", "neutral", "positive"]
    score: float = Field(ge=0, le=1)
    probs: dict[Literal["negative", "neutral", "positive"], float]
    # What labelled it: the served model ("base") or the adapter learned from ratings ("adapted").
    source: Literal["base", "adapted"] = "base"


class Entity(_Output):
    text: str
    type: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    score: float = Field(ge=0, le=1)
    # Which field the offsets index: "text" (reviews), "title" or "body" (news).
    field: Literal["text", "title", "body"] = "text"


class _Enrichment(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    sentiment: Sentiment
    entities: list[Entity]
    model: dict[str, str]
    processed_at: Timestamp
    # How the text was handled: "empty", "truncated", "control_characters" (see streams/core/text.py);
    # "coordinated": part of a burst of near-duplicate reviews from many users (streams/core/bursts.py).
    text_flags: list[str] = Field(default_factory=list)
    # Why ``ts`` is not the input's own time: "event_time_ahead", "event_time_behind" (outside the
    # sanity window around the Kafka record time, and replaced by it; the input's time is then in
    # ``ts_original``), "record_time_untrusted" (see streams/core/eventtime.py).
    time_flags: list[str] = Field(default_factory=list)
    ts_original: Timestamp | None = None
    # The text's sentence embedding (base64 of 384 float16), only with STREAMSENSE_ENRICHED_EMBEDDINGS.
    embedding: str | None = None


class EnrichedReview(_Enrichment, Review):
    pass


class EnrichedNews(_Enrichment, News):
    pass


MIN_ENTITY_SCORE = 0.6  # entities below it are not used downstream (detectors, click item features)


class EntityMentionRecord(_Output):
    """The internal ``entity-mentions`` topic: one entity in one analysed text, keyed by the entity
    (one worker owns its detectors). ``label``: the model's own; ``served_*``: ``*.enriched``'s.
    Fields it does not know are ignored: in a rolling upgrade, older workers read newer mentions."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    key: str
    name: str
    type: str
    event_id: str
    text: str
    label: str
    negative_prob: float
    ts: Timestamp
    labeller_epoch: int = Field(default=0, ge=0)  # see streams.core.monitoring.Observation.epoch
    coordinated: bool = False  # from a review-bombing burst: discounted as for the product
    user_id: str | None = None  # a review's author ("": none given; None: news): bombing screen
    embedding: str | None = Field(default=None, max_length=1100)  # base64 float16: the entity's themes
    served_label: Literal["negative", "neutral", "positive"] | None = None
    served_polarity: float | None = Field(default=None, ge=-1.0, le=1.0)  # p(positive) - p(negative)


class Subject(_Output):
    type: Literal["product", "entity", "source", "model", "stream", "user", "item"]
    id: str


class AlertTheme(_Output):
    """One theme of a subject's negative texts (streams/core/explain.py)."""

    words: list[str]  # its most characteristic words (weighted log-odds against the subject)
    share_now: float = Field(ge=0, le=1)  # of the negative texts in the alert's window
    share_before: float = Field(ge=0, le=1)  # of the remembered negative texts before it
    interval: tuple[float, float]  # 95% Wilson interval of share_now
    count: int = Field(ge=0)
    new: bool
    quotes: list[dict[str, str]] = Field(default_factory=list)  # [{"id": ..., "text": ...}], most central first


class Explanation(_Output):
    themes: list[AlertTheme]
    summary: str


class Alert(_Output):
    alert_id: Id
    kind: str
    subject: Subject
    detected_at: Timestamp
    severity: Literal["info", "warning", "critical"]
    detector: dict[str, Any]
    baseline: dict[str, Any] = Field(default_factory=dict)
    current: dict[str, Any] = Field(default_factory=dict)
    statistic: float
    threshold: float
    evidence: list[dict[str, Any]] = Field(default_factory=list)
    message: str
    # Extensions to the contract: "open" for a new change, "escalated" when its severity rises,
    # "recovered" when it ends; the latter two name the alert they update.
    status: Literal["open", "escalated", "recovered"] = "open"
    related_alert_id: str | None = None
    # sentiment_shift: what the negative texts are about, and which themes grew (None: no embeddings).
    explanation: Explanation | None = None


class RecommendedItem(_Output):
    item_id: Id
    score: float


class Recommendation(_Output):
    user_id: Id
    trigger_event_id: Id
    items: list[RecommendedItem]
    model: str
    ts: Timestamp


class UserSegment(_Output):
    """The compacted ``user-segments`` topic, keyed by ``user_id``: a user's segment each time it
    changes, so its latest record is the user's current segment."""

    user_id: Id
    # "<partition>:<cluster>": the click models (segments included) are per input partition, and
    # a user's clicks always land in one partition.
    segment: str
    previous: str | None
    profile: dict[str, float]  # the segment's centre: action mix, taste for popular and well-rated items, activity
    description: str
    trigger_event_id: Id
    since: Timestamp  # the event time of the click that moved the user
    model: str


class StatsWindow(_Output):
    start: Timestamp
    end: Timestamp
    size: str  # "1m", "1h" (or "<n>s")


class StatsTheme(_Output):
    words: list[str]
    count: int = Field(ge=0)


class SentimentStats(_Output):
    """The ``sentiment.stats`` topic, keyed by ``<subject type>:<subject id>``: one record per
    subject and closed tumbling window of event time (streams/core/windows.py)."""

    subject: Subject
    window: StatsWindow
    count: int = Field(ge=0)
    labels: dict[Literal["negative", "neutral", "positive"], int]
    mean_score: float = Field(ge=-1, le=1)  # mean of p(positive) - p(negative)
    late: int = Field(ge=0)  # counted though older than the subject's latest event time
    themes: list[StatsTheme] = Field(default_factory=list)  # the window's largest themes


class DeadLetter(_Output):
    source_topic: str
    partition: int | None
    offset: int | None
    error: str
    raw: str
    raw_encoding: Literal["utf-8", "base64"] = "utf-8"
    raw_size: int = Field(ge=0)
    raw_truncated: bool = False
    ts: Timestamp


OUTPUT_MODELS: dict[str, type[BaseModel]] = {
    "reviews.enriched": EnrichedReview,
    "news.enriched": EnrichedNews,
    "alerts": Alert,
    "recommendations": Recommendation,
    "user-segments": UserSegment,
    "sentiment.stats": SentimentStats,
    "deadletter": DeadLetter,
    "entity-mentions": EntityMentionRecord,
}


def decode_input(topic: str, raw: bytes | None, *, max_bytes: int = MAX_INPUT_BYTES) -> _Input | DecodeError:
    """Decode one input record of ``topic`` (its contract name, e.g. ``"reviews"``); a value
    over ``max_bytes`` is refused before it is parsed (:mod:`streams.decoding`).

    >>> decode_input("news", b'{"article_id": "n1", "source": "s", "title": "' + b"x" * 99 + b'"}',
    ...              max_bytes=100).reason
    'record is 147 bytes, over the input limit of 100 bytes (STREAMSENSE_MAX_INPUT_BYTES)'
    """
    return decode(INPUT_MODELS[topic], raw, max_bytes=max_bytes)


def parse_input(topic: str, raw: bytes | None, *, max_bytes: int = MAX_INPUT_BYTES) -> _Input | DecodeError:
    """:func:`decode_input` the reference way (``json``, then pydantic), always: what the fast
    path must agree with."""
    return parse(INPUT_MODELS[topic], raw, max_bytes=max_bytes)


def dead_letter(*, source_topic: str, partition: int | None, offset: int | None,
                raw: bytes | None, error: str, now: datetime) -> DeadLetter:
    """Build the dead-letter record for ``raw``: UTF-8 text where possible, else base64.

    >>> from datetime import UTC
    >>> dl = dead_letter(source_topic="reviews", partition=0, offset=7, raw=b"\\xff",
    ...                  error="bad", now=datetime(2026, 1, 1, tzinfo=UTC))
    >>> dl.raw, dl.raw_encoding
    ('/w==', 'base64')
    """
    raw = raw or b""
    cut = raw[:DEADLETTER_RAW_LIMIT]
    try:
        text, encoding = cut.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(cut).decode("ascii"), "base64"
    return DeadLetter(source_topic=source_topic, partition=partition, offset=offset, error=error,
                      raw=text, raw_encoding=encoding, raw_size=len(raw),
                      raw_truncated=len(raw) > len(cut), ts=now)


def encode(record: BaseModel) -> bytes:
    """A record as compact UTF-8 JSON, timestamps as RFC 3339 UTC."""
    return record.model_dump_json(exclude_none=False).encode("utf-8")


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema (draft 2020-12) of every topic's values, for producers in other languages."""
    schemas = {}
    for topic, model in {**INPUT_MODELS, **OUTPUT_MODELS}.items():
        schema = model.model_json_schema(mode="serialization" if topic in OUTPUT_MODELS else "validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"streamsense/{topic}/v{SCHEMA_VERSION}"
        schemas[topic] = schema
    return schemas
