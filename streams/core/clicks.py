"""The click path's pure logic: decode clicks, run the partition's online model, build the
recommendation events and model-error alerts, checkpoint models. No faust, no I/O.

**One model per input partition.** Clicks are keyed (so partitioned) by ``user_id``: a user's
events always reach the same partition, so their short-term state (:class:`UserState`, kept in
a Faust table keyed by user) lives with them. The model (co-visitation, popularity, the
click-through and ranking models, segments) is shared by all users of a partition: each
partition has its own replica, learned from that partition's users, a random 1/P sample of
all users. The replica follows the partition: it is checkpointed (:func:`checkpoint_chunks`)
into a changelog-backed table and restored by whichever worker is assigned the partition
after a restart or rebalance. Items are global, so each replica learns every item's
co-visitation from its share of the traffic; with P partitions each replica sees 1/P of the
evidence (more partitions: more parallelism, slower learning per replica).

Learning since the last checkpoint is lost on a crash (the outputs are not: every click still
gets its recommendation, at least once); the checkpoint interval bounds it.

>>> from datetime import UTC, datetime
>>> model = PartitionModel(partition=0, config=MonitorConfig())
>>> user = UserState()
>>> raw = b'{"event_id": "c1", "user_id": "u1", "item_id": "p1", "action": "click"}'
>>> click, time_flags = decode_click(raw, broker_ms=None, now=datetime(2026, 11, 22, tzinfo=UTC))
>>> step, alerts = model.observe(user, click, {})
>>> step.items, user.recent, alerts
([], ['p1'], [])
>>> from streams.core.state import StateSeal
>>> seal = StateSeal(b"0123456789abcdef")
>>> PartitionModel.loads(model.dumps(seal, context="p0"), seal, context="p0").recommender.report()["events"]
1.0
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from models.online import ClickEvent, ClickRecommender, Step, UserState
from streams.core import plainstate
from streams.core.monitoring import MonitorConfig, StreamMonitor
from streams.core.rules import InputRules
from streams.core.state import StateSeal, compress, decompress
from streams.records import (
    MIN_ENTITY_SCORE,
    Alert,
    Click,
    DecodeError,
    EnrichedNews,
    EnrichedReview,
    Recommendation,
    RecommendedItem,
    UserSegment,
    decode_input,
)

__all__ = ["MODEL_NAME", "PartitionModel", "checkpoint_chunks", "decode_click", "describe_segment",
           "item_signal_update", "recommendation", "restore_checkpoint", "segment_change", "signal_item"]

MODEL_NAME = "click-ranker"
_STATE_VERSION = 3  # 3: plain JSON (1 and 2 were pickles: discarded, never read)
_CONFIG_CLASSES = {"MonitorConfig": MonitorConfig}
_CHUNK_BYTES = 256 * 1024  # well under Kafka's default 1 MB message limit once base64-encoded
_ERROR_WARMUP = 2000  # labelled examples before the model-error drift monitor starts
# ... and before the click-through rate monitor starts: at first only clicks resolve (an
# impression counts as not clicked only when it expires), so the early rate runs high.
_RATE_WARMUP = 500


def decode_click(raw: bytes | None, *, broker_ms: int | None, now: datetime,
                 rules: InputRules = InputRules()) -> tuple[ClickEvent, tuple[str, ...]] | DecodeError:
    """A click record as the model sees it, and why its event time is not its own ``ts``
    (:mod:`streams.core.eventtime`: a missing or implausible ``ts`` gives way to the Kafka
    record time, an implausible record time to ``now``)."""
    record = decode_input("clicks", raw, max_bytes=rules.max_input_bytes)
    if isinstance(record, DecodeError):
        return record
    assert isinstance(record, Click)
    ts, flags = rules.window.resolve_s(None if record.ts is None else record.ts.timestamp(),
                                       broker_ms=broker_ms, now_s=now.timestamp())
    return ClickEvent(event_id=record.event_id, user_id=record.user_id, item_id=record.item_id,
                      action=record.action, ts=ts, session_id=record.session_id), flags


@dataclass
class PartitionModel:
    """The online model of one clicks partition plus two drift monitors: the model's error
    (log loss on impressions, once the model is warm; rises only) and the shoppers' behaviour
    (click-through rate of impressions, from the first; either way). They see different
    changes: a flip of what shoppers like raises the error until the model has re-learned (an
    online model re-learns fast, so the error may not show it), while shoppers clicking less
    overall barely moves the error of a model that keeps learning, but is plain in the rate."""

    partition: int
    config: MonitorConfig
    recommender: ClickRecommender = field(default_factory=ClickRecommender)
    errors: StreamMonitor = field(init=False)
    behaviour: StreamMonitor = field(init=False)

    def __post_init__(self) -> None:
        self.errors = StreamMonitor(f"click-through:p{self.partition}", self.config, subject_type="model",
                                    increases_only=True)
        self.behaviour = self._behaviour_monitor()

    def _behaviour_monitor(self) -> StreamMonitor:
        return StreamMonitor(f"clicks:p{self.partition}", self.config)

    @property
    def version(self) -> str:
        """``name@p<partition>.<events learned>``: grows with every event, survives restarts."""
        return f"{MODEL_NAME}@p{self.partition}.{self.recommender.events}"

    def observe(self, user: UserState, event: ClickEvent,
                item_signals: Mapping[str, Mapping[str, Any]]) -> tuple[Step, list[Alert]]:
        step = self.recommender.observe(user, event, item_signals)
        alerts: list[Alert] = []
        if not step.labelled:
            return step, alerts
        now = datetime.fromtimestamp(event.ts, UTC)
        examples = self.recommender.examples
        for p, clicked in step.labelled:
            if examples > _RATE_WARMUP:
                alerts += self.behaviour.observe_channels({"click_through": float(clicked)}, now)
            if examples > _ERROR_WARMUP:  # a cold model's error moves as it learns
                log_loss = -math.log(p if clicked else 1.0 - p)
                alerts += self.errors.observe_channels({"log_loss": log_loss}, now)
        return step, alerts

    def dumps(self, seal: StateSeal, *, context: str) -> bytes:
        """The model as sealed, compressed JSON (``context``: the table and partition): plain
        data of every part (:meth:`ClickRecommender.to_state`, :meth:`StreamMonitor.to_state`)."""
        state = {"version": _STATE_VERSION, "partition": self.partition,
                 "config": plainstate.dumps(self.config, _CONFIG_CLASSES).decode("utf-8"),
                 "recommender": self.recommender.to_state(),
                 "errors": self.errors.to_state(), "behaviour": self.behaviour.to_state()}
        return seal.seal(compress(json.dumps(state, separators=(",", ":")).encode("utf-8")), context=context)

    @classmethod
    def loads(cls, data: bytes, seal: StateSeal, *, context: str) -> PartitionModel:
        """Raises :class:`~streams.errors.ForgedState` for bytes that fail authentication or
        inflate past ``seal.max_bytes``, and ValueError for any that are not a checkpoint of this
        version (the pickles of versions 1 and 2 included: never unpickled; the model starts
        cold once). Reading builds only the model's own classes and River's, from plain data."""
        payload = decompress(seal.open(data, context=context), max_bytes=seal.max_bytes)
        try:
            state = json.loads(payload)
        except (ValueError, RecursionError):
            raise ValueError(f"not a version {_STATE_VERSION} click model checkpoint (not JSON)") from None
        version = state.get("version") if isinstance(state, dict) else None
        if version != _STATE_VERSION:
            raise ValueError(f"click model checkpoint of version {version!r}; this reads {_STATE_VERSION}")
        try:
            config = plainstate.loads(state["config"].encode("utf-8"), _CONFIG_CLASSES)
            if not isinstance(config, MonitorConfig):
                raise ValueError("its config is not a MonitorConfig")
            model = cls(partition=int(state["partition"]), config=config,
                        recommender=ClickRecommender.from_state(state["recommender"]))
            model.errors = StreamMonitor.from_state(state["errors"], config)
            model.behaviour = StreamMonitor.from_state(state["behaviour"], config)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise ValueError(f"click model checkpoint unreadable: {exc!r}"[:500]) from None
        return model


def recommendation(user_id: str, event_id: str, items: list[tuple[str, float]], *, model: str,
                   now: datetime) -> Recommendation:
    return Recommendation(user_id=user_id, trigger_event_id=event_id,
                          items=[RecommendedItem(item_id=i, score=s) for i, s in items], model=model, ts=now)


def segment_change(user_id: str, click: ClickEvent, *, partition: int, before: int | None, after: int | None,
                   profile: dict[str, float], model: str) -> UserSegment | None:
    """The ``user-segments`` record when a click moved its user to another segment, else None.

    >>> from models.online import ClickEvent
    >>> click = ClickEvent("c9", "u7", "i1", "purchase", 1763805600.0)
    >>> change = segment_change("u7", click, partition=2, before=1, after=4, model="m@1",
    ...                         profile={"share_click": 0.2, "share_purchase": 0.5, "activity": 0.9})
    >>> change.segment, change.previous, change.description
    ('2:4', '2:1', 'clicks 20%, buys 50%; very active')
    >>> segment_change("u7", click, partition=2, before=4, after=4, model="m@1", profile={}) is None
    True
    """
    if after is None or after == before:
        return None
    return UserSegment(user_id=user_id, segment=f"{partition}:{after}",
                       previous=None if before is None else f"{partition}:{before}", profile=profile,
                       description=describe_segment(profile), trigger_event_id=click.event_id,
                       since=datetime.fromtimestamp(click.ts, UTC), model=model)


def describe_segment(profile: dict[str, float]) -> str:
    """A segment's centre in words: its action mix, then its tastes and activity."""
    mix = ", ".join(f"{word} {profile[key]:.0%}" for key, word in (
        ("share_click", "clicks"), ("share_add_to_cart", "adds to cart"), ("share_purchase", "buys"))
        if key in profile)
    traits = []
    if "popular_taste" in profile:
        popular = profile["popular_taste"] >= 0.5
        traits.append("prefers popular items" if popular else "explores the long tail")
    if "sentiment_taste" in profile:
        traits.append("favours well-reviewed items" if profile["sentiment_taste"] >= 0.5
                      else "indifferent to reviews")
    if "activity" in profile:
        traits.append("very active" if profile["activity"] >= 0.5 else "occasional")
    return "; ".join(part for part in (mix, ", ".join(traits)) if part)


