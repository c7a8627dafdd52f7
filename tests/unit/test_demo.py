"""The demo's stream and its bookkeeping: planted changes where they are said to be, stable keys
stationary, alerts attributed to the change that explains them."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from models.bert.tweets import EntityTweet
from models.online import simulate_clicks
from streams.demo.data import COMPANIES, PRODUCTS, SOUR_COMPANY, SOUR_PRODUCT, SOUR_SOURCE, build_stream
from streams.demo.report import svg_chart
from streams.demo.summary import attribute, delay

START = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _tweets() -> list[EntityTweet]:
    """Labelled texts for every entity the demo draws from; the label is in the text."""
    rng = random.Random(0)
    out = []
    for entity in [*PRODUCTS.values(), *COMPANIES]:
        for label in ("negative", "neutral", "positive"):
            out += [EntityTweet(str(rng.randrange(10**6)), entity, label, f"{entity} {label} {n}")
                    for n in range(40)]
    # The sour product's planted theme: negative tweets about its delay.
    out += [EntityTweet(str(n), "Cyberpunk2077", "negative", f"Cyberpunk2077 negative delayed again {n}")
            for n in range(30)]
    return out


@pytest.fixture(scope="module")
def stream():
    return build_stream(30_000, seed=3, start=START, tweets=_tweets())


def _negative_share(texts: list[str]) -> float:
    return sum(" negative " in t for t in texts) / len(texts)


def test_the_stream_has_the_promised_mix_and_four_planted_changes(stream):
    assert (len(stream.reviews), len(stream.news), len(stream.clicks)) == (6000 + 30, 3000, 21000)
    assert [c.kind for c in stream.changes] == ["product", "source", "clicks", "bombing"]
    for change in stream.changes[:3]:
        assert 0.55 < change.index / change.total < 0.65, change


def test_the_campaign_is_thirty_accounts_in_a_quarter_of_an_hour_of_one_stable_product(stream):
    bombing = stream.change("bombing")
    campaign = [r for r in stream.reviews if "-bomb-" in r["review_id"]]
    times = [datetime.fromisoformat(r["ts"]) for r in campaign]
    assert len(campaign) == len({r["user_id"] for r in campaign}) == 30
    assert {r["product_id"] for r in campaign} == {bombing.subject} and bombing.subject != SOUR_PRODUCT
    assert min(times) == bombing.at and max(times) - min(times) <= timedelta(minutes=15)
    assert [r["ts"] for r in stream.reviews] == sorted(r["ts"] for r in stream.reviews)


def test_only_the_sour_product_changes(stream):
    change = stream.change("product")
    for product in PRODUCTS:
        reviews = [r for r in stream.reviews if r["product_id"] == product and "-bomb-" not in r["review_id"]]
        assert len(reviews) == change.total
        before = _negative_share([r["text"] for r in reviews[:change.index]])
        after = _negative_share([r["text"] for r in reviews[change.index:]])
        assert before == pytest.approx(0.15, abs=0.04), product
        assert after == pytest.approx(0.70 if product == SOUR_PRODUCT else 0.15, abs=0.05), product
    first_sour = next(r for r in stream.reviews if r["review_id"].endswith(f"{SOUR_PRODUCT}-{change.index}"))
    assert datetime.fromisoformat(first_sour["ts"]) == change.at == START + timedelta(minutes=change.index)


def test_the_sour_products_negative_reviews_turn_to_its_delay(stream):
    change = stream.change("product")
    sour = [r for r in stream.reviews if r["product_id"] == SOUR_PRODUCT and " negative " in r["text"]]
    before = [r for r in sour if datetime.fromisoformat(r["ts"]) < change.at]
    after = [r for r in sour if datetime.fromisoformat(r["ts"]) >= change.at]
    assert change.theme == "delay" and "about its delay" in change.description
    assert not any("delay" in r["text"] for r in before)
    assert sum("delay" in r["text"] for r in after) / len(after) == pytest.approx(0.6, abs=0.07)


def test_the_source_turns_negative_about_the_company(stream):
    change = stream.change("source")
    for source in {a["source"] for a in stream.news}:
        articles = [a["title"] for a in stream.news if a["source"] == source]
        after = articles[change.index:]
        about = sum(t.startswith(SOUR_COMPANY + " negative") for t in after) / len(after)
        expected = 0.8 + 0.2 / len(COMPANIES) * 0.25 if source == SOUR_SOURCE else 0.25 / len(COMPANIES)
        assert about == pytest.approx(expected, abs=0.06), source
        before = articles[:change.index]
        assert _negative_share(before) == pytest.approx(0.25, abs=0.05), source


def test_the_simulator_can_reverse_which_items_shoppers_click():
    kwargs = dict(users=100, items=60, genres=4, sessions=1600, seed=2)
    plain, shifted = simulate_clicks(**kwargs), simulate_clicks(**kwargs, shift_at=800)
    cut = shifted.shift_index
    assert plain.events[:cut] == shifted.events[:cut]  # identical up to the change

    # Review sentiment is 2 * quality - 1 plus noise: the items shoppers liked before the change.
    good = {i for i, signal in shifted.item_signals.items() if signal["sentiment"] > 0.2}

    def click_rate_of_good_items(events):
        shown = sum(e.action == "impression" and e.item_id in good for e in events)
        return sum(e.action == "click" and e.item_id in good for e in events) / shown

    before, after = click_rate_of_good_items(shifted.events[:cut]), click_rate_of_good_items(shifted.events[cut:])
    unchanged = click_rate_of_good_items(plain.events[cut:])
    assert after < 0.6 * before and unchanged == pytest.approx(before, rel=0.15), (before, after, unchanged)


def _click_through(events) -> float:
    return sum(e.action == "click" for e in events) / sum(e.action == "impression" for e in events)


def test_the_demo_click_change_makes_shoppers_click_a_fifth_as_often(stream):
    change = stream.change("clicks")
    before, after = _click_through(stream.clicks[:change.index]), _click_through(stream.clicks[change.index:])
    assert after == pytest.approx(before / 5, rel=0.2), (before, after)
    kwargs = dict(users=100, items=60, genres=4, sessions=1600, seed=2)
    assert simulate_clicks(**kwargs, shift_at=800, shift="fewer_clicks").events[:1000] == \
        simulate_clicks(**kwargs).events[:1000]
    with pytest.raises(ValueError, match="fewer_clicks"):
        simulate_clicks(**kwargs, shift_at=800, shift="more_clicks")


def _alert(kind: str, type_: str, id_: str, at: datetime) -> dict:
    return {"kind": kind, "subject": {"type": type_, "id": id_}, "detected_at": at.isoformat(),
            "message": "", "status": "open"}


def test_alerts_are_attributed_to_the_change_that_explains_them(stream):
    product, source, clicks, bombing = (stream.change(k) for k in ("product", "source", "clicks", "bombing"))
    late = timedelta(minutes=30)
    alerts = [
        _alert("sentiment_shift", "product", SOUR_PRODUCT, product.at + late),
        _alert("sentiment_shift", "entity", "@cyberpunkgame", product.at + late),
        _alert("drift", "stream", "reviews:label_negative", product.at + late),
        _alert("sentiment_shift", "source", SOUR_SOURCE, source.at + late),
        _alert("mention_surge", "entity", "nvidia", source.at + late),
        _alert("drift", "model", "click-through:p1:log_loss", clicks.at + late),
        _alert("drift", "stream", "clicks:p2:click_through", clicks.at + late),
        # the campaign's product: the campaign's own alert catches it, a shift it caused is related
        _alert("sentiment_shift", "product", bombing.subject, bombing.at + timedelta(minutes=5)),
        _alert("coordinated_reviews", "product", bombing.subject, bombing.at + timedelta(minutes=8)),
        # not explained: a stable product, the sour one before its change, an input feature drift
        _alert("sentiment_shift", "product", "fifa", product.at + late),
        _alert("sentiment_shift", "product", SOUR_PRODUCT, product.at - late),
        _alert("drift", "stream", "reviews:length", product.at + late),
    ]
    found = attribute(stream, alerts)
    assert {k: a["subject"]["id"] for k, a in found.caught.items()} == {
        "product": SOUR_PRODUCT, "source": SOUR_SOURCE, "clicks": "clicks:p2:click_through",
        "bombing": bombing.subject}
    assert found.caught["bombing"]["kind"] == "coordinated_reviews"
    assert len(found.expected) == 9
    assert [(a["subject"]["id"]) for a in found.false] == [SOUR_PRODUCT, "fifa", "reviews:length"]
    assert delay(stream, product, found.caught["product"]) == 30


def test_svg_chart_marks_the_change_and_the_alerts():
    svg = svg_chart("product x", [0, 50, 100], [0.1, 0.1, 0.7], x_max=100, y_label="minutes", change=60,
                    alerts=[(70, "sentiment_shift <open>")])
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "planted change" in svg and "sentiment_shift &lt;open&gt;" in svg


def test_a_short_stream_plants_only_the_changes_its_detectors_can_see():
    kinds = [c.kind for c in build_stream(4000, seed=3, start=START, tweets=_tweets()).changes]
    assert kinds == ["product", "source", "bombing"]  # a click-through rate baseline needs ~5,600 clicks
    assert build_stream(1000, seed=3, start=START, tweets=_tweets()).changes == []
    # The demo's worker warms its detectors up on 200 events per key: 15,000 events plant all four.
    longer = build_stream(15_000, seed=3, start=START, tweets=_tweets(), warmup=200)
    assert [c.kind for c in longer.changes] == ["product", "source", "clicks", "bombing"]
    shorter = build_stream(12_000, seed=3, start=START, tweets=_tweets(), warmup=200)
    assert [c.kind for c in shorter.changes] == ["product", "bombing"]  # 300 articles per source, 8,400 clicks
