"""Entity mentions: the entities of one enriched text, repartitioned by entity onto the internal
``entity-mentions`` topic so that one worker owns each entity's detectors and windows. Pure
logic (``streams.agents.detectors`` sends and reads them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from streams.core.monitoring import EVIDENCE_CHARS, Observation
from streams.core.text import decode_embedding, encode_embedding
from streams.records import MIN_ENTITY_SCORE, EnrichedNews, EnrichedReview, EntityMentionRecord

__all__ = ["EntityMention", "Served", "entity_key", "observe_enriched"]


@dataclass(frozen=True, slots=True)
class EntityMention:
    """One entity in one analysed text, repartitioned by entity onto the internal
    ``entity-mentions`` topic so one worker owns each entity's detectors."""

    key: str
    name: str
    type: str
    observation: Observation  # what the detectors read: the served model's own sentiment
    # What the text's enriched record says (the adapter's label when one serves): what the
    # entity's sentiment.stats windows count, as the product's and the source's do. None in a
    # mention written before it was carried: the observation's label then counts.
    served: Served | None = None
    # Who wrote it, for the entity's review-bombing screen: a review's user_id ("" when it has
    # none: one user per review, as for its product); None for news (no authors, not screened).
    user: str | None = None

    def to_record(self) -> EntityMentionRecord:
        """Its record on the ``entity-mentions`` topic (the evidence text cut to 280 characters)."""
        o = self.observation
        return EntityMentionRecord(key=self.key, name=self.name, type=self.type, event_id=o.event_id,
                                   text=o.text[:EVIDENCE_CHARS], label=o.label,
                                   negative_prob=o.negative_prob, ts=o.ts,
                                   labeller_epoch=o.epoch, coordinated=o.coordinated, user_id=self.user,
                                   embedding=None if o.embedding is None else encode_embedding(o.embedding),
                                   served_label=None if self.served is None else self.served.label,
                                   served_polarity=None if self.served is None else self.served.polarity)

    @classmethod
    def from_record(cls, r: EntityMentionRecord) -> EntityMention:
        """The mention in a record; ValueError for an embedding that is not one."""
        embedding = None if r.embedding is None else decode_embedding(r.embedding)
        served = None if r.served_label is None or r.served_polarity is None else \
            Served(r.served_label, r.served_polarity)
        return cls(r.key, r.name, r.type, Observation(r.event_id, r.text, r.label, r.negative_prob, r.ts,
                                                      r.labeller_epoch, embedding, r.coordinated), served,
                   r.user_id)

    def counted(self) -> Served:
        """The label and polarity the entity's windows count: the served ones when carried,
        else the observation's label with ``-p(negative)`` (older mentions had no more)."""
        o = self.observation
        return self.served if self.served is not None else Served(o.label, -o.negative_prob)


@dataclass(frozen=True, slots=True)
class Served:
    """The sentiment a text's enriched record carries: its label and ``p(positive) - p(negative)``."""

    label: str
    polarity: float

    @classmethod
    def of(cls, label: str, probs: Mapping[str, float]) -> Served:
        polarity = float(probs.get("positive", 0.0)) - float(probs.get("negative", 0.0))
        return cls(label, min(1.0, max(-1.0, polarity)))


def entity_key(name: str) -> str:
    """The key an entity's detectors live under: case- and whitespace-insensitive.

    >>> entity_key("  Tim  COOK "), entity_key("tim cook")
    ('tim cook', 'tim cook')
    """
    return " ".join(name.split()).casefold()


def observe_enriched(record: EnrichedReview | EnrichedNews, ts: datetime, *, epoch: int = 0,
                     embedding: np.ndarray | None = None, coordinated: bool = False,
                     sentiment: Mapping[str, Any] | None = None
                     ) -> tuple[str, Observation, list[EntityMention]]:
    """The subject id (``product_id`` of a review, ``source`` of an article), the observation and
    the entity mentions of one enriched record; ``sentiment`` (``{"label", "probs"}``) replaces the record's.

    Entities below a score of 0.6, shorter than two characters or made of digits are left out,
    and each entity counts once per text.
    """
    user = None
    if isinstance(record, EnrichedReview):
        subject_id, event_id, text = record.product_id, record.review_id, record.text
        user = record.user_id or ""
    else:
        subject_id, event_id = record.source, record.article_id
        text = record.title + ("\n\n" + record.body if record.body else "")
    label, probs = (sentiment["label"], sentiment["probs"]) if sentiment is not None else \
        (record.sentiment.label, record.sentiment.probs)
    negative = float(probs.get("negative", 0.0))
    observation = Observation(event_id, text, label, negative, ts, epoch, embedding, coordinated)
    served = Served.of(record.sentiment.label, record.sentiment.probs)
    mentions: dict[str, EntityMention] = {}
    for entity in record.entities:
        key = entity_key(entity.text)
        if entity.score < MIN_ENTITY_SCORE or len(key) < 2 or key.replace(" ", "").isdigit():
            continue
        mentions.setdefault(key, EntityMention(key, " ".join(entity.text.split()), entity.type, observation,
                                                   served, user))
    return subject_id, observation, list(mentions.values())
