"""Input and output topic names in one place (the contract in shared/INTERFACE.md).

>>> names = TopicNames(prefix="prod.")
>>> names.reviews, names.deadletter
('prod.reviews', 'prod.deadletter')
>>> TopicNames().all()[:3]
('reviews', 'clicks', 'news')
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COMPACTED_TOPICS", "INPUT_TOPICS", "INTERNAL_TOPICS", "OUTPUT_TOPICS", "TopicNames"]

INPUT_TOPICS = ("reviews", "clicks", "news")
OUTPUT_TOPICS = ("reviews.enriched", "news.enriched", "alerts", "recommendations", "deadletter",
                 "user-segments", "sentiment.stats")
# Tables of latest state (the newest record per key is what counts): compacted, not time-retained.
COMPACTED_TOPICS = ("user-segments",)
# Not part of the contract: entity mentions repartitioned by entity, for the entity detectors;
# rated reviews for the sentiment adapter (streams.agents.adaptation).
INTERNAL_TOPICS = ("entity-mentions", "sentiment-feedback")
_ALL = INPUT_TOPICS + OUTPUT_TOPICS + INTERNAL_TOPICS


@dataclass(frozen=True, kw_only=True)
class TopicNames:
    prefix: str = ""

    def name(self, base: str) -> str:
        if base not in _ALL:
            raise KeyError(f"unknown topic {base!r}; known: {', '.join(_ALL)}")
        return f"{self.prefix}{base}"

    def base(self, full_name: str) -> str:
        """The contract name of a (possibly prefixed) topic name."""
        base = full_name.removeprefix(self.prefix)
        self.name(base)
        return base

    def all(self) -> tuple[str, ...]:
        return tuple(self.name(t) for t in _ALL)

    reviews = property(lambda self: self.name("reviews"))
    clicks = property(lambda self: self.name("clicks"))
    news = property(lambda self: self.name("news"))
    reviews_enriched = property(lambda self: self.name("reviews.enriched"))
    news_enriched = property(lambda self: self.name("news.enriched"))
    alerts = property(lambda self: self.name("alerts"))
    recommendations = property(lambda self: self.name("recommendations"))
    deadletter = property(lambda self: self.name("deadletter"))
    user_segments = property(lambda self: self.name("user-segments"))
    sentiment_stats = property(lambda self: self.name("sentiment.stats"))
    entity_mentions = property(lambda self: self.name("entity-mentions"))
    sentiment_feedback = property(lambda self: self.name("sentiment-feedback"))
