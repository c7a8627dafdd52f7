"""Review bombing: bursts of near-duplicate reviews from many users are found, ordinary reviews
raise none, and a campaign's reviews can be kept out of a product's sentiment."""

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from models.sequential.coordination import CoordinationDetector
from streams.core import plainstate
from streams.core.monitoring import MonitorConfig, Observation, SubjectMonitor
from streams.core.state import StateSeal
from streams.testing import bombing_reviews, planted_reviews, themed_reviews

T0 = datetime(2026, 11, 22, tzinfo=UTC)
FIXTURE = Path(__file__).parents[1] / "fixtures" / "product_reviews.tsv"


def feed(detector: CoordinationDetector, reviews: list[dict]) -> list[int]:
    """The indices of the reviews whose update found a burst."""
    found = []
    for i, r in enumerate(reviews):
        detector.update(r["review_id"], r["text"], user=r.get("user_id"), ts=datetime.fromisoformat(r["ts"]).timestamp())
        if detector.drift_detected:
            found.append(i)
    return found


@pytest.mark.parametrize("seed", range(20))
def test_a_campaign_of_thirty_accounts_is_found_within_its_first_thirty_reviews(seed: int):
    detector = CoordinationDetector()
    found = feed(detector, bombing_reviews("p", 30, start=T0, seed=seed))
    assert len(found) == 1 and found[0] < 30
    assert detector.burst["users"] >= 10 and detector.burst["last"] - detector.burst["first"] <= 15 * 60


def test_ordinary_reviews_raise_no_burst():
    bursts = 0
    for seed in range(5):  # generated reviews on everyday aspects, one product with a planted complaint
        detectors: dict[str, CoordinationDetector] = {}
        for r in themed_reviews([f"p{k}" for k in range(6)], 300, planted={"p0": 150}, seed=seed):
            detector = detectors.setdefault(r["product_id"], CoordinationDetector())
            bursts += len(feed(detector, [r]))
    for seed in range(5):  # templated reviews: six sentences said over and over at a steady pace
        detectors = {}
        for r in planted_reviews([f"p{k}" for k in range(4)], 300, sour={"p0": 150}, seed=seed):
            detector = detectors.setdefault(r["product_id"], CoordinationDetector(min_words=6))
            bursts += len(feed(detector, [r]))
    rows = [line.rstrip("\n").split("\t")[1] for line in FIXTURE.open() if not line.startswith("#")]
    for seed in range(5):  # hand-written reviews, drawn again and again: many exact repeats
        rng, detector = random.Random(seed), CoordinationDetector()
        reviews = [{"review_id": f"x{i}", "text": rng.choice(rows), "user_id": f"u{rng.randrange(10**6)}",
                    "ts": (T0 + timedelta(minutes=i)).isoformat()} for i in range(600)]
        bursts += len(feed(detector, reviews))
    assert bursts == 0


def test_one_account_repeating_itself_or_a_campaign_slower_than_the_window_is_no_burst():
    spam = [{**r, "user_id": "u1"} for r in bombing_reviews("p", 30, start=T0, seed=1)]
    assert feed(CoordinationDetector(), spam) == []
    slow = bombing_reviews("p", 30, start=T0, span=timedelta(hours=10), seed=1)
    assert feed(CoordinationDetector(), slow) == []


def test_state_stays_bounded():
    detector = CoordinationDetector()
    reviews = [r for seed in range(20) for r in bombing_reviews("p", 40, start=T0 + timedelta(hours=2 * seed),
                                                               seed=seed)]
    reviews += themed_reviews(["p"], 3000, planted={}, seed=1, start=T0 + timedelta(hours=41))
    sizes = []
    for i, r in enumerate(reviews):
        feed(detector, [r])
        if i % 500 == 499:
            sizes.append(len(plainstate.dumps(detector, {"CoordinationDetector": CoordinationDetector})))
    assert max(sizes) < 8_000, sizes


def observations(bomb_negative: bool = True) -> list[tuple[Observation, str | None]]:
    """A stable product (hand-written reviews, 10% negative), then a 40-account campaign in 20 minutes."""
    rng, out = random.Random(4), []
    rows = [line.rstrip("\n").split("\t") for line in FIXTURE.open() if not line.startswith("#")]
    for i in range(300):
        negative = rng.random() < 0.1
        text = rng.choice([t for label, t in rows if (label == "negative") == negative])
        out.append((Observation(f"r{i}", text, "negative" if negative else "positive", 0.9 if negative else 0.1,
                                T0 + timedelta(minutes=i)), f"u{i}"))
    for r in bombing_reviews("p", 40, start=T0 + timedelta(minutes=300), span=timedelta(minutes=20)):
        ts = datetime.fromisoformat(r["ts"])
        out.append((Observation(r["review_id"], r["text"], "negative" if bomb_negative else "positive", 0.95, ts),
                    r["user_id"]))
    return out


@pytest.mark.parametrize("discount", [True, False])
def test_a_campaign_raises_one_coordinated_alert_and_is_kept_out_of_the_sentiment(discount: bool):
    monitor = SubjectMonitor("product", "p", MonitorConfig(discount_coordinated=discount))
    alerts, flagged_ids = [], set()
    for obs, user in observations():
        flagged, raised = monitor.screen(obs.event_id, obs.text, user=user, ts=obs.ts)
        alerts += raised
        flagged_ids |= {obs.event_id} if flagged else set()
        alerts += monitor.observe(Observation(obs.event_id, obs.text, obs.label, obs.negative_prob, obs.ts,
                                              coordinated=flagged))
    kinds = [a.kind for a in alerts]
    assert kinds.count("coordinated_reviews") == 1
    burst = next(a for a in alerts if a.kind == "coordinated_reviews")
    assert burst.evidence and all(e["id"].endswith("-bomb") for e in burst.evidence)
    assert burst.message.startswith(f"{burst.current['events']} near-duplicate reviews of product p from ")
    # From the burst's recognition on, its reviews are flagged; discounted, they are not counted
    # as customers' opinions (the reviews before it were: a fast campaign can still move the
    # sentiment detector first).
    assert len(flagged_ids) >= 15 and all(i.endswith("-bomb") for i in flagged_ids)
    counted = {n["id"] for n in monitor.negatives}
    assert (counted & flagged_ids == set()) is discount


