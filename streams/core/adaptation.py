"""The sentiment adapter's pure edges: rated reviews -> feedback rows, rows -> the adapter,
the adapter <-> sealed table state, and the served label. No faust, no I/O.

How it fits together (``streams.agents.adaptation`` moves the bytes): the text path sends a
feedback row for every review with a rating to the one-partition ``sentiment-feedback`` topic
(its embedding, the base model's probabilities, the label its rating implies, its ``category``
when the review has one). One worker owns that partition and learns from the rows in log order
(prequentially: each row scores the adapter before it learns from it), then stores the
adapters, sealed, in the global table ``sentiment-adapter``, which every worker reads to serve.
So all workers serve one adapter, learned from every rated review of the deployment, whichever
partition it came through.

Per category: a review's ``category`` (a product category or any domain name) also trains that
category's adapter, on top of the deployment's: its "base" is what would be served without it
(the deployment's adapter where that one is served, else the model), so it starts out equal to
that and is served for the category's reviews only while it beats it with confidence (the same
test, the same ``alpha``). A category whose words mean something else there ("the plot was
predictable" in books, "it ran hot" in laptops) gets its own label without pulling the others.

>>> import numpy as np
>>> from models.online.sentiment import SentimentAdapter
>>> row = FeedbackRow(review_id="r1", label=2, base_probs=[0.2, 0.7, 0.1],
...                   embedding=encode_embedding(np.full(384, 0.05)))
>>> decoded = decode_feedback(row.model_dump_json().encode())
>>> decoded.label, decode_embedding(decoded.embedding).shape
(2, (384,))
>>> decode_feedback(b'{"review_id": "r1"}').reason.startswith("invalid feedback row")
True
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.online.sentiment import LABELS, SentimentAdapter, rating_label
from streams.core.state import StateSeal, compress, decompress
from streams.core.text import Analysis, decode_embedding, encode_embedding
from streams.records import DecodeError, Sentiment

__all__ = ["ADAPTER_KEY", "CATEGORIES_KEY", "MAX_FEEDBACK_BYTES", "FeedbackRow", "RatingScale",
           "adapt_analyses", "adapted_sentiment", "category_key", "decode_embedding", "decode_feedback",
           "dump_adapter", "dump_categories", "encode_embedding", "feedback_row", "load_adapter",
           "load_categories"]

ADAPTER_KEY = "adapter"  # the deployment's adapter in the sentiment-adapter table
CATEGORIES_KEY = "categories"  # the categories with an adapter, least recently rated first
MAX_FEEDBACK_BYTES = 4096  # a row is ~1.2 kB: 384 float16 in base64 and a few numbers


class RatingScale(BaseModel):
    """Which ratings mean what (inclusive): 1-2 negative, 4-5 positive, in between neutral."""

    model_config = ConfigDict(frozen=True)
    negative_max: float = 2.0
    positive_min: float = 4.0


class FeedbackRow(BaseModel):
    """One rated review, as the adapter learns from it (topic ``sentiment-feedback``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    v: int = 1
    review_id: str = Field(min_length=1, max_length=256)
    label: int = Field(ge=0, le=2)  # index into LABELS
    base_probs: list[float] = Field(min_length=3, max_length=3)
    embedding: str = Field(min_length=1, max_length=1100)  # base64 of 384 little-endian float16
    category: str | None = Field(default=None, min_length=1, max_length=256)  # the review's, if any
    # The model (version) that gave base_probs and the embedding; None in rows from older workers.
    model: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("base_probs")
    @classmethod
    def _probabilities(cls, probs: list[float]) -> list[float]:
        if not all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in probs):
            raise ValueError("base_probs must be three probabilities")
        return probs


def feedback_row(review_id: str, rating: float | None, sentiment_probs: dict[str, float],
                 embedding: np.ndarray | None, scale: RatingScale, *, category: str | None = None,
                 model: str | None = None) -> FeedbackRow | None:
    """The row to learn from, or None when the review has no rating or no embedding."""
    label = rating_label(rating, negative_max=scale.negative_max, positive_min=scale.positive_min)
    if label is None or embedding is None:
        return None
    return FeedbackRow(review_id=review_id, label=label,
                       base_probs=[float(sentiment_probs[name]) for name in LABELS],
                       embedding=encode_embedding(embedding), category=category or None,
                       model=model or None)


def category_key(category: str) -> str:
    """The sentiment-adapter table's key of a category's adapter."""
    return f"category/{category}"


def decode_feedback(raw: bytes | None) -> FeedbackRow | DecodeError:
    if raw is None or len(raw) > MAX_FEEDBACK_BYTES:
        return DecodeError(f"feedback row is {0 if raw is None else len(raw)} bytes; at most "
                           f"{MAX_FEEDBACK_BYTES} expected")
    try:
        row = FeedbackRow.model_validate_json(raw)
        decode_embedding(row.embedding)
    except (ValidationError, ValueError) as exc:
        return DecodeError(f"invalid feedback row: {str(exc)[:500]}")
    return row


