import base64
import json
from datetime import UTC, datetime

import pytest

from streams.records import (
    DEADLETTER_RAW_LIMIT,
    MAX_JSON_DEPTH,
    Click,
    DecodeError,
    News,
    Review,
    dead_letter,
    decode_input,
    encode,
    json_schemas,
    parse_input,
)

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def _raw(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_interface_examples_decode():
    review = decode_input("reviews", _raw(review_id="r1", product_id="p42", user_id="u7",
                                          text="...", rating=4, ts="2026-11-22T10:00:00Z"))
    click = decode_input("clicks", _raw(event_id="c1", user_id="u7", session_id="s1",
                                        item_id="p42", action="purchase", ts=1763805600000))
    news = decode_input("news", _raw(article_id="n1", source="wire-a", title="t", body="b",
                                     ts="2026-11-22T10:00:00+01:00"))
    assert isinstance(review, Review) and review.rating == 4 and review.ts == NOW
    assert isinstance(click, Click) and click.ts == datetime(2025, 11, 22, 10, 0, tzinfo=UTC)
    assert isinstance(news, News) and news.ts == datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def test_unknown_fields_are_kept_and_reencoded():
    review = decode_input("reviews", _raw(review_id="r1", product_id="p", text="t", lang="de"))
    assert json.loads(encode(review))["lang"] == "de"


def test_optional_fields_may_be_missing():
    review = decode_input("reviews", _raw(review_id="r1", product_id="p", text=""))
    assert isinstance(review, Review) and review.user_id is None and review.ts is None


@pytest.mark.parametrize(("topic", "raw", "reason"), [
    ("reviews", None, "empty record (null value)"),
    ("reviews", b"\xff\xfe", "value is not valid UTF-8 (byte 0: b'\\xff')"),
    ("reviews", b'{"review_id": "r1"', "invalid JSON: Expecting ',' delimiter: line 1 column 19 (char 18)"),
    ("reviews", b"[1, 2]", "expected a JSON object, got list"),
    ("reviews", b'{"review_id": NaN}', "invalid JSON: NaN is not valid JSON"),
    ("reviews", _raw(review_id="r1", product_id="p"), "text: field required"),
    ("reviews", _raw(review_id="r1", product_id="p", text=3), "text: input should be a valid string (got int)"),
    ("reviews", _raw(review_id="", product_id="p", text="t"), "review_id: String should have at least 1 character"),
    ("reviews", _raw(review_id="r", product_id="p", text="t", rating=11), "rating: Input should be less than or equal to 10"),
    ("reviews", _raw(review_id="r", product_id="p", text="t", ts="yesterday"), "ts: not an RFC 3339 timestamp: 'yesterday'"),
    ("reviews", _raw(review_id="r", product_id="p", text="t", ts="2026-11-22T10:00:00"), "ts: timestamp has no UTC offset: '2026-11-22T10:00:00'"),
    ("reviews", _raw(review_id="r", product_id="p", text="t", ts=True), "ts: must be an RFC 3339 string or epoch milliseconds, not a boolean"),
    ("reviews", _raw(review_id="r", product_id="p", text="t", ts=1e300), "ts: epoch milliseconds out of range"),
    ("clicks", _raw(event_id="c", user_id="u", item_id="i"), "action: field required"),
    ("news", _raw(article_id="n", title="t"), "source: field required"),
    ("news", _raw(article_id="n", source=None, title="t"), "source: input should be a valid string (got NoneType)"),
])
def test_bad_records_get_one_clear_reason(topic, raw, reason):
    result = decode_input(topic, raw)
    assert result == DecodeError(reason)


def test_several_problems_are_joined_in_one_line():
    result = decode_input("clicks", _raw(event_id="c"))
    assert result == DecodeError("user_id: field required; item_id: field required; action: field required")


def test_deep_nesting_is_rejected_before_validation():
    deep = b'{"review_id": "r", "product_id": "p", "text": "t", "x": ' + b"[" * 100 + b"]" * 100 + b"}"
    assert decode_input("reviews", deep) == DecodeError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    very_deep = b"[" * 100_000 + b"]" * 100_000
    assert decode_input("reviews", very_deep) == DecodeError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def test_dead_letter_keeps_text_or_base64_and_cuts_huge_values():
    text = dead_letter(source_topic="reviews", partition=1, offset=5, raw=b'{"a":', error="e", now=NOW)
    assert (text.raw, text.raw_encoding, text.raw_size, text.raw_truncated) == ('{"a":', "utf-8", 5, False)
    binary = dead_letter(source_topic="news", partition=0, offset=0, raw=b"\x00\xff", error="e", now=NOW)
    assert base64.b64decode(binary.raw) == b"\x00\xff" and binary.raw_encoding == "base64"
    huge = dead_letter(source_topic="news", partition=0, offset=0, raw=b"x" * (DEADLETTER_RAW_LIMIT + 10),
                       error="e", now=NOW)
    assert huge.raw_truncated and huge.raw_size == DEADLETTER_RAW_LIMIT + 10
    assert len(huge.raw) == DEADLETTER_RAW_LIMIT
    assert json.loads(encode(text))["ts"] == "2026-11-22T10:00:00.000Z"


def test_committed_json_schemas_are_up_to_date():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "streams" / "schemas"
    generated = json_schemas()
    assert sorted(p.name for p in folder.glob("*.schema.json")) == sorted(
        f"{t}.schema.json" for t in generated), "run `make schemas`"
    for topic, schema in generated.items():
        committed = json.loads((folder / f"{topic}.schema.json").read_text())
        assert committed == schema, f"streams/schemas/{topic}.schema.json is stale: run `make schemas`"


def test_schemas_require_what_the_interface_requires():
    schemas = json_schemas()
    assert set(schemas["reviews"]["required"]) == {"review_id", "product_id", "text"}
    assert set(schemas["clicks"]["required"]) == {"event_id", "user_id", "item_id", "action"}
    assert set(schemas["news"]["required"]) == {"article_id", "source", "title"}


@pytest.mark.parametrize(("raw", "category"), [
    ('"Books"', "Books"), ('"  Books "', "Books"), ("12", "12"), ("12.0", "12"), ("3.5", None), ("1e400", None),
    ("true", None), ('""', None), ("[1]", None), ('{"a": 1}', None), ("null", None), (f'"{"x" * 300}"', None),
])
def test_a_reviews_category_is_optional_and_never_makes_it_bad_input(raw, category):
    review = decode_input("reviews", f'{{"review_id": "r", "product_id": "p", "text": "t", "category": {raw}}}'
                          .encode())
    assert not isinstance(review, DecodeError) and review.category == category


@pytest.mark.parametrize(("raw", "reason"), [
    (rb'{"review_id":"r","product_id":"p","text":"bad \ud800 kettle"}', r"lone surrogate (\ud800)"),
    (rb'{"review_id":"r","product_id":"p","text":"x","user_id":"\uDC01"}', r"lone surrogate (\udc01)"),
    (rb'{"review_id":"r","product_id":"p","text":"x","rating":true}', "rating: must be a number of stars"),
])
def test_inputs_no_encoder_downstream_could_take_are_refused_with_a_reason(raw, reason):
    # A lone surrogate escape decoded into a str that Triton's request and the outputs' JSON
    # could not encode: its batch failed before the record was isolated. A boolean rating was
    # read as one star, a negative label the sentiment adapter learned from.
    for decoded in (decode_input("reviews", raw), parse_input("reviews", raw)):
        assert isinstance(decoded, DecodeError) and reason in decoded.reason


def test_escaped_surrogate_pairs_and_escaped_backslashes_are_ordinary_text():
    # What an ASCII-only JSON encoder writes for an emoji, and the six characters \ud800.
    raw = json.dumps({"review_id": "r", "product_id": "p", "text": "angry \U0001F620 and \\ud800"}).encode()
    assert b"\\ud83d\\ude20" in raw
    for decoded in (decode_input("reviews", raw), parse_input("reviews", raw)):
        assert decoded.text == "angry \U0001F620 and \\ud800"