def test_the_detector_survives_the_state_round_trip():
    seal = StateSeal(b"0123456789abcdef")
    monitor = SubjectMonitor("product", "p", MonitorConfig())
    campaign = bombing_reviews("p", 30, start=T0, seed=2)
    for r in campaign[:6]:
        monitor.screen(r["review_id"], r["text"], user=r["user_id"], ts=datetime.fromisoformat(r["ts"]))
    restored = SubjectMonitor.loads(monitor.dumps(seal, context="k"), seal, context="k")
    flags = [restored.screen(r["review_id"], r["text"], user=r["user_id"], ts=datetime.fromisoformat(r["ts"]))[0]
             for r in campaign[6:]]
    assert any(flags)


@pytest.mark.parametrize("discount", [True, False])
def test_a_flagged_review_is_discounted_for_the_entities_it_names_too(discount: bool):
    """A campaign's reviews naming a brand: the flag travels with the entity mention, so the
    brand's monitor discounts them as the product's does."""
    from streams.core.mentions import EntityMention, observe_enriched
    from streams.records import EnrichedReview, EntityMentionRecord

    config = MonitorConfig(discount_coordinated=discount)
    entity = SubjectMonitor("entity", "Acme", config)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    for i in range(40):
        flagged = i % 2 == 1
        record = EnrichedReview.model_validate({
            "review_id": f"r{i}", "product_id": "p", "text": "Acme ruined my kitchen", "user_id": f"u{i}",
            "ts": start + timedelta(seconds=i), "processed_at": start, "text_flags": [], "time_flags": [],
            "model": {"sentiment": "m", "ner": "m"},
            "sentiment": {"label": "negative", "score": 0.9, "source": "base",
                          "probs": {"negative": 0.9, "neutral": 0.05, "positive": 0.05}},
            "entities": [{"text": "Acme", "type": "ORG", "start": 0, "end": 4, "score": 0.99}]})
        _, _, [mention] = observe_enriched(record, record.ts, coordinated=flagged)
        wire = EntityMentionRecord.model_validate_json(mention.to_record().model_dump_json())
        assert wire.coordinated is flagged
        entity.observe(EntityMention.from_record(wire).observation)
    counted = {int(n["id"][1:]) for n in entity.negatives}
    assert counted and ({i for i in counted if i % 2} == set()) is discount


def _mentions_of_acme(reviews: list[dict]) -> list:
    """Each review as the entity-mentions records it makes, all naming the seller Acme."""
    from streams.core.mentions import observe_enriched
    from streams.records import EnrichedReview, Entity, encode
    from streams.testing import FakeEvent

    events = []
    for i, r in enumerate(reviews):
        text = f"Bought from Acme. {r['text']}"
        record = EnrichedReview(
            review_id=r["review_id"], product_id=r["product_id"], user_id=r["user_id"], text=text, model={},
            processed_at=T0, entities=[Entity(text="Acme", type="ORG", start=12, end=16, score=0.9)],
            sentiment={"label": "negative", "score": 0.8, "probs": {"negative": 0.8, "neutral": 0.1, "positive": 0.1}})
        _, _, [mention] = observe_enriched(record, datetime.fromisoformat(r["ts"]))
        events.append(FakeEvent(topic="entity-mentions", offset=i, key=b"acme", value=encode(mention.to_record())))
    return events


@pytest.mark.parametrize("seed", range(3))
def test_a_campaign_spread_over_many_products_is_found_on_the_entity_it_names(seed: int):
    import asyncio

    from streams.adapters.metrics import Metrics
    from streams.agents.detectors import Detectors, KeyedMonitors
    from streams.testing import FakeTable, FakeTopic

    # 300 ordinary reviews of 30 products naming the seller, then 30 accounts' near-duplicates,
    # one per product: no product sees more than one, the seller sees all of them.
    ordinary = themed_reviews([f"p{k}" for k in range(30)], 10, planted={}, seed=seed, start=T0 - timedelta(hours=2))
    campaign = [{**r, "product_id": f"p{i}"} for i, r in enumerate(bombing_reviews("p", 30, start=T0, seed=seed))]
    metrics, alerts = Metrics(), FakeTopic()
    entities = KeyedMonitors(FakeTable(), "entity", MonitorConfig(), with_surge=True, metrics=metrics,
                             seal=StateSeal(b"k" * 32))
    detectors = Detectors(alerts=alerts, mentions=FakeTopic(), metrics=metrics, subjects={}, streams={},
                          entities=entities)
    asyncio.run(detectors.on_mentions(_mentions_of_acme(ordinary)))
    assert not [a for a in alerts.values() if a["kind"] == "coordinated_reviews"]  # ordinary: no burst
    asyncio.run(detectors.on_mentions(_mentions_of_acme(campaign)))
    [burst] = [a for a in alerts.values() if a["kind"] == "coordinated_reviews"]
    assert burst["subject"] == {"type": "entity", "id": "Acme"} and "naming entity Acme" in burst["message"]
    assert burst["evidence"] and all("scam" in e["text"].lower() for e in burst["evidence"])