def checkpoint_chunks(partition: int, generation: int, data: bytes, *, events: int) -> dict[str, str]:
    """Table rows for one checkpoint: chunks under ``p/generation % 2/i`` and, written last, the
    manifest under ``p`` naming them. Alternating two chunk sets means a crash halfway through
    a write leaves the previous checkpoint whole.

    >>> rows = checkpoint_chunks(3, 7, b"x" * 10, events=5)
    >>> list(rows)
    ['3/1/0', '3']
    >>> restore_checkpoint(rows.get, 3)
    (b'xxxxxxxxxx', 7)
    """
    slot = generation % 2
    pieces = [data[i:i + _CHUNK_BYTES] for i in range(0, len(data), _CHUNK_BYTES)] or [b""]
    rows = {f"{partition}/{slot}/{i}": base64.b64encode(piece).decode("ascii")
            for i, piece in enumerate(pieces)}
    rows[str(partition)] = json.dumps({"generation": generation, "slot": slot, "chunks": len(pieces),
                                       "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                                       "events": events})
    return rows


def restore_checkpoint(get, partition: int) -> tuple[bytes, int] | None:
    """The bytes of the partition's last complete checkpoint and its generation (``get``: the
    table's ``get``); None when the partition was never checkpointed."""
    manifest = get(str(partition))
    if not manifest:
        return None
    m = json.loads(manifest)
    chunks = [get(f"{partition}/{m['slot']}/{i}") for i in range(m["chunks"])]
    if any(c is None for c in chunks):
        raise ValueError(f"checkpoint of partition {partition} is missing chunks")
    data = b"".join(base64.b64decode(c) for c in chunks)
    if hashlib.sha256(data).hexdigest() != m["sha256"]:
        raise ValueError(f"checkpoint of partition {partition} does not match its checksum")
    return data, m["generation"]


_SIGNAL_RATE = 0.05  # each new text moves an item's sentiment 5% of the way (about the last 20 texts)


def signal_item(record: EnrichedReview | EnrichedNews) -> str:
    """The item an enriched text describes: a review's product, or the article itself."""
    return record.product_id if isinstance(record, EnrichedReview) else record.article_id


def item_signal_update(record: EnrichedReview | EnrichedNews, current: str | None) -> tuple[str, str]:
    """(item id, new JSON value) of the item-signals table after one enriched text: the running
    sentiment (P(positive) - P(negative)) of a product's reviews or of a news article, and an
    article's entities. This is what the click model reads as item features.

    >>> from streams.records import EnrichedReview
    >>> r = EnrichedReview.model_validate({"review_id": "r1", "product_id": "p1", "text": "bad",
    ...     "sentiment": {"label": "negative", "score": 0.9,
    ...                   "probs": {"negative": 0.9, "neutral": 0.1, "positive": 0.0}},
    ...     "entities": [], "model": {}, "processed_at": "2026-11-22T10:00:00Z"})
    >>> item_signal_update(r, None)
    ('p1', '{"sentiment": -0.9, "texts": 1, "entities": []}')
    """
    probs = record.sentiment.probs
    value = probs.get("positive", 0.0) - probs.get("negative", 0.0)
    entities = [] if isinstance(record, EnrichedReview) else \
        sorted({e.text for e in record.entities if e.score >= MIN_ENTITY_SCORE})[:5]
    old = json.loads(current) if current else None
    if old:
        rate = max(_SIGNAL_RATE, 1.0 / (old["texts"] + 1))
        value = old["sentiment"] + rate * (value - old["sentiment"])
        entities = entities or old["entities"]
        texts = old["texts"] + 1
    else:
        texts = 1
    return signal_item(record), json.dumps({"sentiment": round(value, 4), "texts": texts,
                                            "entities": entities})