def adapted_sentiment(adapter: SentimentAdapter | None, base: dict, embedding: np.ndarray | None,
                      category: SentimentAdapter | None = None) -> Sentiment:
    """The sentiment to serve for one text (``base``: the model's, as Triton gave it), with its
    ``source``: ``"adapted"`` while the deployment's adapter, or the text's ``category``
    adapter on top of it, is served and the text has an embedding."""
    served = [a for a in (adapter, category) if a is not None and a.serving == "adapted"]
    if not served or embedding is None:
        return Sentiment(**base)
    probs = np.array([float(base["probs"][name]) for name in LABELS])
    x = np.asarray(embedding, dtype=np.float64)
    for stage in (adapter, category):  # the category's adapter learned on top of the deployment's
        if stage is not None:
            probs, _ = stage.serve(x, probs)
    best = int(np.argmax(probs))
    return Sentiment(label=LABELS[best], score=round(float(probs[best]), 6), source="adapted",
                     probs={name: round(float(p), 6) for name, p in zip(LABELS, probs, strict=True)})


def adapt_analyses(analyses: list[Analysis | None], adapter: SentimentAdapter | None,
                   categories: Sequence[tuple[str, SentimentAdapter] | None] | None = None
                   ) -> list[Analysis | None]:
    """The analyses with the sentiment to serve (see :func:`adapted_sentiment`); ``categories``:
    per analysis, its category's name and adapter, if it has one. An adapted one names its
    adapters in its sentiment model (``<base model>+adapter-<rated reviews learned>``, then
    ``+<category>-adapter-<learned>``). Adapters that learned on another model than the one an
    analysis came from are not applied to it."""
    per_item = list(categories) if categories is not None else [None] * len(analyses)
    out: list[Analysis | None] = []
    for analysis, category in zip(analyses, per_item, strict=True):
        if analysis is None or analysis.embedding is None:
            out.append(analysis)
            continue
        # An adapter learned on another model's outputs (just after a version switch) stays out.
        deployment = adapter if adapter is not None and adapter.follows(analysis.model) else None
        chosen = category[1] if category is not None and category[1].serving == "adapted" \
            and category[1].follows(analysis.model) else None
        if chosen is None and (deployment is None or deployment.serving != "adapted"):
            out.append(analysis)
            continue
        served = adapted_sentiment(deployment, analysis.sentiment, analysis.embedding, chosen)
        model = analysis.model
        if deployment is not None and deployment.serving == "adapted":
            model += f"+adapter-{deployment.learned}"
        if chosen is not None:
            model += f"+{category[0]}-adapter-{chosen.learned}"
        out.append(replace(analysis, sentiment=served.model_dump(), sentiment_model=model))
    return out


def dump_adapter(adapter: SentimentAdapter, seal: StateSeal, *, context: str) -> str:
    """The adapter as table state: plain JSON, compressed, sealed, base64 (never a pickle)."""
    payload = compress(json.dumps(adapter.to_dict(), separators=(",", ":")).encode("utf-8"))
    return base64.b64encode(seal.seal(payload, context=context)).decode("ascii")


def load_adapter(stored: str, seal: StateSeal, template: SentimentAdapter, *,
                 context: str) -> SentimentAdapter:
    """Read :func:`dump_adapter`'s output; :class:`~streams.errors.ForgedState` or ValueError
    when it is not ours or not valid."""
    payload = seal.open(base64.b64decode(stored, validate=True), context=context)
    state = json.loads(decompress(payload, max_bytes=seal.max_bytes))
    if not isinstance(state, dict):
        raise ValueError("adapter state is not a JSON object")
    return template.clone().load_dict(state)


def dump_categories(categories: Sequence[tuple[str, int]], seal: StateSeal, *, context: str) -> str:
    """The categories with a stored adapter and the rated review (counted over the deployment)
    each last learned from, least recently rated first."""
    payload = compress(json.dumps([[name, int(last)] for name, last in categories]).encode("utf-8"))
    return base64.b64encode(seal.seal(payload, context=context)).decode("ascii")


def load_categories(stored: str, seal: StateSeal, *, context: str, limit: int) -> list[tuple[str, int]]:
    """Read :func:`dump_categories`' output: at most ``limit`` (name, last) pairs."""
    payload = seal.open(base64.b64decode(stored, validate=True), context=context)
    pairs = json.loads(decompress(payload, max_bytes=seal.max_bytes))
    if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and 0 < len(p[0]) <= 256
            and isinstance(p[1], int) for p in pairs):
        raise ValueError("stored categories are not a list of [name, last rated review] pairs")
    return [(name, last) for name, last in pairs[-limit:]]
